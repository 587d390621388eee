"""Find out what a matrix unit's accumulator does: crafted GEMMs through a black box, a fitted model, a check.

``probe(gemm, input_formats)`` treats ``gemm`` as a black box -- a callable taking two float32 matrices ``a``
(M x K) and ``b`` (K x N) holding values of ``input_formats`` and returning their float32 product (with
``block_scale``: ``gemm(a, b, a_scales, b_scales)``, the scales float32 values of ``block_scale.scale_format``, one
per ``block_scale.block`` elements of K; the caller states the block layout, which is part of how the box is
called, not inferred) -- and infers an ``AccumulatorModel`` (``lowprec.accum``, whose module doc gives the
semantics) of any of its four structures: ``FusedSum`` (NVIDIA), ``SplitSum`` (AMD CDNA3), ``FmaTree`` (AMD
CDNA1/2), ``ChunkSum`` (Blackwell FP4). Each call batches many probe dot products: row r of ``a`` and column r of
``b`` hold the terms of probe r, and the diagonal element (r, r) is its output; a term is a product ``x * y`` (x of
the first format, y of the second, one a power of two) with unit block scales, or, for FP4/FP6 operands with block
scales, one element product per chunk times crafted power-of-two block scales. Probe outputs lie in [2^-14, 2^15]
(FP4/FP6: [2^-60, 2^60], an 8-bit-exponent accumulator assumed) until the accumulator's range is known. In the order
they are inferred:

``deterministic``: one random GEMM twice: the same bits, or the result is "inconsistent" at once.
``order`` (FPRev, Xie et al. 2025; SPEC 2): K products, all the unit u but +M at i and -M at j, M = 2^n u with
    n = 27 (E4M3) .. 29. The output counts the units that survived; ``lost(0, j) = K - 2 - out / u`` for every
    j < K (one call). Pairwise trees of t products one after another lose ``2^bitlen(j) - 2`` units inside the
    first tree (M meets -M at their smallest common subtree) and ``t (j // t + 1) - 2`` later (a short last tree
    padded with zeros): those counts mean an ``FmaTree`` of t (fused steps of 2 promoted every t count the same;
    the tree is taken, and validation decides). Otherwise a vectorised abstract run of each candidate (families
    "cut" -- aligned terms cut to a few bits -- and "exact"; g products per step; promotion every P) predicts every
    count: inferred ``group_size``, whether terms are cut, ``promote_every``; an exact sum with no step boundary
    within K is one unbounded step (``group_size = 2^30``, the ``exact`` preset's convention). A promotion's outer
    accumulator is taken to be float32 rounded to nearest (CUDA cores' FP32 arithmetic), not probed. The abstract run
    assumes every unit beside M vanishes (n beyond the bits kept, also for the sums of units a step, a subset or a
    tree forms; a promotion is seen when n > f + log2 P).
``align_bits``: rows ``B - B + 2^-k B`` in one step for every k the formats reach (B = 2^eB a power-of-two
    product): the small term survives exactly for k <= f, whatever the rounding (a tie at k = f + 1 goes to the
    even 0). Survival through the largest reachable k: terms are kept exact (``align_bits=None``).
``align_rounding``: ``B - B + r q`` for r = 0.75, 0.5, -0.75, -0.5 (q = 2^-f B): outputs / q of (0, 0, 0, 0) is
    toward zero, (0, 0, -1, -1) toward -inf (two's-complement shifting), (1, 0, -1, 0) nearest even.
``acc_alignment``: ``t = +-1.5 * 2^-k B`` alone in one step, then ``B - B`` in the next, k = 0..46 as far as the
    formats reach (one call): the output is what the running sum t became beside the step. Three rules are
    checked against all outputs: cut like a product at 2^-f B by ``align_rounding`` (the running sum joins the
    alignment, ``align_with_acc``: every NVIDIA unit), kept whole (added after the step's sum), or floored toward
    -inf to 2^-b B and dropped when more than d binades below B (a split sum's ``acc_bits = b``, ``acc_drop = d``:
    the least b, with the d it needs or none, whose closed form reproduces every output).
``accumulator``: one step with 2^h copies of 2^E and one small term: the sum S = 2^(E+h) + 1.5 * 2^(E+h-m') needs
    m' + 1 fraction bits; h is the least that keeps the small term whole through the alignment (h >= m' + 1 - f).
    The accumulator keeps m bits: S comes out exact for m' < m and not at m' = m. The scan runs at h and at h + 1
    (a carry one binade up): the same m at both means the sum is normalised before rounding. Then
    ``+-(2^(E+h) + r ulp)`` for r = 0.5, 1.5 (and 2.5 where it factors) pick the one rounding (rtz, rne, rdown, rup,
    rna) whose closed form reproduces every output.
``range``: single products +-2^k over every k the formats (and block scales, for FP4/FP6) reach (a column of
    +-2^i times a row of 2^j): the first k whose output is not 2^k gives the exponent range (emax = k - 1), and the
    outputs of +-2^k the overflow rule (Inf where IEEE rounding of that sign would stop at the largest finite value:
    ``overflow="inf"``; +-max: ``"ieee"``); the smallest exact output the lower end (2^(emin - m) with subnormal
    results kept -- or a little higher, where a zero accumulator aligned with the product cuts it first; 2^emin:
    flushed, which only an FMA tree expresses). Either end fixes the accumulator's bias and so its format; neither:
    8 exponent bits (float32's register), reported as unobservable.
``subnormal_inputs``: a product with the subnormal 2^(emin - 1) of each input format (its significand 0.5 survives
    any alignment): exact (kept) or 0 (flushed: an FMA tree's ``flush_subnormals``).
``products``: single products of full-significand operands and ``(1 + 2^-ma)(1 + 2^-mb) - 1``, where the
    alignment and the accumulator can hold them exactly: the outputs equal the exact values (products are exact).
``zero_exponent``: ``p + 0 x 2^e`` for p = 2^ep, ep from the accumulator's smallest subnormal up (the three
    smallest p that factor), and every e of the second format, in one call: a zero operand is the term 0 * 2^(z + e),
    which lifts the alignment exponent and cuts p when z + e >= ep + f + 1; the first e that loses p gives z, read
    at the smallest p that the smallest zero operand leaves alone (a smaller p is cut by the zero accumulator already,
    SPEC 2b). No p lost: zeros take no part, or rank too low to show (then unobservable).
``interleave`` (only where ``acc_alignment`` allows a split sum): B at 0, -B at I and t = 0.75 * 2^-f B at 1 and
    1 + I in one step, for every divisor I of the step size: where the products form J interleaved subsets
    (positions mod J) each aligned to its own largest exponent, the two t share a subset without B exactly when J
    divides I, sum to 1.5 q exactly and are floored once to q; otherwise they are rounded one by one beside B (0
    or 2q). The closed form of every J is compared with the outputs: ``SplitSum.interleave``.
``sum_floor`` (likewise): a running sum C = +-2^E alone in one step, then in the next t1 (half an ulp of C, or 0)
    and t2 = +-2^(E-k), k up to 46, the signs chosen by the accumulator's rounding so that t2 moves the rounded
    result whenever it survives (a tie broken by t2 for rne and rna, a directed rounding otherwise), plus the rows
    C - 2^(E-k) (one call). The closed forms of a fused step (C in the alignment, or added after) and of a split
    sum whose group sum is floored to s bits below max(group exponent, C's exponent), for every s, are compared
    with the outputs: ``SplitSum.sum_bits`` (split sums floor their group sum only here, beyond the accumulator's
    precision).
``structure`` (no call): a fused step whose running-sum rule and step sum fit every output is a ``FusedSum``;
    otherwise a ``SplitSum(sum_bits, acc_bits, interleave, acc_drop)`` when the floors fit; else "inconsistent".
``nan``: NaN (and Inf - Inf) inputs, and a NaN block scale: the bits of the fitted model's canonical NaN
    (``emulated_matmul`` with ``nan_output="canonical"``: 0x7FFFFFFF, or 0x7FFFE000 for an fp16 result) mean
    canonical, anything else IEEE.

An FMA tree (``order``) is fitted from ``accumulator`` (the pair 2^E + small is one tree node), ``subnormal_inputs``,
``range`` and ``products``; ``flush_subnormals`` (no call) is flushing seen in the inputs or the results, which must
agree. A block-scaled box whose operands are too narrow for FPRev (FP4/FP6) is probed by chunks:
``chunk``: B and -B in two chunks of block 0 (their scales make B large), then x = 1.5 * 2^-k B at elements block
    and block + d of block 1, against 2x at element block alone (first call: d = block - 1, k = 0..47; second, at
    the first k where they differ: every d). Two products summed exactly before alignment behave as their sum;
    aligned one by one they are cut (2q, 4q) where the sum is not (3q): the chunk size is the least d that
    differs (1: a fused sum, which FP4/FP6 operands cannot be probed for further; never: the whole block).
``order`` (chunks): B - B in chunks 0 and 1 and t = 2^-k B (k as large as the scales allow) in chunk j: t is cut
    in B's step and kept after it (the running sum is then 0): the first j that keeps t is the step, in chunks
    (promotion is not probed: none fitted). ``align_bits``, ``align_rounding``, ``acc_alignment``, ``accumulator``
    then run over chunk terms (one element product per chunk, the terms of a step packed into its blocks by
    magnitude: a step's sum does not depend on the order of its chunk terms); ``range`` over products times block
    scales; ``zero_exponent`` (chunks): visible terms near the accumulator's smallest subnormal (a tie there for
    rounding to nearest) beside tiny terms 2^e2 (or 3 * 2^e2 and -2^e2), among zero chunks: a zero chunk sum is the
    term 0 * 2^z, which lifts the alignment and cuts the tiny terms; the pattern is chosen by the closed forms so
    that every z in reach (and "no term") predicts different outputs, and the z whose closed form reproduces the
    outputs is fitted.

Fields that no call can show are fitted by convention and the feature says so: the zero exponent and the overflow
rule (indistinguishable under rounding to nearest) are SPEC 2b's NVIDIA ones (-126, "inf") for fused sums with
aligned terms and chunk sums, and IEEE behaviour (zeros take no part, "ieee") for exact terms, split sums and FMA
trees; ``instruction_k`` (zero padding changes no bit) is left None; the alignment fields of exact terms and trees
keep their defaults (``align_with_acc=False`` for a tree: its sum is added after the group).

``validate(gemm, model, trials)`` then runs random inputs (wide exponents, zeros beside huge values, cancelling
pairs, tiny products, a few NaN/Inf; random block scales of the scale format, one NaN) through the black box and
``emulated_matmul(model)`` and lists every element whose bits differ. A ``ProbeResult`` is "fitted" only if every
feature was inferred without contradiction and validation agreed bit for bit; otherwise it is "inconsistent", with
the reasons and the evidence, and no model. Each feature records its inputs (a short description), its outputs and
the number of GEMM calls it took (at most two each; 8 to 15 in all, then ``trials`` for validation).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .accum import AccumulatorModel, BlockScale, ChunkSum, FmaTree, FusedSum, SplitSum, emulated_matmul
from .formats import FloatFormat, get_format, list_formats
from .rounding import INTEGER_ROUNDINGS, floor_log2_exact, quantize, round_bits, round_exact, round_to_multiple

Gemm = Callable[..., torch.Tensor]
Pair = tuple[float, float]                  # one product's factors (x of the first format, y of the second)
Row = list[float]                           # the terms of one probe dot product, in K (or chunk) order
_SAFE = (-14, 15)                           # outputs kept in [2^-14, 2^15] until the accumulator's range is known
_CHUNK_SAFE = (-60, 60)                     # the same for block-scaled FP4/FP6 units (8 exponent bits assumed)
_CUT_NAMES = {(0, 0, 0, 0): "rtz", (0, 0, -1, -1): "rdown", (1, 0, -1, 0): "rne"}
_MAX_FLOOR_BITS = 44                        # SplitSum: max(sum_bits, acc_bits) + 8 <= 52 (exact float64 sums)
_UNBOUNDED_GROUP = 1 << 30                  # an exact sum with no step boundary within max_k (the ``exact`` preset)
# the acc-mode-specific sign patterns of the sum-floor probe: (sign of C, half-ulps of t1, sign of t2), chosen so
# that a tiny t2 moves the rounded result when it is kept
_STICKY = {"rne": (1, 1, 1), "rna": (-1, -1, 1), "rtz": (-1, 0, 1), "rup": (1, 0, 1), "rdown": (1, 0, -1)}


class ProbeError(ValueError):
    """The black box broke the GEMM contract (shape, dtype): no feature can be read from it."""


@dataclass
class Feature:
    """One inferred feature: ``value`` (None when unobservable), ``status`` ("inferred", "unobservable",
    "inconsistent"), ``text`` (what was inferred from what), the probe ``inputs`` (short descriptions), the
    ``outputs`` seen, and ``calls`` (GEMM calls it took)."""

    name: str
    value: Any
    status: str
    text: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[float] = field(default_factory=list)
    calls: int = 0


@dataclass
class Mismatch:
    """One output element where the black box and the model differ: trial, row, column, both float32 bit
    patterns."""

    trial: int
    row: int
    col: int
    got: int
    want: int

    def __str__(self) -> str:
        return f"trial {self.trial} [{self.row}, {self.col}]: box 0x{self.got:08X}, model 0x{self.want:08X}"


@dataclass
class Validation:
    """``validate``'s result: ``agree`` when every element of every trial has the same bits (NaN-ness only for
    ``nan_output="ieee"``), ``elements`` compared, ``mismatches`` (at most 20 listed, ``n_mismatches`` all)."""

    agree: bool
    trials: int
    elements: int
    calls: int
    n_mismatches: int
    mismatches: list[Mismatch]


@dataclass
class ProbeResult:
    """What ``probe`` found: ``model`` (the fitted model -- a ``FusedSum``, ``SplitSum``, ``FmaTree`` or ``ChunkSum``
    structure -- or None when ``status`` is "inconsistent"), ``candidate`` (the model the features assembled, kept
    for diagnosis even when it failed), ``features`` by name, ``validation`` and ``reasons`` (why inconsistent;
    empty when fitted)."""

    model: AccumulatorModel | None
    candidate: AccumulatorModel | None
    features: dict[str, Feature]
    validation: Validation | None
    reasons: list[str]

    @property
    def status(self) -> str:
        return "fitted" if self.model is not None else "inconsistent"

    @property
    def calls(self) -> dict[str, int]:
        """GEMM calls per feature, validation included."""
        out = {name: f.calls for name, f in self.features.items()}
        if self.validation is not None:
            out["validation"] = self.validation.calls
        return out

    def summary(self) -> str:
        lines = [f"status: {self.status}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")]
        lines += [f"  {f.name}: {f.value} [{f.status}, {f.calls} calls] {f.text}" for f in self.features.values()]
        if self.validation is not None:
            v = self.validation
            lines.append(f"  validation: {'agrees' if v.agree else 'DISAGREES'} on {v.elements} elements of "
                         f"{v.trials} trials ({v.n_mismatches} mismatches, {v.calls} calls)")
            lines += [f"    {m}" for m in v.mismatches[:5]]
        return "\n".join(lines)


# ---- exact arithmetic ----------------------------------------------------------------------------------
def _exp(v: float | Fraction) -> int:
    """floor(log2|v|) of a non-zero value, exactly."""
    if isinstance(v, Fraction):
        return floor_log2_exact(abs(v))
    return math.frexp(abs(v))[1] - 1


def _split_group(values: Sequence[Fraction], interleave: int, f: int, mode: str, clamp: int) -> tuple[Fraction,
                                                                                                     int | None]:
    """One SplitSum group of products (``values`` in K order, zeros taking no part): each of the ``interleave``
    subsets aligned to its own largest exponent (a product's exponent is at least ``clamp``) and rounded by ``mode``
    to ``f`` fraction bits, the subset sums floored to ``f`` bits relative to the largest subset exponent Eg.
    Returns (their sum, Eg); (0, None) without a term. With ``interleave=1`` it is also a fused step of the
    products alone."""
    sums = []
    for r in range(interleave):
        sub = [v for v in values[r::interleave] if v != 0]
        if sub:
            Eh = max(max(_exp(v), clamp) for v in sub)
            sums.append((sum((round_to_multiple(v, Fraction(2) ** (Eh - f), mode) for v in sub), Fraction(0)), Eh))
    if not sums:
        return Fraction(0), None
    Eg = max(E for _, E in sums)
    return sum((round_to_multiple(v, Fraction(2) ** (Eg - f), "rdown") for v, _ in sums), Fraction(0)), Eg


# ---- operands ------------------------------------------------------------------------------------------
def _representable(v: float, fmt: FloatFormat, normal: bool) -> bool:
    """``v`` is a finite value of ``fmt`` (with ``normal``: zero or a normal value)."""
    if v == 0:
        return True
    if not math.isfinite(v) or (v < 0 and not fmt.signed) or abs(v) > fmt.max:
        return False
    e = math.frexp(abs(v))[1] - 1
    if e < fmt.emin and (normal or not fmt.subnormals):
        return False
    q = 2.0 ** (max(e, fmt.emin) - fmt.mbits)
    return abs(v) / q == math.floor(abs(v) / q)


@functools.cache
def _factor(v: float, fa: FloatFormat, fb: FloatFormat, subnormal: bool = False) -> Pair | None:
    """x of ``fa`` and y of ``fb`` with x * y == v, one a power of two, exponents as balanced as possible, both
    normal (``subnormal``: subnormal factors allowed too); None if there are none."""
    if v == 0:
        return 0.0, 0.0
    k = math.frexp(abs(v))[1] - 1
    s = v / 2.0**k
    best: tuple[int, float, float] | None = None
    for sig_fmt, pow_fmt, sig_first in ((fa, fb, True), (fb, fa, False)):
        low_s = sig_fmt.emin - (sig_fmt.mbits if subnormal and sig_fmt.subnormals else 0)
        low_p = pow_fmt.emin - (pow_fmt.mbits if subnormal and pow_fmt.subnormals else 0)
        lo, hi = max(low_s, k - pow_fmt.emax), min(sig_fmt.emax, k - low_p)
        mid = min(max(k // 2, lo), hi)
        for ks in sorted({lo, hi, mid, max(lo, mid - 1), min(hi, mid + 1)}, key=lambda t: abs(2 * t - k)):
            x, y = s * 2.0**ks, 2.0 ** (k - ks)
            if lo <= hi and _representable(x, sig_fmt, not subnormal) and _representable(y, pow_fmt, not subnormal):
                if best is None or abs(2 * ks - k) < best[0]:
                    best = (abs(2 * ks - k), *((x, y) if sig_first else (y, x)))
                break
    return None if best is None else (best[1], best[2])


@functools.cache
def _positive_values(fmt: FloatFormat) -> tuple[float, ...]:
    """Every positive finite value of ``fmt`` (for the narrow element and scale formats)."""
    vals = {(1 + i / (1 << fmt.mbits)) * 2.0**e for e in range(fmt.emin, fmt.emax + 1) for i in range(1 << fmt.mbits)}
    if fmt.subnormals:
        vals |= {i / (1 << fmt.mbits) * 2.0**fmt.emin for i in range(1, 1 << fmt.mbits)}
    return tuple(sorted(v for v in vals if v <= fmt.max))


@functools.cache
def _product_table(fa: FloatFormat, fb: FloatFormat) -> dict[float, dict[int, Pair]]:
    """The positive products x * y of two narrow formats by significand: {significand: {exponent: (x, y)}}."""
    table: dict[float, dict[int, Pair]] = {}
    for x in _positive_values(fa):
        for y in _positive_values(fb):
            e = _exp(x * y)
            table.setdefault(x * y / 2.0**e, {}).setdefault(e, (x, y))
    return table


class _ScaledEncoder:
    """Block-scaled operands for given values: a block's non-zero values share one scale pair (powers of two
    2^sa, 2^sb of the scale format) and each is an element product x * y times 2^(sa + sb)."""

    def __init__(self, fa: FloatFormat, fb: FloatFormat, bs: BlockScale):
        self.fa, self.fb = fa, fb
        self.table = _product_table(fa, fb)
        exps = [_exp(v) for v in _positive_values(bs.format) if v == 2.0 ** _exp(v)]
        self.lo, self.hi = min(exps), max(exps)

    def split(self, s: int) -> Pair:
        """2^s as the product of an a-scale and a b-scale."""
        sa = max(self.lo, s - self.hi)
        return 2.0**sa, 2.0 ** (s - sa)

    def block(self, values: Sequence[float]) -> tuple[int, list[Pair]] | None:
        """(s, factor pairs) with values[i] = x_i * y_i * 2^s for every value, or None."""
        nz = [v for v in values if v != 0]
        if not nz:
            return 0, [(0.0, 0.0)] * len(values)
        if any(v < 0 for v in nz) and not (self.fa.signed or self.fb.signed):
            return None
        per, common = [], None
        for v in nz:
            e = _exp(v)
            opts = {e - pe: xy for pe, xy in self.table.get(abs(v) / 2.0**e, {}).items()}
            per.append(opts)
            common = set(opts) if common is None else common & set(opts)
        ok = sorted((s for s in common or () if 2 * self.lo <= s <= 2 * self.hi), key=abs)
        if not ok:
            return None
        pairs, it = [], iter(per)
        for v in values:
            if v == 0:
                pairs.append((0.0, 0.0))
                continue
            x, y = next(it)[ok[0]]
            pairs.append((math.copysign(x, v), y) if self.fa.signed else (x, math.copysign(y, v)))
        return ok[0], pairs


@dataclass
class _ScaledRow:
    """One probe dot product of a block-scaled box: K, the non-zero elements (position, x, y) and each block's
    (a-scale, b-scale)."""

    K: int
    elems: list[tuple[int, float, float]]
    scales: list[Pair]


class _ElementView:
    """Probe rows whose terms are single products: the value at position k is x * y with x of the first input
    format and y of the second (unit block scales for a block-scaled box)."""

    out_range = _SAFE

    def __init__(self, box: _Box, subnormal: bool = False):
        self.box, self.subnormal = box, subnormal

    def encode(self, row: Sequence[float]) -> list[Pair] | None:
        pairs = [_factor(v, *self.box.formats, self.subnormal) for v in row]
        return None if any(p is None for p in pairs) else pairs  # type: ignore[return-value]

    def run(self, feature: str, rows: Sequence[Any]) -> list[float]:
        return self.box.rows(feature, rows)


class _ChunkView:
    """Probe rows of a block-scaled FP4/FP6 box whose terms are chunk sums: the value of slot t is the one element
    product at the first position of chunk t times its block's two scales. Slots in one block share the scales,
    so where the group (``group`` slots, whole blocks) is known, the terms of a group are packed into its blocks by
    magnitude -- the order of the terms within a group changes no sum of the chunk terms."""

    out_range = _CHUNK_SAFE

    def __init__(self, box: _Box, chunk: int, group: int | None = None):
        bs = box.block_scale
        assert bs is not None
        self.box, self.chunk, self.group = box, chunk, group
        self.block, self.per_block = bs.block, bs.block // chunk
        self.enc = _ScaledEncoder(*box.formats, bs)

    def _layout(self, row: Sequence[float]) -> list[list[float]] | None:
        """The slot values of each block (at most ``per_block`` each), or None if they cannot be packed."""
        pb, G = self.per_block, self.group
        if not G or G % pb:
            return [list(row[i:i + pb]) for i in range(0, len(row), pb)]
        blocks: list[list[float]] = []
        for g0 in range(0, len(row), G):
            first = len(blocks)
            blocks += [[] for _ in range(G // pb)]
            for v in sorted((v for v in row[g0:g0 + G] if v != 0), key=lambda v: -abs(v)):
                for blk in blocks[first:]:
                    if len(blk) < pb and self.enc.block([*blk, v]) is not None:
                        blk.append(v)
                        break
                else:
                    return None
        return blocks

    def encode(self, row: Sequence[float]) -> _ScaledRow | None:
        blocks = self._layout(row)
        if blocks is None:
            return None
        elems, scales = [], []
        for bi, vals in enumerate(blocks):
            enc = self.enc.block(vals)
            if enc is None:
                return None
            scales.append(self.enc.split(enc[0]))
            elems += [((bi * self.per_block + t) * self.chunk, x, y) for t, (x, y) in enumerate(enc[1]) if x != 0]
        return _ScaledRow(len(blocks) * self.block, elems, scales)

    def run(self, feature: str, rows: Sequence[Any]) -> list[float]:
        return self.box.scaled_rows(feature, rows)


View = _ElementView | _ChunkView


def _place(build: Callable[[int], list[Row]], outs: Callable[[int], list[float]],
           view: View) -> tuple[int, list[Any]] | None:
    """The scale exponent s nearest 0 at which every row of ``build(s)`` encodes in ``view`` and every value of
    ``outs(s)`` lies in the view's safe output range; with the encoded rows. None if no s in [-300, 300] does."""
    lo, hi = view.out_range
    for s in sorted(range(-300, 301), key=abs):
        if not all(v == 0 or lo <= _exp(v) <= hi for v in outs(s)):
            continue
        enc = [view.encode(r) for r in build(s)]
        if all(e is not None for e in enc):
            return s, enc
    return None


