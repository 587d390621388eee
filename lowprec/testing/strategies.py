"""Hypothesis strategies for low-precision testing, reusable by other projects' CI.

Formats and values: ``formats()`` (registered formats and random custom ``eXmY``), ``codes(fmt)`` (any code),
``float32_near_grid(fmt)`` (float32 values where rounding to ``fmt`` is decided: the format's values, their
midpoints, one float32 ulp either side, the overflow and underflow edges; codes at the ends of the range are
drawn often), ``heavy_tailed_tensors()`` (typical data: float32 tensors shaped like LLM activations, Student-t
body, rare huge outliers, exact zeros).

Decisions of a scaling recipe (aimed at the places a quantiser can differ, not at typical data):

* ``amax_values(config)``: a tile amax at a scale decision -- a float32 binade edge (2^e and its float32
  neighbours), an amax whose fp32 scale ``amax / (max / 2^margin)`` is a power of two or 1-2 float32 ulps from
  one, the neighbourhood of the config's amax floor, random and extreme (subnormal to FLT_MAX) magnitudes, zero.
* ``scaled_decision_tensors(recipe, role)``: float32 tensors built backwards from the scaled values: each tile's
  amax is drawn first (so its scale is known: it is read from ``lowprec.quantize_tensor`` of the amax elements
  alone), then every other element is ``x = v * sf`` rounded to float32 and moved 0-2 float32 ulps, where ``v``
  is a rounding midpoint of the element format (every kind of tie: between normals, subnormals, zero and the
  smallest subnormal, the subnormal/normal edge, max and the overflow point where the tile reaches it), a
  value of the format, zero (either sign) or uniform. ``|x|`` never exceeds the tile's amax, so the scale
  stays the one drawn. Fill kinds: only the amax elements, a few decision elements, all decision elements,
  typical (heavy-tailed) data -- in that order, so shrinking goes toward the sparsest failing tensor.

Accumulators:

* ``accumulator_models()``: presets and random valid ``AccumulatorModel``s (fused sums with or without
  E8M0 block scales, chunk sums with E8M0/UE4M3 scales, AMD split sums and FMA trees), each checked to run.
* ``gemm_operands(model)``: ``GemmOperands`` -- matrices of the model's input formats with zeros next to huge
  values, exact cancellation across groups, tiny products, the whole code range, and block scales
  (``block_scaled_operands``) for a block-scaled model.

Every strategy is warning-free: float32 values are narrowed by torch (no overflow warnings) or clipped to
float32's range before numpy narrows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from hypothesis import reject
from hypothesis import strategies as st

from lowprec.accum import (
    AccumulatorModel,
    BlockScale,
    ChunkSum,
    FmaTree,
    FusedSum,
    SplitSum,
    emulated_matmul,
    get_accumulator,
    list_accumulators,
)
from lowprec.formats import FloatFormat, get_format, list_formats
from lowprec.rounding import decode, quantize
from lowprec.scaling import Recipe, ScalingConfig, get_recipe, quantize_tensor

F32_MAX = float(np.finfo(np.float32).max)
AMAX_KINDS = ("binade_edge", "pow2_scale", "floor", "random", "extreme", "zero")
FILL_KINDS = ("amax_only", "sparse", "decisions", "typical")
MODEL_STRUCTURES = ("fused", "fused_mx", "chunk", "split", "tree")
OPERAND_KINDS = ("codes", "gaussian", "cancel", "zeros_next_to_huge", "tiny_products")
MODEL_INPUT_FORMATS = ("e4m3fn", "e5m2", "e3m2", "e2m3", "e2m1", "e4m3fnuz", "fp16", "bf16")


# ---- formats and values ---------------------------------------------------------------------------
@st.composite
def custom_formats(draw: st.DrawFn, max_bits: int = 16) -> FloatFormat:
    """A random ``eXmY[fn|fnuz]`` format of at most ``max_bits`` bits."""
    ebits = draw(st.integers(2, 8))
    mbits = draw(st.integers(1, max(1, min(10, max_bits - 1 - ebits))))
    suffix = draw(st.sampled_from(["", "fn", "fnuz"]))
    return get_format(f"e{ebits}m{mbits}{suffix}")


def formats(max_bits: int = 32) -> st.SearchStrategy[FloatFormat]:
    """A registered format of at most ``max_bits`` bits, or a custom one."""
    named = [f for f in list_formats() if f.bits <= max_bits]
    return st.one_of(st.sampled_from(named), custom_formats(min(max_bits, 16)))


def codes(fmt: FloatFormat) -> st.SearchStrategy[int]:
    """Any code of ``fmt`` (NaN and Inf codes included)."""
    return st.integers(0, (1 << fmt.bits) - 1)


def _value_of_magnitude_code(fmt: FloatFormat, c: int) -> float:
    return float(decode(torch.tensor([c]), fmt)[0])


def _past_max(fmt: FloatFormat) -> float:
    """The first value past ``fmt.max`` (one step of the top binade above it): where overflow is decided."""
    return fmt.max + 2.0 ** (fmt.emax - fmt.mbits)


def _to_f32(v: float) -> float:
    """``v`` rounded to float32 (RNE), magnitudes past FLT_MAX clipped to FLT_MAX (no Inf, no warning)."""
    return float(torch.tensor(min(max(v, -F32_MAX), F32_MAX), dtype=torch.float64).float())


def _f32_step(v: float, steps: int) -> float:
    """``v`` (a float32 value) moved ``steps`` float32 ulps (toward +inf when positive), kept finite."""
    t = torch.tensor(v, dtype=torch.float32)
    toward = torch.tensor(math.inf if steps > 0 else -math.inf, dtype=torch.float32)
    for _ in range(abs(steps)):
        t = torch.nextafter(t, toward)
    return _to_f32(float(t))


@st.composite
def float32_near_grid(draw: st.DrawFn, fmt: FloatFormat, allow_special: bool = True) -> float:
    """A float32 value near a rounding decision of ``fmt`` (returned as a Python float): a value of the format,
    a midpoint between two neighbours (the last one is between max and the first value past it), one float32
    ulp either side of a midpoint, a point inside the interval, a value above max (``huge``) or below the
    smallest subnormal (``tiny``); with ``allow_special``, now and then +-Inf, NaN or zero."""
    ends = [0, 1, max(fmt.max_code - 1, 0), fmt.max_code, 1 << fmt.mbits]
    c = draw(st.one_of(st.integers(0, fmt.max_code), st.sampled_from([e for e in ends if e <= fmt.max_code])))
    lo = _value_of_magnitude_code(fmt, c)
    hi = _value_of_magnitude_code(fmt, c + 1) if c < fmt.max_code else _past_max(fmt)
    kind = draw(st.sampled_from(["grid", "mid", "below_mid", "above_mid", "inside", "huge", "tiny"]))
    mid = _to_f32((lo + hi) / 2)
    if kind == "grid":
        v = _to_f32(lo)
    elif kind == "mid":
        v = mid
    elif kind in ("below_mid", "above_mid"):
        v = _f32_step(mid, -1 if kind == "below_mid" else 1)
    elif kind == "inside":
        v = _to_f32(lo + (hi - lo) * draw(st.floats(0, 1)))
    elif kind == "huge":
        v = _to_f32(draw(st.floats(fmt.max, F32_MAX))) if fmt.max < F32_MAX else _to_f32(lo)
    else:
        v = _to_f32(draw(st.floats(0, fmt.min_subnormal)))
    if allow_special and draw(st.integers(0, 30)) == 0:
        v = draw(st.sampled_from([math.inf, math.nan, 0.0]))
    if not fmt.has_zero and not v > 0:  # E8M0: no zero to round to or from
        v = fmt.min_normal
    if fmt.signed and draw(st.booleans()):
        v = -v
    return v


def _student_t(rng: np.random.Generator, shape: tuple[int, int], dof: float) -> np.ndarray:
    """Student-t samples (float64) of ``shape``: the body of LLM-like activations."""
    return rng.standard_t(dof, size=shape)


def _f32_array(x: np.ndarray) -> np.ndarray:
    """float64 ``x`` as float32 with magnitudes past FLT_MAX clipped to FLT_MAX (numpy would warn and give Inf)."""
    return np.clip(x, -F32_MAX, F32_MAX).astype(np.float32)


@st.composite
def heavy_tailed_tensors(draw: st.DrawFn, max_rows: int = 8, max_cols: int = 300,
                         outlier_scale: float = 1e3) -> torch.Tensor:
    """float32 (rows, cols) tensors with a Student-t body, rare large outliers and exact zeros (magnitudes
    beyond float32's range are clipped to FLT_MAX)."""
    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    dof = draw(st.sampled_from([2.0, 3.0, 5.0, 30.0]))
    scale = 2.0 ** draw(st.integers(-20, 20))
    rng = np.random.default_rng(seed)
    x = _student_t(rng, (rows, cols), dof) * scale
    mask = rng.random((rows, cols))
    x[mask < draw(st.sampled_from([0.0, 0.001, 0.01]))] *= outlier_scale
    x[mask > 1 - draw(st.sampled_from([0.0, 0.05, 0.5]))] = 0.0
    return torch.from_numpy(_f32_array(x))


# ---- decisions of a scaling recipe ----------------------------------------------------------------
def scaling_config(recipe: Recipe | ScalingConfig | str, role: str = "activation") -> ScalingConfig:
    """The ``ScalingConfig`` a recipe (name or ``Recipe``) uses for ``role``, or the config itself."""
    if isinstance(recipe, ScalingConfig):
        return recipe
    return (get_recipe(recipe) if isinstance(recipe, str) else recipe).config(role)


@cache
def _format_grid(fmt: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """(the non-negative finite values of ``fmt``, sorted; the midpoints between neighbours, and the one
    between max and the first value past it), float64; formats of at most 16 bits."""
    if fmt.bits > 16:
        raise ValueError(f"decision tensors need an element format of at most 16 bits, not {fmt.name}")
    vals = decode(torch.arange(1 << fmt.bits, dtype=torch.int64), fmt).double()
    vals = torch.unique(vals[torch.isfinite(vals) & (vals >= 0)]).numpy()
    mids = np.append((vals[:-1] + vals[1:]) / 2, (fmt.max + _past_max(fmt)) / 2)
    return vals, mids


@st.composite
def amax_values(draw: st.DrawFn, config: ScalingConfig, kinds: Sequence[str] = AMAX_KINDS) -> float:
    """A tile amax (a float32 value >= 0) at a scale decision of ``config`` (module doc)."""
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "zero":
        return 0.0
    if kind == "floor" and config.amax_floor > 0:
        base = config.amax_floor * 2.0 ** draw(st.floats(-4, 4))
    elif kind == "binade_edge":
        base = 2.0 ** draw(st.integers(-40, 40))
    elif kind == "pow2_scale":
        base = config.format.max / 2.0**config.margin * 2.0 ** draw(st.integers(-40, 30))
    elif kind == "extreme":
        base = draw(st.floats(1, 2)) * 2.0 ** draw(st.integers(-149, 127))
    else:
        base = draw(st.floats(1, 2)) * 2.0 ** draw(st.integers(-30, 30))
    v = _f32_step(_to_f32(base), draw(st.sampled_from([0, -1, 1, -2, 2])))
    return v if v > 0 else float(torch.finfo(torch.float32).smallest_normal) * 2.0**-23


def _dim_size(draw: st.DrawFn, tile: int, max_tiles: int, whole: int, allow_ragged: bool) -> int:
    """A dimension's size: ``whole`` draws for a whole-dim tile (-1), else whole tiles, the last possibly
    ragged."""
    if tile == -1:
        return draw(st.integers(1, whole))
    size = draw(st.integers(1, max_tiles)) * tile
    return size - draw(st.integers(0, tile - 1)) if allow_ragged and draw(st.booleans()) else size


def _decision_fill(rng: np.random.Generator, fmt: FloatFormat, limit: np.ndarray, d: np.ndarray) -> np.ndarray:
    """float64 targets ``v * d`` per element: ``v`` a midpoint of ``fmt`` (half of them), a value of ``fmt``, zero
    or uniform in [0, limit], never above ``limit`` (the tile's scaled amax); ``d`` the dequantisation scale."""
    vals, mids = _format_grid(fmt)
    u = rng.random(limit.shape)
    kind = rng.choice(4, size=limit.shape, p=[0.5, 0.2, 0.05, 0.25])
    n_mid = np.searchsorted(mids, limit, side="right")
    n_val = np.searchsorted(vals, limit, side="right")
    mid = np.where(n_mid > 0, mids[np.minimum((u * n_mid).astype(np.int64), len(mids) - 1)], 0.0)
    val = vals[np.minimum((u * n_val).astype(np.int64), len(vals) - 1)]
    v = np.select([kind == 0, kind == 1, kind == 2], [mid, val, 0.0], u * limit)
    return v * d


@st.composite
def scaled_decision_tensors(draw: st.DrawFn, recipe: Recipe | ScalingConfig | str, role: str = "activation", *,
                            max_tiles: tuple[int, int] = (3, 3), max_elements: int = 16384,
                            allow_ragged: bool = False, allow_nonfinite: bool = False,
                            fills: Sequence[str] = FILL_KINDS) -> torch.Tensor:
    """A float32 (rows, cols) tensor whose elements sit at the decisions of ``recipe``'s ``role`` config after
    scaling (module doc). Shapes: up to ``max_tiles`` tiles per dim (a whole-dim tile spans 1-4 rows or 1-256
    columns), at most ``max_elements`` elements but always one tile; ``allow_ragged`` lets the last tile of a
    dim be partial; ``allow_nonfinite`` puts a NaN or +-Inf in now and then; ``fills`` restricts the fill kinds
    (``FILL_KINDS``: amax_only, sparse, decisions, typical). Delayed scaling is not covered
    (its scale comes from a history, not from the tensor)."""
    cfg = scaling_config(recipe, role)
    if cfg.amax_source == "delayed":
        raise ValueError("scaled_decision_tensors: delayed scaling takes its scale from an amax history, not "
                         "from the tensor; use a current-scaling config")
    tr_cfg, tc_cfg = cfg.tile
    row_tiles = max(1, min(max_tiles[0], max_elements // (max(tr_cfg, 1) * max(tc_cfg, 1))))
    rows = _dim_size(draw, tr_cfg, row_tiles, 4, allow_ragged)
    tiles_c = max(1, min(max_tiles[1], max_elements // (rows * max(tc_cfg, 1))))
    cols = _dim_size(draw, tc_cfg, tiles_c, 256, allow_ragged)
    tr, tc = (rows if tr_cfg == -1 else tr_cfg), (cols if tc_cfg == -1 else tc_cfg)
    nr, nc = -(-rows // tr), -(-cols // tc)
    amax = np.array([[draw(amax_values(cfg)) for _ in range(nc)] for _ in range(nr)], dtype=np.float64)
    fill = draw(st.sampled_from(list(fills)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    x = torch.zeros(rows, cols, dtype=torch.float32)
    sign = torch.from_numpy(np.where(rng.random((rows, cols)) < 0.5, -1.0, 1.0).astype(np.float32))
    for i in range(nr):                                  # each tile's amax element, with a random sign
        for j in range(nc):
            r = i * tr + int(rng.integers(0, min(tr, rows - i * tr)))
            c = j * tc + int(rng.integers(0, min(tc, cols - j * tc)))
            x[r, c] = float(amax[i, j]) * float(sign[r, c])
    is_amax = x != 0
    ref = quantize_tensor(x, cfg, backend="eager")
    per_tile = (ref.scales.double() * ref.tensor_scale).repeat_interleave(tr, 0).repeat_interleave(tc, 1)
    d = torch.nan_to_num(per_tile[:rows, :cols], nan=0.0).numpy()      # each element's dequantisation scale
    a = np.repeat(np.repeat(amax, tr, 0), tc, 1)[:rows, :cols]
    limit = np.where(d > 0, a / np.where(d > 0, d, 1.0), 0.0)

    if fill == "typical":
        body = _student_t(rng, (rows, cols), float(rng.choice([2.0, 3.0, 5.0])))
        target = body / max(float(np.abs(body).max()), 1e-300) * a
    else:
        target = _decision_fill(rng, cfg.format, limit, d)
    if fill == "amax_only":
        keep = np.zeros((rows, cols), bool)
    elif fill == "sparse":                               # about four decision elements in the whole tensor
        keep = rng.random((rows, cols)) < 4.0 / (rows * cols)
    else:
        keep = np.ones((rows, cols), bool)
    y = torch.from_numpy(np.where(keep, np.minimum(np.abs(target), F32_MAX), 0.0)).float()
    steps = torch.from_numpy(rng.choice([-2, -1, 0, 1, 2], size=(rows, cols), p=[0.1, 0.2, 0.4, 0.2, 0.1]))
    steps = torch.where(y > 0, steps, 0)                 # zeros stay (signed) zeros
    for k in (1, 2):                                     # move 1-2 float32 ulps away from the target
        y = torch.where(steps.abs() >= k, torch.nextafter(y, torch.where(steps > 0, math.inf, 0.0)), y)
    y = torch.minimum(y, torch.from_numpy(a).float()) * sign
    x = torch.where(is_amax, x, y)
    if allow_nonfinite and draw(st.integers(0, 9)) == 0:
        x[draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf]))
    return x


# ---- accumulators ---------------------------------------------------------------------------------
@st.composite
def accumulator_models(draw: st.DrawFn, presets: bool = True,
                       structures: Sequence[str] = MODEL_STRUCTURES) -> AccumulatorModel:
    """A preset (when ``presets``, a quarter of the draws) or a random valid ``AccumulatorModel`` of one of
    ``structures``: ``fused`` (NVIDIA-style, any input formats, alignment, rounding, promotion, zero
    convention, NaN and overflow rules), ``fused_mx`` (the same with E8M0 block scales), ``chunk`` (E2M1 chunk
    sums with E8M0 or UE4M3 scales), ``split`` (AMD CDNA3) and ``tree`` (AMD CDNA1/2). Each model is checked
    to run one group through ``emulated_matmul``; invalid combinations are rejected."""
    if presets and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(list_accumulators()))
    kind = draw(st.sampled_from(list(structures)))
    fa, fb = draw(st.sampled_from(MODEL_INPUT_FORMATS)), draw(st.sampled_from(MODEL_INPUT_FORMATS))
    group = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
    kw: dict[str, Any] = {"align_bits": draw(st.integers(0, 30)),
                          "align_rounding": draw(st.sampled_from(["rtz", "rdown", "rne"])),
                          "acc_format": draw(st.sampled_from(["fp32", "e8m13", "fp16", "bf16"])),
                          "acc_rounding": draw(st.sampled_from(["rtz", "rne", "rup", "rdown"])),
                          "nan_output": draw(st.sampled_from(["canonical", "ieee"])),
                          "overflow": draw(st.sampled_from(["inf", "ieee"])),
                          "zero_exponent": draw(st.sampled_from([-126, -140, None]))}
    if kind in ("fused", "fused_mx"):
        kw.update(align_with_acc=draw(st.booleans()),
                  promote_every=draw(st.sampled_from([None, group, 2 * group, 4 * group])),
                  outer_rounding=draw(st.sampled_from(["rne", "rtz"])))
        if kind == "fused" and draw(st.booleans()):
            kw["align_bits"] = None
        if kind == "fused_mx":
            kw["block_scale"] = BlockScale(draw(st.sampled_from([16, 32])), "e8m0")
        kw["structure"] = FusedSum()
    elif kind == "chunk":
        fa = fb = "e2m1"
        chunk = 16
        group = draw(st.sampled_from([16, 32, 64]))
        kw.update(structure=ChunkSum(chunk), block_scale=BlockScale(draw(st.sampled_from([16, 32])),
                                                                    draw(st.sampled_from(["e8m0", "ue4m3"]))))
    elif kind == "split":
        kw.update(align_with_acc=False, structure=SplitSum(draw(st.integers(20, 40)), draw(st.integers(16, 30)),
                                                           draw(st.sampled_from([1, 2])),
                                                           draw(st.sampled_from([None, 0, 25]))))
    else:
        kw.update(align_bits=None, zero_exponent=None, structure=FmaTree(draw(st.booleans())))
    try:
        model = AccumulatorModel(f"random_{kind}", (fa, fb), group, **kw)
        _run_one_group(model)
    except (ValueError, TypeError):
        reject()
    return model


def _run_one_group(model: AccumulatorModel) -> None:
    """Run one full group of zeros through ``emulated_matmul``: a model whose exact sums cannot be emulated
    raises ValueError here."""
    g = model.group_size
    nb = -(-g // model.block_scale.block) if model.block_scale else 0
    a_scales, b_scales = (torch.ones(1, nb), torch.ones(nb, 1)) if model.block_scale else (None, None)
    emulated_matmul(torch.zeros(1, g), torch.zeros(g, 1), model, a_scales=a_scales, b_scales=b_scales)


@dataclass(frozen=True)
class GemmOperands:
    """Operands of one GEMM for a model: ``a`` (M, K) and ``b`` (K, N), float32 values of its input formats, and
    for a block-scaled model ``a_scales`` (M, ceil(K / block)) and ``b_scales`` (ceil(K / block), N)."""

    a: torch.Tensor
    b: torch.Tensor
    a_scales: torch.Tensor | None = None
    b_scales: torch.Tensor | None = None

    def args(self) -> tuple[torch.Tensor, ...]:
        """The arguments a user's GEMM takes: (a, b), or (a, b, a_scales, b_scales) when block-scaled."""
        if self.a_scales is None or self.b_scales is None:
            return self.a, self.b
        return self.a, self.b, self.a_scales, self.b_scales


def _operand(rng: np.random.Generator, fmt: FloatFormat, shape: tuple[int, int], kind: str) -> torch.Tensor:
    """float64 values of ``fmt`` from random codes -- any code (``codes``), the top binade (``huge``), the two
    lowest binades and zero (``tiny``), NaN/Inf codes read as zero -- or Gaussian data at a random power-of-two
    scale rounded to ``fmt`` with saturation (``gaussian``)."""
    if kind == "gaussian":
        g = rng.standard_normal(shape) * 2.0 ** int(rng.integers(-8, 6))
        return quantize(torch.from_numpy(g), fmt, saturate=True, out_dtype=torch.float64)
    lo, hi = {"huge": (max(0, fmt.max_code - (1 << fmt.mbits) + 1), fmt.max_code),
              "tiny": (0, min(fmt.max_code, (2 << fmt.mbits) - 1))}.get(kind, (0, fmt.max_code))
    mag = torch.from_numpy(rng.integers(lo, hi + 1, size=shape))
    sign = torch.from_numpy(rng.integers(0, 2, size=shape)) * fmt.sign_mask
    v = decode(mag | sign, fmt).double()
    return torch.where(torch.isfinite(v), v, 0.0)


@st.composite
def block_scaled_operands(draw: st.DrawFn, model: AccumulatorModel, m: int, k: int, n: int,
                          rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scales for an (m, k) x (k, n) GEMM of a block-scaled ``model``: values of its scale format (E8M0
    powers of two, mostly within 2^+-8 and now and then anywhere in [2^-127, 2^127]; UE4M3: any finite value,
    zero included), shapes (m, ceil(k / block)) and (ceil(k / block), n), float32."""
    bs = model.block_scale
    if bs is None:
        raise ValueError(f"model {model.name} is not block-scaled")
    rng = rng or np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nb = -(-k // bs.block)
    wide = draw(st.integers(0, 4)) == 0

    def scales(shape: tuple[int, int]) -> torch.Tensor:
        if bs.scale_format == "e8m0":
            lo, hi = (-127, 127) if wide else (-8, 8)
            return torch.from_numpy(np.ldexp(1.0, rng.integers(lo, hi + 1, size=shape))).float()
        return _operand(rng, bs.format, shape, "codes").float()

    return scales((m, nb)), scales((nb, n))


@st.composite
def gemm_operands(draw: st.DrawFn, model: AccumulatorModel | str, max_m: int = 3, max_n: int = 3,
                  max_k: int | None = None, allow_nonfinite: bool = False) -> GemmOperands:
    """``GemmOperands`` for ``model`` (a preset name or model): K from 1 to ``max_k`` (default: past two groups
    and past the first promotion, at most 320), one of ``OPERAND_KINDS`` -- any values of the formats, Gaussian
    data, exact cancellation (the second half of K minus the first), zeros next to the formats' largest values,
    tiny products (the lowest binades, subnormals included) beside a few ordinary ones -- and block scales for a
    block-scaled model. ``allow_nonfinite`` puts a NaN or Inf into ``a`` now and then."""
    model = get_accumulator(model)
    fa, fb = model.formats
    if max_k is None:
        max_k = min(320, max(2 * model.group_size + 3, (model.promote_every or 0) + model.group_size + 3, 40))
    m, n, k = draw(st.integers(1, max_m)), draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    kind = draw(st.sampled_from(OPERAND_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = "gaussian" if kind in ("cancel", "zeros_next_to_huge") else "tiny" if kind == "tiny_products" else kind
    a, b = _operand(rng, fa, (m, k), base), _operand(rng, fb, (k, n), base)
    if kind == "cancel" and k > 1:
        h = k // 2
        a[:, k - h:], b[k - h:] = a[:, :h], -b[:h]
    elif kind == "zeros_next_to_huge":
        cols = torch.from_numpy(rng.random(k) < 0.3)
        a[:, cols], b[cols] = 0.0, _operand(rng, fb, (int(cols.sum()), n), "huge")
        rows = torch.from_numpy(rng.random(k) < 0.3) & ~cols
        b[rows], a[:, rows] = 0.0, _operand(rng, fa, (m, int(rows.sum())), "huge")
    elif kind == "tiny_products":
        few = torch.from_numpy(rng.random(k) < 0.1)
        a[:, few] = _operand(rng, fa, (m, int(few.sum())), "gaussian")
    if allow_nonfinite and draw(st.integers(0, 9)) == 0:
        special = [v for v, ok in ((math.nan, fa.has_nan), (math.inf, fa.has_inf), (-math.inf, fa.has_inf)) if ok]
        if special:
            a[draw(st.integers(0, m - 1)), draw(st.integers(0, k - 1))] = draw(st.sampled_from(special))
    a_sc = b_sc = None
    if model.block_scale is not None:
        a_sc, b_sc = draw(block_scaled_operands(model, m, k, n, rng))
    return GemmOperands(a.float(), b.float(), a_sc, b_sc)

