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

Every power of two the implementations build is a normal number (float64 for sums, float32 for the
aligned terms of the narrow path): E stays at or above the exponent floor, and a model whose floor
minus ``align_bits`` would leave float64's range is rejected.

Implementations that agree bit for bit: ``reference_dot`` (scalar, Python ``Fraction``, readable
against the steps above) and ``emulated_matmul`` (vectorised torch, eager or compiled, chunked along K;
or the native C/CUDA builds of ``cuda_ext/lowprec_accum.h``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Sequence

import torch

from .formats import FloatFormat, get_format
from .rounding import (BACKENDS, add_round_to_odd, canonical_rounding, compiled, floor_log2_exact, pow2, quantize,
                       round_exact, round_values)

ALIGN_ROUNDINGS = ("rtz", "rdown", "rne")
NAN_OUTPUTS = ("canonical", "ieee")
OVERFLOWS = ("inf", "ieee")
CANONICAL_NAN32 = 0x7FFFFFFF


@dataclass(frozen=True)
class AccumulatorModel:
    """A configurable limited-precision accumulator (see the module doc for the exact semantics)."""

    name: str
    input_formats: tuple[str, str] = ("e4m3fn", "e4m3fn")
    group_size: int = 32
    align_bits: int | None = 13
    align_rounding: str = "rtz"
    align_with_acc: bool = True
    acc_format: str = "e8m13"
    acc_rounding: str = "rtz"
    promote_every: int | None = None
    outer_format: str = "fp32"
    outer_rounding: str = "rne"
    description: str = ""
    zero_exponent: int | None = -126
    nan_output: str = "canonical"
    overflow: str = "inf"

    def __post_init__(self) -> None:
        for f in (*self.input_formats, self.acc_format, self.outer_format):
            get_format(f)                                   # unknown names raise here
        if len(self.input_formats) != 2:
            raise ValueError("input_formats must name two formats (a's and b's)")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
        if self.align_rounding not in ALIGN_ROUNDINGS:
            raise ValueError(f"unknown align_rounding {self.align_rounding!r}; expected one of {ALIGN_ROUNDINGS}")
        for attr in ("acc_rounding", "outer_rounding"):
            if canonical_rounding(getattr(self, attr)) == "stochastic":
                raise ValueError(f"{attr}: stochastic rounding is not modelled in accumulators")
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
        if _exponent_floor(self) - (self.align_bits or 0) < -1022:
            raise ValueError(f"terms as small as 2^{_exponent_floor(self)} (input formats, zero_exponent) "
                             f"aligned to {self.align_bits} bits leave float64's normal range")

    @property
    def formats(self) -> tuple[FloatFormat, FloatFormat]:
        return get_format(self.input_formats[0]), get_format(self.input_formats[1])

    def with_(self, **changes: Any) -> "AccumulatorModel":
        """A copy with some knobs changed (validated again)."""
        return replace(self, **changes)


def _exponent_floor(model: AccumulatorModel) -> int:
    """The smallest exponent a term of ``model`` can have (module doc, step 2): E is never taken below it."""
    fa, fb = model.formats
    lows = [fa.emin + fb.emin, get_format(model.acc_format).emin]
    if model.zero_exponent is not None:
        lows.append(2 * model.zero_exponent)
    return min(lows)


def _fhmp(name: str, fmt: str, group: int, bits: int, what: str) -> AccumulatorModel:
    return AccumulatorModel(name, (fmt, fmt), group, bits, "rtz", True, "fp32", "rtz", description=what)


_IEEE: dict[str, Any] = dict(zero_exponent=None, nan_output="ieee", overflow="ieee")   # references, not hardware

_PRESETS: dict[str, AccumulatorModel] = {m.name: m for m in [
    AccumulatorModel("exact", ("e4m3fn", "e4m3fn"), 1 << 30, None, "rtz", True, "fp32", "rne", **_IEEE,
                     description="FP8 products summed exactly, rounded once to float32 (RNE): the reference"),
    AccumulatorModel("fp32_sequential", ("fp32", "fp32"), 1, None, "rtz", True, "fp32", "rne", **_IEEE,
                     description="IEEE float32 fused multiply-add, one product at a time in K order"),
    AccumulatorModel("hopper_fp8", description="H100 FP8 WGMMA: 32 products + accumulator aligned, 13 fraction "
                     "bits truncated, E8M13 (FP22) accumulator truncated; no promotion (SPEC 2, KM/MS)"),
    AccumulatorModel("hopper_fp8_promoted", promote_every=128,
                     description="hopper_fp8 with DeepSeek-V3/DeepGEMM promotion to FP32 every N_C = 128"),
    AccumulatorModel("ada_fp8", group_size=16, description="Ada FP8: 16 products per group, 13-bit cut (KM)"),
    AccumulatorModel("blackwell_fp8", group_size=32, align_bits=25, acc_format="fp32",
                     description="B200 FP8: 32 products, 2 extra alignment bits, FP32 RZ, no 13-bit cut (KM)"),
    _fhmp("volta_fp16", "fp16", 4, 23, "V100 fp16 tensor core (FHMP 2021): 4 products, no extra bits, RZ"),
    _fhmp("ampere_fp16", "fp16", 8, 24, "A100 fp16 (FHMP, KM): 8 products, 1 extra alignment bit, RZ"),
    _fhmp("ampere_bf16", "bf16", 8, 24, "A100 bf16 (KM): 8 products, 1 extra alignment bit, RZ"),
    _fhmp("ampere_tf32", "tf32", 4, 24, "A100 tf32 (KM): 4 products, 1 extra alignment bit, RZ"),
    _fhmp("hopper_fp16", "fp16", 16, 25, "H100 fp16 (KM): 16 products, 2 extra alignment bits, RZ"),
    _fhmp("hopper_bf16", "bf16", 16, 25, "H100 bf16 (KM): 16 products, 2 extra alignment bits, RZ"),
    _fhmp("hopper_tf32", "tf32", 8, 25, "H100 tf32 (KM): 8 products, 2 extra alignment bits, RZ"),
]}


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
def _split(v: Fraction, emin: int, zero_exponent: int | None) -> tuple[Fraction, int] | None:
    """v = s * 2^e with |s| in [1, 2), e clamped below at ``emin`` (then |s| < 1); a zero is
    ``(0, zero_exponent)``, or no term (None) when ``zero_exponent`` is None."""
    if v == 0:
        return None if zero_exponent is None else (Fraction(0), zero_exponent)
    e = max(floor_log2_exact(abs(v)), emin)
    return v / Fraction(2) ** e, e


_CANONICAL_NAN = struct.unpack("<d", struct.pack("<Q", (CANONICAL_NAN32 << 29) | (0x7FF << 52)))[0]


def _scalar_output(v: float, model: AccumulatorModel) -> float:
    """Step 8 for ``reference_dot``: a NaN result as ``model.nan_output`` says."""
    return _CANONICAL_NAN if math.isnan(v) and model.nan_output == "canonical" else v


def _round_to_multiple(v: Fraction, quantum: Fraction, mode: str) -> Fraction:
    q = v / quantum
    if mode == "rtz":
        n = math.trunc(q)
    elif mode == "rdown":
        n = math.floor(q)
    else:
        n = round(q)                                        # Python's round is ties-to-even on Fractions
    return n * quantum


def reference_dot(a: Sequence[float], b: Sequence[float], model: AccumulatorModel | str, c: float = 0.0) -> float:
    """One output element ``c + sum a_k b_k`` under ``model``, step by step in exact arithmetic."""
    model = get_accumulator(model)
    fa, fb = model.formats
    acc_fmt = get_format(model.acc_format)
    if len(a) != len(b):
        raise ValueError(f"dot of lengths {len(a)} and {len(b)}")
    values = [*a, *b, c]
    if not all(math.isfinite(v) for v in values):                # step 7: IEEE float32 semantics
        return _scalar_output(float(torch.tensor(sum(x * y for x, y in zip(a, b)) + c, dtype=torch.float32)),
                              model)

    def to_acc(v: Fraction) -> Fraction | float:                # step 4's rounding and overflow
        if model.overflow == "inf" and abs(v) >= Fraction(2) ** (acc_fmt.emax + 1):
            return math.copysign(math.inf, v)
        r = round_exact(v, acc_fmt, model.acc_rounding)
        return Fraction(r) if math.isfinite(r) else r           # an overflow to Inf stays a float

    def add_outer(outer: Fraction | float, acc: Fraction | float) -> Fraction | float:
        if isinstance(outer, float) or isinstance(acc, float):  # Inf involved: IEEE arithmetic
            return float(outer) + float(acc)
        r = round_exact(outer + acc, model.outer_format, model.outer_rounding)
        return Fraction(r) if math.isfinite(r) else r

    z = model.zero_exponent
    promote = model.promote_every
    outer: Fraction | float = Fraction(c) if promote else Fraction(0)
    acc: Fraction | float = Fraction(0) if promote else to_acc(Fraction(c))
    for start in range(0, len(a), model.group_size):
        if promote and start and start % promote == 0:          # step 5
            outer, acc = add_outer(outer, acc), Fraction(0)
        if isinstance(acc, float):                              # step 6: an Inf accumulator stays Inf
            continue
        terms = []                                              # step 1: (significand, exponent)
        for x, y in zip(a[start:start + model.group_size], b[start:start + model.group_size]):
            tx, ty = _split(Fraction(x), fa.emin, z), _split(Fraction(y), fb.emin, z)
            if tx is not None and ty is not None:
                terms.append((tx[0] * ty[0], tx[1] + ty[1]))
        if model.align_with_acc and (t_acc := _split(acc, acc_fmt.emin, z)) is not None:
            terms.append(t_acc)
        if not terms:                                           # no term: the group sums to 0
            continue
        E = max(e for _, e in terms)                            # step 2
        if model.align_bits is None:                            # step 3
            aligned = [s * Fraction(2) ** (e - E) for s, e in terms]
        else:
            quantum = Fraction(1, 1 << model.align_bits)
            aligned = [_round_to_multiple(s * Fraction(2) ** (e - E), quantum, model.align_rounding)
                       for s, e in terms]
        total = sum(aligned, Fraction(0)) * Fraction(2) ** E    # step 4
        acc = to_acc(total if model.align_with_acc else acc + total)
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
    v = s * pow2(torch.clamp(shift, min=-60) + model.align_bits, s.dtype)   # -60: non-zero stays non-zero
    return {"rtz": torch.trunc, "rdown": torch.floor, "rne": torch.round}[model.align_rounding](v)


def _group_update(sa: torch.Tensor, ea: torch.Tensor, sb: torch.Tensor, eb: torch.Tensor, acc: torch.Tensor,
                  model: AccumulatorModel) -> torch.Tensor:
    """Steps 1-4 for one group with aligned terms (align_bits set): sa/ea (M, G), sb/eb (G, N)
    significands/exponents of the inputs, acc (M, N) the accumulator (float64 holding acc_format
    values) -> the next accumulator. The aligned terms are integers in units of 2^(E - align_bits),
    summed in sa's dtype: float64, or float32 where ``_narrow_ok`` proves that exact."""
    acc_inf = torch.isinf(acc)                                  # step 6: an Inf accumulator stays Inf
    acc_fin = torch.where(acc_inf, 0.0, acc)
    ep = ea[:, :, None] + eb[None, :, :]                        # (M, G, N) product exponents
    prod = sa[:, :, None] * sb[None, :, :]                      # exact significand products in [0, 4)
    E = torch.clamp(ep.amax(dim=1), min=_exponent_floor(model))  # step 2: 2^(E - align_bits) is normal
    if model.align_with_acc:
        s_acc, e_acc = _significand_exponent(acc_fin, get_format(model.acc_format).emin, model.zero_exponent)
        E = torch.maximum(E, e_acc)
    units = _align(prod, ep - E[:, None, :], model).sum(dim=1)
    if model.align_with_acc:
        units = units + _align(s_acc.to(sa.dtype), e_acc - E, model)
    total = units.double() * pow2(E - model.align_bits)          # exact
    new = _finish(total if model.align_with_acc else add_round_to_odd(acc_fin, total), model)
    return torch.where(acc_inf, acc, new)


def _exact_group_update(products: torch.Tensor, acc: torch.Tensor, model: AccumulatorModel) -> torch.Tensor:
    """Steps 2-4 when terms are kept exact (align_bits=None): ``products`` is the group's exact sum."""
    return torch.where(torch.isinf(acc), acc, _finish(add_round_to_odd(acc, products), model))


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
    return torch.where(out.isnan(), torch.tensor(CANONICAL_NAN32, dtype=torch.int32).view(torch.float32), out)


def _check_operand(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    return x


def _narrow_ok(model: AccumulatorModel) -> bool:
    """True when float32/int32 arithmetic is exact for the group sums: products of the input
    significands fit 24 bits, and the sum of G + 1 aligned terms (integers < 2^(align_bits + 2)) does."""
    fa, fb = model.formats
    if model.align_bits is None or fa.mbits + fb.mbits + 2 > 24:
        return False
    return model.align_bits + 2 + math.ceil(math.log2(model.group_size + 1)) <= 24


def _check_exact_budget(model: AccumulatorModel, K: int) -> None:
    """With exact terms (align_bits=None), a group's products must sum exactly in float64."""
    if model.align_bits is not None or min(model.group_size, K) <= 1:
        return
    fa, fb = model.formats
    top = fa.emax + fb.emax + 2
    bottom = (fa.emin - fa.mbits) + (fb.emin - fb.mbits)
    if top - bottom + math.ceil(math.log2(min(model.group_size, K))) > 53:
        raise ValueError(f"model {model.name}: {min(model.group_size, K)} exact {fa.name} x {fb.name} products "
                         "do not sum exactly in float64; use align_bits or smaller groups")


def emulated_matmul(a: Any, b: Any, model: AccumulatorModel | str, c: torch.Tensor | None = None, *,
                    check_inputs: bool = True, backend: str = "auto") -> torch.Tensor:
    """``c + a @ b`` (float32, M x N) computed as the accumulator ``model`` computes it, bit for bit.

    ``a`` (M x K) and ``b`` (K x N) hold values of the model's input formats (checked unless
    ``check_inputs=False``); ``c`` is an optional float32 initial accumulator. Work is chunked along K
    one group at a time, so memory is O(M * N * group_size) (eager) or O(M * N) (``backend="compiled"``,
    the same function fused by torch.compile; ``backend="native"``, the C build of ``cuda_ext/``'s
    shared header, for aligned models with <= 8-bit inputs: see ``native_unsupported``). ``"auto"``
    (the default) is native where ``native_unsupported`` allows it, else eager (never compiled). Same bits.
    """
    backends = ("auto", *BACKENDS, "native")
    if backend not in backends:
        raise ValueError(f"unknown backend {backend!r}; expected one of {backends}")
    model = get_accumulator(model)
    a, b = _check_operand(a, "a"), _check_operand(b, "b")
    if backend == "auto":
        backend = "native" if native_unsupported(model, a.device) is None else "eager"
    elif backend == "native" and (why := native_unsupported(model, a.device)):
        raise ValueError(why)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a is {tuple(a.shape)}, b is {tuple(b.shape)}")
    M, K = a.shape
    N = b.shape[1]
    if c is not None and (not isinstance(c, torch.Tensor) or c.shape != (M, N)):
        raise ValueError(f"c must be a ({M}, {N}) tensor")
    _check_exact_budget(model, K)
    fa, fb = model.formats
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if check_inputs:
        for x, f, nm in ((a64, fa, "a"), (b64, fb, "b")):
            fin = torch.isfinite(x)
            if not torch.equal(quantize(x[fin], f, saturate=True, out_dtype=torch.float64), x[fin]):
                raise ValueError(f"{nm} holds values that are not {f.name} values: quantize it first")
    c64 = torch.zeros(M, N, dtype=torch.float64, device=a.device) if c is None else c.to(torch.float64)
    outer_fmt = get_format(model.outer_format)

    # step 1, once for every backend: finite parts of the operands as significands and exponents
    a_fin, b_fin = torch.where(torch.isfinite(a64), a64, 0.0), torch.where(torch.isfinite(b64), b64, 0.0)
    sa, ea = _significand_exponent(a_fin, fa.emin, model.zero_exponent)
    sb, eb = _significand_exponent(b_fin, fb.emin, model.zero_exponent)
    if _narrow_ok(model):
        sa, ea, sb, eb = sa.float(), ea.int(), sb.float(), eb.int()
    promote = model.promote_every
    c_fin = torch.where(torch.isfinite(c64), c64, 0.0)
    acc = torch.zeros_like(c64) if promote else _finish(c_fin, model)   # the seed (steps 4, 5; +0 by step 6)
    if backend == "native":
        out = _native_matmul(sa, ea, sb, eb, c_fin if promote else acc, model)
        return _output_nans(_ieee_nonfinite(out, a64, b64, c64), model)

    step = compiled(_group_update) if backend == "compiled" else _group_update
    outer = c_fin.clone() if promote else None
    G = model.group_size
    for start in range(0, K, G):
        if promote and start and start % promote == 0:
            outer = round_values(add_round_to_odd(outer, acc), outer_fmt, model.outer_rounding)
            acc = torch.zeros_like(acc)
        sl = slice(start, min(start + G, K))
        if model.align_bits is None:   # exact terms: BLAS sums them exactly (_check_exact_budget)
            acc = _exact_group_update(a_fin[:, sl] @ b_fin[sl], acc, model)
        else:
            acc = step(sa[:, sl], ea[:, sl], sb[sl], eb[sl], acc, model)
    if promote:
        acc = round_values(add_round_to_odd(outer, acc), outer_fmt, model.outer_rounding)
    return _output_nans(_ieee_nonfinite(acc.to(torch.float32), a64, b64, c64), model)


def _ieee_nonfinite(out: torch.Tensor, a64: torch.Tensor, b64: torch.Tensor, c64: torch.Tensor) -> torch.Tensor:
    """Step 7: where any input of a dot product is NaN/Inf, the IEEE float32 result of the exact sum."""
    if bool(torch.isfinite(a64).all()) and bool(torch.isfinite(b64).all()) and bool(torch.isfinite(c64).all()):
        return out
    ieee = (a64 @ b64 + c64).to(torch.float32)
    return torch.where(torch.isfinite(ieee), out, ieee)


def native_unsupported(model: AccumulatorModel, device: torch.device) -> str | None:
    """Why the native (C) backend cannot run ``model`` here, or None when it can."""
    from .native import compiler

    if device.type not in ("cpu", "cuda"):
        return f"the native backend runs on CPU or CUDA tensors, not {device.type}"
    if compiler(device.type == "cuda") is None:
        return f"the native backend on {device.type} needs {'nvcc' if device.type == 'cuda' else 'a C compiler'}"
    if not _narrow_ok(model):
        return "the native backend covers aligned models with <= 8-bit inputs whose group sums fit 24 bits"
    for attr in ("acc_rounding", "outer_rounding"):
        if canonical_rounding(getattr(model, attr)) not in ("rtz", "rne"):
            return f"the native backend rounds the accumulators by rtz or rne, not {getattr(model, attr)!r}"
    return None


def _native_matmul(sa: torch.Tensor, ea: torch.Tensor, sb: torch.Tensor, eb: torch.Tensor, seed: torch.Tensor,
                   model: AccumulatorModel) -> torch.Tensor:
    """Steps 2-6 by the C/CUDA builds of ``cuda_ext/lowprec_accum.h`` from step 1's narrow (float32 /
    int32) significands and exponents and the accumulator's seed; same bits as the torch path."""
    import ctypes

    from .native import AccumModelC, library

    acc_fmt, outer_fmt = get_format(model.acc_format), get_format(model.outer_format)
    sa, ea, sb, eb, seed = (t.contiguous() for t in (sa, ea, sb, eb, seed))
    M, K = sa.shape
    N = sb.shape[1]
    out = torch.empty(M, N, dtype=torch.float64, device=sa.device)
    rnd = {"rtz": 0, "rne": 1}
    cm = AccumModelC(model.group_size, model.align_bits, ALIGN_ROUNDINGS.index(model.align_rounding),
                     int(model.align_with_acc), _NO_EXP if model.zero_exponent is None else model.zero_exponent,
                     _exponent_floor(model), acc_fmt.mbits, acc_fmt.emin, rnd[canonical_rounding(model.acc_rounding)],
                     int(model.overflow == "inf"), acc_fmt.max, model.promote_every or 0, outer_fmt.mbits,
                     outer_fmt.emin, rnd[canonical_rounding(model.outer_rounding)], outer_fmt.max)
    ptr = ctypes.c_void_p
    cuda = sa.device.type == "cuda"
    entry = library("accum_cuda").lp_emulated_matmul_cuda if cuda else library().lp_emulated_matmul
    rc = entry(ptr(sa.data_ptr()), ptr(ea.data_ptr()), ptr(sb.data_ptr()), ptr(eb.data_ptr()), ptr(seed.data_ptr()),
               ptr(out.data_ptr()), ctypes.c_int64(M), ctypes.c_int64(K), ctypes.c_int64(N), ctypes.byref(cm))
    if cuda and rc:
        raise RuntimeError(f"the CUDA accumulator kernel failed (cudaError {rc})")
    return out.to(torch.float32)
