"""The accumulator presets as a vendor reads them: every parameter, and closed-form probes of what each does.

``model_parameters`` gives a model's fields as JSON values, from which ``model_from_parameters`` rebuilds it;
``parameter_text`` gives them as short strings (``lowprec models`` prints both).

``probe_model(documented, run)`` runs six probes through ``emulated_matmul`` (its default backend) on the model
``run`` (by default ``documented`` itself) and compares what each output reveals with a closed form of
``documented``'s fields, written in the probe -- never with a value computed by the code under test, so a preset
whose emulation disagrees with its own parameters fails. Every operand is a product ``x * y`` of two values of
the model's input formats (each checked by a ``quantize`` round trip); block-scaled models get unit scales. A
probe is run at the scale ``B = 2^eB`` nearest 2^0 at which its operands are values of the formats and its
expected outputs are exact in the accumulator and result formats. The probes, for one dot product each:

(a) ``order`` (FPRev, Xie et al.): K products, all the unit ``u`` but ``+M`` at i and ``-M`` at j (M >= u * 2^n
    with n = the bits a step or a rounding keeps, plus log2 K + 1, so that every unit that meets M is lost). The
    output counts the surviving units: ``lost(i, j) = K - 2 - out / u``, for j = 1..K-1 with i = 0 and for the
    adjacent pairs (i, i + 1). Closed forms, with g the products per step, gi = i // g, gj = j // g:
    a fused step whose alignment cuts C with the products (``FusedSum`` with ``align_with_acc``; ``SplitSum``,
    which floors C relative to the step's largest exponent): ``g (gj + 1) - 2``; a fused step with C added after:
    ``g - 2`` when gi = gj, else as before; a pairwise tree of g (``FmaTree``): ``2^bitlen(i ^ j mod g) - 2`` when
    gi = gj, else ``g (gj + 1) - 2``; exact terms (no alignment): 0 when gi = gj, else ``g gj - 1``. The inferred
    value is the documented family if it reproduces every count, else the first family and g that do (a tree
    of 2 and steps of 2 with C added after give the same counts).
(b) ``alignment_bits``: ``B - B + 2^-f B`` in one step, for f = 0 .. f_doc + 2: the small term survives (the
    output is 2^-f B, no rounding can hide it) exactly for f <= ``align_bits``; with exact terms, for every f.
(c) ``negative_cut``: ``B - B - 0.75 q`` and ``B - B - 0.5 q``, q = 2^-align_bits B (2^-20 B for exact terms):
    the cut bits of a negative term rounded toward zero give (0, 0), toward -inf (-q, -q), to nearest even
    (-q, 0); exact terms keep both.
(c') ``negative_c``: the same with the negative term as C, cut as the model cuts C: with the products
    (``align_bits``, ``align_rounding``) when C joins the alignment; ``SplitSum``: floored (toward -inf) to
    ``acc_bits`` relative to the step's largest exponent (q = 2^-acc_bits B); with promotion C seeds the outer
    float32 register and is kept exactly.
(d) ``accumulator``: ``1.5 B + 1.5 B + 1.5 * 2^-m' 2B`` for m' = m - 2 .. m (m the accumulator's mantissa bits):
    the sum needs m' + 1 fraction bits, so it is exact for m' < m; at m' = m it is rounded by ``acc_rounding``,
    and so are ``-(3B + 1.5 ulp)`` and ``3B + 2.5 ulp`` (ulp = 2^-m 2B): the closed form rounds the exact sums
    to m fraction bits in ``fractions.Fraction`` arithmetic. Inferred: m (one more than the largest m' kept
    exactly) and the rounding whose closed form gives the three rounded outputs.
(e) ``promotion``: ``B`` then K - 1 units ``u = 2^-(f + 2) B``, K = 2 ``promote_every``: every unit beside B is
    cut; after each promotion the tensor-core sum restarts from zero, so the output is ``B + (K - N_C) u``.

Models whose structure a probe cannot address say "n/a" and why: FMA trees have no alignment bits (b, c, c');
``ChunkSum`` (Blackwell mxf4nvf4) sums its 16-element chunks exactly, so (a) cannot address it, and as E2M1
products span only 2^-2..2^5, (b)-(d) carry their small term in C, which its alignment cuts as it cuts a chunk
term; a model without promotion has no (e). ``main`` (``studies/preset_probes.py``) writes the table as
``accumulator_presets.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import __version__
from ..accum import (AccumulatorModel, BlockScale, ChunkSum, FmaTree, FusedSum, SplitSum, emulated_matmul,
                     get_accumulator, list_accumulators)
from ..formats import get_format
from ..rounding import INTEGER_ROUNDINGS, quantize, round_bits, round_to_integer

PROBES = ("order", "alignment_bits", "negative_cut", "negative_c", "accumulator", "promotion")
_STRUCTURES: dict[str, type] = {cls.__name__: cls for cls in (FusedSum, ChunkSum, SplitSum, FmaTree)}


# ---- parameters ------------------------------------------------------------------------------------
def model_parameters(model: AccumulatorModel) -> dict[str, Any]:
    """Every field of ``model`` as a JSON value, under its field name: ``input_formats`` a list, ``structure``
    ``{"kind": class name, **its fields}``, ``block_scale`` ``{"block", "scale_format"}`` or None."""
    out: dict[str, Any] = {}
    for f in fields(model):
        v = getattr(model, f.name)
        if f.name == "input_formats":
            v = list(v)
        elif f.name == "structure":
            v = {"kind": type(v).__name__, **{sf.name: getattr(v, sf.name) for sf in fields(v)}}
        elif f.name == "block_scale" and v is not None:
            v = {"block": v.block, "scale_format": v.scale_format}
        out[f.name] = v
    return out


def model_from_parameters(params: dict[str, Any]) -> AccumulatorModel:
    """The inverse of ``model_parameters`` (validated by ``AccumulatorModel``)."""
    p = dict(params)
    kind = dict(p["structure"])
    if kind.get("kind") not in _STRUCTURES:
        raise ValueError(f"structure kind must be one of {sorted(_STRUCTURES)}, got {kind.get('kind')!r}")
    p["structure"] = _STRUCTURES[kind.pop("kind")](**kind)
    p["input_formats"] = tuple(p["input_formats"])
    if p["block_scale"] is not None:
        p["block_scale"] = BlockScale(**p["block_scale"])
    return AccumulatorModel(**p)


def _structure_text(model: AccumulatorModel) -> str:
    st = model.structure
    if isinstance(st, ChunkSum):
        return f"exact chunks of {st.chunk}, then fused"
    if isinstance(st, SplitSum):
        halves = f", {st.interleave} interleaved subsets" if st.interleave > 1 else ""
        drop = f", C dropped {st.acc_drop} below" if st.acc_drop is not None else ""
        return f"split: group sum floored at {st.sum_bits} bits{halves}{drop}"
    if isinstance(st, FmaTree):
        return "pairwise FMA tree" + (", subnormals flushed" if st.flush_subnormals else "")
    return "fused"


def parameter_text(model: AccumulatorModel) -> dict[str, str]:
    """``model``'s parameters as short strings, keyed by the column titles of ``lowprec models``."""
    fa, fb = model.input_formats
    exact = model.align_bits is None
    bs = model.block_scale
    return {
        "inputs": fa if fa == fb else f"{fa} x {fb}",
        "instr K": "-" if model.instruction_k is None else str(model.instruction_k),
        "products/step": "all K" if model.group_size >= 1 << 20 else str(model.group_size),
        "fraction bits": "exact" if exact else str(model.align_bits),
        "align rounding": "-" if exact else model.align_rounding,
        "C in alignment": (f"floored at {model.structure.acc_bits} bits" if isinstance(model.structure, SplitSum)
                           else "yes" if model.align_with_acc and not exact else "no"),
        "accumulator": f"{model.acc_format} {model.acc_rounding}",
        "promotion": (f"every {model.promote_every} -> {model.outer_format} {model.outer_rounding}"
                      if model.promote_every else "-"),
        "structure": _structure_text(model),
        "block scale": "-" if bs is None else f"{bs.scale_format} per {bs.block}",
        "zero terms": "no term" if model.zero_exponent is None else f"0 * 2^{model.zero_exponent}",
        "NaN": model.nan_output,
        "overflow": model.overflow,
    }


