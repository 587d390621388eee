"""Bit-exact models of matrix-multiply accumulators (tensor cores) and the emulated GEMM.

The model (``AccumulatorModel``), for one output element ``c + sum_k a_k * b_k``, K split into groups of
``group_size`` consecutive products, groups visited in K order:

1. every non-zero input is ``s * 2^e`` with s in [1, 2) -- for subnormal inputs e is clamped to the input
   format's smallest normal exponent and s < 1; a product keeps the unnormalised significand
   ``s_a * s_b`` (exact, in [0, 4)) and the exponent ``e_a + e_b``; the running accumulator (a value
   of ``acc_format``) is written the same way. Zeros follow ``zero_exponent``:

   - an int z (default -126, every NVIDIA preset: the convention of the hardware-validated simulator
     MMA-Sim, SPEC 2b): a zero input and a zero accumulator are ``0 * 2^z`` whatever their format, so
     a product with a zero operand is the term ``0 * 2^(z + e_other)`` (``0 * 2^(2z)`` for 0 x 0), and
     these terms take part in step 2. With BF16/TF32 inputs this shows: a zero next to a huge
     co-operand (0 x 3e36 has exponent -5) lifts E and truncates the group's small real products away;
     a zero accumulator lifts E to z when every product is below 2^z. With FP8/FP16 inputs a zero
     product (at most 2^(z + emax of the other format)) never outranks a real one, so only a non-zero
     accumulator below that can feel it: on hopper_fp8, C = 2^-126 (1 + 2^-13) beside 0 x 448 is
     aligned to E = -118 and loses its last bit (SPEC 2b's "never changes a result" holds for C = 0
     and for accumulators above 2^-110);
   - ``None``: zero terms take no part (a group may then have no term at all);
2. E = the largest exponent among the group's terms: its products, and the accumulator's when
   ``align_with_acc`` (otherwise the accumulator is added after the group, step 4). E is never taken
   below the model's exponent floor, the smallest exponent any term can have
   (min(emin_a + emin_b, emin_acc, 2z)); that changes no group with a term, and a group without one
   sums to exactly 0;
3. each term's significand is scaled by 2^(e_i - E) and rounded to a multiple of 2^-``align_bits`` by
   ``align_rounding`` (``rtz`` toward zero, ``rdown`` toward -inf as two's-complement shifting does,
   ``rne``); ``align_bits=None`` keeps terms exact (E, and so ``zero_exponent``, then changes nothing);
4. the rounded terms are summed exactly and the sum is rounded once to ``acc_format`` by
   ``acc_rounding`` (with ``align_with_acc=False``: ``round(acc + group sum)``); that is the
   accumulator for the next group. Overflow follows ``overflow``: ``"inf"`` (default, SPEC 2b: the
   hardware) makes every result of magnitude >= 2^(emax + 1) of ``acc_format`` (2^128 for fp32 and
   E8M13) +-Inf, also when rounding toward zero; ``"ieee"`` follows IEEE 754, where rounding toward
   zero stops at +-max (FLT_MAX). Below 2^(emax + 1) the two agree (a truncated value there is at
   most max). The same rounding turns the initial ``c`` into the accumulator's seed (step 5);
5. with ``promote_every = N_C`` the accumulator starts from zero every N_C products along K and its
   value is added into an ``outer_format`` accumulator (rounding ``outer_rounding``, IEEE overflow:
   the FP32 arithmetic of CUDA cores) -- the FP32 promotion of DeepSeek-V3 / DeepGEMM; the initial
   ``c`` seeds the outer accumulator. Without promotion ``c`` seeds the inner accumulator (rounded
   to ``acc_format`` first, step 4);
6. a zero result is +0: an exact zero sum (as IEEE addition gives under round-to-nearest) and a sum that
   rounds to zero (as in MMA-Sim; IEEE would keep the sign of such an underflow); an accumulator
   that overflowed to +-Inf stays +-Inf, and promotion adds it to the outer accumulator by IEEE rules
   (Inf + -Inf is NaN);
7. NaN/Inf in any input of a dot product: the result is IEEE float32's (NaN, or the Inf of the exact
   sum), as the modelled hardware does;
8. the NaN bits of the float32 result follow ``nan_output``: ``"canonical"`` (default, SPEC 2b: NVIDIA
   hardware) makes every NaN 0x7FFFFFFF; ``"ieee"`` gives whatever NaN IEEE float32 arithmetic
   produces on the host (IEEE 754 fixes neither its sign nor its payload: on x86 an invalid
   operation gives 0xFFC00000, an input NaN propagates), so only NaN-ness is part of the contract.
   ``reference_dot`` returns a Python float; its canonical NaN is the double that narrows to
   0x7FFFFFFF in float32.

Structures and block scales (``AccumulatorModel.structure``, ``block_scale``; the class docs give each rule
exactly). Steps 2-4 above are ``FusedSum``, every NVIDIA unit. ``ChunkSum`` (Blackwell ``kind::mxf4nvf4``) first
sums each 16-element chunk's products exactly and multiplies the sum by the chunk's two block scales; those chunk
terms then go through steps 2-4. ``SplitSum`` (AMD CDNA3) aligns a group's products to their own largest exponent
(in even/odd halves for FP8), then floors the group sum and the accumulator to fixed bits relative to the larger of
their exponents and rounds their exact sum. ``FmaTree`` (AMD CDNA1/2) sums a group as a pairwise tree of rounded
additions, optionally flushing subnormals. A ``FusedSum`` with E8M0 block scales adds both scale exponents to each
product's exponent in step 1 (Blackwell ``kind::mxf8f6f4``); a NaN scale is a NaN input (step 7). An fp16-output
model (``acc_format="fp16"``) rounds every result to fp16 and its canonical NaN is fp16's 0x7FFF (returned in a
float32 tensor as 0x7FFFE000, which narrows to 0x7FFF). ``instruction_k`` records the unit's instruction K (a GEMM
pads K with zeros to it, which changes no bit, so any K is accepted). For the AMD units SPEC 2b states no zero
convention, NaN pattern or overflow rule: their presets take IEEE behaviour (zeros take no part) -- a documented
choice, each an option.

Every power of two the implementations build is a normal number (float64 for sums, float32 for the
aligned terms of the narrow path): E stays at or above the exponent floor, and a model whose floor
minus ``align_bits`` would leave float64's range is rejected.

Implementations that agree bit for bit: ``reference_dot`` (scalar, Python ``Fraction``, readable
against the steps above, every structure) and ``emulated_matmul`` (vectorised torch, eager or compiled, chunked
along K; or the native C/CUDA builds of ``cuda_ext/lowprec_accum.h`` for the fused sums they cover, every NVIDIA
preset without block scales: ``native_unsupported`` states their bounds; they sum each group's aligned terms
exactly, in int32 where it holds G + 1 of them and in int32 chunks added into a wide sum where not).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Sequence

import torch

from .codes import Rounding
from .formats import FloatFormat, get_format
from .rounding import (BACKENDS, add_round_to_odd, compiled, floor_log2, floor_log2_exact, pow2,
                       quantize, resolve_backend, round_exact, round_to_multiple, round_values)

ALIGN_ROUNDINGS = (Rounding.RTZ, Rounding.RDOWN, Rounding.RNE)
ACC_ROUNDINGS = tuple(r for r in Rounding if r is not Rounding.STOCHASTIC)
NAN_OUTPUTS = ("canonical", "ieee")
OVERFLOWS = ("inf", "ieee")
CANONICAL_NAN32 = 0x7FFFFFFF
CANONICAL_NAN16 = 0x7FFF
BLOCK_SCALE_FORMATS = ("e8m0", "ue4m3")


@dataclass(frozen=True)
class FusedSum:
    """NVIDIA tensor cores (SPEC 2b): one fused step per group -- the group's products and (with
    ``align_with_acc``) the accumulator are aligned together to their largest exponent, rounded to
    ``align_bits`` fraction bits, summed exactly and rounded once to ``acc_format`` (module doc, steps 2-4).
    With ``align_bits=None`` the terms are kept exact."""


@dataclass(frozen=True)
class ChunkSum:
    """Blackwell ``tcgen05.mma kind::mxf4nvf4``: the products of each ``chunk`` consecutive elements along K are
    summed exactly and that chunk sum is multiplied by the chunk's two block scales (significand and exponent,
    exactly); the group's chunk terms (group_size / chunk of them) and the accumulator are then aligned and summed as
    in ``FusedSum`` with the model's ``align_bits`` (35 on Blackwell). A zero chunk sum is the term
    ``0 * 2^zero_exponent`` (or no term). Needs ``block_scale``."""

    chunk: int = 16


@dataclass(frozen=True)
class SplitSum:
    """AMD CDNA3 MFMA (SPEC 2b): per group, the products (split into ``interleave`` interleaved subsets: 2 for FP8,
    even- and odd-indexed) are aligned to their subset's own largest exponent and rounded to ``align_bits`` fraction
    bits by ``align_rounding``, and each subset is summed exactly; the subset sums are floored (toward -inf) to
    ``align_bits`` fraction bits relative to 2^Eg, Eg the largest subset exponent, and added. With Ec the
    accumulator's exponent and R = max(Eg, Ec), the group sum is floored to ``sum_bits`` fraction bits relative to
    2^R and the accumulator to ``acc_bits`` (or dropped when ``acc_drop`` is set and Ec < R - acc_drop); their exact
    sum is rounded to ``acc_format`` by ``acc_rounding``."""

    sum_bits: int = 31
    acc_bits: int = 24
    interleave: int = 1
    acc_drop: int | None = None


@dataclass(frozen=True)
class FmaTree:
    """AMD CDNA1/CDNA2 MFMA (SPEC 2b): each group of products (a power of two; a short last group is padded with
    zero products) is summed as a pairwise binary tree, each node the sum of its two children rounded to
    ``acc_format`` by ``acc_rounding`` (fp32 FMAs: the products are exact), and the group sum is added to the
    accumulator with the same rounding. ``flush_subnormals`` (CDNA2) flushes subnormal inputs (of their format),
    subnormal products and partial sums, and a subnormal accumulator, to zero."""

    flush_subnormals: bool = False


Structure = FusedSum | ChunkSum | SplitSum | FmaTree
STRUCTURES = (FusedSum, ChunkSum, SplitSum, FmaTree)


@dataclass(frozen=True)
class BlockScale:
    """Block-scaled operands (MX, NVFP4): each ``block`` consecutive elements along K of a row of ``a`` (a column
    of ``b``) share one scale, a value of ``scale_format`` (``e8m0``: a power of two; ``ue4m3``: NVFP4's unsigned
    E4M3). With ``FusedSum`` the two E8M0 scale exponents are added to each product's exponent inside the fused
    step (Blackwell ``kind::mxf8f6f4``: not the same as pre-scaling the operands); with ``ChunkSum`` they multiply
    the chunk sums. A NaN scale makes its dot products NaN (step 7)."""

    block: int = 32
    scale_format: str = "e8m0"

    def __post_init__(self) -> None:
        if not isinstance(self.block, int) or isinstance(self.block, bool) or self.block < 1:
            raise ValueError(f"BlockScale.block must be a positive int, got {self.block!r}")
        if get_format(self.scale_format).name not in BLOCK_SCALE_FORMATS:
            raise ValueError(f"BlockScale.scale_format must be one of {BLOCK_SCALE_FORMATS}, got {self.scale_format!r}")

    @property
    def format(self) -> FloatFormat:
        return get_format(self.scale_format)

    @property
    def smallest_exponent(self) -> int:
        """log2 of the smallest positive scale."""
        f = self.format
        return f.emin - (f.mbits if f.subnormals and f.has_zero else 0)


@dataclass(frozen=True)
class AccumulatorModel:
    """A configurable limited-precision accumulator (see the module doc for the exact semantics).

    ``structure`` says how a group's terms are combined (``FusedSum``, the default: NVIDIA; ``ChunkSum``:
    Blackwell block-scaled FP4; ``SplitSum``: AMD CDNA3; ``FmaTree``: AMD CDNA1/2); ``block_scale`` makes the
    operands block-scaled (``emulated_matmul``'s ``a_scales``/``b_scales``); ``instruction_k`` is the K of one
    instruction of the unit (a multiple of ``group_size``: an instruction of ``instruction_k / group_size`` fused
    steps, the first feeding the next, as Ampere's split m16n8k16). A GEMM pads K with zeros to a multiple of it,
    which changes no bit (a group of zero terms leaves an accumulator with at most ``align_bits`` fraction bits
    unchanged), so ``emulated_matmul`` accepts any K.
    """

    name: str
    input_formats: tuple[str, str] = ("e4m3fn", "e4m3fn")
    group_size: int = 32
    align_bits: int | None = 13
    align_rounding: Rounding = Rounding.RTZ
    align_with_acc: bool = True
    acc_format: str = "e8m13"
    acc_rounding: Rounding = Rounding.RTZ
    promote_every: int | None = None
    outer_format: str = "fp32"
    outer_rounding: Rounding = Rounding.RNE
    description: str = ""
    zero_exponent: int | None = -126
    nan_output: str = "canonical"
    overflow: str = "inf"
    instruction_k: int | None = None
    structure: Structure = FusedSum()
    block_scale: BlockScale | None = None

    def __post_init__(self) -> None:
        for f in (*self.input_formats, self.acc_format, self.outer_format):
            get_format(f)                                   # unknown names raise here
        if len(self.input_formats) != 2:
            raise ValueError("input_formats must name two formats (a's and b's)")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
        # the roundings arrive as a Rounding or its name; stored as members (frozen: set through object)
        object.__setattr__(self, "align_rounding",
                           Rounding.parse(self.align_rounding, ALIGN_ROUNDINGS, "align_rounding"))
        for attr in ("acc_rounding", "outer_rounding"):   # stochastic rounding is not modelled in accumulators
            object.__setattr__(self, attr, Rounding.parse(getattr(self, attr), ACC_ROUNDINGS, attr))
        acc = get_format(self.acc_format)
        if self.align_bits is not None:
            if not isinstance(self.align_bits, int) or self.align_bits < 0:
                raise ValueError(f"align_bits must be a non-negative int or None, got {self.align_bits!r}")
            if self.align_bits > 52 - 3 - math.ceil(math.log2(self.group_size + 1)):
                raise ValueError(f"align_bits={self.align_bits} with group_size={self.group_size}: the aligned "
                                 "group sum would not be exact in the 53-bit emulation")
        if acc.mbits > 23 or not acc.signed or not acc.has_inf:
            raise ValueError(f"acc_format {acc.name}: an accumulator must be a signed IEEE-style format "
                             "with at most 23 mantissa bits (exact in float32)")
        if get_format(self.outer_format).mbits > 23:
            raise ValueError("outer_format must be exact in float32 (at most 23 mantissa bits)")
        if self.promote_every is not None and (self.promote_every < 1 or self.promote_every % self.group_size):
            raise ValueError(f"promote_every={self.promote_every} must be a positive multiple of "
                             f"group_size={self.group_size}")
        if self.nan_output not in NAN_OUTPUTS:
            raise ValueError(f"unknown nan_output {self.nan_output!r}; expected one of {NAN_OUTPUTS}")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"unknown overflow {self.overflow!r}; expected one of {OVERFLOWS}")
        if self.zero_exponent is not None:
            lowest = min(f.emin for f in (*self.formats, acc))
            if not isinstance(self.zero_exponent, int) or isinstance(self.zero_exponent, bool):
                raise TypeError(f"zero_exponent must be an int or None, got {self.zero_exponent!r}")
            if self.zero_exponent > lowest:
                raise ValueError(f"zero_exponent={self.zero_exponent} would rank a zero above the smallest "
                                 f"normal number of the model's formats (2^{lowest})")
        if self.instruction_k is not None and (not isinstance(self.instruction_k, int) or self.instruction_k < 1
                                               or self.instruction_k % self.group_size):
            raise ValueError(f"instruction_k={self.instruction_k!r} must be a positive multiple of "
                             f"group_size={self.group_size}")
        self._check_structure()
        if _exponent_floor(self) - max(self.align_bits or 0, _structure_bits(self)) < -1022:
            raise ValueError(f"terms as small as 2^{_exponent_floor(self)} (input formats, scales, zero_exponent) "
                             f"aligned to {self.align_bits} bits leave float64's normal range")

    def _check_structure(self) -> None:
        """The rules of ``structure`` and ``block_scale`` (class docs): a field that would have no effect, or
        bits the emulation cannot keep exact, is an error."""
        st, bs = self.structure, self.block_scale
        if not isinstance(st, STRUCTURES):
            raise TypeError(f"structure must be one of {[c.__name__ for c in STRUCTURES]}, got {st!r}")
        if bs is not None and not isinstance(bs, BlockScale):
            raise TypeError(f"block_scale must be a BlockScale or None, got {bs!r}")
        fa, fb = self.formats
        if isinstance(st, FusedSum):
            if bs is not None and self.align_bits is None:
                raise ValueError("a block-scaled fused sum needs align_bits (the scale exponents join the alignment)")
            if bs is not None and bs.scale_format != "e8m0":
                raise ValueError("a fused sum adds the scale exponents to the products' exponents: it needs "
                                 f"power-of-two (e8m0) scales, not {bs.scale_format}; ChunkSum multiplies by them")
        elif isinstance(st, ChunkSum):
            if bs is None or self.align_bits is None:
                raise ValueError("ChunkSum needs block_scale and align_bits (its chunk terms are aligned)")
            if not isinstance(st.chunk, int) or st.chunk < 1 or self.group_size % st.chunk or bs.block % st.chunk:
                raise ValueError(f"ChunkSum.chunk={st.chunk!r} must divide group_size={self.group_size} and "
                                 f"block_scale.block={bs.block}")
            span = (fa.emax + fb.emax + 2 - (fa.emin - fa.mbits) - (fb.emin - fb.mbits)
                    + math.ceil(math.log2(st.chunk)) + 2 * (bs.format.mbits + 1))
            if span > 53:
                raise ValueError(f"ChunkSum: {st.chunk} {fa.name} x {fb.name} products times two "
                                 f"{bs.scale_format} scales are not exact in float64")
        elif isinstance(st, SplitSum):
            if bs is not None or self.align_bits is None or self.align_with_acc:
                raise ValueError("SplitSum aligns the products (align_bits) apart from the accumulator "
                                 "(align_with_acc=False) and takes no block scales")
            for attr in ("sum_bits", "acc_bits", "interleave"):
                if not isinstance(getattr(st, attr), int) or getattr(st, attr) < 1:
                    raise ValueError(f"SplitSum.{attr} must be a positive int, got {getattr(st, attr)!r}")
            if self.group_size % st.interleave:
                raise ValueError(f"SplitSum.interleave={st.interleave} must divide group_size={self.group_size}")
            if st.acc_drop is not None and (not isinstance(st.acc_drop, int) or st.acc_drop < 0):
                raise ValueError(f"SplitSum.acc_drop must be a non-negative int or None, got {st.acc_drop!r}")
            if max(st.sum_bits, st.acc_bits) + 8 > 52:
                raise ValueError("SplitSum: sum_bits and acc_bits must leave the group sum exact in float64")
        else:                                               # FmaTree
            if bs is not None or self.align_bits is not None or self.zero_exponent is not None:
                raise ValueError("FmaTree rounds IEEE sums: it takes no align_bits, zero_exponent or block scales "
                                 "(set them to None)")
            if self.group_size & (self.group_size - 1):
                raise ValueError(f"FmaTree needs a power-of-two group_size, got {self.group_size}")
            if fa.mbits + fb.mbits + 2 > get_format(self.acc_format).mbits + 1:
                raise ValueError(f"FmaTree: {fa.name} x {fb.name} products are not exact in {self.acc_format}")

    @property
    def formats(self) -> tuple[FloatFormat, FloatFormat]:
        return get_format(self.input_formats[0]), get_format(self.input_formats[1])

    @property
    def result_format(self) -> FloatFormat:
        """The format of the results: ``outer_format`` when promoting, else ``acc_format``."""
        return get_format(self.outer_format if self.promote_every else self.acc_format)


def _exponent_floor(model: AccumulatorModel) -> int:
    """The smallest exponent a term of ``model`` can have (module doc, step 2): E is never taken below it."""
    fa, fb = model.formats
    z = model.zero_exponent
    bs = model.block_scale
    if isinstance(model.structure, ChunkSum):               # exact chunk sums are not clamped to a format's emin
        assert bs is not None
        products = [fa.emin - fa.mbits + fb.emin - fb.mbits]
    else:
        products = [fa.emin + fb.emin] + ([2 * z] if z is not None else [])
    shift = 2 * bs.smallest_exponent if bs is not None else 0
    lows = [p + shift for p in products] + [get_format(model.acc_format).emin]
    if z is not None:
        lows.append(z)
    return min(lows)


def _structure_bits(model: AccumulatorModel) -> int:
    """The most fraction bits below 2^E the structure keeps (SplitSum's sum and accumulator bits)."""
    st = model.structure
    return max(st.sum_bits, st.acc_bits) if isinstance(st, SplitSum) else 0


_IEEE: dict[str, Any] = dict(zero_exponent=None, nan_output="ieee", overflow="ieee")   # references, not hardware
_KM, _MS, _FHMP = "Khattak & Mikaitis 2025", "MMA-Sim (Xie et al. 2025)", "Fasi, Higham, Mikaitis & Pranesh 2021"
_AMD: dict[str, Any] = dict(zero_exponent=None, nan_output="ieee", overflow="ieee", acc_format="fp32",
                            acc_rounding=Rounding.RNE, align_with_acc=False)


def _nv(name: str, fmt: str, group: int, bits: int, k: int, what: str, **kw: Any) -> AccumulatorModel:
    """An NVIDIA unit with ``fmt`` x ``fmt`` inputs: ``group`` products per fused step, ``bits`` fraction bits kept
    after alignment (toward zero), float32 output truncated toward zero (unless ``kw`` says otherwise)."""
    return AccumulatorModel(name, (fmt, fmt), group, bits, Rounding.RTZ, True, kw.pop("acc_format", "fp32"),
                            kw.pop("acc_rounding", Rounding.RTZ), instruction_k=k, description=what, **kw)


def _f16acc(base: AccumulatorModel, what: str) -> AccumulatorModel:
    """``base`` with an fp16 result: the same fused step, D rounded to nearest-even fp16 (SPEC 2b)."""
    return replace(base, name=base.name + "_f16acc", acc_format="fp16", acc_rounding=Rounding.RNE,
                      description=f"{what}: as {base.name}, but the output (and the C it feeds back) is fp16, "
                                  f"rounded to nearest even ({_MS})")


_VOLTA = _nv("volta_fp16", "fp16", 4, 23, 4, f"V100 mma.m8n8k4 fp16: 4 products per step, 23 fraction bits kept "
             f"(none extra), truncated; float32 output truncated ({_FHMP}; {_MS})")
_AMPERE_FP16 = _nv("ampere_fp16", "fp16", 8, 24, 16, "A100/Ada mma.m16n8k16 fp16: one instruction = two fused steps "
                   f"of 8 products, 24 fraction bits kept, truncated; float32 output truncated ({_KM}; {_MS})")
_HOPPER_FP16 = _nv("hopper_fp16", "fp16", 16, 25, 16, "H100 wgmma k16 fp16: one fused step of 16 products, 25 "
                   f"fraction bits kept, truncated; float32 output truncated ({_KM}; {_MS})")
_HOPPER_FP8 = AccumulatorModel(
    "hopper_fp8", instruction_k=32,
    description="H100 wgmma k32 FP8 (e4m3/e5m2): one fused step of 32 products and C, aligned and truncated to 13 "
                "fraction bits, summed into a 13-bit-mantissa (E8M13) register truncated toward zero; no promotion "
                f"(DeepSeek-V3 ISCA 2025 paper; {_KM}; {_MS})")
_ADA_FP8 = AccumulatorModel(
    "ada_fp8", group_size=16, instruction_k=32,
    description="Ada (RTX 4090, L40) mma.m16n8k32 FP8: one instruction = two fused steps of 16 products, 13 fraction "
                f"bits, E8M13 output truncated ({_KM}; {_MS})")

_PRESETS: dict[str, AccumulatorModel] = {m.name: m for m in [
    AccumulatorModel("exact", ("e4m3fn", "e4m3fn"), 1 << 30, None, Rounding.RTZ, True, "fp32", Rounding.RNE, **_IEEE,
                     description="Reference: FP8 products summed exactly, rounded once to float32 (nearest even)"),
    AccumulatorModel("fp32_sequential", ("fp32", "fp32"), 1, None, Rounding.RTZ, True, "fp32", Rounding.RNE, **_IEEE,
                     description="Reference: IEEE float32 fused multiply-add, one product at a time in K order"),
    # NVIDIA tensor cores, by generation (SPEC 2b)
    _VOLTA,
    _f16acc(_VOLTA, "V100 mma.m8n8k4 fp16 with fp16 accumulate"),
    _nv("turing_fp16", "fp16", 8, 24, 8, "T4/RTX 20 mma.m16n8k8 fp16: one fused step of 8 products, 24 fraction bits "
        f"kept, truncated; float32 output truncated ({_MS})"),
    _nv("turing_fp16_m8n8k4", "fp16", 4, 24, 4, "T4/RTX 20 mma.m8n8k4 fp16: one fused step of 4 products, 24 "
        f"fraction bits, truncated; float32 output truncated ({_MS})"),
    _AMPERE_FP16,
    _f16acc(_AMPERE_FP16, "A100/Ada mma.m16n8k16 fp16 with fp16 accumulate"),
    _nv("ampere_bf16", "bf16", 8, 24, 16, "A100/Ada mma.m16n8k16 bf16: two fused steps of 8 products, 24 fraction "
        f"bits, truncated; float32 output truncated ({_KM}; {_MS})"),
    _nv("ampere_tf32", "tf32", 4, 24, 8, "A100/Ada mma.m16n8k8 tf32: two fused steps of 4 products, 24 fraction "
        f"bits, truncated; float32 output truncated ({_KM}; {_MS})"),
    _ADA_FP8,
    _f16acc(_ADA_FP8, "Ada mma.m16n8k32 FP8 with fp16 accumulate"),
    _HOPPER_FP8,
    replace(_HOPPER_FP8, name="hopper_fp8_promoted", promote_every=128,
                      description="hopper_fp8 with the FP32 promotion of DeepSeek-V3/DeepGEMM: the tensor-core sum is "
                                  "added into a float32 register (nearest even) every 128 elements of K, 4 wgmma "
                                  "instructions"),
    _f16acc(_HOPPER_FP8, "H100 wgmma k32 FP8 with fp16 accumulate"),
    replace(_HOPPER_FP8, name="hopper_fp8_e4m3_e5m2", input_formats=("e4m3fn", "e5m2"),
                      description="hopper_fp8 with mixed operands, a in e4m3 and b in e5m2 (wgmma accepts the "
                                  "mix; any preset takes other formats through emulated_matmul's input_formats=)"),
    _HOPPER_FP16,
    _f16acc(_HOPPER_FP16, "H100 wgmma k16 fp16 with fp16 accumulate"),
    _nv("hopper_bf16", "bf16", 16, 25, 16, "H100 wgmma k16 bf16: one fused step of 16 products, 25 fraction bits, "
        f"truncated; float32 output truncated ({_KM}; {_MS})"),
    _nv("hopper_tf32", "tf32", 8, 25, 8, "H100 wgmma k8 tf32: one fused step of 8 products, 25 fraction bits, "
        f"truncated; float32 output truncated ({_KM}; {_MS})"),
    _nv("hopper_mma_fp16", "fp16", 16, 25, 16, "H100/B200 mma.sync m16n8k16 fp16 (the warp-level instruction): one "
        f"fused step of 16 products, 25 fraction bits; float32 output truncated ({_MS})"),
    _nv("hopper_mma_bf16", "bf16", 16, 25, 16, "H100/B200 mma.sync m16n8k16 bf16: one fused step of 16 products, "
        f"25 fraction bits; float32 output truncated ({_MS})"),
    _nv("hopper_mma_tf32", "tf32", 8, 25, 8, "H100/B200 mma.sync m16n8k8 tf32: one fused step of 8 products, 25 "
        f"fraction bits; float32 output truncated ({_MS})"),
    _nv("blackwell_fp16", "fp16", 16, 25, 16, "B200 tcgen05.mma kind::f16 fp16: one fused step of 16 products, 25 "
        f"fraction bits; float32 output truncated ({_MS})"),
    _nv("blackwell_bf16", "bf16", 16, 25, 16, "B200 tcgen05.mma kind::f16 bf16: one fused step of 16 products, 25 "
        f"fraction bits; float32 output truncated ({_MS})"),
    _nv("blackwell_tf32", "tf32", 8, 25, 8, "B200 tcgen05.mma kind::tf32: one fused step of 8 products, 25 fraction "
        f"bits; float32 output truncated ({_MS})"),
    _nv("blackwell_fp8", "e4m3fn", 32, 25, 32, "B200 tcgen05.mma kind::f8f6f4 with FP8 (also FP6/FP4 through "
        "input_formats=): one fused step of 32 products, 25 fraction bits, float32 output truncated: no 13-bit cut "
        f"({_KM}; {_MS})"),
    _nv("blackwell_mxf8f6f4", "e4m3fn", 32, 25, 32, "B200 tcgen05.mma kind::mxf8f6f4 (MXFP8/6/4, one E8M0 scale per "
        "32 elements of K): the two scale exponents are added to each product's exponent inside one fused step of "
        f"32 products and C, 25 fraction bits; float32 output truncated ({_MS})", block_scale=BlockScale(32, "e8m0")),
    AccumulatorModel("blackwell_mxf4", ("e2m1", "e2m1"), 64, 35, instruction_k=64, acc_format="fp32",
                     structure=ChunkSum(16), block_scale=BlockScale(32, "e8m0"),
                     description="B200 tcgen05.mma kind::mxf4nvf4 with MXFP4 (E2M1, one E8M0 scale per 32): exact "
                                 "sums of 16 products times their two scales, 4 such chunk terms and C aligned to 35 "
                                 f"fraction bits, truncated; float32 output truncated ({_MS})"),
    AccumulatorModel("blackwell_nvf4", ("e2m1", "e2m1"), 64, 35, instruction_k=64, acc_format="fp32",
                     structure=ChunkSum(16), block_scale=BlockScale(16, "ue4m3"),
                     description="B200 tcgen05.mma kind::mxf4nvf4 with NVFP4 (E2M1, one unsigned-E4M3 scale per 16): "
                                 "exact sums of 16 products times their two scales (significand and exponent), 4 "
                                 f"chunk terms and C aligned to 35 fraction bits, truncated; float32 output ({_MS})"),
    _nv("rtx_blackwell_fp8", "e4m3fn", 32, 25, 32, "RTX 50 / RTX PRO (sm_120) mma.m16n8k32 FP8: one fused step of 32 "
        f"products, 25 fraction bits; float32 output truncated ({_MS})"),
    _nv("rtx_blackwell_fp8_k16", "e4m3fn", 16, 25, 16, "RTX 50 / RTX PRO (sm_120) mma.m16n8k16 FP8: one fused step "
        f"of 16 products, 25 fraction bits; float32 output truncated ({_MS})"),
    # AMD matrix cores (SPEC 2b)
    AccumulatorModel("cdna3_fp16", ("fp16", "fp16"), 8, 24, Rounding.RTZ, instruction_k=16, structure=SplitSum(31, 24),
                     **_AMD, description="MI300 (CDNA3) v_mfma fp16: groups of 8 products aligned to their own "
                     "largest exponent, truncated at 24 fraction bits; group sum floored to 31 bits and C to 24 "
                     f"relative to the larger exponent, added and rounded to nearest-even float32 ({_MS})"),
    AccumulatorModel("cdna3_bf16", ("bf16", "bf16"), 8, 24, Rounding.RTZ, instruction_k=16, structure=SplitSum(31, 24),
                     **_AMD, description=f"MI300 (CDNA3) v_mfma bf16: as cdna3_fp16 ({_MS})"),
    AccumulatorModel("cdna3_xf32", ("tf32", "tf32"), 4, 24, Rounding.RTZ, instruction_k=8, structure=SplitSum(31, 24),
                     **_AMD, description="MI300 (CDNA3) v_mfma xf32 (1-8-10 inputs): as cdna3_fp16 with groups of 4 "
                     f"({_MS})"),
    AccumulatorModel("cdna3_fp8", ("e4m3fnuz", "e4m3fnuz"), 16, 24, Rounding.RTZ, instruction_k=32,
                     structure=SplitSum(31, 24, interleave=2, acc_drop=25), **_AMD,
                     description="MI300 (CDNA3) v_mfma fp8 (e4m3fnuz; e5m2fnuz through input_formats=): groups of "
                     "16 products as two sums of the even- and odd-indexed ones, each aligned to its own largest "
                     "exponent and truncated at 24 bits, floored at 24 bits to their common exponent and added; then "
                     f"as cdna3_fp16, C dropped when its exponent is more than 25 below ({_MS})"),
    AccumulatorModel("cdna2_fp16", ("fp16", "fp16"), 4, None, instruction_k=4, structure=FmaTree(True), **_AMD,
                     description="MI200 (CDNA2) v_mfma fp16: each group of 4 products summed as a pairwise tree of "
                     "float32 FMAs (nearest even), then added to C in float32; subnormal inputs, partial sums and "
                     f"C flushed to zero ({_MS})"),
    AccumulatorModel("cdna2_bf16", ("bf16", "bf16"), 4, None, instruction_k=4, structure=FmaTree(True), **_AMD,
                     description=f"MI200 (CDNA2) v_mfma bf16_1k: as cdna2_fp16 ({_MS})"),
    AccumulatorModel("cdna1_fp16", ("fp16", "fp16"), 4, None, instruction_k=4, structure=FmaTree(False), **_AMD,
                     description="MI100 (CDNA1) v_mfma fp16: groups of 4 products as a pairwise tree of float32 "
                     f"FMAs (nearest even), added to C in float32; no flushing ({_MS})"),
    AccumulatorModel("cdna1_bf16", ("bf16", "bf16"), 2, None, instruction_k=2, structure=FmaTree(False), **_AMD,
                     description=f"MI100 (CDNA1) v_mfma bf16 (no _1k): as cdna1_fp16 with groups of 2 ({_MS})"),
]}
_PRESETS["cdna3_fp32"] = replace(_PRESETS["fp32_sequential"],
    name="cdna3_fp32", instruction_k=1, description=f"MI300 (CDNA3) v_mfma f32: sequential float32 FMAs in K order, "
    f"each rounded to nearest even ({_MS})")


def get_accumulator(name: AccumulatorModel | str) -> AccumulatorModel:
    """A preset by name (``list_accumulators()``), or the model itself."""
    if isinstance(name, AccumulatorModel):
        return name
    if name not in _PRESETS:
        raise ValueError(f"unknown accumulator model {name!r}; presets: {', '.join(_PRESETS)}")
    return _PRESETS[name]


def list_accumulators() -> list[AccumulatorModel]:
    return list(_PRESETS.values())


# ---- scalar reference (exact arithmetic) --------------------------------------------------------
_UNCLAMPED = -(1 << 30)    # an emin below every exponent: _split then never clamps (exact chunk sums)


def _split(v: Fraction, emin: int, zero_exponent: int | None) -> tuple[Fraction, int] | None:
    """v = s * 2^e with |s| in [1, 2), e clamped below at ``emin`` (then |s| < 1); a zero is
    ``(0, zero_exponent)``, or no term (None) when ``zero_exponent`` is None."""
    if v == 0:
        return None if zero_exponent is None else (Fraction(0), zero_exponent)
    e = max(floor_log2_exact(abs(v)), emin)
    return v / Fraction(2) ** e, e


def _canonical_nan_bits(model: AccumulatorModel) -> int:
    """The float32 bits of the canonical NaN of ``model``'s results: 0x7FFFFFFF, or fp16's 0x7FFF widened to
    float32 (0x7FFFE000) for an fp16 result (SPEC 2b)."""
    if model.result_format.name == "fp16":
        return 0x7F800000 | (CANONICAL_NAN16 & 0x3FF) << 13
    return CANONICAL_NAN32


def _scalar_output(v: float, model: AccumulatorModel) -> float:
    """Step 8 for ``reference_dot``: a NaN result as ``model.nan_output`` says (the double that narrows to the
    canonical float32 bits)."""
    if math.isnan(v) and model.nan_output == "canonical":
        bits = _canonical_nan_bits(model)
        return struct.unpack("<d", struct.pack("<Q", ((bits & 0x7FFFFF) << 29) | (0x7FF << 52)))[0]
    return v


def reference_dot(a: Sequence[float], b: Sequence[float], model: AccumulatorModel | str, c: float = 0.0, *,
                  a_scales: Sequence[float] | None = None, b_scales: Sequence[float] | None = None) -> float:
    """One output element ``c + sum a_k b_k`` under ``model``, step by step in exact arithmetic. A block-scaled
    model takes the scales of ``a``'s row and ``b``'s column, one per ``model.block_scale.block`` elements."""
    model = get_accumulator(model)
    fa, fb = model.formats
    acc_fmt = get_format(model.acc_format)
    st, bs = model.structure, model.block_scale
    if len(a) != len(b):
        raise ValueError(f"dot of lengths {len(a)} and {len(b)}")
    if bs is None and (a_scales is not None or b_scales is not None):
        raise ValueError(f"model {model.name} is not block-scaled: pass no a_scales/b_scales")
    if bs is not None:
        n_blocks = -(-len(a) // bs.block)
        if a_scales is None or b_scales is None or len(a_scales) != n_blocks or len(b_scales) != n_blocks:
            raise ValueError(f"model {model.name} needs {n_blocks} a_scales and b_scales (one per {bs.block})")
    scales = [*(a_scales or ()), *(b_scales or ())]
    if not all(math.isfinite(v) for v in [*a, *b, c, *scales]):     # step 7: IEEE float32 semantics
        def sc(k: int) -> float:                                  # the two block scales of term k (1 without)
            if bs is None or a_scales is None or b_scales is None:
                return 1.0
            return a_scales[k // bs.block] * b_scales[k // bs.block]

        exact = sum(x * y * sc(k) for k, (x, y) in enumerate(zip(a, b))) + c
        return _scalar_output(float(torch.tensor(exact, dtype=torch.float32)), model)

    def to_acc(v: Fraction | float) -> Fraction | float:        # step 4's rounding and overflow
        if isinstance(v, float):                                 # Inf/NaN from an overflow: IEEE from here on
            return v
        if model.overflow == "inf" and abs(v) >= Fraction(2) ** (acc_fmt.emax + 1):
            return math.copysign(math.inf, v)
        r = round_exact(v, acc_fmt, model.acc_rounding)
        return Fraction(r) if math.isfinite(r) else r           # an overflow to Inf stays a float

    def add(x: Fraction | float, y: Fraction | float) -> Fraction | float:
        return float(x) + float(y) if isinstance(x, float) or isinstance(y, float) else x + y

    def add_outer(outer: Fraction | float, acc: Fraction | float) -> Fraction | float:
        if isinstance(outer, float) or isinstance(acc, float):  # Inf involved: IEEE arithmetic
            return float(outer) + float(acc)
        r = round_exact(outer + acc, model.outer_format, model.outer_rounding)
        return Fraction(r) if math.isfinite(r) else r

    z = model.zero_exponent

    def scale_exponent(k: int) -> int:                          # FusedSum: E8M0 exponents add to the product's
        if bs is None or a_scales is None or b_scales is None:
            return 0
        return floor_log2_exact(Fraction(a_scales[k // bs.block]) * Fraction(b_scales[k // bs.block]))

    def products(lo: int, hi: int) -> list[tuple[Fraction, int] | None]:   # step 1, in K order (None: no term)
        out: list[tuple[Fraction, int] | None] = []
        for k in range(lo, hi):
            tx, ty = _split(Fraction(a[k]), fa.emin, z), _split(Fraction(b[k]), fb.emin, z)
            out.append(None if tx is None or ty is None else (tx[0] * ty[0], tx[1] + ty[1] + scale_exponent(k)))
        return out

    def aligned_sum(terms: list[tuple[Fraction, int]], bits: int | None, E: int) -> Fraction:   # steps 3-4
        if bits is None:
            return sum((s * Fraction(2) ** (e - E) for s, e in terms), Fraction(0)) * Fraction(2) ** E
        q = Fraction(1, 1 << bits)
        return sum((round_to_multiple(s * Fraction(2) ** (e - E), q, model.align_rounding) for s, e in terms),
                   Fraction(0)) * Fraction(2) ** E

    def fused(terms: list[tuple[Fraction, int]], acc: Fraction) -> Fraction | float:       # FusedSum, ChunkSum
        if model.align_with_acc and (t_acc := _split(acc, acc_fmt.emin, z)) is not None:
            terms = [*terms, t_acc]
        if not terms:                                           # no term: the group sums to 0
            return acc
        total = aligned_sum(terms, model.align_bits, max(e for _, e in terms))               # step 2: E
        return to_acc(total if model.align_with_acc else acc + total)

    def chunk_terms(lo: int, hi: int) -> list[tuple[Fraction, int]]:                      # ChunkSum
        assert isinstance(st, ChunkSum) and bs is not None and a_scales is not None and b_scales is not None
        out = []
        for c0 in range(lo, hi, st.chunk):
            v = sum((Fraction(a[k]) * Fraction(b[k]) for k in range(c0, min(c0 + st.chunk, hi))), Fraction(0))
            t = _split(v * Fraction(a_scales[c0 // bs.block]) * Fraction(b_scales[c0 // bs.block]), _UNCLAMPED, z)
            if t is not None:
                out.append(t)
        return out

    def split_sum(terms: list[tuple[Fraction, int] | None], acc: Fraction) -> Fraction | float:   # SplitSum
        assert isinstance(st, SplitSum) and model.align_bits is not None
        sums = []
        for i in range(st.interleave):
            subset = [t for t in terms[i::st.interleave] if t is not None]
            if subset:
                Eh = max(e for _, e in subset)
                sums.append((aligned_sum(subset, model.align_bits, Eh), Eh))
        t_acc = _split(acc, acc_fmt.emin, z)
        if not sums and t_acc is None:
            return acc
        exps = [E for _, E in sums] + ([t_acc[1]] if t_acc is not None else [])
        R = max(exps)
        S = Fraction(0)
        if sums:
            Eg = max(E for _, E in sums)
            S = sum((round_to_multiple(v, Fraction(2) ** (Eg - model.align_bits), Rounding.RDOWN) for v, _ in sums),
                    Fraction(0))
            S = round_to_multiple(S, Fraction(2) ** (R - st.sum_bits), Rounding.RDOWN)
        drop = t_acc is None or (st.acc_drop is not None and t_acc[1] < R - st.acc_drop)
        C = Fraction(0) if drop else round_to_multiple(acc, Fraction(2) ** (R - st.acc_bits), Rounding.RDOWN)
        return to_acc(S + C)

    def fma_tree(lo: int, hi: int, acc: Fraction) -> Fraction | float:                    # FmaTree
        assert isinstance(st, FmaTree)
        def ftz(v: Fraction | float, emin: int) -> Fraction | float:
            small = not isinstance(v, float) and v != 0 and abs(v) < Fraction(2) ** emin
            return Fraction(0) if st.flush_subnormals and small else v

        level: list[Fraction | float] = [ftz(ftz(Fraction(a[k]), fa.emin) * ftz(Fraction(b[k]), fb.emin),
                                             acc_fmt.emin) for k in range(lo, hi)]
        level += [Fraction(0)] * (model.group_size - len(level))
        while len(level) > 1:
            level = [ftz(to_acc(add(level[i], level[i + 1])), acc_fmt.emin) for i in range(0, len(level), 2)]
        return to_acc(add(ftz(acc, acc_fmt.emin), level[0]))

    promote = model.promote_every
    outer: Fraction | float = Fraction(c) if promote else Fraction(0)
    acc: Fraction | float = Fraction(0) if promote else to_acc(Fraction(c))
    for start in range(0, len(a), model.group_size):
        if promote and start and start % promote == 0:          # step 5
            outer, acc = add_outer(outer, acc), Fraction(0)
        if isinstance(acc, float):                              # step 6: an Inf accumulator stays Inf
            continue
        stop = min(start + model.group_size, len(a))
        if isinstance(st, FmaTree):
            acc = fma_tree(start, stop, acc)
        elif isinstance(st, SplitSum):
            acc = split_sum(products(start, stop), acc)
        elif isinstance(st, ChunkSum):
            acc = fused(chunk_terms(start, stop), acc)
        else:
            acc = fused([t for t in products(start, stop) if t is not None], acc)
    if promote:
        acc = add_outer(outer, acc)
    return _scalar_output(float(acc), model)


# ---- vectorised implementation -------------------------------------------------------------------
_NO_EXP = -(1 << 20)       # exponent of "no term": far below the floor, so its shifts clamp to -60 (_align)


def _significand_exponent(x: torch.Tensor, emin: int,
                          zero_exponent: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, e) with x = s * 2^e, |s| in [1, 2) (e >= emin, else |s| < 1); zeros give (0, zero_exponent),
    or (0, _NO_EXP) when zero terms take no part. ``x`` is float64 holding values of a format with
    emin >= -1022 (so never a float64 subnormal)."""
    e = torch.clamp(((x.view(torch.int64) >> 52) & 0x7FF) - 1023, min=emin)
    s = x * pow2(-e)
    return s, torch.where(x == 0, _NO_EXP if zero_exponent is None else zero_exponent, e)


def _align(s: torch.Tensor, shift: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """s * 2^shift (shift <= 0) rounded to a multiple of 2^-align_bits, returned in units of
    2^-align_bits (an exact integer-valued float)."""
    assert model.align_bits is not None
    v = s * pow2(torch.clamp(shift, min=-60) + model.align_bits, s.dtype)   # -60: non-zero stays non-zero
    return {"rtz": torch.trunc, "rdown": torch.floor, "rne": torch.round}[model.align_rounding](v)


def _terms_update(s: torch.Tensor, e: torch.Tensor, acc: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """Steps 2-4 for one group of terms with aligned sums (align_bits set): s/e (M, T, N) significands and
    exponents of the group's terms, acc (M, N) the accumulator (float64 holding acc_format values) -> the next
    accumulator. The aligned terms are integers in units of 2^(E - align_bits), summed in s's dtype: float64, or
    float32 where ``_narrow_ok`` proves that exact."""
    assert model.align_bits is not None
    acc_inf = torch.isinf(acc)                                  # step 6: an Inf accumulator stays Inf
    acc_fin = torch.where(acc_inf, 0.0, acc)
    E = torch.clamp(e.amax(dim=1), min=_exponent_floor(model))  # step 2: 2^(E - align_bits) is normal
    if model.align_with_acc:
        s_acc, e_acc = _significand_exponent(acc_fin, get_format(model.acc_format).emin, model.zero_exponent)
        E = torch.maximum(E, e_acc)
    units = _align(s, e - E[:, None, :], model).sum(dim=1)
    if model.align_with_acc:
        units = units + _align(s_acc.to(s.dtype), e_acc - E, model)
    total = units.double() * pow2(E - model.align_bits)          # exact
    new = _finish(total if model.align_with_acc else add_round_to_odd(acc_fin, total), model)
    return torch.where(acc_inf, acc, new)


def _group_update(sa: torch.Tensor, ea: torch.Tensor, sb: torch.Tensor, eb: torch.Tensor, acc: torch.Tensor,
                  model: AccumulatorModel) -> torch.Tensor:
    """``FusedSum`` with aligned terms: sa/ea (M, G), sb/eb (G, N) significands/exponents of the inputs (block-scale
    exponents included), the products (M, G, N) are the group's terms (``_terms_update``)."""
    return _terms_update(sa[:, :, None] * sb[None, :, :], ea[:, :, None] + eb[None, :, :], acc, model)


def _exact_group_update(products: torch.Tensor, acc: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """Steps 2-4 when terms are kept exact (align_bits=None): ``products`` is the group's exact sum."""
    return torch.where(torch.isinf(acc), acc, _finish(add_round_to_odd(acc, products), model))


def _chunk_update(a_fin: torch.Tensor, b_fin: torch.Tensor, a_sc: torch.Tensor, b_sc: torch.Tensor,
                  acc: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """``ChunkSum`` for one group: a_fin (M, G), b_fin (G, N) the finite operands, a_sc (M, G) / b_sc (G, N) each
    element's block scale (finite); the exact chunk sums times their scales are the group's terms."""
    st = model.structure
    assert isinstance(st, ChunkSum)
    terms = []
    for c0 in range(0, a_fin.shape[1], st.chunk):
        ch = slice(c0, c0 + st.chunk)
        terms.append((a_fin[:, ch] @ b_fin[ch]) * a_sc[:, c0, None] * b_sc[None, c0, :])   # exact (validated)
    s, e = _significand_exponent(torch.stack(terms, dim=1), -1022, model.zero_exponent)
    return _terms_update(s, e, acc, model)


def _floor_to(v: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """v floored (toward -inf) to a multiple of 2^exponent (exact power-of-two scalings)."""
    return torch.floor(v * pow2(-exponent)) * pow2(exponent)


def _split_update(sa: torch.Tensor, ea: torch.Tensor, sb: torch.Tensor, eb: torch.Tensor, acc: torch.Tensor,
                  model: AccumulatorModel) -> torch.Tensor:
    """``SplitSum`` (AMD CDNA3) for one group: inputs as ``_group_update``."""
    st, F = model.structure, model.align_bits
    assert isinstance(st, SplitSum) and F is not None
    acc_inf = torch.isinf(acc)
    acc_fin = torch.where(acc_inf, 0.0, acc)
    floor = _exponent_floor(model)
    prod, ep = sa[:, :, None] * sb[None, :, :], ea[:, :, None] + eb[None, :, :]
    sums, exps = [], []
    for i in range(min(st.interleave, ep.shape[1])):            # each subset aligned to its own largest exponent
        Eh = torch.clamp(ep[:, i::st.interleave].amax(dim=1), min=floor)
        units = _align(prod[:, i::st.interleave], ep[:, i::st.interleave] - Eh[:, None, :], model).sum(dim=1)
        sums.append(units * pow2(Eh - F))
        exps.append(Eh)
    Eg = torch.stack(exps).amax(dim=0)
    floored = [_floor_to(v, Eg - F) for v in sums]
    S = floored[0]
    for v in floored[1:]:                                       # exact: integers in units of 2^(Eg - F)
        S = S + v
    _, Ec = _significand_exponent(acc_fin, get_format(model.acc_format).emin, model.zero_exponent)
    R = torch.maximum(Eg, Ec)
    C = _floor_to(acc_fin, R - st.acc_bits)
    if st.acc_drop is not None:
        C = torch.where(Ec < R - st.acc_drop, 0.0, C)
    new = _finish(_floor_to(S, R - st.sum_bits) + C, model)      # exact: < 2^(R + 7) in units of 2^(R - sum_bits)
    return torch.where(acc_inf, acc, new)


def _flush(v: torch.Tensor, emin: int, on: bool) -> torch.Tensor:
    """Subnormals (|v| < 2^emin) flushed to zero (sign kept) when ``on``."""
    return torch.where(v.abs() < 2.0 ** emin, v * 0.0, v) if on else v


def _tree_update(a_fin: torch.Tensor, b_fin: torch.Tensor, acc: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """``FmaTree`` (AMD CDNA1/2) for one group: a_fin (M, G), b_fin (G, N) the finite operands."""
    assert isinstance(model.structure, FmaTree)
    flush = model.structure.flush_subnormals
    fa, fb = model.formats
    emin = get_format(model.acc_format).emin
    acc_inf = torch.isinf(acc)
    acc_fin = torch.where(acc_inf, 0.0, acc)
    level = _flush(_flush(a_fin, fa.emin, flush)[:, :, None] * _flush(b_fin, fb.emin, flush)[None, :, :], emin, flush)
    if level.shape[1] < model.group_size:                       # a short last group: zero products
        level = torch.cat([level, level.new_zeros(level.shape[0], model.group_size - level.shape[1],
                                                  level.shape[2])], dim=1)
    while level.shape[1] > 1:
        level = _flush(_finish(add_round_to_odd(level[:, 0::2], level[:, 1::2]), model), emin, flush)
    new = _finish(add_round_to_odd(_flush(acc_fin, emin, flush), level[:, 0]), model)
    return torch.where(acc_inf, acc, new)


def _finish(total: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """Step 4's rounding of finite float64 ``total`` to the accumulator format, with the model's
    overflow; a zero result is +0 (step 6)."""
    fmt = get_format(model.acc_format)
    r = round_values(total, fmt, model.acc_rounding)
    if model.overflow == "inf":
        r = torch.where(total.abs() >= 2.0 ** (fmt.emax + 1), total * math.inf, r)
    return torch.where(r == 0, 0.0, r)                          # a zero result is +0 (step 6)


def _output_nans(out: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """Step 8: the NaNs of the float32 result as ``model.nan_output`` says."""
    if model.nan_output == "ieee":
        return out
    nan = torch.tensor(_canonical_nan_bits(model), dtype=torch.int64).to(torch.int32).view(torch.float32)
    return torch.where(out.isnan(), nan.to(out.device), out)


def _check_operand(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    return x


def _narrow_ok(model: AccumulatorModel) -> bool:
    """True when float32/int32 arithmetic is exact for the group sums of a ``FusedSum``: products of the input
    significands fit 24 bits, and the sum of G + 1 aligned terms (integers < 2^(align_bits + 2)) does."""
    fa, fb = model.formats
    if not isinstance(model.structure, FusedSum) or model.align_bits is None or fa.mbits + fb.mbits + 2 > 24:
        return False
    return model.align_bits + 2 + math.ceil(math.log2(model.group_size + 1)) <= 24


def _check_exact_budget(model: AccumulatorModel, K: int) -> None:
    """With exact terms (align_bits=None), a group's products must sum exactly in float64."""
    if model.align_bits is not None or min(model.group_size, K) <= 1 or isinstance(model.structure, FmaTree):
        return
    fa, fb = model.formats
    top = fa.emax + fb.emax + 2
    bottom = (fa.emin - fa.mbits) + (fb.emin - fb.mbits)
    if top - bottom + math.ceil(math.log2(min(model.group_size, K))) > 53:
        raise ValueError(f"model {model.name}: {min(model.group_size, K)} exact {fa.name} x {fb.name} products "
                         "do not sum exactly in float64; use align_bits or smaller groups")


def _check_scales(x: Any, name: str, shape: tuple[int, int], bs: BlockScale) -> torch.Tensor:
    """Block scales as float64: a float tensor of ``shape`` whose non-NaN values are ``bs.scale_format`` values."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor of {bs.scale_format} values")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one scale per {bs.block} elements of K), "
                         f"got {tuple(x.shape)}")
    x64 = x.to(torch.float64)
    ok = ~torch.isnan(x64)
    if not torch.equal(quantize(x64[ok], bs.format, saturate=False, out_dtype=torch.float64), x64[ok]):
        raise ValueError(f"{name} holds values that are not {bs.scale_format} scales")
    return x64


def emulated_matmul(a: Any, b: Any, model: AccumulatorModel | str, c: torch.Tensor | None = None, *,
                    a_scales: torch.Tensor | None = None, b_scales: torch.Tensor | None = None,
                    input_formats: tuple[str, str] | None = None, check_inputs: bool = True,
                    backend: str = "auto") -> torch.Tensor:
    """``c + a @ b`` (float32, M x N) computed as the accumulator ``model`` computes it, bit for bit.

    ``a`` (M x K) and ``b`` (K x N) hold values of the model's input formats (checked unless
    ``check_inputs=False``; ``input_formats=("e4m3fn", "e5m2")`` runs the model on other operand formats, e.g.
    mixed E4M3 x E5M2); ``c`` is an optional float32 initial accumulator. A block-scaled model
    (``model.block_scale``) takes ``a_scales`` (M x ceil(K / block)) and ``b_scales`` (ceil(K / block) x N), values
    of its scale format. Work is chunked along K one group at a time, so memory is O(M * N * group_size) (eager) or
    O(M * N) (``backend="compiled"``, the same function fused by torch.compile; ``backend="native"``, the C/CUDA
    builds of ``cuda_ext/lowprec_accum.h``, blocked and vectorised, for the fused-sum models ``native_unsupported``
    accepts).
    ``"auto"`` (the default) is native where ``native_unsupported`` allows it, else eager (never compiled). Same bits.
    The result of an fp16-output model is a float32 tensor holding fp16 values.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    model = get_accumulator(model)
    if input_formats is not None:
        if not isinstance(input_formats, (tuple, list)) or len(input_formats) != 2:
            raise ValueError(f"input_formats must name two formats (a's and b's), got {input_formats!r}")
        model = replace(model, input_formats=(input_formats[0], input_formats[1]))
    a, b = _check_operand(a, "a"), _check_operand(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a is {tuple(a.shape)}, b is {tuple(b.shape)}")
    M, K = a.shape
    N = b.shape[1]
    bs = model.block_scale
    if bs is None and (a_scales is not None or b_scales is not None):
        raise ValueError(f"model {model.name} is not block-scaled: pass no a_scales/b_scales")
    if bs is not None:
        if a_scales is None or b_scales is None:
            raise ValueError(f"model {model.name} is block-scaled: pass a_scales and b_scales")
        nb = -(-K // bs.block)
        a_scales = _check_scales(a_scales, "a_scales", (M, nb), bs)
        b_scales = _check_scales(b_scales, "b_scales", (nb, N), bs)
    backend = resolve_backend(backend, lambda: native_unsupported(model, a.device))
    if c is not None and (not isinstance(c, torch.Tensor) or c.shape != (M, N)):
        raise ValueError(f"c must be a ({M}, {N}) tensor")
    _check_exact_budget(model, K)
    fa, fb = model.formats
    if check_inputs:
        _check_format_values(a, fa, "a")
        _check_format_values(b, fb, "b")
    if backend == "native":                     # steps 1-8 from the float32 values (E8M0 scales: exponents)
        return _native_emulated_matmul(a, b, c, model, a_scales, b_scales)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    c64 = torch.zeros(M, N, dtype=torch.float64, device=a.device) if c is None else c.to(torch.float64)
    outer_fmt = get_format(model.outer_format)

    # step 1, once for every backend: finite parts of the operands as significands and exponents
    a_fin, b_fin = torch.where(torch.isfinite(a64), a64, 0.0), torch.where(torch.isfinite(b64), b64, 0.0)
    sa, ea = _significand_exponent(a_fin, fa.emin, model.zero_exponent)
    sb, eb = _significand_exponent(b_fin, fb.emin, model.zero_exponent)
    if bs is not None:
        assert a_scales is not None and b_scales is not None
        a_sc = a_scales.repeat_interleave(bs.block, dim=1)[:, :K]             # each element's scale
        b_sc = b_scales.repeat_interleave(bs.block, dim=0)[:K]
        a_sc_fin, b_sc_fin = torch.nan_to_num(a_sc, nan=1.0), torch.nan_to_num(b_sc, nan=1.0)  # NaN: step 7
        if isinstance(model.structure, FusedSum):               # E8M0 exponents join the products' exponents
            ea, eb = ea + floor_log2(a_sc_fin), eb + floor_log2(b_sc_fin)
        a64, b64 = a64 * a_sc, b64 * b_sc                       # step 7 sees the scaled operands
    if _narrow_ok(model):
        sa, ea, sb, eb = sa.float(), ea.int(), sb.float(), eb.int()
    promote = model.promote_every
    c_fin = torch.where(torch.isfinite(c64), c64, 0.0)
    acc = torch.zeros_like(c64) if promote else _finish(c_fin, model)   # the seed (steps 4, 5; +0 by step 6)

    st = model.structure
    fused = isinstance(st, FusedSum) and model.align_bits is not None
    step = compiled(_group_update) if backend == "compiled" and fused else _group_update
    outer = c_fin.clone() if promote else c_fin                 # the FP32 outer sum (read only when promoting)
    G = model.group_size
    for start in range(0, K, G):
        if promote and start and start % promote == 0:
            outer = round_values(add_round_to_odd(outer, acc), outer_fmt, model.outer_rounding)
            acc = torch.zeros_like(acc)
        sl = slice(start, min(start + G, K))
        if isinstance(st, FmaTree):
            acc = _tree_update(a_fin[:, sl], b_fin[sl], acc, model)
        elif isinstance(st, SplitSum):
            acc = _split_update(sa[:, sl], ea[:, sl], sb[sl], eb[sl], acc, model)
        elif isinstance(st, ChunkSum):
            acc = _chunk_update(a_fin[:, sl], b_fin[sl], a_sc_fin[:, sl], b_sc_fin[sl], acc, model)
        elif model.align_bits is None:  # exact terms: BLAS sums them exactly (_check_exact_budget)
            acc = _exact_group_update(a_fin[:, sl] @ b_fin[sl], acc, model)
        else:
            acc = step(sa[:, sl], ea[:, sl], sb[sl], eb[sl], acc, model)
    if promote:
        acc = round_values(add_round_to_odd(outer, acc), outer_fmt, model.outer_rounding)
    return _output_nans(_ieee_nonfinite(acc.to(torch.float32), a64, b64, c64), model)


def _ieee_nonfinite(out: torch.Tensor, a64: torch.Tensor, b64: torch.Tensor, c64: torch.Tensor) -> torch.Tensor:
    """Step 7: where an input of a dot product (a value of a's row, of b's column, or its c) is NaN/Inf, the IEEE
    float32 result of the exact sum; every other dot product keeps ``out`` (its own overflow rule included)."""
    nonfinite = ((~torch.isfinite(a64)).any(dim=1)[:, None] | (~torch.isfinite(b64)).any(dim=0)[None, :]
                 | ~torch.isfinite(c64))
    if not bool(nonfinite.any()):
        return out
    ieee = (a64 @ b64 + c64).to(torch.float32)
    return torch.where(nonfinite & ~torch.isfinite(ieee), ieee, out)


def _prescale_bits(fmt: FloatFormat) -> int:
    """log2 of a bound on the native kernels' pre-scaled operands s * 2^(e + mbits - emin) (lowprec_accum.h: their
    fast path takes formats whose two bounds multiply to at most 2^125)."""
    return fmt.emax + 1 + fmt.mbits - fmt.emin


def native_unsupported(model: AccumulatorModel, device: torch.device) -> str | None:
    """Why the native (C/CUDA) backend cannot run ``model`` here, or None when it can.

    The kernels (``cuda_ext/lowprec_accum.h``) cover fused-sum models with aligned terms, without block scales or
    with E8M0 ones (their exponents join the products' inside the fused step: ``blackwell_mxf8f6f4``), whose
    significand products are exact in float32 (at most 22 fraction bits between the two input formats: FP8, FP6,
    FP4, E8M0, fp16, bf16, tf32), with ``align_bits`` F <= 28, accumulators rounded by rtz or rne.
    The bound on F is the kernels' only limit on the group sum: every aligned term is an integer of magnitude
    below 2^(F + 2), so one term fits int32 when F <= 28; where a group's G + 1 terms may not fit int32, the
    kernels sum the products in int32 chunks (``_native_model_args``: ``sum_chunk``) and add those into a wide
    exact sum (a group's terms stay below 2^(F + 2 + ceil(log2(G + 1))) <= 2^51 for every valid model, see
    ``AccumulatorModel``: exact in float64). So any group size is covered: the 25-bit NVIDIA presets (Hopper and
    Blackwell fp16/bf16, Blackwell FP8) too."""
    from .native import compiler

    if device.type not in ("cpu", "cuda"):
        return f"the native backend runs on CPU or CUDA tensors, not {device.type}"
    if compiler(device.type == "cuda") is None:
        return f"the native backend on {device.type} needs {'nvcc' if device.type == 'cuda' else 'a C compiler'}"
    if not isinstance(model.structure, FusedSum):
        return "the native backend covers fused-sum models (not AMD split sums, FMA trees or FP4 chunk sums)"
    if model.align_bits is None:
        return "the native backend covers models with aligned terms (align_bits set), not exact terms"
    fa, fb = model.formats
    if fa.mbits + fb.mbits + 2 > 24:
        return (f"the native backend needs significand products exact in float32: {fa.name} x {fb.name} products "
                f"have {fa.mbits + fb.mbits + 2} bits")
    if model.align_bits > 28:
        return (f"the native backend rounds each aligned term to an int32: align_bits={model.align_bits} makes "
                "terms up to 2^(align_bits + 2), over 2^30 (it takes align_bits <= 28)")
    for attr in ("acc_rounding", "outer_rounding"):
        if getattr(model, attr) not in (Rounding.RTZ, Rounding.RNE):
            return f"the native backend rounds the accumulators by rtz or rne, not {getattr(model, attr)!r}"
    return None


def _native_model_args(model: AccumulatorModel) -> tuple[list[int], float, float]:
    """``model`` as the native kernels take it (``lowprec.ops``): the int32 fields of ``lp_accum_model``
    (``AccumModelC.INT_FIELDS``) in order, then ``acc_max`` and ``outer_max``.

    ``sum_chunk``, the last int, says how the kernels sum a group's aligned terms (lowprec_accum.h). A product's
    term is an integer of magnitude at most T = ceil(smax_a * smax_b * 2^F) (smax = 2 - 2^-mbits, the largest
    significand of the format; rounding a value at most that to an integer stays within its ceiling) and the
    accumulator's at most 2^(F + 1) (its significand is below 2). 0 when G * T + 2^(F + 1) <= 2^31 - 1: one
    int32 sum holds the group; otherwise floor((2^31 - 1) / T) (>= 1 for F <= 28, T < 2^(F + 2)): the products
    per int32 sum, each such sum then added into a wide sum that starts from the accumulator's term."""
    acc_fmt, outer_fmt = get_format(model.acc_format), get_format(model.outer_format)
    fa, fb = model.formats
    prescaled = model.block_scale is None and _prescale_bits(fa) + _prescale_bits(fb) <= 125   # scales: exponents
    F, top = model.align_bits, (1 << 31) - 1
    assert F is not None                          # native_unsupported: aligned terms only
    T = -(-((2 ** (fa.mbits + 1) - 1) * (2 ** (fb.mbits + 1) - 1) << F) // 2 ** (fa.mbits + fb.mbits))
    sum_chunk = 0 if model.group_size * T + (2 ** (F + 1) if model.align_with_acc else 0) <= top else top // T
    ints = [model.group_size, F, model.align_rounding.code, int(model.align_with_acc),
            _NO_EXP if model.zero_exponent is None else model.zero_exponent, _exponent_floor(model), fa.emin, fb.emin,
            int(prescaled), fa.mbits - fa.emin, fb.mbits - fb.emin,
            acc_fmt.mbits, acc_fmt.emin, model.acc_rounding.code,
            int(model.overflow == "inf"), model.promote_every or 0,
            outer_fmt.mbits, outer_fmt.emin, model.outer_rounding.code,
            sum_chunk]
    return [int(i) for i in ints], float(acc_fmt.max), float(outer_fmt.max)


def _native_gemm(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor | None, model: AccumulatorModel,
                 exp_a: torch.Tensor | None = None, exp_b: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 1-6 of ``seed + a @ b`` (seed: the accumulator's, or the outer one's when promoting; None: 0) by the
    op ``lowprec::emulated_matmul``: ``a``, ``b`` values of the input formats (NaN/Inf count as 0: step 7 is
    the caller's); float32 (M, N). A block-scaled model takes ``exp_a`` (M, nb) and ``exp_b`` (nb, N), the
    exponents of its E8M0 scales (one per ``block_scale.block`` elements along K)."""
    from . import ops

    M, N = a.shape[0], b.shape[1]
    seed = torch.zeros(M, N, dtype=torch.float64, device=a.device) if seed is None else seed.double()
    ints, acc_max, outer_max = _native_model_args(model)
    block = 0 if model.block_scale is None else model.block_scale.block
    if block and (exp_a is None or exp_b is None):
        raise ValueError(f"model {model.name} is block-scaled: the native GEMM needs its scale exponents")
    xa, xb = ((x.to(torch.int32).contiguous() if block and x is not None else None) for x in (exp_a, exp_b))
    return ops.emulated_gemm(a.float().contiguous(), b.float().contiguous(), seed.contiguous(), ints, acc_max,
                             outer_max, xa, xb, block)


def _native_emulated_matmul(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, model: AccumulatorModel,
                            a_scales: torch.Tensor | None = None, b_scales: torch.Tensor | None = None
                            ) -> torch.Tensor:
    """``emulated_matmul``'s native path from checked operands (values of the model's input formats, any float
    dtype, on one device) and ``c`` (float32 or None), without its float64 prologue: steps 1-6 in the kernel, the
    seed rounded here (step 4; c's NaN/Inf count as 0), step 7 only where an input is NaN/Inf, step 8.

    A block-scaled fused sum (E8M0 scales inside the fused step, ``blackwell_mxf8f6f4``) takes checked
    ``a_scales`` (M, nb) and ``b_scales`` (nb, N), nb = ceil(K / block): their exponents join the operands' in
    step 1 (a NaN scale counts as 1 there), and step 7 sees the scaled operands (a NaN scale makes its dot
    products NaN), as on the eager path."""
    bs = model.block_scale
    if bs is not None and (a_scales is None or b_scales is None):
        raise ValueError(f"model {model.name} is block-scaled: pass a_scales and b_scales")
    if bs is None and (a_scales is not None or b_scales is not None):
        raise ValueError(f"model {model.name} is not block-scaled: pass no a_scales/b_scales")
    seed = None
    if c is not None:
        c64 = c.double()
        c_fin = torch.where(torch.isfinite(c64), c64, 0.0)
        seed = c_fin if model.promote_every else _finish(c_fin, model)
    if bs is None or a_scales is None or b_scales is None:
        out = _native_gemm(a, b, seed, model)
    else:
        a_sc, b_sc = a_scales.double(), b_scales.double()
        out = _native_gemm(a, b, seed, model, floor_log2(torch.nan_to_num(a_sc, nan=1.0)),
                           floor_log2(torch.nan_to_num(b_sc, nan=1.0)))
    # step 7 where an operand, c or (block-scaled) a scale is not finite: E8M0 scales (<= 2^127) times values of
    # the input formats never overflow float64, so those are the dot products the eager path sends to IEEE
    if not all(bool(torch.isfinite(x).all()) for x in (a, b, *([] if c is None else [c]),
                                                           *([] if bs is None else [a_sc, b_sc]))):
        a64, b64 = a.double(), b.double()
        if bs is not None:
            K = a.shape[1]
            a64 = a64 * a_sc.repeat_interleave(bs.block, dim=1)[:, :K]
            b64 = b64 * b_sc.repeat_interleave(bs.block, dim=0)[:K]
        out = _ieee_nonfinite(out, a64, b64, torch.zeros_like(out, dtype=torch.float64) if c is None else c.double())
    return _output_nans(out, model)


# ---- block-scaled GEMM -------------------------------------------------------------------------------------
def _check_format_values(x: torch.Tensor, fmt: FloatFormat, name: str) -> None:
    """ValueError unless every finite element of ``x`` is a value of ``fmt`` (a format exact in float32):
    ``x`` survives float32 unchanged and ``quantize`` (RNE, saturating) leaves it unchanged."""
    x32 = x.float()
    finite = torch.isfinite(x32)
    exact = x.dtype == torch.float32 or torch.equal(torch.where(torch.isfinite(x), x, 0.0),
                                                    torch.where(finite, x32, 0.0).to(x.dtype))
    fin = x32[finite] if not bool(finite.all()) else x32       # E8M0 has no zero: never invent one
    if not (exact and torch.equal(quantize(fin, fmt, saturate=True), fin)):
        raise ValueError(f"{name} holds values that are not {fmt.name} values: quantize it first")


def _check_block_scales(x: Any, name: str, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one scale per K block), got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device}, the operands on {device}")
    return x


def emulated_scaled_matmul(a: Any, b: Any, model: AccumulatorModel | str, scale_a: torch.Tensor,
                           scale_b: torch.Tensor, k_block: int, *, check_inputs: bool = True,
                           backend: str = "auto") -> torch.Tensor:
    """The block-scaled GEMM of fine-grained FP8 training (DeepGEMM), with the accumulator ``model``: float32 (M, N).

    ``a`` (M, K) and ``b`` (K, N) hold values of the model's input formats (checked unless ``check_inputs=False``);
    ``scale_a`` (M, ceil(K / k_block)) and ``scale_b`` (ceil(K / k_block), N) are float32. For each K block of
    ``k_block`` products (the last one may be shorter), in K order, from ``out = 0``:

    - ``partial = emulated_matmul(a[:, blk], b[blk], model)``: the model's result of the block from a zero
      accumulator (steps 1-7 of the module doc; a NaN/Inf operand in the block makes the partial IEEE's);
    - ``s = float32(scale_a[m, blk] * scale_b[blk, n])`` (rounded to nearest even);
    - ``out = float32(out + s * partial)``, one fused multiply-add rounded once to nearest even: the product
      is exact in float64, the sum is rounded to odd and then to float32 (no double rounding). NaN and Inf
      follow IEEE arithmetic (a NaN scale, as of an MX NaN tile, makes its block's outputs NaN).

    NaNs of the result follow ``model.nan_output`` (step 8). ``backend``: ``"eager"`` (that loop, one
    ``emulated_matmul`` per block), ``"compiled"`` (the same loop on the compiled group update), ``"native"``
    (the loop inside the C/CUDA kernel of ``lowprec::emulated_scaled_matmul``: per-block partials and the scaled
    fold per output element; models ``native_unsupported`` accepts) or ``"auto"`` (native where it covers the
    model, else eager). Same bits.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    model = get_accumulator(model)
    if model.block_scale is not None:
        raise ValueError(f"model {model.name} is block-scaled inside the unit: use emulated_matmul's a_scales/b_scales")
    a, b = _check_operand(a, "a"), _check_operand(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a is {tuple(a.shape)}, b is {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"a is on {a.device}, b on {b.device}")
    if isinstance(k_block, bool) or not isinstance(k_block, int):
        raise TypeError(f"k_block must be an int, got {type(k_block).__name__}")
    if k_block < 1:
        raise ValueError(f"k_block must be >= 1, got {k_block}")
    M, K = a.shape
    N = b.shape[1]
    nb = -(-K // k_block)
    scale_a = _check_block_scales(scale_a, "scale_a", (M, nb), a.device)
    scale_b = _check_block_scales(scale_b, "scale_b", (nb, N), a.device)
    backend = resolve_backend(backend, lambda: native_unsupported(model, a.device))
    _check_exact_budget(model, min(K, k_block))
    fa, fb = model.formats
    if check_inputs:
        _check_format_values(a, fa, "a")
        _check_format_values(b, fb, "b")
    if backend == "native":
        return _output_nans(_native_scaled_matmul(a, b, model, scale_a, scale_b, k_block), model)
    out = torch.zeros(M, N, dtype=torch.float64, device=a.device)
    for blk, k0 in enumerate(range(0, K, k_block)):
        sl = slice(k0, min(k0 + k_block, K))
        partial = emulated_matmul(a[:, sl], b[sl], model, check_inputs=False, backend=backend).double()
        s = (scale_a[:, blk, None].double() * scale_b[None, blk].double()).float().double()
        out = add_round_to_odd(out, s * partial).float().double()
    return _output_nans(out.float(), model)


def _native_scaled_matmul(a: torch.Tensor, b: torch.Tensor, model: AccumulatorModel, scale_a: torch.Tensor,
                          scale_b: torch.Tensor, k_block: int) -> torch.Tensor:
    """``emulated_scaled_matmul``'s loop by the kernel of ``lowprec::emulated_scaled_matmul``: per block steps 1-6
    and the scaled fold in C/CUDA; step 7 of each block, where an operand is NaN/Inf, from the IEEE float64
    products of the blocks (one batched matmul)."""
    from . import ops

    M, K = a.shape
    N = b.shape[1]
    ieee = None
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        a64, b64 = a.double(), b.double()
        nb, pad = -(-K // k_block), -K % k_block
        a_blocks = torch.nn.functional.pad(a64, (0, pad)).view(M, nb, k_block).transpose(0, 1)
        b_blocks = torch.nn.functional.pad(b64, (0, 0, 0, pad)).view(nb, k_block, N)
        ieee = torch.bmm(a_blocks, b_blocks).float()
    ints, acc_max, outer_max = _native_model_args(model)
    return ops.emulated_scaled_gemm(a.float().contiguous(), b.float().contiguous(), scale_a.contiguous(),
                                    scale_b.contiguous(), ieee, k_block, ints, acc_max, outer_max)