class _Box:
    """The black box with a call counter per feature and the contract checks (``nan_from_finite``: the features
    whose probe rows, all finite and far from overflow unless about NaN or range, came back NaN)."""

    def __init__(self, gemm: Gemm, formats: tuple[FloatFormat, FloatFormat], block_scale: BlockScale | None):
        self.gemm, self.formats, self.block_scale = gemm, formats, block_scale
        self.calls: dict[str, int] = {}
        self.nan_from_finite: list[str] = []

    def call(self, feature: str, a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor | None = None,
             b_scales: torch.Tensor | None = None) -> torch.Tensor:
        """One GEMM call counted under ``feature``; ProbeError on a broken contract."""
        self.calls[feature] = self.calls.get(feature, 0) + 1
        if self.block_scale is not None:
            if a_scales is None or b_scales is None:
                a_scales, b_scales = _unit_scales(self.block_scale, a, b)
            out = self.gemm(a, b, a_scales, b_scales)
        else:
            out = self.gemm(a, b)
        if not isinstance(out, torch.Tensor):
            raise ProbeError(f"the black box returned {type(out).__name__}, not a tensor")
        if tuple(out.shape) != (a.shape[0], b.shape[1]):
            raise ProbeError(f"the black box returned shape {tuple(out.shape)} for a {tuple(a.shape)} x "
                             f"{tuple(b.shape)} product")
        if out.dtype != torch.float32:
            raise ProbeError(f"the black box returned {out.dtype}, not float32")
        return out.detach().cpu()

    def _diagonal(self, feature: str, out: torch.Tensor, finite: list[bool]) -> list[float]:
        d = torch.diagonal(out)
        if bool((torch.tensor(finite) & d.isnan()).any()):
            self.nan_from_finite.append(feature)
        return d.double().tolist()

    def rows(self, feature: str, rows: Sequence[Sequence[Pair]]) -> list[float]:
        """The outputs of probe dot products (each a list of factor pairs, padded with zero products): one call,
        row r in a's row r and b's column r, output r the diagonal element."""
        return self.raw_rows(feature, rows).double().tolist()

    def raw_rows(self, feature: str, rows: Sequence[Sequence[Pair]]) -> torch.Tensor:
        """``rows``' outputs as the float32 tensor the black box returned (NaN bits kept)."""
        K = max(len(r) for r in rows)
        a = torch.zeros(len(rows), K, dtype=torch.float64)
        b = torch.zeros(K, len(rows), dtype=torch.float64)
        for i, r in enumerate(rows):
            if r:
                xy = torch.tensor(r, dtype=torch.float64)
                a[i, :len(r)], b[:len(r), i] = xy[:, 0], xy[:, 1]
        out = torch.diagonal(self.call(feature, a.float(), b.float()))
        finite = torch.tensor([all(math.isfinite(x) and math.isfinite(y) for x, y in r) for r in rows])
        if bool((finite & out.isnan()).any()):
            self.nan_from_finite.append(feature)
        return out

    def scaled_rows(self, feature: str, rows: Sequence[_ScaledRow]) -> list[float]:
        """The outputs of block-scaled probe dot products, one call (diagonal design as ``rows``)."""
        bs = self.block_scale
        assert bs is not None
        K = max(r.K for r in rows)
        nb = -(-K // bs.block)
        a, b = torch.zeros(len(rows), K), torch.zeros(K, len(rows))
        sa, sb = torch.ones(len(rows), nb), torch.ones(nb, len(rows))
        for i, r in enumerate(rows):
            for pos, x, y in r.elems:
                a[i, pos], b[pos, i] = x, y
            for blk, (u, v) in enumerate(r.scales):
                sa[i, blk], sb[blk, i] = u, v
        return self._diagonal(feature, self.call(feature, a, b, sa, sb), [True] * len(rows))


def _unit_scales(bs: BlockScale | None, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Unit block scales for ``a`` and ``b`` (None, None without block scales)."""
    if bs is None:
        return None, None
    nb = -(-a.shape[1] // bs.block)
    return torch.ones(a.shape[0], nb), torch.ones(nb, b.shape[1])


# ---- order (FPRev) -------------------------------------------------------------------------------------
FAMILIES = ("cut", "exact")


def _fprev_lost(family: str, g: int, P: int | None, K: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Units lost for pairs (i, j) (+M at i, -M at j, i < j, units elsewhere) under a ``family`` of steps of ``g``
    with promotion every ``P``: an abstract run where a value is (multiple of M, count of units); a "cut" step
    (terms aligned and cut, the running sum among them) keeps no unit when any of its terms holds M, an "exact"
    step sums exactly and its rounding keeps no unit when the sum holds M, and so does a promotion's rounded
    addition. (M is 2^n u with n beyond the precisions; a step whose running sum holds units when M arrives needs
    n beyond the alignment bits plus log2 of that count, which the (0, j) pairs of ``_probe_order`` avoid before
    the first promotion.)"""
    R = len(i)
    zero = np.zeros(R, dtype=np.int64)
    inner_m, inner_c, outer_m, outer_c = zero.copy(), zero.copy(), zero.copy(), zero.copy()

    def add(xm: np.ndarray, xc: np.ndarray, ym: np.ndarray, yc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = xm + ym
        return m, np.where(m != 0, 0, xc + yc)

    for s in range(0, K, g):
        if P and s and s % P == 0:
            outer_m, outer_c = add(outer_m, outer_c, inner_m, inner_c)
            inner_m, inner_c = zero.copy(), zero.copy()
        in_i, in_j = (i >= s) & (i < s + g), (j >= s) & (j < s + g)
        gm = in_i.astype(np.int64) - in_j
        gc = min(s + g, K) - s - in_i - in_j
        if family == "exact":
            inner_m, inner_c = add(inner_m, inner_c, gm, gc)
        else:
            has = in_i | in_j | (inner_m != 0)
            inner_m, inner_c = inner_m + gm, np.where(has, 0, inner_c + gc)
    if P:
        outer_m, inner_c = add(outer_m, outer_c, inner_m, inner_c)
    return K - 2 - inner_c


def _fprev_scale(fa: FloatFormat, fb: FloatFormat) -> tuple[int, float, float] | None:
    """(n, M, u): the largest n in 30..20 with M = 2^eM, u = 2^(eM - n) factoring into the formats and both in
    the safe output range (largest eM first)."""
    for n in range(30, 19, -1):
        for eM in range(_SAFE[1], _SAFE[0] + n - 1, -1):
            if _factor(2.0**eM, fa, fb) and _factor(2.0 ** (eM - n), fa, fb):
                return n, 2.0**eM, 2.0 ** (eM - n)
    return None


def _tree_lost(t: int, j: int, K: int) -> int:
    """Units lost for the FPRev pair (0, j) of K products by pairwise trees of ``t`` products, one after another
    (a short last tree padded with zeros): inside the first tree M meets -M at the node of their smallest common
    subtree, which by then has absorbed the other units of its 2^bitlen(j) positions; later, every unit is lost
    beside M up to the tree that holds -M, that tree's included."""
    if j < t:
        return min(1 << j.bit_length(), K) - 2
    last = t * (j // t)
    return last + min(t, K - last) - 2


def _probe_order(box: _Box, K: int) -> Feature:
    """Feature ``order`` (module doc)."""
    fa, fb = box.formats
    sc = _fprev_scale(fa, fb)
    if sc is None:
        return Feature("order", None, "unobservable", "no M = 2^n u (n >= 20) factors into the input formats")
    n, M, u = sc
    pM, pm, pu = _factor(M, fa, fb), _factor(-M, fa, fb), _factor(u, fa, fb)
    assert pM is not None and pm is not None and pu is not None          # _fprev_scale chose them so

    def rows(pairs: list[tuple[int, int]]) -> list[list[Pair]]:
        out = []
        for i, j in pairs:
            r = [pu] * K
            r[i], r[j] = pM, pm
            out.append(r)
        return out

    first = [(0, j) for j in range(1, K)]
    got = box.rows("order", rows(first))
    lost0 = [K - 2 - v / u for v in got]
    inputs = [f"K = {K}, u = 2^{math.frexp(u)[1] - 1}, M = 2^{n} u at i, -M at j: pairs (0, j), j = 1..{K - 1}"]
    calls = box.calls["order"]
    if not all(float(v).is_integer() and 0 <= v <= K - 2 for v in lost0):
        return Feature("order", None, "inconsistent", "the outputs are not whole counts of units u: no summation "
                       "of these terms loses whole units", inputs, got, calls)
    lost0i = [int(v) for v in lost0]
    tree = next((t for t in (1 << e for e in range(1, K.bit_length())) if t < K and all(
        lost0i[j - 1] == _tree_lost(t, j, K) for j in range(1, K))), 0)
    if tree:
        return Feature("order", {"group_size": tree, "family": "tree", "promote_every": None}, "inferred",
                       f"FPRev counts fit pairwise trees of {tree} products one after another (lost(0, j) = "
                       f"2^bitlen(j) - 2 inside the first): an FMA tree (a fused step of 2 promoted every {tree} "
                       "gives the same counts; the tree is taken and checked)", inputs, got, calls)
    cands = {lost0i[0] + 2, 1, 2} | {next((j for j in range(1, K) if lost0i[j - 1] > 0), K)}
    I0, J0 = np.zeros(K - 1, dtype=np.int64), np.arange(1, K, dtype=np.int64)
    fits: list[tuple[str, int, int | None]] = []
    for fam in FAMILIES:
        for g in sorted(c for c in cands if 1 <= c <= K):
            pred = _fprev_lost(fam, g, None, K, I0, J0)
            bad = np.nonzero(pred != np.array(lost0i))[0]
            if len(bad) == 0:
                fits.append((fam, g, None))
                continue
            every = (int(J0[bad[0]]) // g) * g
            if every >= g and np.array_equal(_fprev_lost(fam, g, every, K, I0, J0), np.array(lost0i)):
                fits.append((fam, g, every))
    if not fits:
        return Feature("order", None, "inconsistent", "no sequence of fused steps, promotions, exact sums or "
                       "pairwise trees gives these counts", inputs, got, calls)
    g = max(g for _, g, _ in fits)                       # steps of 1 and 2 give the same (0, j) counts
    fits = [fit for fit in fits if fit[1] == g]
    fam, g, P = fits[0]
    alts = "" if len(fits) == 1 else f" (also fits: {', '.join(f'{f}, P={p}' for f, _, p in fits[1:])})"
    text = (f"FPRev counts fit fused steps of {g} products, terms {fam}"
            + (f", promotion every {P}" if P else f", no promotion within K = {K}") + alts
            + (f"; no step boundary within K = {K}: one step of >= {K}" if g >= K else ""))
    return Feature("order", {"group_size": g, "family": fam, "promote_every": P}, "inferred", text, inputs, got,
                   calls)


def _unit_out(s: int) -> list[float]:
    return [2.0**s]


def _cancel_then(s: int, k: int, pad: int, small: Sequence[float]) -> list[Row]:
    """For each r in ``small``: the row B, -B (B = 2^(s + k)), ``pad`` zeros and r * 2^s."""
    return [[2.0 ** (s + k), -(2.0 ** (s + k)), *[0.0] * pad, r * 2.0**s] for r in small]


# ---- alignment ------------------------------------------------------------------------------------------
def _probe_align_bits(view: View, G: int, exact_family: bool) -> Feature:
    """Feature ``align_bits`` (module doc)."""
    if G < 3:
        return Feature("align_bits", None, "unobservable", f"steps of {G} terms cannot hold B, -B and a small "
                       "term together")
    rows, ks, scales = [], [], []
    for k in range(64):
        placed = _place(functools.partial(_cancel_then, k=k, pad=0, small=(1.0,)), _unit_out, view)
        if placed is None:
            break
        rows.append(placed[1][0])
        ks.append(k)
        scales.append(placed[0])
    if not ks:
        return Feature("align_bits", None, "unobservable", "no B - B + t factors into the input formats")
    got = view.run("align_bits", rows)
    kept = [g == 2.0**s for g, s in zip(got, scales)]
    inputs = [f"B - B + 2^-k B in one step, k = 0..{ks[-1]}"]
    calls = view.box.calls["align_bits"]
    if all(kept):
        value, text = None, f"the small term survives for every k <= {ks[-1]}: terms kept exact"
        if not exact_family:
            return Feature("align_bits", None, "inconsistent", text + ", but FPRev saw units cut", inputs, got, calls)
        return Feature("align_bits", value, "inferred", text, inputs, got, calls)
    f = next(k for k, ok in zip(ks, kept) if not ok) - 1
    if not all(kept[: f + 1]) or any(kept[f + 1:]):
        return Feature("align_bits", None, "inconsistent", "the small term survives for no single range of k",
                       inputs, got, calls)
    if exact_family:
        return Feature("align_bits", f, "inconsistent", f"terms are cut at {f} bits, but FPRev saw exact sums",
                       inputs, got, calls)
    return Feature("align_bits", f, "inferred", f"2^-k B survives for k <= {f}, lost from k = {f + 1}", inputs,
                   got, calls)


def _probe_align_rounding(view: View, f: int) -> Feature:
    """Feature ``align_rounding`` (module doc)."""
    rs = (0.75, 0.5, -0.75, -0.5)
    placed = _place(functools.partial(_cancel_then, k=f, pad=0, small=rs), _unit_out, view)
    if placed is None:
        return Feature("align_rounding", None, "unobservable", "no B - B + r q factors into the input formats")
    s, rows = placed
    got = view.run("align_rounding", rows)
    units = tuple(g / 2.0**s for g in got)
    inputs = [f"B - B + r q, r = {rs}, q = 2^-{f} B = 2^{s}"]
    mode = _CUT_NAMES.get(units)  # type: ignore[arg-type]
    calls = view.box.calls["align_rounding"]
    if mode is None:
        return Feature("align_rounding", None, "inconsistent", f"outputs / q = {units}: no rounding toward zero, "
                       "toward -inf or to nearest gives them", inputs, got, calls)
    return Feature("align_rounding", mode, "inferred", f"outputs / q = {units}: positive and negative cut bits "
                   f"rounded {mode}", inputs, got, calls)


def _acc_then_cancel(s: int, k: int, pad: int) -> list[Row]:
    """+-1.5 * 2^s alone in a step (``pad`` zeros), then B, -B (B = 2^(s + k)) in the next."""
    return [[sg * 1.5 * 2.0**s, *[0.0] * pad, 2.0 ** (s + k), -(2.0 ** (s + k))] for sg in (1, -1)]


def _acc_then_cancel_outputs(s: int, k: int, f: int) -> list[float]:
    """The magnitudes ``_probe_acc_alignment``'s rows at scale 2^s can output: B, 2B and t cut to 2^-f B."""
    return [2.0**s, 2.0 ** (s + 1), 2.0 ** (s + k - f)]


def _pow2_output(s: int, k: int) -> list[float]:
    """The magnitude ``_probe_sum_floor``'s rows at scale 2^s can output: 2^(s + k)."""
    return [2.0 ** (s + k)]


def _probe_acc_alignment(view: View, G: int, f: int, mode: str) -> Feature:
    """Feature ``acc_alignment`` (module doc): what a step of B - B does to a running sum t far below B."""
    rows, ks, scales = [], [], []
    for k in range(_MAX_FLOOR_BITS + 3):               # beyond any floor (and cut) the models allow
        placed = _place(functools.partial(_acc_then_cancel, k=k, pad=G - 1),   # t, and t cut to 2^-f B
                        functools.partial(_acc_then_cancel_outputs, k=k, f=f), view)
        if placed is None:
            break
        rows += placed[1]
        ks.append(k)
        scales.append(placed[0])
    if not ks:
        return Feature("acc_alignment", None, "unobservable", "no t, then B - B, factors into the input formats")
    got = view.run("acc_alignment", rows)
    calls = view.box.calls["acc_alignment"]
    inputs = [f"t = +-1.5 * 2^-k B alone in a step, then B - B in the next, k = 0..{ks[-1]}"]
    kk = np.repeat(np.array(ks), 2)
    t = np.tile(np.array([1.5, -1.5]), len(ks)) * 2.0 ** -kk.astype(np.float64)          # t / B, exact
    obs = np.array(got) / np.repeat(2.0 ** (np.array(scales, dtype=np.float64) + np.array(ks)), 2)
    rounders: dict[str, Callable[[np.ndarray], np.ndarray]] = {"rtz": np.trunc, "rdown": np.floor, "rne": np.round}
    aligned = bool(np.array_equal(rounders[mode](t * 2.0**f) / 2.0**f, obs))
    after = bool(np.array_equal(t, obs))
    floored: list[tuple[int, int | None]] = []           # SplitSum: C floored to b bits below 2^R, dropped below d
    for b in range(0, _MAX_FLOOR_BITS + 1):
        fl = np.floor(t * 2.0**b) / 2.0**b
        if np.array_equal(fl, obs):
            floored.append((b, None))
            continue
        for d in range(0, ks[-1]):
            if np.array_equal(np.where(kk > d, 0.0, fl), obs):
                floored.append((b, d))
    value = {"aligned": aligned, "after": after, "floored": floored[0] if floored else None}
    exact_to = next((k for k, a, b in zip(ks, obs[0::2], obs[1::2]) if (a, b) != (1.5 * 2.0**-k, -1.5 * 2.0**-k)),
                    None)
    seen = f"t survives exactly for k < {exact_to}" if exact_to is not None else f"t survives for every k <= {ks[-1]}"
    texts = []
    if aligned:
        texts.append(f"cut like a product at 2^-{f} B, {mode}: the running sum joins the step's alignment")
    if after:
        texts.append("kept whole: the running sum is added after the step's aligned sum")
    if floored:
        fb, fd = floored[0]
        texts.append(f"floored to 2^-{fb} B" + (f" and dropped when more than {fd} binades below" if fd is not None
                                                  else "") + ": a split sum's accumulator rule")
    if not texts:
        return Feature("acc_alignment", None, "inconsistent", f"{seen}; no rule for the running sum (aligned with "
                       "the step, added after it, or floored and dropped) gives the outputs", inputs, got, calls)
    return Feature("acc_alignment", value, "inferred", f"{seen}; " + "; or ".join(texts), inputs, got, calls)


# ---- accumulator ----------------------------------------------------------------------------------------
def _acc_terms(s: int, h: int, r: float, shift: int, sign: int) -> list[Row]:
    """2^h copies of sign * 2^(s - h) and sign * r * 2^(s - shift)."""
    return [[sign * 2.0 ** (s - h)] * (1 << h) + [sign * r * 2.0 ** (s - shift)]]


def _acc_outs(s: int, r: float, shift: int) -> list[float]:
    return [2.0**s, r * 2.0 ** (s - shift)]


def _acc_row(view: View, h: int, r: float, shift: int, sign: int) -> tuple[int, list[Any]] | None:
    """A step of 2^h copies of sign * 2^E and the small term sign * r * 2^(E + h - shift), placed (E + h = s)."""
    return _place(functools.partial(_acc_terms, h=h, r=r, shift=shift, sign=sign),
                  functools.partial(_acc_outs, r=r, shift=shift), view)


def _probe_accumulator(view: View, G: int, f: int | None) -> Feature:
    """Feature ``accumulator`` (module doc): mantissa bits, normalisation, rounding."""
    def h_for(mp: int) -> int:
        return 0 if f is None else max(0, mp + 1 - f)

    def fits(h: int) -> bool:                        # exact terms may span steps: each step's sum is exact
        return f is None or (1 << h) < G

    scan: list[tuple[int, int, int]] = []                  # (m', h, scale)
    rows = []
    for carry in (0, 1):
        for mp in range(1, 31):
            h = h_for(mp) + carry
            row = _acc_row(view, h, 1.5, mp, 1) if fits(h) else None
            if row is not None:
                scan.append((mp, h, row[0]))
                rows.append(row[1][0])
    if not rows:
        return Feature("accumulator", None, "unobservable", "no step holds the probe's terms")
    got = view.run("accumulator", rows)
    exact = {(mp, h - h_for(mp)): g == 2.0**s + 1.5 * 2.0 ** (s - mp) for (mp, h, s), g in zip(scan, got)}
    ms = []
    for carry in (0, 1):
        seen = sorted(mp for mp, c in exact if c == carry)
        bad = [mp for mp in seen if not exact[(mp, carry)]]
        if bad and all(exact[(mp, carry)] for mp in seen if mp < bad[0]):
            ms.append(bad[0])
    inputs = ["one step: 2^h x 2^E + 1.5 * 2^(E+h-m'), m' = 1..30, at the least h and one higher"]
    calls = view.box.calls["accumulator"]
    if not ms:
        return Feature("accumulator", None, "unobservable", "every probed sum came out exact (or none could be "
                       "placed): the accumulator keeps more bits than the steps can show", inputs, got, calls)
    if len(set(ms)) > 1:
        return Feature("accumulator", None, "inconsistent", f"the sum keeps {ms[0]} bits below its leading bit in "
                       f"one binade and {ms[1]} after a carry: not a normalised accumulator", inputs, got, calls)
    m = ms[0]
    h = h_for(m)
    cases, placed = [], []
    for sgn in (1, -1):
        for r in (0.5, 1.5, 2.5):                   # 2.5 = 1.25 * 2 may not factor (FP4 chunks): then left out
            p = _acc_row(view, h, r, m, sgn) if fits(h) else None
            if p is not None:
                cases.append((sgn, r))
                placed.append(p)
    if len({r for _, r in cases} & {0.5, 1.5}) < 2 or len({sgn for sgn, _ in cases}) < 2:
        return Feature("accumulator", {"mbits": m, "rounding": None}, "inferred", f"{m} mantissa bits (normalised"
                       "); its rounding is not observable in steps of this size", inputs, got, calls)
    got2 = view.run("accumulator", [p[1][0] for p in placed])
    sums = [sgn * (Fraction(2) ** p[0] + Fraction(r) * Fraction(2) ** (p[0] - m)) for (sgn, r), p in zip(cases, placed)]
    modes = [md for md in INTEGER_ROUNDINGS if all(Fraction(g) == round_bits(v, m, md) for g, v in zip(got2, sums))]
    inputs.append(f"+-(2^(E+h) + r ulp), r = {sorted({r for _, r in cases})}, ulp = 2^(E+h-{m})")
    calls = view.box.calls["accumulator"]
    if len(modes) != 1:
        how = "no" if not modes else "more than one"
        return Feature("accumulator", None, "inconsistent", f"{m} mantissa bits, but {how} rounding mode gives the "
                       "rounded sums", inputs, got + got2, calls)
    return Feature("accumulator", {"mbits": m, "rounding": modes[0]}, "inferred",
                   f"sums keep {m} bits below their leading bit (also after a carry: normalised), rounded "
                   f"{modes[0]}", inputs, got + got2, calls)


def _range_side(fmt: FloatFormat, scale_exps: Sequence[int]) -> dict[int, Pair]:
    """Every power of two 2^k reachable as an element 2^i of ``fmt`` (normal) times a block scale 2^e:
    {k: (2^i, 2^e)}."""
    out: dict[int, Pair] = {}
    for i in range(fmt.emin, fmt.emax + 1):
        if _representable(2.0**i, fmt, True):
            for e in scale_exps:
                out.setdefault(i + e, (2.0**i, 2.0**e))
    return out


def _probe_range(box: _Box, m: int, mode: str, *, scaled: bool = False, flush_ok: bool = False,
                 flushed: bool | None = None) -> Feature:
    """Feature ``range`` (module doc): the accumulator's exponent range, overflow rule, subnormal results. One
    call: a column of +-2^i times a row of 2^j (powers of two of the formats -- times their block scales with
    ``scaled`` -- spaced so that every k = i + j the box can reach occurs). ``flush_ok``: flushed subnormal
    results are a feature of the structure (an FMA tree), not a contradiction; ``flushed``: the subnormal inputs
    were seen flushed (then the smallest exact output is the smallest normal, where the top end is not seen)."""
    fa, fb = box.formats
    bs = box.block_scale
    sc = [0]
    if scaled and bs is not None:
        sc = sorted({_exp(v) for v in _positive_values(bs.format) if v == 2.0 ** _exp(v)})
    A, B = _range_side(fa, sc), _range_side(fb, sc)
    ia = sorted(A)
    jb = sorted(B)
    jb = sorted(set(jb[::len(ia)] + jb[-1:]))        # spaced by at most len(ia): every k = i + j still reached
    xs = torch.tensor([A[i][0] for i in ia] + [-A[i][0] for i in ia])
    ys = torch.tensor([B[j][0] for j in jb])
    if scaled and bs is not None:
        sa = torch.tensor([A[i][1] for i in ia] * 2)[:, None]
        sb = torch.tensor([B[j][1] for j in jb])[None, :]
        got = box.call("range", xs[:, None], ys[None, :], sa, sb).double()
        want = (xs.double()[:, None] * sa.double()) * (ys.double()[None, :] * sb.double())
    else:
        got = box.call("range", xs[:, None], ys[None, :]).double()
        want = xs.double()[:, None] * ys.double()[None, :]
    exps = torch.tensor(ia + ia)[:, None] + torch.tensor(jb)[None, :]
    ks = sorted(set(exps.flatten().tolist()))
    ok = {k: bool((got[exps == k] == want[exps == k]).all()) for k in ks}
    inputs = [f"+-2^i x 2^j: every product 2^k, k = {ks[0]}..{ks[-1]}, in one call"]
    calls = box.calls["range"]
    value: dict[str, Any] = {"bias": None, "overflow": None, "subnormals": None}
    text = []
    top = [k for k in ks if not ok[k] and k > 0]
    if top:
        k = top[0]
        value["bias"] = k - 1
        outs = [float(got[(exps == k) & (want * sign > 0)][0]) for sign in (1, -1)]
        stops = (mode in ("rtz", "rdown"), mode in ("rtz", "rup"))   # IEEE rounding stops at +-max for that sign
        if not all(math.isinf(o) for o in outs):
            value["overflow"] = "ieee"
            text.append(f"+-2^{k} come out as {outs}: IEEE overflow (rounding {mode} stops at the largest value)")
        else:
            value["overflow"] = "inf" if any(stops) else None
            text.append(f"+-2^{k} overflow to Inf" + ("" if any(stops) else f" (as IEEE rounding {mode} does too)"))
    low = [k for k in ks if not ok[k] and k <= 0]
    if low:
        k_low = low[-1] + 1                          # the smallest power of two that comes out exact
        if value["bias"] is None:                    # gradual underflow assumed (flushing: k_low is emin)
            value["bias"] = 1 - (k_low if flushed else k_low + m)
        emin = 1 - value["bias"]
        # below 2^emin: flushed; down to 2^(emin - m): gradual underflow; in between, gradual underflow until the
        # zero accumulator's alignment (2^z, f bits) cuts the single product first
        value["subnormals"] = "flushed" if k_low >= emin else "kept" if k_low >= emin - m else None
        text.append(f"outputs exact down to 2^{k_low}: with emin = {emin}, subnormal results {value['subnormals']}")
        if value["subnormals"] is None or (value["subnormals"] == "flushed" and not flush_ok):
            return Feature("range", value, "inconsistent", "; ".join(text) + ": this structure keeps subnormal "
                           "results (gradual underflow)", inputs, [], calls)
    if value["bias"] is None:
        text.append(f"every reachable 2^k is exact: range beyond 2^{ks[0]}..2^{ks[-1]}; 8 exponent bits assumed")
        return Feature("range", value, "unobservable", "; ".join(text), inputs, [], calls)
    if (value["bias"] + 1) & value["bias"]:
        return Feature("range", value, "inconsistent", "; ".join(text) + ": not an IEEE-style exponent range",
                       inputs, [], calls)
    return Feature("range", value, "inferred", "; ".join(text), inputs, [], calls)


def _acc_format(m: int, bias: int | None) -> str:
    """The name of the IEEE-style format of ``m`` mantissa bits and ``bias`` (127 when unknown): a registered one
    where there is one."""
    ebits = (127 if bias is None else bias).bit_length() + 1
    for f in list_formats():
        if (f.ebits, f.mbits, f.special, f.signed, f.subnormals) == (ebits, m, "ieee", True, True) \
                and f.bias == (1 << (ebits - 1)) - 1:
            return f.name
    return f"e{ebits}m{m}"


# ---- split sums: interleaved subsets, the group sum's floor ---------------------------------------------
def _interleave_row(s: int, f: int, gap: int) -> list[Row]:
    """B at 0, -B at ``gap``, and t = 0.75 q at 1 and 1 + gap (q = 2^s = 2^-f B)."""
    row = [0.0] * (gap + 2)
    row[0], row[gap], row[1], row[1 + gap] = 2.0 ** (s + f), -(2.0 ** (s + f)), 0.75 * 2.0**s, 0.75 * 2.0**s
    return [row]


def _probe_interleave(view: View, G: int, f: int, mode: str) -> Feature:
    """Feature ``interleave`` (module doc)."""
    cands = [J for J in range(2, G // 2 + 1) if G % J == 0 and J + 1 < G]
    if not cands:
        return Feature("interleave", 1, "unobservable", f"a step of {G} products has no room for two interleaved "
                       "subsets of two terms: 1 (one subset) taken")
    rows, scales, used = [], [], []
    for gap in cands:
        placed = _place(functools.partial(_interleave_row, f=f, gap=gap), lambda s: [2.0**s, 2.0 ** (s + 1)], view)
        if placed is not None:
            rows.append(placed[1][0])
            scales.append(placed[0])
            used.append(gap)
    if not rows:
        return Feature("interleave", 1, "unobservable", "no B - B + t + t factors into the input formats: 1 taken")
    got = view.run("interleave", rows)
    fa, fb = view.box.formats
    clamp = fa.emin + fb.emin
    fits = []
    for J in [1, *cands]:
        want = []
        for gap, s in zip(used, scales):
            vals = [Fraction(v) for v in _interleave_row(s, f, gap)[0]]
            want.append(float(_split_group(vals, J, f, mode, clamp)[0]))
        if want == got:
            fits.append(J)
    inputs = [f"B at 0, -B at I, t = 0.75 * 2^-{f} B at 1 and 1 + I, I = {', '.join(map(str, used))}"]
    calls = view.box.calls["interleave"]
    if not fits:
        return Feature("interleave", None, "inconsistent", "no split of the step into interleaved subsets gives "
                       "these outputs", inputs, got, calls)
    J = fits[0]
    text = ("every row rounds the two t like products aligned to B: one subset" if J == 1 else
            f"the two t are summed exactly apart from B (and floored once) exactly when I is a multiple of {J}: "
            f"{J} interleaved subsets (positions mod {J}), each aligned to its own largest exponent")
    return Feature("interleave", J, "inferred", text, inputs, got, calls)


def _sticky_row(s: int, k: int, G: int, m: int, pattern: tuple[int, int, int]) -> list[Row]:
    """C = sign * 2^(s + k) alone in a step, then t1 = (half-ulps of C) and t2 = sign2 * 2^s in the next."""
    sc, half, s2 = pattern
    C = sc * 2.0 ** (s + k)
    return [[C, *[0.0] * (G - 1), half * 2.0 ** (s + k - m - 1), s2 * 2.0**s]]


def _probe_sum_floor(view: View, G: int, f: int, mode: str, J: int, m: int, acc_mode: str) -> Feature:
    """Feature ``sum_floor`` (module doc): the bits a step's sum keeps below the running sum's exponent."""
    fa, fb = view.box.formats
    clamp = fa.emin + fb.emin
    patterns = list(dict.fromkeys([_STICKY[acc_mode], (1, 0, -1)]))
    rows, meta = [], []
    for pattern in patterns:
        start = m + 2 if pattern[1] else 1
        for k in range(start, _MAX_FLOOR_BITS + 3):
            placed = _place(functools.partial(_sticky_row, k=k, G=G, m=m, pattern=pattern),
                            functools.partial(_pow2_output, k=k), view)
            if placed is not None:
                rows.append(placed[1][0])
                meta.append((placed[0], k, pattern))
    if not rows:
        return Feature("sum_floor", None, "unobservable", "no running sum and tiny step terms factor")
    got = view.run("sum_floor", rows)
    calls = view.box.calls["sum_floor"]

    def parts(kind: str) -> list[tuple[Fraction, Fraction, int | None]]:
        """Per row: the running sum C, the step's sum (fused: C included) and the step's exponent Eg."""
        out: list[tuple[Fraction, Fraction, int | None]] = []
        for s, k, pattern in meta:
            row = [Fraction(v) for v in _sticky_row(s, k, G, m, pattern)[0]]
            C, terms = row[0], row[G:]
            if kind == "aligned":                        # fused, the running sum in the step's alignment
                E = max(_exp(C), *(max(_exp(v), clamp) for v in terms if v))
                out.append((C, sum((round_to_multiple(v, Fraction(2) ** (E - f), mode) for v in [C, *terms] if v),
                                   Fraction(0)), None))
            else:                                        # fused with C added after (J = 1), or split
                Sg, Eg = _split_group(terms, J if kind == "split" else 1, f, mode, clamp)
                out.append((C, C + Sg if kind == "after" else Sg, Eg))
        return out

    def predict(rows: list[tuple[Fraction, Fraction, int | None]], sb: int | None = None,
                split: bool = False) -> list[float]:
        out = []
        for C, S, Eg in rows:
            if split:                                    # the group sum floored below max(Eg, exponent of C)
                if sb is not None and Eg is not None:
                    S = round_to_multiple(S, Fraction(2) ** (max(Eg, _exp(C)) - sb), "rdown")
                S = C + S
            out.append(float(round_bits(S, m, acc_mode)))
        return out

    split_rows = parts("split")
    aligned = J == 1 and predict(parts("aligned")) == got
    after = J == 1 and predict(parts("after")) == got
    sum_bits = [sb for sb in range(f, _MAX_FLOOR_BITS + 1) if predict(split_rows, sb, True) == got]
    unbounded = predict(split_rows, None, True) == got
    inputs = [f"C = +-2^E alone in a step, then t1 (half an ulp of C or 0) and t2 = +-2^(E-k), k up to {meta[-1][1]}"]
    value = {"aligned": aligned, "after": after, "sum_bits": sum_bits, "unbounded": unbounded}
    readings = []
    if aligned:
        readings.append(f"t2 cut at 2^-{f} C with C in the alignment (fused)")
    if after:
        readings.append("t2 kept with the step's own alignment and C added after (fused)")
    if sum_bits:
        readings.append(f"the step's sum floored to {sum_bits[0]} bits below C's exponent"
                        + (f" (also {sum_bits[1:]})" if len(sum_bits) > 1 else ""))
    elif unbounded:
        readings.append(f"the step's sum never floored within reach (more than {meta[-1][1]} bits)")
    if not readings:
        return Feature("sum_floor", value, "inconsistent", "no fused step and no floor of the step's sum gives the "
                       "outputs", inputs, got, calls)
    return Feature("sum_floor", value, "inferred", "; or ".join(readings), inputs, got, calls)


# ---- the other features ---------------------------------------------------------------------------------
def _probe_subnormal_inputs(box: _Box, flush_ok: bool = False) -> Feature:
    """Feature ``subnormal_inputs`` (module doc)."""
    rows, want, inputs = [], [], []
    fa, fb = box.formats
    for side, fmt, other in ((0, fa, fb), (1, fb, fa)):
        if not fmt.subnormals:
            continue
        t = 2.0 ** (fmt.emin - 1)                    # the largest power-of-two subnormal: survives any alignment
        y = next((2.0**k for k in sorted(range(other.emin, other.emax + 1), key=lambda k: abs(k + math.log2(t)))
                  if _representable(2.0**k, other, True)), None)
        if y is not None and _SAFE[0] <= math.log2(t * y) <= _SAFE[1]:
            rows.append([(t, y) if side == 0 else (y, t)])
            want.append(t * y)
            inputs.append(f"{fmt.name} subnormal {t!r} x {y!r}")
    if not rows:
        return Feature("subnormal_inputs", None, "unobservable", "the input formats have no subnormals in reach")
    got = box.rows("subnormal_inputs", rows)
    kept = all(g == w for g, w in zip(got, want))
    flushed = all(g == 0 for g in got)
    calls = box.calls["subnormal_inputs"]
    if kept or (flushed and flush_ok):
        return Feature("subnormal_inputs", "kept" if kept else "flushed", "inferred", "products with subnormal "
                       f"operands come out {'exact' if kept else 'as zero: flushed'}", inputs, got, calls)
    return Feature("subnormal_inputs", "flushed" if flushed else None, "inconsistent",
                   "a subnormal operand is flushed: this structure keeps subnormal inputs" if flushed else
                   "products with subnormal operands are neither exact nor zero", inputs, got, calls)


def _probe_products(box: _Box, f: int | None, m: int) -> Feature:
    """Feature ``products`` (module doc)."""
    fa, fb = box.formats
    need = fa.mbits + fb.mbits
    if (f is not None and f < need) or m < need + 1:
        return Feature("products", None, "unobservable", f"{fa.name} x {fb.name} products need {need + 1} bits; "
                       f"the alignment keeps {f}, the accumulator {m}")
    xa, xb = 2 - 2.0 ** -fa.mbits, 2 - 2.0 ** -fb.mbits
    ya, yb = 1 + 2.0 ** -fa.mbits, 1 + 2.0 ** -fb.mbits
    rows = [[(xa, xb)], [(-xa, xb)], [(ya, yb), (-1.0, 1.0)]]
    want = [xa * xb, -xa * xb, ya * yb - 1]
    got = box.rows("products", rows)
    exact = got == want
    return Feature("products", "exact" if exact else "rounded", "inferred" if exact else "inconsistent",
                   "full-significand products and (1 + 2^-ma)(1 + 2^-mb) - 1 come out exact" if exact else
                   "products are not exact: every modelled structure keeps them exact",
                   [f"{xa} x {xb}", f"-{xa} x {xb}", f"{ya} x {yb} - 1"], got, box.calls["products"])


def _probe_zero_exponent(box: _Box, f: int | None, acc: FloatFormat) -> Feature:
    """Feature ``zero_exponent`` (module doc). One call: row i of ``a`` holds [x_i, 0] for p_i = x_i y_i = 2^ep_i,
    and for every e a column [y_i, 2^e] of ``b``; element (i, (i, e)) is p_i + 0 x 2^e."""
    fa, fb = box.formats
    eps = [ep for ep in range(acc.emin - acc.mbits, acc.emin + 1) if _factor(2.0**ep, fa, fb) is not None]
    es = [e for e in range(fb.emin, fb.emax + 1) if _representable(2.0**e, fb, True)]
    lowest = min(fa.emin, fb.emin, acc.emin)             # an AccumulatorModel's zero_exponent is at most this
    if f is None or not eps or not es or eps[0] + f + 1 - es[-1] > lowest:
        return Feature("zero_exponent", None, "unobservable", "no zero product of these formats reaches the "
                       "alignment exponent that would cut a term")
    eps = eps[:3]                                         # the smallest p that a zero leaves alone is among them
    pairs = [_factor(2.0**ep, fa, fb) for ep in eps]
    a = torch.tensor([[p[0], 0.0] for p in pairs if p is not None])
    b = torch.tensor([[p[1] for p in pairs if p is not None for _ in es], [2.0**e for _ in eps for e in es]])
    out = box.call("zero_exponent", a, b).double()
    calls = box.calls["zero_exponent"]
    inputs = [f"2^ep + 0 x 2^e, ep = {eps[0]}..{eps[-1]}, e = {es[0]}..{es[-1]}"]
    for i, ep in enumerate(eps):                          # the smallest p that a zero operand 2^e_min leaves alone
        got = out[i, i * len(es):(i + 1) * len(es)].tolist()
        lost = [e for e, g in zip(es, got) if g != 2.0**ep]
        if lost and lost[0] == es[0]:
            continue                                      # cut by something else (a zero accumulator): larger p
        if not lost:                                      # z < T, or zeros take no part: the same outputs
            T = ep + f + 1 - es[-1]
            if -126 < T:
                return Feature("zero_exponent", None, "unobservable", f"a zero operand never cuts 2^{ep}: zeros "
                               f"rank below 2^{T} (as -126 does) or take no part", inputs, got, calls)
            return Feature("zero_exponent", None, "inferred", f"a zero operand never cuts 2^{ep}: zeros take no "
                           f"part (or rank below 2^{T}, which no format here can show)", inputs, got, calls)
        if lost != [e for e in es if e >= lost[0]]:
            return Feature("zero_exponent", None, "inconsistent", f"2^{ep} is lost for no single range of e",
                           inputs, got, calls)
        z = ep + f + 1 - lost[0]
        return Feature("zero_exponent", z, "inferred", f"0 x 2^{lost[0]} first cuts 2^{ep} away (the smallest "
                       f"power of two that a zero x 2^{es[0]} leaves alone): a zero operand is 0 * 2^{z}", inputs,
                       got, calls)
    return Feature("zero_exponent", None, "inconsistent", "every p up to the accumulator's smallest normal is lost "
                   "beside a zero operand of any size", inputs, [], calls)


def _probe_nan(box: _Box, model: AccumulatorModel) -> Feature:
    """Feature ``nan`` (module doc): NaN bits compared with the canonical ones of ``model``."""
    fa, fb = box.formats
    bs = box.block_scale
    rows: list[tuple[list[Pair], bool]] = []            # (factor pairs, a NaN scale on the first block)
    inputs = []
    if fa.has_nan:
        rows.append(([(math.nan, 1.0)], False))
        inputs.append("NaN x 1")
    if fa.has_inf and fb.has_inf:
        rows.append(([(math.inf, 1.0), (-math.inf, 1.0)], False))
        inputs.append("Inf x 1 + -Inf x 1")
    if bs is not None and bs.format.has_nan:
        rows.append(([(1.0, 1.0)], True))
        inputs.append("1 x 1 with a NaN block scale")
    if not rows:
        return Feature("nan", "canonical", "unobservable", "the input (and scale) formats have no NaN or Inf")
    a, b = torch.zeros(len(rows), 2), torch.zeros(2, len(rows))
    for i, (r, _) in enumerate(rows):
        for k, (x, y) in enumerate(r):
            a[i, k], b[k, i] = x, y
    sa, sb = _unit_scales(bs, a, b)
    if sa is not None and sb is not None:
        for i, (_, nan_scale) in enumerate(rows):
            if nan_scale:
                sa[i, 0] = math.nan
    raw = torch.diagonal(box.call("nan", a, b, sa, sb))
    got = raw.double().tolist()
    canon = torch.diagonal(emulated_matmul(a, b, replace(model, nan_output="canonical"), a_scales=sa, b_scales=sb))
    bits = raw.view(torch.int32)
    if not bool(raw.isnan().all()):
        return Feature("nan", None, "inconsistent", "a NaN/Inf input did not give NaN", inputs, got, box.calls["nan"])
    same = torch.equal(bits, canon.view(torch.int32))
    shown = ", ".join(f"0x{int(v) & 0xFFFFFFFF:08X}" for v in bits)
    return Feature("nan", "canonical" if same else "ieee", "inferred",
                   f"NaN bits {shown}: " + ("the canonical NaN" if same else "not canonical: IEEE NaNs"), inputs, got,
                   box.calls["nan"])


# ---- FMA trees --------------------------------------------------------------------------------------------
def _tree_flush(sub: Feature, rng: Feature) -> Feature:
    """Feature ``flush_subnormals`` of an FMA tree, from the subnormal inputs and the range's subnormal results."""
    seen = {name: v for name, v in (("inputs", sub.value), ("results", (rng.value or {}).get("subnormals")))
            if v is not None}
    if not seen:
        return Feature("flush_subnormals", False, "unobservable", "no subnormal input or result in reach: no "
                       "flushing taken")
    if len(set(seen.values())) > 1:
        return Feature("flush_subnormals", None, "inconsistent", f"subnormal {seen}: an FMA tree flushes inputs, "
                       "partial sums and results together or not at all")
    flush = next(iter(seen.values())) == "flushed"
    return Feature("flush_subnormals", flush, "inferred", f"subnormal {' and '.join(seen)} "
                   f"{'flushed to zero' if flush else 'kept'}")


# ---- block-scaled FP4/FP6: chunk sums ---------------------------------------------------------------------
def _big(enc: _ScaledEncoder, e: int) -> float | None:
    """A value with exponent ``e`` that one block can hold, with as few significant bits as possible."""
    for sig in sorted(enc.table, key=lambda v: (v.as_integer_ratio()[1], v)):
        v = sig * 2.0**e
        if enc.block([v, -v]) is not None:
            return v
    return None


def _chunk_rows(enc: _ScaledEncoder, block: int, k: int, ds: Sequence[int | None]) -> tuple[int, list[
        _ScaledRow]] | None:
    """The rows of feature ``chunk`` at one k: B at element 0 and -B at element block/2 (block 0), then in block 1
    x = 1.5 * 2^-k B at elements block and block + d for each d in ``ds`` (None: 3 * 2^-k B at element block
    alone). Returns (exponent of x, rows)."""
    for ex in sorted(range(_CHUNK_SAFE[0], _CHUNK_SAFE[1] - 2), key=abs):
        B = _big(enc, ex + k)
        b0 = enc.block([B, -B]) if B is not None else None
        pair, one = enc.block([1.5 * 2.0**ex, 1.5 * 2.0**ex]), enc.block([3 * 2.0**ex])
        if b0 is None or pair is None or one is None:
            continue
        rows = []
        for d in ds:
            elems = [(0, *b0[1][0]), (block // 2, *b0[1][1])]
            elems += [(block, *pair[1][0]), (block + d, *pair[1][1])] if d is not None else [(block, *one[1][0])]
            other = pair if d is not None else one
            rows.append(_ScaledRow(2 * block, elems, [enc.split(b0[0]), enc.split(other[0])]))
        return ex, rows
    return None


def _probe_chunk(box: _Box) -> Feature:
    """Feature ``chunk`` (module doc): how many consecutive products are summed exactly before alignment."""
    bs = box.block_scale
    assert bs is not None
    enc = _ScaledEncoder(*box.formats, bs)
    block = bs.block
    rows, ks = [], []
    for k in range(0, _MAX_FLOOR_BITS + 4):            # beyond the alignment bits the models allow
        placed = _chunk_rows(enc, block, k, [block - 1, None])
        if placed is None:
            break
        rows += placed[1]
        ks.append(k)
    if not ks or block < 2:
        return Feature("chunk", None, "unobservable", "no B - B beside a pair of small products encodes")
    got = box.scaled_rows("chunk", rows)
    inputs = [f"B - B in block 0, then x = 1.5 * 2^-k B at elements {block} and {2 * block - 1} (block 1), or 2x "
              f"at element {block} alone, k = 0..{ks[-1]}"]
    differs = [k for k, a, b in zip(ks, got[0::2], got[1::2]) if a != b]
    if not differs:
        return Feature("chunk", block, "inferred", f"the two products of block 1 always sum as their sum does: "
                       f"chunks of the whole block ({block}), or the pair is outside B's step (the step is then "
                       "checked)", inputs, got, box.calls["chunk"])
    k = differs[0]
    placed = _chunk_rows(enc, block, k, [*range(1, block), None])
    assert placed is not None
    got2 = box.scaled_rows("chunk", placed[1])
    same = [g == got2[-1] for g in got2[:-1]]
    inputs.append(f"at k = {k}: x at elements {block} and {block} + d, d = 1..{block - 1}")
    chunk = next((d for d, s in zip(range(1, block), same) if not s), block)
    calls = box.calls["chunk"]
    if any(same[chunk - 1:]) or not all(same[:chunk - 1]) or block % chunk:
        return Feature("chunk", None, "inconsistent", "products summed exactly for no single chunk size", inputs,
                       got + got2, calls)
    return Feature("chunk", chunk, "inferred", f"beside B - B two products sum exactly (as 2x) when fewer than "
                   f"{chunk} elements apart from the block start, and are aligned one by one otherwise: chunks of "
                   f"{chunk}", inputs, got + got2, calls)


def _group_row(s: int, k: int, j: int) -> list[Row]:
    """B, -B at slots 0 and 1 (B = 2^(s + k)), t = 2^s at slot j."""
    row = [0.0] * (j + 1)
    row[0], row[1], row[j] = 2.0 ** (s + k), -(2.0 ** (s + k)), 2.0**s
    return [row]


def _probe_chunk_group(view: _ChunkView, max_k: int) -> Feature:
    """Feature ``order`` of a chunk-summing box (module doc): the chunk terms per step."""
    n = max_k // view.chunk
    first = max(2, view.per_block)
    if n <= first:
        return Feature("order", None, "unobservable", f"max_k = {max_k} holds too few chunks of {view.chunk}")
    for k in range(72, 12, -1):                          # the widest gap the scales reach
        if _place(functools.partial(_group_row, k=k, j=first), _unit_out, view) is None:
            continue
        placed = [_place(functools.partial(_group_row, k=k, j=j), _unit_out, view) for j in range(first, n)]
        if all(p is not None for p in placed):
            break
    else:
        return Feature("order", None, "unobservable", "no B - B and a far smaller chunk term encode")
    got = view.run("order", [p[1][0] for p in placed])  # type: ignore[index]
    kept = [g == 2.0 ** p[0] for g, p in zip(got, placed)]  # type: ignore[index]
    inputs = [f"B - B in chunks 0 and 1, t = 2^-{k} B in chunk j, j = {first}..{n - 1}"]
    calls = view.box.calls["order"]
    if not any(kept):
        return Feature("order", None, "unobservable", f"t is lost beside B - B up to chunk {n - 1}: a step of more "
                       f"than {n} chunks, or no step boundary (raise max_k)", inputs, got, calls)
    if kept[kept.index(True):] != [True] * (len(kept) - kept.index(True)):
        return Feature("order", None, "inconsistent", "t is lost beside B - B for no single step of chunks", inputs,
                       got, calls)
    g = first + kept.index(True)
    if g == first and first > 2:
        return Feature("order", None, "unobservable", f"t survives in the first chunk of block 1: the step holds "
                       f"at most one block ({view.per_block} chunks), which these probes cannot split", inputs, got,
                       calls)
    return Feature("order", {"group_size": g * view.chunk, "family": "chunk", "promote_every": None}, "inferred",
                   f"t = 2^-{k} B is cut beside B - B in chunks < {g} and kept from chunk {g}: steps of {g} chunks "
                   f"({g * view.chunk} products); promotion not probed (none fitted)", inputs, got, calls)


def _zero_row(e1: int, qmin: int, visible: int, s1: int, tiny: int, s2: int, e2: int) -> Row:
    """The terms of one row of the chunk zero probe: ``visible`` 0 (none), 1 (s1 * 2^e1) or 2 (s1 * (2^e1 +
    2^(qmin - 1)), a tie at the accumulator's smallest subnormal 2^qmin); ``tiny`` 1 (s2 * 2^e2) or 2 (s2 * 3 *
    2^e2 and -s2 * 2^e2: two tiny terms of opposite signs)."""
    row = [s1 * 2.0**e1, s1 * 2.0 ** (qmin - 1)][:visible]
    return row + ([s2 * 2.0**e2] if tiny == 1 else [s2 * 3 * 2.0**e2, -s2 * 2.0**e2])


def _probe_chunk_zero(view: _ChunkView, f: int, mode: str, acc: FloatFormat, acc_mode: str) -> Feature:
    """Feature ``zero_exponent`` of a chunk-summing box (module doc): zero chunk sums (and the zero running sum)
    as terms 0 * 2^z that lift the step's alignment exponent above every real term."""
    qmin = acc.emin - acc.mbits                          # the accumulator's smallest subnormal
    e1 = qmin + 5                                        # visible; one block holds it with 2^(qmin - 1)
    fa, fb = view.box.formats
    lowest = min(fa.emin, fb.emin, acc.emin)
    zs: list[int | None] = [None, *range(e1 + 1, lowest + 1)]
    e2s = list(range(e1 - f - 4, lowest - f + 2))

    def pred(z: int | None, terms: Row) -> float:
        E = max([_exp(v) for v in terms] + ([z] if z is not None else []))
        tot = sum((round_to_multiple(Fraction(v), Fraction(2) ** (E - f), mode) for v in terms), Fraction(0))
        return round_exact(tot, acc, acc_mode)

    best: tuple[int, tuple[int, int, int, int]] | None = None
    for pattern in ((v, s1, t, s2) for t in (1, 2) for v in (1, 2, 0) for s1 in (1, -1) for s2 in (-s1, s1)
                    if v or s1 == 1):
        rows = [_zero_row(e1, qmin, *pattern, e2) for e2 in e2s]
        distinct = len({tuple(pred(z, r) for r in rows) for z in zs})
        if best is None or distinct > best[0]:
            best = (distinct, pattern)
        if distinct == len(zs):
            break
    if best is None or best[0] < 2 or not e2s:
        return Feature("zero_exponent", None, "unobservable", "no zero chunk can lift the alignment above a visible "
                       "term")
    pattern = best[1]
    terms = [_zero_row(e1, qmin, pattern[0], pattern[1], pattern[2], pattern[3], e2) for e2 in e2s]
    encoded = [view.encode(t) for t in terms]
    if any(r is None for r in encoded):
        return Feature("zero_exponent", None, "unobservable", "the block scales cannot reach the tiny terms that a "
                       "zero chunk would cut")
    got = view.run("zero_exponent", encoded)
    calls = view.box.calls["zero_exponent"]
    tiny = "+-2^e2" if pattern[2] == 1 else "+-3 * 2^e2 and -+2^e2"
    inputs = [f"among zero chunks: {terms[0][:pattern[0]] or 'nothing'} and {tiny}, e2 = {e2s[0]}..{e2s[-1]}"]
    fits = [z for z in zs if [pred(z, t) for t in terms] == got]
    if not fits:
        return Feature("zero_exponent", None, "inconsistent", "no exponent of the zero terms gives the outputs",
                       inputs, got, calls)
    if None in fits:
        return Feature("zero_exponent", None, "inferred" if -126 not in fits else "unobservable", "tiny terms are "
                       f"cut only relative to the real terms: zero chunks take no part (or rank at or below 2^{e1})",
                       inputs, got, calls)
    return Feature("zero_exponent", fits[0], "inferred" if len(fits) == 1 else "unobservable", "tiny terms are cut "
                   f"relative to 2^{fits[0]}: zero chunk sums are terms 0 * 2^{fits[0]}", inputs, got, calls)


# ---- validation ---------------------------------------------------------------------------------------
def _random_values(shape: tuple[int, int], fmt: FloatFormat, gen: torch.Generator, regime: str) -> torch.Tensor:
    """Values of ``fmt`` for one regime: "wide" (exponents across the format, subnormals included), "huge"
    (zeros beside the largest magnitudes), "tiny" (subnormals and the smallest normals)."""
    lo, hi = fmt.emin - fmt.mbits, fmt.emax
    if regime == "tiny":
        hi = fmt.emin + 2
    e = torch.randint(lo, hi + 1, shape, generator=gen).double()
    v = torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0**e * torch.where(
        torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).double()
    v = quantize(v, fmt, saturate=True, out_dtype=torch.float64)
    if regime == "huge":
        r = torch.rand(shape, generator=gen)
        v = torch.where(r < 0.4, 0.0, torch.where(r < 0.6, math.copysign(fmt.max, 1.0) * torch.sign(v), v))
    return v.float()


def _random_scales(shape: tuple[int, int], bs: BlockScale, gen: torch.Generator) -> torch.Tensor:
    """Block scales of ``bs.scale_format``: exponents in [-12, 12] (within the format), random significands."""
    fmt = bs.format
    e = torch.randint(max(-12, fmt.emin), min(12, fmt.emax) + 1, shape, generator=gen).double()
    sig = 1 + torch.floor(torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0**fmt.mbits) / 2.0**fmt.mbits
    return quantize(sig * 2.0**e, fmt, saturate=True, out_dtype=torch.float64).float()


def _trial(model: AccumulatorModel, K: int, gen: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
    """The operands of validation trial ``n``: the regime cycles wide, huge, cancel, tiny, nan."""
    fa, fb = model.formats
    regime = ("wide", "huge", "cancel", "tiny", "nan")[n % 5]
    M = N = 8
    a = _random_values((M, K), fa, gen, "tiny" if regime == "tiny" else "huge" if regime == "huge" else "wide")
    b = _random_values((K, N), fb, gen, "wide" if regime != "huge" else "huge")
    if regime == "cancel" and K >= 2:
        h = K // 2
        a[:, h:2 * h] = -a[:, :h]
        b[h:2 * h] = b[:h]
    if regime == "nan":
        special = [v for v, ok in ((math.nan, fa.has_nan), (math.inf, fa.has_inf), (-math.inf, fa.has_inf)) if ok]
        for i, v in enumerate(special):
            a[i, int(torch.randint(0, K, (1,), generator=gen))] = v
    bs = model.block_scale
    if bs is None:
        return a, b
    nb = -(-K // bs.block)
    sa, sb = _random_scales((M, nb), bs, gen), _random_scales((nb, N), bs, gen)
    if regime == "nan" and bs.format.has_nan:
        sa[M - 1, int(torch.randint(0, nb, (1,), generator=gen))] = math.nan
    return a, b, sa, sb


def validate(gemm: Gemm, model: AccumulatorModel, trials: int = 20, *, max_k: int = 96,
             seed: int = 0) -> Validation:
    """``trials`` random GEMMs (8 x K x 8, K random in 1..``max_k``; regimes cycle: wide exponents, zeros beside
    huge values, cancelling pairs, tiny products, NaN/Inf; random block scales of the scale format for a
    block-scaled ``model``) through ``gemm`` and ``emulated_matmul(model)``; bit-for-bit comparison (NaN-ness only
    when ``model.nan_output`` is "ieee")."""
    gen = torch.Generator().manual_seed(seed)
    box = _Box(gemm, model.formats, model.block_scale)
    mism: list[Mismatch] = []
    n_bad = elements = 0
    for t in range(trials):
        K = int(torch.randint(1, max_k + 1, (1,), generator=gen))
        ops = _trial(model, K, gen, t)
        got = box.call("validation", *ops)
        want = emulated_matmul(ops[0], ops[1], model, a_scales=ops[2] if len(ops) > 2 else None,
                               b_scales=ops[3] if len(ops) > 2 else None)
        gb, wb = got.view(torch.int32), want.view(torch.int32)
        bad = gb != wb
        if model.nan_output == "ieee":
            bad &= ~(got.isnan() & want.isnan())
        elements += got.numel()
        for r, c in bad.nonzero().tolist():
            n_bad += 1
            if len(mism) < 20:
                mism.append(Mismatch(t, r, c, int(gb[r, c]) & 0xFFFFFFFF, int(wb[r, c]) & 0xFFFFFFFF))
    return Validation(n_bad == 0, trials, elements, box.calls.get("validation", 0), n_bad, mism)


# ---- the probe ----------------------------------------------------------------------------------------
def _determinism(box: _Box, model_formats: tuple[FloatFormat, FloatFormat], K: int) -> Feature:
    """Feature ``deterministic``: one random GEMM run twice gives the same bits."""
    gen = torch.Generator().manual_seed(1)
    a = _random_values((16, K), model_formats[0], gen, "wide")
    b = _random_values((K, 16), model_formats[1], gen, "wide")
    first = box.call("deterministic", a, b)
    second = box.call("deterministic", a, b)
    n = int((first.view(torch.int32) != second.view(torch.int32)).sum())
    same = n == 0
    return Feature("deterministic", same, "inferred" if same else "inconsistent",
                   "the same GEMM twice gives the same bits" if same else
                   f"the same GEMM twice differs in {n} of {first.numel()} elements: non-deterministic",
                   [f"random 16 x {K} x 16, twice"], [], box.calls["deterministic"])


class _Session:
    """One probe run: the box, the features so far, the reasons against a fit."""

    def __init__(self, gemm: Gemm, fmts: tuple[FloatFormat, FloatFormat], block_scale: BlockScale | None,
                 max_k: int, trials: int):
        self.gemm, self.fmts, self.block_scale, self.max_k, self.trials = gemm, fmts, block_scale, max_k, trials
        self.box = _Box(gemm, fmts, block_scale)
        self.feats: dict[str, Feature] = {}
        self.reasons: list[str] = []

    def add(self, feat: Feature) -> Feature:
        self.feats[feat.name] = feat
        feat.calls = self.box.calls.get(feat.name, 0)
        if feat.status == "inconsistent":
            self.reasons.append(f"{feat.name}: {feat.text}")
        return feat

    def done(self, candidate: AccumulatorModel | None, validation: Validation | None = None) -> ProbeResult:
        if self.box.nan_from_finite:
            self.reasons.append("NaN for finite inputs in the probes of "
                                f"{', '.join(sorted(set(self.box.nan_from_finite)))}")
        fitted = candidate if not self.reasons else None
        return ProbeResult(fitted, candidate, self.feats, validation, self.reasons)

    def finish(self, **fields: Any) -> ProbeResult:
        """The candidate model from ``fields``, its NaN bits, and validation."""
        if self.reasons:
            return self.done(None)
        try:
            candidate = AccumulatorModel("probed", (self.fmts[0].name, self.fmts[1].name),
                                         block_scale=self.block_scale, description="fitted by lowprec.probe", **fields)
        except (ValueError, TypeError) as exc:
            self.reasons.append(f"the features fit no AccumulatorModel: {exc}")
            return self.done(None)
        try:
            nan = self.add(_probe_nan(self.box, candidate))
            if nan.value is not None:
                candidate = replace(candidate, nan_output=nan.value)
            if self.reasons:
                return self.done(candidate)
            validation = validate(self.gemm, candidate, self.trials, max_k=self.max_k)
        except ValueError as exc:               # the candidate is valid but emulated_matmul cannot run it
            self.reasons.append(f"the fitted model cannot be emulated: {exc}")
            return self.done(candidate)
        if not validation.agree:
            self.reasons.append(f"validation: {validation.n_mismatches} of {validation.elements} elements differ "
                                f"from the fitted {type(candidate.structure).__name__} (first: "
                                f"{validation.mismatches[0]})")
        return self.done(candidate, validation)


def _overflow(rng: Feature, nvidia: bool) -> str:
    """The overflow rule seen by ``range``, else the convention: "inf" for the NVIDIA structures (SPEC 2b), "ieee"
    for the others (with rounding to nearest both give the same bits)."""
    return (rng.value or {}).get("overflow") or ("inf" if nvidia else "ieee")


def _zero(feat: Feature, nvidia: bool) -> int | None:
    """The zero exponent inferred, else the convention: -126 for the NVIDIA structures (SPEC 2b), None (zeros
    take no part) for the others. The feature's value and text say which."""
    if feat.status == "inferred":
        return feat.value
    feat.value = -126 if nvidia else None
    feat.text += f"; the convention {feat.value} fitted"
    return feat.value


def _fit_tree(ses: _Session, t: int) -> ProbeResult:
    """An FMA tree of ``t`` products per group (the FPRev counts): its accumulator, flushing, range."""
    box = ses.box
    view = _ElementView(box)
    acc = ses.add(_probe_accumulator(view, t, None))
    if acc.status != "inferred":
        if acc.status == "unobservable":
            ses.reasons.append(f"accumulator: {acc.text}")
        return ses.done(None)
    m, mode = acc.value["mbits"], acc.value["rounding"] or "rne"
    sub = ses.add(_probe_subnormal_inputs(box, flush_ok=True))
    rng = ses.add(_probe_range(box, m, mode, flush_ok=True, flushed=sub.value == "flushed"))
    ses.add(_probe_products(box, None, m))
    flush = ses.add(_tree_flush(sub, rng))
    if ses.reasons:
        return ses.done(None)
    return ses.finish(group_size=t, align_bits=None, align_with_acc=False,
                      acc_format=_acc_format(m, rng.value["bias"]), acc_rounding=mode, zero_exponent=None,
                      overflow=_overflow(rng, False), structure=FmaTree(bool(flush.value)))


def _fit_steps(ses: _Session, G: int, fam: str, P: int | None) -> ProbeResult:
    """Fused steps or split sums of ``G`` products (the FPRev counts): alignment, the running sum's rule, the
    accumulator, and for split sums the interleaved subsets and the floor of a group's sum."""
    box = ses.box
    view = _ElementView(box)
    fbits = ses.add(_probe_align_bits(view, G, fam == "exact"))
    f = fbits.value
    if fbits.status == "inconsistent":
        return ses.done(None)
    align_mode, rule = "rtz", None
    if f is not None:
        ar = ses.add(_probe_align_rounding(view, f))
        if ar.status == "inconsistent":
            return ses.done(None)
        align_mode = ar.value or align_mode
        rule_f = ses.add(_probe_acc_alignment(view, G, f, align_mode))
        if rule_f.status == "inconsistent":
            return ses.done(None)
        rule = rule_f.value
    acc = ses.add(_probe_accumulator(view, G, f))
    if acc.status == "inconsistent":
        return ses.done(None)
    m, acc_mode = (23, "rtz") if acc.value is None else (acc.value["mbits"], acc.value["rounding"] or "rtz")
    rng = ses.add(_probe_range(box, m, acc_mode))
    if rng.status == "inconsistent":
        return ses.done(None)
    acc_name = _acc_format(m, rng.value["bias"])
    ses.add(_probe_subnormal_inputs(box))
    ses.add(_probe_products(box, f, m))
    zf = ses.add(_probe_zero_exponent(box, f, get_format(acc_name)))
    if ses.reasons:
        return ses.done(None)
    fields: dict[str, Any] = dict(group_size=G, align_bits=f, align_rounding=align_mode, acc_format=acc_name,
                                  acc_rounding=acc_mode, promote_every=P)
    if f is None:                               # exact terms: one rounding per step, IEEE-like (a reference)
        ses.add(Feature("structure", "FusedSum", "inferred", "exact terms, one rounding per step: a fused sum"))
        return ses.finish(align_with_acc=True, overflow=_overflow(rng, False), structure=FusedSum(),
                          zero_exponent=_zero(zf, False), **fields)
    assert rule is not None
    J, sticky = 1, None
    if rule["floored"] is not None:             # a split sum could explain the running sum: look closer
        J = ses.add(_probe_interleave(view, G, f, align_mode)).value
        sticky = ses.add(_probe_sum_floor(_ElementView(box, subnormal=True), G, f, align_mode, J or 1, m,
                                          acc_mode)).value
        if ses.reasons:
            return ses.done(None)
    fused = [w for w, ok in ((True, rule["aligned"]), (False, rule["after"]))
             if ok and J == 1 and (sticky is None or sticky["aligned" if w else "after"])]
    if fused:
        w = fused[0]
        ses.add(Feature("structure", "FusedSum", "inferred", "one fused step per group, the running sum "
                        + ("in its alignment" if w else "added after it")
                        + ("" if sticky is None else "; no split-sum feature needed")))
        return ses.finish(align_with_acc=w, overflow=_overflow(rng, True), structure=FusedSum(),
                          zero_exponent=_zero(zf, True), **fields)
    if rule["floored"] is None or sticky is None or not sticky["sum_bits"]:
        why = ("a split sum, but its group sum is not floored within the probes' reach" if sticky and
               sticky["unbounded"] else "neither a fused step nor a split sum explains the running sum and the "
               "step's sum together")
        ses.add(Feature("structure", None, "inconsistent", why))
        return ses.done(None)
    b, d = rule["floored"]
    sb = sticky["sum_bits"][0]
    st = SplitSum(sb, b, J, d)
    ses.add(Feature("structure", f"SplitSum({sb}, {b}, {J}, {d})", "inferred",
                    f"no fused step explains the running sum's floor: a split sum, group sum floored to {sb} bits, "
                    f"running sum to {b}" + (f", dropped more than {d} binades below" if d is not None else "")
                    + f", {J} interleaved subsets"))
    return ses.finish(align_with_acc=False, overflow=_overflow(rng, False), structure=st,
                      zero_exponent=_zero(zf, False), **fields)


def _fit_chunked(ses: _Session) -> ProbeResult:
    """A block-scaled box with FP4/FP6 operands: chunk size, then a fused step over chunk terms."""
    box = ses.box
    bs = ses.block_scale
    assert bs is not None
    ch = ses.add(_probe_chunk(box))
    if ch.status != "inferred":
        if ch.status == "unobservable":
            ses.reasons.append(f"chunk: {ch.text}")
        return ses.done(None)
    c = ch.value
    if c == 1:
        ses.reasons.append("chunk: products are aligned one by one (a fused sum with block scales), but these "
                           "element formats are too narrow for the element-level probes a fused sum needs")
        return ses.done(None)
    grp = ses.add(_probe_chunk_group(_ChunkView(box, c), ses.max_k))
    if grp.status != "inferred":
        if grp.status == "unobservable":
            ses.reasons.append(f"order: {grp.text}")
        return ses.done(None)
    G = grp.value["group_size"]
    if c == bs.block and G < 2 * bs.block:
        ses.reasons.append(f"chunk: a step of {G} products holds no block beside block 0, so the chunk probe "
                           "could not see a cut: chunk size undetermined")
        return ses.done(None)
    view = _ChunkView(box, c, G // c)
    fbits = ses.add(_probe_align_bits(view, G // c, False))
    if fbits.status != "inferred":
        if fbits.status == "unobservable":
            ses.reasons.append(f"align_bits: {fbits.text}")
        return ses.done(None)
    f = fbits.value
    ar = ses.add(_probe_align_rounding(view, f))
    if ar.status != "inferred":
        return ses.done(None)
    rule = ses.add(_probe_acc_alignment(view, G // c, f, ar.value))
    if rule.status != "inferred":
        return ses.done(None)
    if not (rule.value["aligned"] or rule.value["after"]):
        ses.reasons.append("acc_alignment: the running sum is floored like a split sum's, which chunk sums are not")
        return ses.done(None)
    acc = ses.add(_probe_accumulator(view, G // c, f))
    if acc.status != "inferred":
        return ses.done(None)
    m, acc_mode = acc.value["mbits"], acc.value["rounding"] or "rtz"
    rng = ses.add(_probe_range(box, m, acc_mode, scaled=True))
    if rng.status == "inconsistent":
        return ses.done(None)
    acc_name = _acc_format(m, rng.value["bias"])
    ses.add(_probe_subnormal_inputs(box))
    z = _zero(ses.add(_probe_chunk_zero(view, f, ar.value, get_format(acc_name), acc_mode)), True)
    if ses.reasons:
        return ses.done(None)
    ses.add(Feature("structure", f"ChunkSum({c})", "inferred", f"exact sums of {c} products, times their block "
                    f"scales, aligned as one fused step of {G // c} chunk terms"))
    return ses.finish(group_size=G, align_bits=f, align_rounding=ar.value, align_with_acc=rule.value["aligned"],
                      acc_format=acc_name, acc_rounding=acc_mode, zero_exponent=z, overflow=_overflow(rng, True),
                      structure=ChunkSum(c))


def probe(gemm: Gemm, input_formats: tuple[str, str] = ("e4m3fn", "e4m3fn"), *, max_k: int = 128,
          block_scale: BlockScale | None = None, trials: int = 20) -> ProbeResult:
    """Infer the accumulator of the black box ``gemm`` (module doc): features, fitted model (a ``FusedSum``,
    ``SplitSum``, ``FmaTree`` or ``ChunkSum`` structure), validation.

    ``max_k``: the longest dot product probed (group sizes and promotion intervals are seen below it; for a
    chunk-summing box, at least two steps of products); ``block_scale``: the black box takes block scales of this
    block size and format (``gemm(a, b, a_scales, b_scales)``; FP8 and wider operands are probed with unit scales,
    FP4/FP6 ones with crafted power-of-two scales; validation uses random ones); ``trials``: validation GEMMs. A
    black box that breaks the GEMM contract (wrong shape or dtype) raises ``ProbeError``; a ``max_k`` below 4 or a
    ``block_scale`` that is not a ``BlockScale``, ``ValueError``/``TypeError``.
    """
    fmts = (get_format(input_formats[0]), get_format(input_formats[1]))
    if block_scale is not None and not isinstance(block_scale, BlockScale):
        raise TypeError(f"block_scale must be a BlockScale or None, got {block_scale!r}")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 4:
        raise ValueError(f"max_k must be an int >= 4, got {max_k!r}")
    ses = _Session(gemm, fmts, block_scale, max_k, trials)
    if ses.add(_determinism(ses.box, fmts, min(max_k, 64))).status == "inconsistent":
        return ses.done(None)
    if block_scale is not None and _fprev_scale(*fmts) is None:
        return _fit_chunked(ses)
    order = ses.add(_probe_order(ses.box, max_k))
    if order.status == "unobservable":
        ses.reasons.append(f"order: {order.text}: no model can be fitted without the step structure")
    if order.status != "inferred":
        return ses.done(None)
    G, fam, P = order.value["group_size"], order.value["family"], order.value["promote_every"]
    if fam == "tree":
        return _fit_tree(ses, G)
    if fam == "exact" and G >= max_k:
        G = _UNBOUNDED_GROUP
    return _fit_steps(ses, G, fam, P)