# ---- operands: products of two values of the input formats -----------------------------------------
_K_RANGE = range(-1070, 1023)


@functools.cache
def _exponents(fmt_name: str, significand: float, normal: bool) -> frozenset[int]:
    """The k in ``_K_RANGE`` for which ``significand * 2^k`` is a value of the format (a ``quantize``
    round trip), and with ``normal`` a normal one."""
    v = torch.tensor([significand * 2.0**k for k in _K_RANGE], dtype=torch.float64)
    same = quantize(v, fmt_name, out_dtype=torch.float64) == v
    emin = get_format(fmt_name).emin
    return frozenset(k for k, ok in zip(_K_RANGE, same.tolist()) if ok and (k >= emin or not normal))


@functools.cache
def _factor(v: float, fa: str, fb: str, normal: bool) -> tuple[float, float] | None:
    """x (a value of ``fa``) and y (of ``fb``) with x * y == v, one of them a power of two, their exponents as
    close as possible, both normal if ``normal``; None if there are none."""
    if v == 0:
        return 0.0, 0.0
    k = math.frexp(abs(v))[1] - 1
    s = v / 2.0**k                                       # exact: +-[1, 2)
    best: tuple[int, float, float] | None = None
    for sig_on_a in (True, False):
        sig_fmt, pow_fmt = (fa, fb) if sig_on_a else (fb, fa)
        pows = _exponents(pow_fmt, 1.0, normal)
        for ks in _exponents(sig_fmt, abs(s), normal):
            if k - ks in pows and (best is None or abs(2 * ks - k) < best[0]):
                sig, pw = math.copysign(abs(s) * 2.0**ks, s), 2.0 ** (k - ks)
                best = (abs(2 * ks - k), *((sig, pw) if sig_on_a else (pw, sig)))
    return None if best is None else (best[1], best[2])


