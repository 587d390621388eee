"""Find out what a matrix unit's accumulator does: crafted GEMMs through a black box, a fitted model, a check.

``probe(gemm, input_formats)`` treats ``gemm`` as a black box -- a callable taking two float32 matrices ``a``
(M x K) and ``b`` (K x N) holding values of ``input_formats`` and returning their float32 product (with
``block_scale``: ``gemm(a, b, a_scales, b_scales)``, the scales float32 of ``block_scale.scale_format``) -- and
infers the parameters of a ``FusedSum`` ``AccumulatorModel`` (``lowprec.accum``, whose module doc gives the
semantics) from a few calls. Each call batches many probe dot products: row r of ``a`` and column r of ``b`` hold
the factors of probe r, and the diagonal element (r, r) is its output; every product is ``x * y`` with x a value of
the first format and y of the second (a power of two on one side, both normal), zeros elsewhere; block scales are 1.
The scales of the probes are chosen so that their outputs lie in [2^-14, 2^15] (exact in any accumulator
wider than fp16) until the accumulator's range is known. The features, in the order they are inferred:

``deterministic``: one random GEMM twice: the same bits, or the result is "inconsistent" at once.
``order`` (FPRev, Xie et al. 2025; SPEC 2): K products, all the unit u but +M at i and -M at j, M = 2^n u with
    n = 27 (E4M3) .. 30. The output counts the units that survived; ``lost(0, j) = K - 2 - out / u`` for every
    j < K (one call). A vectorised abstract run of each candidate (families "cut" -- aligned terms cut to a few
    bits -- and "exact" terms; g products per step; promotion every P) predicts every count; the candidates are
    the g and P read off the counts. Inferred: ``group_size``, whether terms are cut at all, ``promote_every``.
    The abstract run assumes every unit beside M vanishes: n > f + 1; with the running sum added after a step,
    a step's sum of units must vanish when rounded beside M (nearest rounding, n > m + log2 g + 1); a promotion
    is seen when n > f + log2 P (FP8 with 13 bits; K <= 2P also avoids promoting unit sums beside M). Counts of
    pairwise trees of t, one after another (``lost(0, j) = 2^bitlen(j) - 2`` inside the first) are named: "not a
    fused sum" when no fused candidate fits, a warning in the text when one does (trees of 4 give the counts of
    steps of 2 promoted every 4).
``align_bits``: rows ``B - B + 2^-k B`` in one step for every k the formats reach (B = 2^eB a power-of-two
    product): the small term survives exactly for k <= f, whatever the rounding (a tie at k = f + 1 goes to the
    even 0). Survival through the largest reachable k: terms are kept exact (``align_bits=None``).
``align_rounding``: ``B - B + r q`` for r = 0.75, 0.5, -0.75, -0.5 (q = 2^-f B): outputs / q of (0, 0, 0, 0) is
    toward zero, (0, 0, -1, -1) toward -inf (two's-complement shifting), (1, 0, -1, 0) nearest even.
``c_in_alignment``: ``t`` alone in the first step, then ``B - B`` in the second, t = 2^-k B for k = f and
    f + 2: when the running sum joins the second step's alignment it is cut like a product (t lost at k = f + 2,
    kept at k = f); when it is added after the step, t survives both.
``accumulator``: one step with 2^h copies of 2^E and one small term: the sum S = 2^(E+h) + 1.5 * 2^(E+h-m') needs
    m' + 1 fraction bits; h is the least that keeps the small term whole through the alignment (h >= m' + 1 - f).
    The accumulator keeps m bits: S comes out exact for m' < m and not at m' = m. The scan runs at h and at h + 1
    (a carry one binade up): the same m at both means the sum is normalised before rounding. Then
    ``+-(2^(E+h) + r ulp)`` for r = 0.5, 1.5, 2.5 pick the rounding (rtz, rne, rdown, rup, rna) whose closed form
    reproduces all six outputs.
``range``: single products +-2^k over every k the formats reach (a column of +-2^i times a row of 2^j): the
    first k whose output is not 2^k gives the exponent range (emax = k - 1), and the outputs of +-2^k the
    overflow rule (Inf where IEEE rounding of that sign would stop at the largest finite value:
    ``overflow="inf"``; +-max: ``"ieee"``); the smallest exact output the lower end (2^(emin - m) with subnormal
    results kept -- or a little higher, where a zero accumulator aligned with the product cuts it first; 2^emin
    would mean flushed, which a FusedSum cannot express). Either end fixes the accumulator's bias and so its
    format; neither: 8 exponent bits (float32's register), reported as unobservable.
``subnormal_inputs``: a product with the subnormal 2^(emin - 1) of each input format (its significand 0.5 survives
    any alignment): exact (kept) or 0 (flushed).
``products``: single products of full-significand operands and ``(1 + 2^-ma)(1 + 2^-mb) - 1``, where the
    alignment and the accumulator can hold them exactly: the outputs equal the exact values (products are exact).
``zero_exponent``: ``p + 0 x 2^e`` for p = 2^ep, ep from the accumulator's smallest subnormal to its smallest
    normal, and every e of the second format, in one call: a zero operand is the term 0 * 2^(z + e), which lifts
    the alignment exponent and cuts p when z + e >= ep + f + 1; the first e that loses p gives z, read at the
    smallest p that the smallest zero operand leaves alone (a smaller p is cut by the zero accumulator already,
    SPEC 2b). Not observable where no zero product can reach that (FP8, FP16 operands; an fp16 accumulator, whose
    smallest value 2^-24 is too large, with BF16/TF32 operands): then the NVIDIA convention -126 is fitted,
    unchecked, and validation decides (a zero product cutting terms below the accumulator's own precision can
    still move a directed rounding).
``nan``: NaN (and Inf - Inf) inputs: the bits of the fitted model's canonical NaN (``emulated_matmul`` with
    ``nan_output="canonical"``: 0x7FFFFFFF, or 0x7FFFE000 for an fp16 result) mean canonical, anything else IEEE.

``validate(gemm, model, trials)`` then runs random inputs (wide exponents, zeros beside huge values, cancelling
pairs, tiny products, a few NaN/Inf) through the black box and ``emulated_matmul(model)`` and lists every element
whose bits differ. A ``ProbeResult`` is "fitted" only if every feature was inferred without contradiction and
validation agreed bit for bit; otherwise it is "inconsistent", with the reasons and the evidence, and no model.
Each feature records its inputs (a short description), its outputs and the number of GEMM calls it took.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .accum import AccumulatorModel, BlockScale, FusedSum, emulated_matmul
from .formats import FloatFormat, get_format, list_formats
from .rounding import floor_log2_exact, quantize, round_to_integer

Gemm = Callable[..., torch.Tensor]
Pair = tuple[float, float]                  # one product's factors (x of the first format, y of the second)
_SAFE = (-14, 15)                           # outputs kept in [2^-14, 2^15] until the accumulator's range is known
_ACC_MODES = ("rtz", "rne", "rdown", "rup", "rna")
_CUT_NAMES = {(0, 0, 0, 0): "rtz", (0, 0, -1, -1): "rdown", (1, 0, -1, 0): "rne"}


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
    """What ``probe`` found: ``model`` (the fitted FusedSum, or None when ``status`` is "inconsistent"),
    ``candidate`` (the model the features assembled, kept for diagnosis even when it failed), ``features`` by
    name, ``validation`` and ``reasons`` (why inconsistent; empty when fitted)."""

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
def _factor(v: float, fa: FloatFormat, fb: FloatFormat) -> Pair | None:
    """Normal x of ``fa`` and y of ``fb`` with x * y == v, one a power of two, exponents as balanced as possible;
    None if there are none."""
    if v == 0:
        return 0.0, 0.0
    k = math.frexp(abs(v))[1] - 1
    s = v / 2.0**k
    best: tuple[int, float, float] | None = None
    for sig_fmt, pow_fmt, sig_first in ((fa, fb, True), (fb, fa, False)):
        lo, hi = max(sig_fmt.emin, k - pow_fmt.emax), min(sig_fmt.emax, k - pow_fmt.emin)
        mid = min(max(k // 2, lo), hi)
        for ks in sorted({lo, hi, mid, max(lo, mid - 1), min(hi, mid + 1)}, key=lambda t: abs(2 * t - k)):
            x, y = s * 2.0**ks, 2.0 ** (k - ks)
            if lo <= hi and _representable(x, sig_fmt, True) and _representable(y, pow_fmt, True):
                if best is None or abs(2 * ks - k) < best[0]:
                    best = (abs(2 * ks - k), *((x, y) if sig_first else (y, x)))
                break
    return None if best is None else (best[1], best[2])


def _place(build: Callable[[int], list[float]], outs: Callable[[int], list[float]], fa: FloatFormat,
           fb: FloatFormat, out_range: tuple[int, int]) -> tuple[int, list[Pair]] | None:
    """The scale exponent s nearest 0 at which every product of ``build(s)`` factors into the formats and every
    value of ``outs(s)`` lies in [2^lo, 2^(hi+1)); with the factored products. None if no s in [-300, 300] does."""
    lo, hi = out_range
    for s in sorted(range(-300, 301), key=abs):
        if not all(v == 0 or lo <= math.frexp(abs(v))[1] - 1 <= hi for v in outs(s)):
            continue
        pairs = [_factor(v, fa, fb) for v in build(s)]
        if all(p is not None for p in pairs):
            return s, pairs  # type: ignore[return-value]
    return None


def _round_bits(x: Fraction, bits: int, mode: str) -> Fraction:
    """Non-zero ``x`` rounded to ``bits`` fraction bits relative to its binade by ``mode``."""
    q = Fraction(2) ** (floor_log2_exact(abs(x)) - bits)
    return round_to_integer(x / q, mode) * q


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
    if not all(float(v).is_integer() and 0 <= v <= K - 2 for v in lost0):
        return Feature("order", None, "inconsistent", "the outputs are not whole counts of units u: no summation "
                       "of these terms loses whole units", inputs, got, box.calls["order"])
    lost0i = [int(v) for v in lost0]
    # pairwise trees of t, one after another: lost(0, j) = 2^bitlen(j) - 2 inside the first tree, then t (gj + 1) - 2
    tree = next((t for t in (1 << e for e in range(2, K.bit_length())) if t < K and all(
        lost0i[j - 1] == ((1 << j.bit_length()) - 2 if j < t else t * (j // t + 1) - 2) for j in range(1, K))), 0)
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
        what = (f"pairwise trees of {tree} (lost(0, j) = 2^bitlen(j) - 2 in the first): not a fused sum" if tree
                else "no sequence of fused steps, promotions or exact sums gives these counts")
        return Feature("order", None, "inconsistent", what, inputs, got, box.calls["order"])
    g = max(g for _, g, _ in fits)                       # steps of 1 and 2 give the same (0, j) counts
    fits = [fit for fit in fits if fit[1] == g]
    fam, g, P = fits[0]
    alts = "" if len(fits) == 1 else f" (also fits: {', '.join(f'{f}, P={p}' for f, _, p in fits[1:])})"
    text = (f"FPRev counts fit fused steps of {g} products, terms {fam}"
            + (f", promotion every {P}" if P else f", no promotion within K = {K}") + alts
            + (f"; no step boundary within K = {K}: one step of >= {K}" if g >= K else "")
            + (f"; the counts are also those of pairwise trees of {tree} (an FMA tree, not a fused sum)"
               if tree else ""))
    return Feature("order", {"group_size": g, "family": fam, "promote_every": P}, "inferred", text, inputs, got,
                   box.calls["order"])


def _unit_out(s: int) -> list[float]:
    return [2.0**s]


def _cancel_then(s: int, k: int, pad: int, small: Sequence[float]) -> list[float]:
    """For each r in ``small``: B, -B (B = 2^(s + k)), ``pad`` zeros and r * 2^s, one row of 3 + pad products
    after another (``_place`` sees them together)."""
    return [v for r in small for v in (2.0 ** (s + k), -(2.0 ** (s + k)), *[0.0] * pad, r * 2.0**s)]


def _t_then_cancel(s: int, k: int, pad: int) -> list[float]:
    """t = 2^s, ``pad`` zeros, then B, -B with B = 2^(s + k)."""
    return [2.0**s] + [0.0] * pad + [2.0 ** (s + k), -(2.0 ** (s + k))]


# ---- alignment ------------------------------------------------------------------------------------------
def _probe_align_bits(box: _Box, G: int, exact_family: bool) -> Feature:
    """Feature ``align_bits`` (module doc)."""
    if G < 3:
        return Feature("align_bits", None, "unobservable", f"steps of {G} products cannot hold B, -B and a "
                       "small term together")
    fa, fb = box.formats
    rows, ks, scales = [], [], []
    for k in range(60):
        placed = _place(functools.partial(_cancel_then, k=k, pad=0, small=(1.0,)), _unit_out, fa, fb, _SAFE)
        if placed is None:
            break
        rows.append(placed[1])
        ks.append(k)
        scales.append(placed[0])
    if not ks:
        return Feature("align_bits", None, "unobservable", "no B - B + t factors into the input formats")
    got = box.rows("align_bits", rows)
    kept = [g == 2.0**s for g, s in zip(got, scales)]
    inputs = [f"B - B + 2^-k B, k = 0..{ks[-1]}, t = 2^-k B in [2^-14, 2^15]"]
    calls = box.calls["align_bits"]
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


def _probe_align_rounding(box: _Box, f: int) -> Feature:
    """Feature ``align_rounding`` (module doc)."""
    fa, fb = box.formats
    rs = (0.75, 0.5, -0.75, -0.5)
    placed = _place(functools.partial(_cancel_then, k=f, pad=0, small=rs), _unit_out, fa, fb, _SAFE)
    if placed is None:
        return Feature("align_rounding", None, "unobservable", "no B - B + r q factors into the input formats")
    s, pairs = placed
    got = box.rows("align_rounding", [pairs[3 * n:3 * n + 3] for n in range(len(rs))])
    units = tuple(g / 2.0**s for g in got)
    inputs = [f"B - B + r q, r = {rs}, q = 2^-{f} B = 2^{s}"]
    mode = _CUT_NAMES.get(units)  # type: ignore[arg-type]
    calls = box.calls["align_rounding"]
    if mode is None:
        return Feature("align_rounding", None, "inconsistent", f"outputs / q = {units}: no rounding toward zero, "
                       "toward -inf or to nearest gives them", inputs, got, calls)
    return Feature("align_rounding", mode, "inferred", f"outputs / q = {units}: positive and negative cut bits "
                   f"rounded {mode}", inputs, got, calls)


def _probe_c_in_alignment(box: _Box, G: int, f: int) -> Feature:
    """Feature ``c_in_alignment`` (module doc)."""
    fa, fb = box.formats
    rows, scales = [], []
    for k in (f, f + 2):
        placed = _place(functools.partial(_t_then_cancel, k=k, pad=G - 1), _unit_out, fa, fb, _SAFE)
        if placed is None:
            return Feature("c_in_alignment", None, "unobservable", "no t, B - B factors into the input formats")
        rows.append(placed[1])
        scales.append(placed[0])
    got = box.rows("c_in_alignment", rows)
    kept = tuple(g == 2.0**s for g, s in zip(got, scales))
    inputs = [f"t, then B - B in the next step, t = 2^-k B, k = {f}, {f + 2}"]
    calls = box.calls["c_in_alignment"]
    if kept == (True, False):
        return Feature("c_in_alignment", True, "inferred", f"the running sum t is cut at 2^-{f + 2} B like a "
                       "product: it joins the alignment", inputs, got, calls)
    if kept == (True, True):
        return Feature("c_in_alignment", False, "inferred", "the running sum survives a step of B - B: it is added "
                       "after the step's aligned sum", inputs, got, calls)
    return Feature("c_in_alignment", None, "inconsistent", f"t kept {kept} at k = {f}, {f + 2}: no rule for the "
                   "running sum gives that", inputs, got, calls)


# ---- accumulator ----------------------------------------------------------------------------------------
def _acc_terms(s: int, h: int, r: float, shift: int, sign: int) -> list[float]:
    """2^h copies of sign * 2^(s - h) and sign * r * 2^(s - shift)."""
    return [sign * 2.0 ** (s - h)] * (1 << h) + [sign * r * 2.0 ** (s - shift)]


def _acc_outs(s: int, r: float, shift: int) -> list[float]:
    return [2.0**s, r * 2.0 ** (s - shift)]


def _acc_row(box: _Box, h: int, r: float, shift: int, sign: int) -> tuple[int, list[Pair]] | None:
    """A step of 2^h copies of sign * 2^E and the small term sign * r * 2^(E + h - shift), placed (E + h = s)."""
    fa, fb = box.formats
    return _place(functools.partial(_acc_terms, h=h, r=r, shift=shift, sign=sign),
                  functools.partial(_acc_outs, r=r, shift=shift), fa, fb, _SAFE)


def _probe_accumulator(box: _Box, G: int, f: int | None) -> Feature:
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
            row = _acc_row(box, h, 1.5, mp, 1) if fits(h) else None
            if row is not None:
                scan.append((mp, h, row[0]))
                rows.append(row[1])
    if not rows:
        return Feature("accumulator", None, "unobservable", "no step holds the probe's terms")
    got = box.rows("accumulator", rows)
    exact = {(mp, h - h_for(mp)): g == 2.0**s + 1.5 * 2.0 ** (s - mp) for (mp, h, s), g in zip(scan, got)}
    ms = []
    for carry in (0, 1):
        seen = sorted(mp for mp, c in exact if c == carry)
        bad = [mp for mp in seen if not exact[(mp, carry)]]
        if bad and all(exact[(mp, carry)] for mp in seen if mp < bad[0]):
            ms.append(bad[0])
    inputs = ["one step: 2^h x 2^E + 1.5 * 2^(E+h-m'), m' = 1..30, at the least h and one higher"]
    calls = box.calls["accumulator"]
    if not ms:
        return Feature("accumulator", None, "unobservable", "every probed sum came out exact (or none could be "
                       "placed): the accumulator keeps more bits than the steps can show", inputs, got, calls)
    if len(set(ms)) > 1:
        return Feature("accumulator", None, "inconsistent", f"the sum keeps {ms[0]} bits below its leading bit in "
                       f"one binade and {ms[1]} after a carry: not a normalised accumulator", inputs, got, calls)
    m = ms[0]
    cases = [(sgn, r) for sgn in (1, -1) for r in (0.5, 1.5, 2.5)]
    h = h_for(m)
    placed = [_acc_row(box, h, r, m, sgn) if fits(h) else None for sgn, r in cases]
    if any(p is None for p in placed):
        return Feature("accumulator", {"mbits": m, "rounding": None}, "inferred", f"{m} mantissa bits (normalised"
                       "); its rounding is not observable in steps of this size", inputs, got, calls)
    got2 = box.rows("accumulator", [p[1] for p in placed])  # type: ignore[index]
    sums = [sgn * (Fraction(2) ** p[0] + Fraction(r) * Fraction(2) ** (p[0] - m))  # type: ignore[index]
            for (sgn, r), p in zip(cases, placed)]
    modes = [md for md in _ACC_MODES if all(Fraction(g) == _round_bits(v, m, md) for g, v in zip(got2, sums))]
    inputs.append(f"+-(2^(E+h) + r ulp), r = 0.5, 1.5, 2.5, ulp = 2^(E+h-{m})")
    calls = box.calls["accumulator"]
    if not modes:
        return Feature("accumulator", None, "inconsistent", f"{m} mantissa bits, but no rounding mode gives the "
                       "six rounded sums", inputs, got + got2, calls)
    return Feature("accumulator", {"mbits": m, "rounding": modes[0]}, "inferred",
                   f"sums keep {m} bits below their leading bit (also after a carry: normalised), rounded "
                   f"{modes[0]}", inputs, got + got2, calls)


def _probe_range(box: _Box, m: int, mode: str) -> Feature:
    """Feature ``range`` (module doc): the accumulator's exponent range, overflow rule, subnormal results. One
    call: a column of +-2^i (every normal power of two of the first format) times a row of 2^j (powers of two of
    the second, spaced so that every k = i + j the formats reach occurs)."""
    fa, fb = box.formats
    ia = [i for i in range(fa.emin, fa.emax + 1) if _representable(2.0**i, fa, True)]
    jb = [j for j in range(fb.emin, fb.emax + 1) if _representable(2.0**j, fb, True)]
    jb = sorted(set(jb[::len(ia)] + jb[-1:]))        # spaced by at most len(ia): every k = i + j still reached
    xs = torch.tensor([2.0**i for i in ia] + [-(2.0**i) for i in ia]).double()
    ys = torch.tensor([2.0**j for j in jb]).double()
    got = box.call("range", xs[:, None].float(), ys[None, :].float()).double()
    want = xs[:, None] * ys[None, :]
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
        if value["bias"] is None:
            value["bias"] = 1 - (k_low + m)          # gradual underflow assumed: k_low is the smallest subnormal
        emin = 1 - value["bias"]
        # below 2^emin: flushed; down to 2^(emin - m): gradual underflow; in between, gradual underflow until the
        # zero accumulator's alignment (2^z, f bits) cuts the single product first
        value["subnormals"] = "flushed" if k_low >= emin else "kept" if k_low >= emin - m else None
        text.append(f"outputs exact down to 2^{k_low}: with emin = {emin}, subnormal results {value['subnormals']}")
        if value["subnormals"] != "kept":
            return Feature("range", value, "inconsistent", "; ".join(text) + ": a FusedSum keeps subnormal results "
                           "(gradual underflow)", inputs, [], calls)
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


# ---- the other features ---------------------------------------------------------------------------------
def _probe_subnormal_inputs(box: _Box) -> Feature:
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
    return Feature("subnormal_inputs", "kept" if kept else "flushed", "inferred" if kept else "inconsistent",
                   "products with subnormal operands come out exact" if kept else
                   "a subnormal operand is flushed: a FusedSum keeps subnormal inputs", inputs, got,
                   box.calls["subnormal_inputs"])


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
                   "products are not exact: a FusedSum keeps them exact",
                   [f"{xa} x {xb}", f"-{xa} x {xb}", f"{ya} x {yb} - 1"], got, box.calls["products"])


def _probe_zero_exponent(box: _Box, f: int | None, acc: FloatFormat) -> Feature:
    """Feature ``zero_exponent`` (module doc). One call: row i of ``a`` holds [x_i, 0] for p_i = x_i y_i = 2^ep_i,
    and for every e a column [y_i, 2^e] of ``b``; element (i, (i, e)) is p_i + 0 x 2^e."""
    fa, fb = box.formats
    eps = [ep for ep in range(acc.emin - acc.mbits, acc.emin + 1) if _factor(2.0**ep, fa, fb) is not None]
    es = [e for e in range(fb.emin, fb.emax + 1) if _representable(2.0**e, fb, True)]
    lowest = min(fa.emin, fb.emin, acc.emin)             # an AccumulatorModel's zero_exponent is at most this
    if f is None or not eps or not es or eps[0] + f + 1 - es[-1] > lowest:
        return Feature("zero_exponent", -126, "unobservable", "no zero product of these formats reaches the "
                       "alignment exponent that would cut a term: -126 (the NVIDIA convention) fitted, unchecked")
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
                return Feature("zero_exponent", -126, "unobservable", f"a zero operand never cuts 2^{ep}: zeros "
                               f"rank below 2^{T} or take no part; -126 (the NVIDIA convention) fitted", inputs, got,
                               calls)
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
    rows = []
    if fa.has_nan:
        rows.append([(math.nan, 1.0)])
    if fa.has_inf and fb.has_inf:
        rows.append([(math.inf, 1.0), (-math.inf, 1.0)])
    if not rows:
        return Feature("nan", "canonical", "unobservable", "the input formats have no NaN or Inf")
    raw = box.raw_rows("nan", rows)
    got = raw.double().tolist()
    a = torch.zeros(len(rows), 2)
    b = torch.zeros(2, len(rows))
    for i, r in enumerate(rows):
        for k, (x, y) in enumerate(r):
            a[i, k], b[k, i] = x, y
    sa, sb = _unit_scales(model.block_scale, a, b)
    canon = torch.diagonal(emulated_matmul(a, b, model.with_(nan_output="canonical"), a_scales=sa, b_scales=sb))
    bits = raw.view(torch.int32)
    inputs = ["NaN x 1", "Inf x 1 + -Inf x 1"][:len(rows)]
    if not bool(raw.isnan().all()):
        return Feature("nan", None, "inconsistent", "a NaN/Inf input did not give NaN", inputs, got, box.calls["nan"])
    same = torch.equal(bits, canon.view(torch.int32))
    shown = ", ".join(f"0x{int(v) & 0xFFFFFFFF:08X}" for v in bits)
    return Feature("nan", "canonical" if same else "ieee", "inferred",
                   f"NaN bits {shown}: " + ("the canonical NaN" if same else "not canonical: IEEE NaNs"), inputs, got,
                   box.calls["nan"])


def _unit_scales(bs: BlockScale | None, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Unit block scales for ``a`` and ``b`` (None, None without block scales)."""
    if bs is None:
        return None, None
    nb = -(-a.shape[1] // bs.block)
    return torch.ones(a.shape[0], nb), torch.ones(nb, b.shape[1])


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
    scales: tuple[torch.Tensor, ...] = ()
    bs = model.block_scale
    if bs is not None:
        nb = -(-K // bs.block)
        scales = tuple(2.0 ** torch.randint(-12, 13, shape, generator=gen).float() for shape in ((M, nb), (nb, N)))
    return (a, b, *scales)


def validate(gemm: Gemm, model: AccumulatorModel, trials: int = 20, *, max_k: int = 96,
             seed: int = 0) -> Validation:
    """``trials`` random GEMMs (8 x K x 8, K random in 1..``max_k``; regimes cycle: wide exponents, zeros beside
    huge values, cancelling pairs, tiny products, NaN/Inf; random power-of-two block scales for a block-scaled
    ``model``) through ``gemm`` and ``emulated_matmul(model)``; bit-for-bit comparison (NaN-ness only when
    ``model.nan_output`` is "ieee")."""
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
    same = torch.equal(first.view(torch.int32), second.view(torch.int32))
    n = int((first.view(torch.int32) != second.view(torch.int32)).sum())
    return Feature("deterministic", same, "inferred" if same else "inconsistent",
                   "the same GEMM twice gives the same bits" if same else
                   f"the same GEMM twice differs in {n} of {first.numel()} elements: non-deterministic",
                   [f"random 16 x {K} x 16, twice"], [], box.calls["deterministic"])


def probe(gemm: Gemm, input_formats: tuple[str, str] = ("e4m3fn", "e4m3fn"), *, max_k: int = 128,
          block_scale: BlockScale | None = None, trials: int = 20) -> ProbeResult:
    """Infer the accumulator of the black box ``gemm`` (module doc): features, fitted model, validation.

    ``max_k``: the longest dot product probed (group sizes and promotion intervals are seen below it);
    ``block_scale``: the black box takes E8M0 block scales (called with unit
    scales, validated with random ones; the fitted FusedSum adds their exponents inside the step); ``trials``:
    validation GEMMs. A black box that breaks the GEMM contract (wrong shape or dtype) raises ``ProbeError``.
    """
    fmts = (get_format(input_formats[0]), get_format(input_formats[1]))
    box = _Box(gemm, fmts, block_scale)
    feats: dict[str, Feature] = {}
    reasons: list[str] = []

    def add(feat: Feature) -> Feature:
        feats[feat.name] = feat
        feat.calls = box.calls.get(feat.name, 0)
        if feat.status == "inconsistent":
            reasons.append(f"{feat.name}: {feat.text}")
        return feat

    def done(candidate: AccumulatorModel | None, validation: Validation | None = None) -> ProbeResult:
        if box.nan_from_finite:
            reasons.append(f"NaN for finite inputs in the probes of {', '.join(sorted(set(box.nan_from_finite)))}")
        fitted = candidate if not reasons else None
        return ProbeResult(fitted, candidate, feats, validation, reasons)

    if add(_determinism(box, fmts, min(max_k, 64))).status == "inconsistent":
        return done(None)
    order = add(_probe_order(box, max_k))
    if order.status == "unobservable":
        reasons.append(f"order: {order.text}: no model can be fitted without the step structure")
    if order.status != "inferred":
        return done(None)
    G, fam, P = order.value["group_size"], order.value["family"], order.value["promote_every"]
    fbits = add(_probe_align_bits(box, G, fam == "exact"))
    f = fbits.value
    if fbits.status == "inconsistent":
        return done(None)
    align_mode, with_acc = "rtz", True
    if f is not None:
        ar = add(_probe_align_rounding(box, f))
        if ar.status == "inconsistent":
            return done(None)
        align_mode = ar.value or align_mode
        ca = add(_probe_c_in_alignment(box, G, f))
        if ca.status == "inconsistent":
            return done(None)
        with_acc = with_acc if ca.value is None else ca.value
    acc = add(_probe_accumulator(box, G, f))
    if acc.status == "inconsistent":
        return done(None)
    m, acc_mode = (23, "rtz") if acc.value is None else (acc.value["mbits"], acc.value["rounding"] or "rtz")
    rng = add(_probe_range(box, m, acc_mode))
    if rng.status == "inconsistent":
        return done(None)
    acc_name = _acc_format(m, rng.value["bias"])
    add(_probe_subnormal_inputs(box))
    add(_probe_products(box, f, m))
    z = add(_probe_zero_exponent(box, f, get_format(acc_name))).value
    if reasons:
        return done(None)
    try:
        candidate = AccumulatorModel(
            "probed", (fmts[0].name, fmts[1].name), G, f, align_mode, with_acc, acc_name, acc_mode,
            promote_every=P, zero_exponent=z, overflow=rng.value["overflow"] or "inf", structure=FusedSum(),
            block_scale=block_scale, description="fitted by lowprec.probe")
    except (ValueError, TypeError) as exc:
        reasons.append(f"the features fit no AccumulatorModel: {exc}")
        return done(None)
    try:
        nan = add(_probe_nan(box, candidate))
        if nan.value is not None:
            candidate = candidate.with_(nan_output=nan.value)
        if reasons:
            return done(candidate)
        validation = validate(gemm, candidate, trials, max_k=max_k)
    except ValueError as exc:                   # the candidate is valid but emulated_matmul cannot run it
        reasons.append(f"the fitted model cannot be emulated: {exc}")
        return done(candidate)
    if not validation.agree:
        reasons.append(f"validation: {validation.n_mismatches} of {validation.elements} elements differ from the "
                       f"fitted FusedSum (first: {validation.mismatches[0]})")
    return done(candidate, validation)