@functools.cache
def _is_value(v: float, fmt_name: str) -> bool:
    """``v`` is exactly a finite value of the format (a ``quantize`` round trip)."""
    t = torch.tensor([v], dtype=torch.float64)
    return bool(quantize(t, fmt_name, out_dtype=torch.float64)[0] == t[0])


Row = tuple[list[float], float]       # one dot product: its K products, and C


def _flushes(model: AccumulatorModel) -> bool:
    """The model flushes subnormal inputs and sums to zero (CDNA2), so probe operands must be normal."""
    return isinstance(model.structure, FmaTree) and model.structure.flush_subnormals


@dataclass(frozen=True)
class _Plan:
    """A probe at one scale: its dot products and the exact outputs its closed form expects."""

    rows: list[Row]
    expected: list[Fraction]
    also_exact: tuple[Fraction, ...] = ()        # intermediate values the accumulator must hold exactly


def _fits(model: AccumulatorModel, plan: _Plan) -> bool:
    """Every product factors into the input formats (normal values where the model flushes subnormals), every
    C is a float32 and accumulator value, and every expected output and intermediate is exact in the accumulator
    and result formats."""
    fa, fb = model.input_formats
    for prods, c in plan.rows:
        if any(_factor(p, fa, fb, _flushes(model)) is None for p in prods):
            return False
        if c and not (_is_value(c, "fp32") and _is_value(c, model.acc_format)):
            return False
    outs = {float(v) for v in (*plan.expected, *plan.also_exact)}
    return all(_is_value(v, f) for v in outs for f in {model.acc_format, model.result_format.name})


def _place(model: AccumulatorModel, build: Callable[[int], _Plan]) -> tuple[int, _Plan] | None:
    """The scale 2^eB nearest 2^0 at which ``build(eB)`` fits ``model`` (``_fits``), or None."""
    for eB in sorted(range(-140, 141), key=abs):
        plan = build(eB)
        if _fits(model, plan):
            return eB, plan
    return None


def _run(model: AccumulatorModel, rows: Sequence[Row], batch: int = 32) -> list[float]:
    """The outputs of ``rows`` under ``model`` by ``emulated_matmul`` (default backend), as exact floats, ``batch``
    rows per call. Row r's factors go into row r of ``a`` and column r of ``b``, its C into c[r, r]; output r is
    the diagonal element (the others are dot products of mixed rows: valid operands, results not read)."""
    fa, fb = model.input_formats
    out: list[float] = []
    for lo in range(0, len(rows), batch):
        part = rows[lo:lo + batch]
        pairs = torch.tensor([[_factor(p, fa, fb, _flushes(model)) for p in prods] for prods, _ in part],
                             dtype=torch.float32)             # (R, K, 2): exact, the formats fit float32
        a, b = pairs[:, :, 0], pairs[:, :, 1].T.contiguous()
        c = torch.diag(torch.tensor([c for _, c in part], dtype=torch.float64)).float()
        R, K = a.shape
        a_scales = b_scales = None
        if model.block_scale is not None:
            nb = -(-K // model.block_scale.block)
            a_scales, b_scales = torch.ones(R, nb), torch.ones(nb, R)
        out += torch.diagonal(emulated_matmul(a, b, model, c, a_scales=a_scales, b_scales=b_scales)).double().tolist()
    return out


# ---- closed forms ------------------------------------------------------------------------------------
def _lost(kind: str, g: int, i: int, j: int) -> int:
    """FPRev: the units lost when +M at i and -M at j (i < j) meet, for a summation of ``kind`` over steps of
    ``g`` products (module doc, probe (a))."""
    gi, gj = i // g, j // g
    if kind == "exact":
        return 0 if gi == gj else g * gj - 1
    if gi == gj and kind == "C added after":
        return g - 2
    if gi == gj and kind == "pairwise tree":
        return (1 << ((i % g) ^ (j % g)).bit_length()) - 2
    return g * (gj + 1) - 2


def _order_kind(model: AccumulatorModel) -> str:
    """The FPRev family of ``model``'s documented structure."""
    if isinstance(model.structure, FmaTree):
        return "pairwise tree"
    if model.align_bits is None:
        return "exact"
    if isinstance(model.structure, SplitSum) or model.align_with_acc:
        return "C aligned"
    return "C added after"


def _order_label(kind: str, g: int, K: int) -> str:
    """How the report names an FPRev family and its g."""
    if g == 1:
        return "one product at a time"
    if kind == "exact":
        return f"one exact sum of >= {K}" if g >= K else f"exact steps of {g}"
    return f"pairwise trees of {g}" if kind == "pairwise tree" else f"steps of {g}, {kind}"


def _cuts_c(model: AccumulatorModel) -> bool:
    """C joins the alignment of a step (so a small C can carry a probe's small term)."""
    return isinstance(model.structure, (FusedSum, ChunkSum)) and model.align_with_acc and model.align_bits is not None


@dataclass(frozen=True)
class ProbeResult:
    """One probe on one model: the closed form's value (``expected``), what the outputs reveal (``inferred``),
    ``status`` "pass" (every output equals its closed form), "fail" or "n/a" (``note`` says why); ``scale``: the
    magnitudes the probe ran at; ``note``: the n/a reason, or how the probe was adapted to the model."""

    probe: str
    expected: str
    inferred: str
    status: str
    scale: str = ""
    note: str = ""


def _na(probe: str, why: str) -> ProbeResult:
    """``probe`` does not apply to the model, for the reason ``why``."""
    return ProbeResult(probe, "-", "-", "n/a", note=why)


def _verdict(probe: str, expected: str, inferred: str, got: Sequence[float], want: Sequence[Fraction],
             scale: str, note: str = "") -> ProbeResult:
    """"pass" when every output in ``got`` equals its closed form in ``want`` exactly, else "fail"."""
    ok = all(math.isfinite(g) and Fraction(g) == w for g, w in zip(got, want))
    return ProbeResult(probe, expected, inferred, "pass" if ok else "fail", scale, note)


def _layout(model: AccumulatorModel, terms: Sequence[float]) -> list[float]:
    """``terms`` as the products of one step, each its own term of the alignment: consecutive products, or the
    first product of consecutive chunks for ``ChunkSum`` (the chunks' other products zero)."""
    stride = model.structure.chunk if isinstance(model.structure, ChunkSum) else 1
    out = [0.0] * (stride * len(terms))
    for n, t in enumerate(terms):
        out[n * stride] = t
    return out


def _small_term_plan(model: AccumulatorModel, build: Callable[[int, bool], _Plan]) -> tuple[int, _Plan, str] | None:
    """``build(eB, in_c)`` placed with the small term as a product, else (if the model's alignment cuts C) in C;
    with the carrier's note."""
    if (placed := _place(model, lambda eB: build(eB, False))) is not None:
        return (*placed, "")
    if _cuts_c(model) and (placed := _place(model, lambda eB: build(eB, True))) is not None:
        return (*placed, "small term carried by C (no product of the input formats is that small)")
    return None


def _no_scale(model: AccumulatorModel) -> str:
    """The n/a reason of a probe that ``_place`` could not fit to the model's formats at any scale."""
    fa, fb = model.input_formats
    return f"no scale makes the probe's operands products of {fa} x {fb} values and its outputs exact"


# ---- the probes ---------------------------------------------------------------------------------------
def _probe_order(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (a) of the module doc: FPRev counts for the pairs (0, j) and (i, i + 1), K = 3 G (8 .. 96)."""
    if isinstance(doc.structure, ChunkSum):
        return _na("order", f"chunks of {doc.structure.chunk} products are summed exactly, so a unit beside M in "
                            "a chunk never vanishes: FPRev's unit counts do not address the chunk structure")
    G = doc.group_size
    K = max(3 * G if G <= 32 else 16, 8)
    kind = _order_kind(doc)
    acc_bits = get_format(doc.acc_format).mbits + 1
    split_bits = doc.structure.acc_bits if isinstance(doc.structure, SplitSum) else 0
    n = max(doc.align_bits or 0, acc_bits, split_bits) + math.ceil(math.log2(K)) + 1
    pairs = [(0, j) for j in range(1, K)] + [(i, i + 1) for i in range(1, K - 1)]
    want_lost = [_lost(kind, G, i, j) for i, j in pairs]

    def build(eB: int) -> _Plan:
        M, u = 2.0**eB, 2.0 ** (eB - n)
        rows = []
        for i, j in pairs:
            prods = [u] * K
            prods[i], prods[j] = M, -M
            rows.append((prods, 0.0))
        return _Plan(rows, [(K - 2 - lost) * Fraction(u) for lost in want_lost], (Fraction(M),))

    placed = _place(doc, build)
    if placed is None:
        return _na("order", _no_scale(doc))
    eB, plan = placed
    u = Fraction(2) ** (eB - n)
    got = _run(run, plan.rows)
    lost = [K - 2 - Fraction(g) / u if math.isfinite(g) else None for g in got]
    expected = _order_label(kind, G, K)
    families = [(kind, G)] + [(k, g) for k in ("C aligned", "pairwise tree", "C added after", "exact")
                              for g in range(1, K + 1)]
    inferred = next((_order_label(k, g, K) for k, g in families
                     if all(lo == _lost(k, g, i, j) for lo, (i, j) in zip(lost, pairs))), "no step pattern")
    return _verdict("order", expected, inferred, got, plan.expected, f"M = 2^{eB}, u = 2^{eB - n}, K = {K}")


def _probe_alignment_bits(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (b) of the module doc."""
    if isinstance(doc.structure, FmaTree):
        return _na("alignment_bits", _NO_ALIGNMENT)
    f_doc = doc.align_bits
    f_max = 30 if f_doc is None else f_doc + 2
    scan = list(range(f_max + 1))

    def build(eB: int, in_c: bool) -> _Plan:
        B = 2.0**eB
        rows = [(_layout(doc, [B, -B]), 2.0 ** (eB - f)) if in_c else (_layout(doc, [B, -B, 2.0 ** (eB - f)]), 0.0)
                for f in scan]
        return _Plan(rows, [Fraction(2) ** (eB - f) if f_doc is None or f <= f_doc else Fraction(0) for f in scan])

    placed = _small_term_plan(doc, build)
    if placed is None:
        return _na("alignment_bits", _no_scale(doc))
    eB, plan, note = placed
    got = _run(run, plan.rows)
    kept = [math.isfinite(g) and Fraction(g) == Fraction(2) ** (eB - f) for g, f in zip(got, scan)]
    top = next((f - 1 for f, k in zip(scan, kept) if not k), None)
    inferred = f"exact (>= {f_max})" if top is None else str(top)
    expected = f"exact (>= {f_max})" if f_doc is None else str(f_doc)
    return _verdict("alignment_bits", expected, inferred, got, plan.expected, f"B = 2^{eB}", note)


_CUT_FRACS = (Fraction(-3, 4), Fraction(-1, 2))
_CUT_NAMES: dict[tuple[Fraction | int | None, ...], str] = {(0, 0): "toward zero", (-1, -1): "toward -inf",
                                                             (-1, 0): "nearest"}
_NO_ALIGNMENT = "FMA trees round IEEE float32 sums: no alignment to a common exponent"


def _cut_probe(probe: str, doc: AccumulatorModel, run: AccumulatorModel, rule: tuple[int, str] | None,
               c_only: bool) -> ProbeResult:
    """``B - B + t q`` for t in ``_CUT_FRACS`` (module doc, probes (c), (c')): the term t q a product where the
    formats allow (else C), or with ``c_only`` always C; ``rule`` = (bits, rounding) by which the model cuts it
    to multiples of q = 2^-bits B, or None for exact terms (q = 2^-20 B, nothing cut)."""
    bits = 20 if rule is None else rule[0]

    def build(eB: int, in_c: bool) -> _Plan:
        B, q = 2.0**eB, Fraction(2) ** (eB - bits)
        rows = [(_layout(doc, [B, -B]), float(t * q)) if in_c else (_layout(doc, [B, -B, float(t * q)]), 0.0)
                for t in _CUT_FRACS]
        return _Plan(rows, [t * q if rule is None else round_to_integer(t, rule[1]) * q for t in _CUT_FRACS])

    if c_only:
        placed = None if (p := _place(doc, lambda eB: build(eB, True))) is None else (*p, "")
    else:
        placed = _small_term_plan(doc, build)
    if placed is None:
        return _na(probe, _no_scale(doc))
    eB, plan, note = placed
    q = Fraction(2) ** (eB - bits)
    got = _run(run, plan.rows)
    units = tuple(Fraction(g) / q if math.isfinite(g) else None for g in got)
    expected = "exact (no cut)" if rule is None else _CUT_NAMES[tuple(round_to_integer(t, rule[1]) for t in _CUT_FRACS)]
    shown = ", ".join("?" if v is None else str(v) for v in units)
    inferred = "exact (no cut)" if units == _CUT_FRACS else _CUT_NAMES.get(units, f"({shown}) x q")
    return _verdict(probe, expected, inferred, got, plan.expected, f"B = 2^{eB}, q = 2^{eB - bits}", note)


def _probe_negative_cut(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (c) of the module doc: a negative product cut with the alignment."""
    if isinstance(doc.structure, FmaTree):
        return _na("negative_cut", _NO_ALIGNMENT)
    rule = None if doc.align_bits is None else (doc.align_bits, doc.align_rounding)
    return _cut_probe("negative_cut", doc, run, rule, c_only=False)


def _probe_negative_c(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (c') of the module doc: a negative C, cut as the structure cuts C."""
    st = doc.structure
    if isinstance(st, FmaTree):
        return _na("negative_c", _NO_ALIGNMENT)
    if isinstance(st, SplitSum):
        rule: tuple[int, str] | None = (st.acc_bits, "rdown")
    elif doc.align_bits is None or doc.promote_every is not None:   # with promotion C seeds the outer register
        rule = None
    elif doc.align_with_acc:
        rule = (doc.align_bits, doc.align_rounding)
    else:
        return _na("negative_c", "C is added to the step's sum by the accumulator's rounding (probe accumulator)")
    return _cut_probe("negative_c", doc, run, rule, c_only=True)


def _probe_accumulator(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (d) of the module doc."""
    m = get_format(doc.acc_format).mbits
    mode = doc.acc_rounding
    if mode not in INTEGER_ROUNDINGS:
        return _na("accumulator", f"no closed form for rounding {mode!r}")
    if doc.align_bits is not None and doc.align_bits < m:
        return _na("accumulator", "the alignment cuts the probe's terms before the accumulator can round them")
    scan = list(range(m - 2, m + 1))
    # (sign, small term in units of 2^-m' 2B, m'): the scan, then the rounding cases at m' = m
    cases = [(1, Fraction(3, 2), mp) for mp in scan] + [(-1, Fraction(3, 2), m), (1, Fraction(5, 2), m)]

    def exact_sums(B: Fraction) -> list[Fraction]:
        return [sign * (3 * B + t * 2 * B / 2**mp) for sign, t, mp in cases]

    def build(eB: int, in_c: bool) -> _Plan:
        B = Fraction(2) ** eB
        rows = []
        for sign, t, mp in cases:
            small = float(sign * t * 2 * B / 2**mp)
            big = [float(sign * 3 * B / 2)] * 2
            rows.append((_layout(doc, big), small) if in_c else (_layout(doc, [*big, small]), 0.0))
        return _Plan(rows, [round_bits(v, m, mode) for v in exact_sums(B)])

    placed = _small_term_plan(doc, build)
    if placed is None:
        return _na("accumulator", _no_scale(doc))
    eB, plan, note = placed
    sums = exact_sums(Fraction(2) ** eB)
    got = _run(run, plan.rows)
    exact = [math.isfinite(g) and Fraction(g) == v for g, v in zip(got, sums)]
    kept = [mp for mp, ok in zip(scan, exact) if ok]
    bits = f">= {m + 1}" if exact[len(scan) - 1] else (str(max(kept) + 1) if kept else f"< {m - 1}")
    at_m = [i for i, c in enumerate(cases) if c[2] == m]           # the rounding cases: m' = m
    got_m = [Fraction(got[i]) if math.isfinite(got[i]) else None for i in at_m]
    rounding = next((r for r in INTEGER_ROUNDINGS if got_m == [round_bits(sums[i], m, r) for i in at_m]), "?")
    return _verdict("accumulator", f"{m} bits, {mode}", f"{bits} bits, {rounding}", got, plan.expected,
                    f"B = 2^{eB}", note)


def _probe_promotion(doc: AccumulatorModel, run: AccumulatorModel) -> ProbeResult:
    """Probe (e) of the module doc."""
    P = doc.promote_every
    if P is None:
        return _na("promotion", "no promotion in this unit")
    if doc.align_bits is None:
        return _na("promotion", "exact terms: no unit is cut beside B")
    K, f = 2 * P, doc.align_bits

    def build(eB: int) -> _Plan:
        B, u = 2.0**eB, 2.0 ** (eB - f - 2)
        return _Plan([([B] + [u] * (K - 1), 0.0)], [Fraction(B) + (K - P) * Fraction(u)])

    placed = _place(doc, build)
    if placed is None:
        return _na("promotion", _no_scale(doc))
    eB, plan = placed
    B, u = Fraction(2) ** eB, Fraction(2) ** (eB - f - 2)
    got = _run(run, plan.rows)
    n = (Fraction(got[0]) - B) / u if math.isfinite(got[0]) else None
    inferred = ("none within K" if n == 0 else str(K - n) if n is not None and n.denominator == 1 and 0 < n < K
                else "?")
    return _verdict("promotion", str(P), inferred, got, plan.expected, f"B = 2^{eB}, u = 2^{eB - f - 2}, K = {K}")


_PROBE_FUNCS: dict[str, Callable[[AccumulatorModel, AccumulatorModel], ProbeResult]] = {
    "order": _probe_order, "alignment_bits": _probe_alignment_bits, "negative_cut": _probe_negative_cut,
    "negative_c": _probe_negative_c, "accumulator": _probe_accumulator, "promotion": _probe_promotion}


def probe_model(documented: AccumulatorModel | str, run: AccumulatorModel | None = None) -> list[ProbeResult]:
    """The probes (module doc), in ``PROBES`` order: expected values from ``documented``'s fields, outputs
    from ``emulated_matmul`` on ``run`` (default: ``documented``), which must take the same operand formats."""
    doc = get_accumulator(documented)
    run = doc if run is None else get_accumulator(run)
    if run.input_formats != doc.input_formats or (run.block_scale is None) != (doc.block_scale is None):
        raise ValueError(f"model {run.name} takes other operands than {doc.name} (input formats, block scales)")
    return [_PROBE_FUNCS[p](doc, run) for p in PROBES]


def probe_table(models: Iterable[AccumulatorModel | str] | None = None) -> pd.DataFrame:
    """``probe_model`` on each model (default: every preset), long form: columns preset, probe, expected,
    inferred, status, scale, note (``ProbeResult``); one row per preset and probe."""
    columns = ["preset", *(f.name for f in fields(ProbeResult))]
    rows = [(m.name, *(getattr(r, f.name) for f in fields(r)))
            for m in (list_accumulators() if models is None else [get_accumulator(m) for m in models])
            for r in probe_model(m)]
    return pd.DataFrame(rows, columns=columns)


# ---- the report ---------------------------------------------------------------------------------------
def _md_cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return lines + ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]


def _probe_cell(r: pd.Series) -> str:
    return "n/a" if r["status"] == "n/a" else f"{r['inferred']} ({r['status']})"


def report_markdown(table: pd.DataFrame) -> str:
    """The report of ``probe_table``'s ``table``: the presets' parameters and descriptions, then one row per
    preset with each probe's inferred value and pass/fail, then the notes (n/a reasons, adapted probes) with the
    presets they concern."""
    presets = list(dict.fromkeys(table["preset"]))
    params = pd.DataFrame([{"preset": name, **parameter_text(get_accumulator(name))} for name in presets])
    wide = pd.DataFrame([{"preset": name, **{p: _probe_cell(r) for p, r in
                                              table[table["preset"] == name].set_index("probe").iterrows()}}
                         for name in presets])
    counts = table["status"].value_counts()
    lines = [
        "# Accumulator presets: parameters and closed-form probes", "",
        (f"Generated by `python studies/preset_probes.py` (lowprec {__version__}); the same table as CSV in "
         "`accumulator_presets.csv`; `lowprec models` prints the parameters."), "",
        (f"{len(presets)} presets x {len(PROBES)} probes: {counts.get('pass', 0)} pass, {counts.get('fail', 0)} "
         f"fail, {counts.get('n/a', 0)} n/a."), "",
        ("Each probe runs a few dot products through `lowprec.emulated_matmul` (its default backend) with operands "
         "that are exact values of the preset's input formats (unit block scales), and compares every output with "
         "a closed form of the preset's documented parameters (`lowprec/lab/presets.py` states each one). A cell "
         "shows the value the outputs reveal and whether every output matched: (a) order -- FPRev (Xie et al.): "
         "all products a unit u but +M at i and -M at j; the surviving units give the products per fused step and "
         "whether C is aligned (cut) with them; (b) alignment bits -- the largest f for which B - B + 2^-f B "
         "keeps 2^-f B in one step; (c) negative cut -- how the cut bits of a negative term are rounded (B - B - "
         "0.75 q and - 0.5 q); (c') negative C -- the same with the negative term in C; (d) accumulator -- its "
         "mantissa bits and rounding (3B + 1.5 ulp, of both signs, and 3B + 2.5 ulp); (e) "
         "promotion -- the interval after which the sum restarts into float32."), "",
        "## Probes", "", *_markdown_table(wide), "",
        "## Parameters", "", *_markdown_table(params), "",
        "## Descriptions", "", *[f"- **{n}**: {get_accumulator(n).description}" for n in presets], "",
        "## Notes", "",
        *[f"- {probe}, {'n/a' if status == 'n/a' else 'adapted'}: {note} -- {', '.join(group['preset'])}"
          for (probe, status, note), group in table[table["note"] != ""].groupby(["probe", "status", "note"],
                                                                                  sort=False)], "",
        "The scale each probe ran at (B, M, u, q, K) is in the CSV's `scale` column.", "",
    ]
    return "\n".join(lines)


def write_probe_report(out_dir: Path, table: pd.DataFrame) -> tuple[Path, Path]:
    """Write ``accumulator_presets.md`` and ``.csv`` into ``out_dir`` (an existing directory); their paths."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"output directory {out_dir} does not exist")
    md, csv = out_dir / "accumulator_presets.md", out_dir / "accumulator_presets.csv"
    md.write_text(report_markdown(table), encoding="utf-8")
    table.to_csv(csv, index=False)
    return md, csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Probe every accumulator preset with closed-form dot products and "
                                             "write accumulator_presets.md and .csv.")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="output directory (default: %(default)s)")
    ap.add_argument("--name", action="append", help="probe only this preset (repeatable; default: all)")
    args = ap.parse_args(argv)
    names = args.name or [m.name for m in list_accumulators()]
    models = [get_accumulator(n) for n in names]                 # unknown names fail before any work
    if not args.out.is_dir():
        raise ValueError(f"output directory {args.out} does not exist")
    table = probe_table(models)
    md, csv = write_probe_report(args.out, table)
    counts = table["status"].value_counts()
    print(f"{md} and {csv}: {counts.get('pass', 0)} pass, {counts.get('fail', 0)} fail, {counts.get('n/a', 0)} n/a")
