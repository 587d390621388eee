"""Ready-made property checks of a user's quantiser or GEMM against the lab's reference (plain functions; the
pytest plugin ``lowprec.testing.plugin`` offers them as fixtures).

``assert_matches_reference(quantize, recipe, role)`` draws tensors from ``scaled_decision_tensors`` (rounding
midpoints after scaling, amax at binade edges and near the amax floor, scales at and one ulp from powers of
two, ties of every kind, and typical heavy-tailed data), calls ``quantize(x)`` and compares it bit for bit with
``lowprec.quantize_tensor(x, recipe, role)``. ``quantize`` takes one float32 tensor (2-D, ``(rows, cols)``,
cols the dim the recipe's tiles run along) and returns one of:

* a ``lowprec.QuantizedTensor``: codes, scales and (NVFP4) the tensor scale are compared;
* ``(codes, scales)`` or ``(codes, scales, tensor_scale)``: ``codes`` one per element (an integer tensor of
  the element format's codes, or a torch float8 tensor, whose bytes are the codes), ``scales`` the
  dequantisation scales (``x ~= value(code) * scale``; Transformer Engine's ``scale_inv``), one per tile in
  row-major tile order, any shape with that many elements -- float32 values, or uint8 / float8_e8m0fnu codes
  of the recipe's scale format (E8M0, UE4M3); ``tensor_scale`` NVFP4's per-tensor decode scale;
* a float tensor of ``x``'s shape: the dequantised values, compared bit for bit (NaN matches any NaN).

Codes are compared exactly (NaN and signed-zero codes included), scales as float32 bits (NaN matches NaN).

``assert_gemm_matches(gemm, model)`` draws ``gemm_operands(model)`` and compares ``gemm(a, b)`` (``gemm(a, b,
a_scales, b_scales)`` for a block-scaled model), a float32 (M, N) tensor, bit for bit with
``lowprec.emulated_matmul``; NaNs compare by bits when the model's ``nan_output`` is ``"canonical"``, else any
NaN matches.

Either check raises ``MismatchError`` (an ``AssertionError``) for the smallest failing input hypothesis finds,
naming the first differing element with its input, codes and scales (for a GEMM: the output bits, the first
differing bit and the dot product's operands), then the same input reduced to what decides the failure when
that still fails -- for a quantiser, zeros but the differing element and the amax elements that set its scale
(``reduced``); for a GEMM, the differing output's single dot product with every product the failure does not
need set to zero. ``example`` on the error is the input, ``examples_needed`` how many examples ran up to and
including the first failing one. Hypothesis settings: ``check_settings()`` (no
deadline, no example database, one bug reported; the example budget of the active hypothesis profile, 100 by
default) unless ``settings=`` is passed; ``examples=N`` sets only the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from lowprec.accum import AccumulatorModel, emulated_matmul, get_accumulator
from lowprec.formats import E8M0, get_format
from lowprec.rounding import decode
from lowprec.scaling import QuantizedTensor, Recipe, ScalingConfig, quantize_tensor

from .strategies import GemmOperands, gemm_operands, scaled_decision_tensors, scaling_config


class MismatchError(AssertionError):
    """A user's kernel differs from the lab's reference; ``example`` is the failing input, ``examples_needed``
    the number of examples run up to the first failure."""

    def __init__(self, message: str, example: Any) -> None:
        super().__init__(message)
        self.example = example
        self.reduced: Any = None
        self.examples_needed: int | None = None


class Difference(NamedTuple):
    """The first place a user's result differs from the reference: a description and the (row, col) of the
    element it is about (of the first element of the tile, for a scale)."""

    text: str
    row: int
    col: int


def check_settings(**overrides: Any) -> Settings:
    """The checks' hypothesis settings: the active profile's, with no deadline, no example database, slow-data
    health checks off and one bug reported; ``overrides`` replace any of them."""
    base: dict[str, Any] = {"deadline": None, "database": None, "report_multiple_bugs": False,
                            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much]}
    return Settings(**{**base, **overrides})


def _run(prop: Callable[[Any], None], strategy: st.SearchStrategy[Any], settings: Settings | None,
         examples: int | None, reduce: Callable[[Any], tuple[Any, str] | None]) -> None:
    """Run ``prop`` on examples of ``strategy`` under ``settings``; count the examples up to the first
    failure and put the count on the error hypothesis raises for the shrunk example, with ``reduce``'s smaller
    failing input (the elements that decide the failure; None when it finds none) added to its message."""
    s = settings if settings is not None else check_settings()
    s = Settings(s, report_multiple_bugs=False)
    if examples is not None:
        s = Settings(s, max_examples=examples)
    count = {"run": 0, "first_failure": 0}

    @s
    @given(strategy)
    def check(example: Any) -> None:
        count["run"] += 1
        try:
            prop(example)
        except Exception:
            count["first_failure"] = count["first_failure"] or count["run"]
            raise

    try:
        check()
    except MismatchError as err:
        err.examples_needed = count["first_failure"]
        smaller = reduce(err.example)
        if smaller is not None:
            err.reduced = smaller[0]
            err.args = (f"{err.args[0]}\n{smaller[1]}",)
        err.add_note(f"lowprec.testing: the first failing example was example {count['first_failure']}")
        raise


# ---- quantisers -----------------------------------------------------------------------------------
def _bits32(t: torch.Tensor) -> torch.Tensor:
    """float32 bits of ``t`` (int32), every NaN the same pattern: bitwise comparison with NaN == NaN."""
    t = t.to(torch.float32)
    return torch.where(torch.isnan(t), torch.nan, t).view(torch.int32)


def _as_codes(codes: Any, shape: tuple[int, int]) -> torch.Tensor:
    """A user's codes as int64 (rows, cols): an integer tensor, or a float8 tensor viewed as its bytes."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes must be a torch tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point:
        if codes.element_size() != 1:
            raise TypeError(f"codes must be integer codes or a float8 tensor, got {codes.dtype}")
        codes = codes.view(torch.uint8)
    if codes.numel() != shape[0] * shape[1]:
        raise ValueError(f"codes have shape {tuple(codes.shape)}; the input's (rows, cols) view is {shape}")
    return codes.reshape(shape).to(torch.int64)


def _as_scales(scales: Any, cfg: ScalingConfig, shape: tuple[int, int]) -> torch.Tensor:
    """A user's scales as float32 of the reference's per-tile ``shape``: float values, or codes (uint8 or
    float8_e8m0fnu) of the config's scale format."""
    if not isinstance(scales, torch.Tensor):
        scales = torch.tensor(scales, dtype=torch.float32)
    if scales.numel() != shape[0] * shape[1]:
        raise ValueError(f"scales have shape {tuple(scales.shape)}; the recipe's tiles need {shape} (one per tile)")
    if scales.dtype == getattr(torch, "float8_e8m0fnu", None):
        scales = scales.view(torch.uint8)
    if not scales.dtype.is_floating_point:
        if cfg.scale_format == "fp32":
            raise TypeError(f"integer scales ({scales.dtype}) need a recipe with coded scales (e8m0, ue4m3)")
        scales = decode(scales.to(torch.int64), E8M0 if cfg.scale_format == "e8m0" else get_format("ue4m3"))
    return scales.reshape(shape).to(torch.float32)


def _hex(v: float) -> str:
    return f"{v!r} ({float(v).hex()})"


def _quantizer_mismatch(x: torch.Tensor, got: Any, ref: QuantizedTensor) -> Difference | None:
    """What first differs between the user's result ``got`` and the reference ``ref`` for input ``x``, or None
    when they agree (formats: the module doc)."""
    cfg, fmt = ref.config, ref.fmt
    shape = (int(ref.codes.shape[0]), int(ref.codes.shape[1]))
    tr, tc = ref.tile
    x2 = x.reshape(shape)

    def where(r: int, c: int) -> str:
        i, j = r // tr, c // tc
        tile = x2[i * tr:(i + 1) * tr, j * tc:(j + 1) * tc]
        amax = float(torch.where(torch.isfinite(tile), tile.abs(), 0.0).max())
        sf = float(ref.scales[i, j]) * ref.tensor_scale
        return (f"element ({r}, {c}) of the (rows, cols) = {shape} input, tile ({i}, {j}) of {(tr, tc)}: "
                f"x = {_hex(float(x2[r, c]))}, tile amax = {_hex(amax)}, x / reference scale = "
                f"{float(x2[r, c]) / sf if sf else math.nan!r}")

    if isinstance(got, torch.Tensor) and got.dtype.is_floating_point and got.element_size() > 1:
        want = ref.dequantize()
        if tuple(got.shape) != tuple(x.shape):
            raise ValueError(f"dequantised output has shape {tuple(got.shape)}, the input {tuple(x.shape)}")
        diff = (_bits32(got) != _bits32(want)).reshape(shape).nonzero()
        if not len(diff):
            return None
        r, c = (int(v) for v in diff[0])
        return Difference(f"{where(r, c)}\n  reference dequantised value {_hex(float(want.reshape(shape)[r, c]))} "
                          f"(code {int(ref.codes[r, c]):#x}, scale {_hex(float(ref.scales[r // tr, c // tc]))}), "
                          f"yours {_hex(float(got.reshape(shape)[r, c]))}", r, c)
    if isinstance(got, QuantizedTensor):
        got = (got.codes, got.scales, got.tensor_scale)
    if not isinstance(got, (tuple, list)) or len(got) not in (2, 3):
        raise TypeError("the quantiser must return a QuantizedTensor, (codes, scales), (codes, scales, "
                        f"tensor_scale) or the dequantised float tensor; got {type(got).__name__}")
    codes = _as_codes(got[0], shape)
    scales = _as_scales(got[1], cfg, (int(ref.scales.shape[0]), int(ref.scales.shape[1])))
    bad_scale = (_bits32(scales) != _bits32(ref.scales)).nonzero()
    bad_code = (codes != ref.codes.to(torch.int64)).nonzero()
    if len(got) == 3 and _bits32(torch.tensor(float(got[2]))) != _bits32(torch.tensor(ref.tensor_scale)):
        return Difference(f"tensor scale: reference {_hex(ref.tensor_scale)}, yours {_hex(float(got[2]))}", 0, 0)
    if len(bad_code):
        r, c = (int(v) for v in bad_code[0])
        i, j = r // tr, c // tc
        return Difference(f"{where(r, c)}\n  reference code {int(ref.codes[r, c]):#x} "
                          f"({float(decode(ref.codes[r, c:c + 1].to(torch.int64), fmt)[0])!r}), scale "
                          f"{_hex(float(ref.scales[i, j]))}\n  your code {int(codes[r, c]):#x} "
                          f"({float(decode(codes[r, c:c + 1], fmt)[0])!r}), scale {_hex(float(scales[i, j]))}", r, c)
    if len(bad_scale):
        i, j = (int(v) for v in bad_scale[0])
        return Difference(f"scale of tile ({i}, {j}) of {(tr, tc)}: reference {_hex(float(ref.scales[i, j]))}, "
                          f"yours {_hex(float(scales[i, j]))} (every code agrees)", i * tr, j * tc)
    return None


def _show_tensor(x: torch.Tensor, limit: int = 8) -> str:
    """``x`` as its shape and its non-zero elements (exact float32 values) when there are at most ``limit`` of
    them, else its shape and non-zero count (the error's ``example`` is the tensor)."""
    nz = (x != 0).nonzero()
    if len(nz) > limit:
        return f"a {tuple(x.shape)} float32 tensor with {len(nz)} non-zero elements"
    items = ", ".join(f"x[{', '.join(str(int(v)) for v in ix)}] = {_hex(float(x[tuple(ix)]))}" for ix in nz)
    return f"a {tuple(x.shape)} float32 tensor of zeros but {items}" if items else f"a {tuple(x.shape)} zero tensor"


def _quantizer_reduced(x: torch.Tensor, diff: Difference, tile: tuple[int, int], two_level: bool) -> torch.Tensor:
    """``x`` with every element zeroed but the differing one, the largest finite magnitude of its tile (which
    sets the tile's scale), with ``two_level`` the tensor's (which sets NVFP4's tensor scale), and the tile's
    non-finite elements."""
    tr, tc = tile
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    keep = torch.zeros_like(x2, dtype=torch.bool)
    keep[diff.row, diff.col] = True
    rows = slice(diff.row // tr * tr, diff.row // tr * tr + tr)
    cols = slice(diff.col // tc * tc, diff.col // tc * tc + tc)
    finite_mag = torch.where(torch.isfinite(x2), x2.abs(), -1.0)
    t = finite_mag[rows, cols]
    keep[rows, cols].view(-1)[int(t.argmax())] = True
    if two_level:
        keep.view(-1)[int(finite_mag.argmax())] = True
    keep[rows, cols] |= ~torch.isfinite(x2[rows, cols])
    return torch.where(keep, x2, 0.0).reshape(x.shape)


def assert_matches_reference(quantize: Callable[[torch.Tensor], Any], recipe: Recipe | ScalingConfig | str,
                             role: str = "activation", *, examples: int | None = None,
                             settings: Settings | None = None, strategy: st.SearchStrategy[torch.Tensor] | None = None,
                             allow_ragged: bool = False, allow_nonfinite: bool = False,
                             max_elements: int = 16384) -> None:
    """Property-test ``quantize`` against ``lowprec.quantize_tensor(x, recipe, role)`` bit for bit (module doc for
    the accepted results). Inputs: ``strategy`` if given, else ``scaled_decision_tensors(recipe, role,
    allow_ragged=..., allow_nonfinite=..., max_elements=...)`` (whole tiles and finite values by default, as
    most kernels require). ``examples`` sets the example budget, ``settings`` the hypothesis settings
    (``check_settings()`` by default). Raises ``MismatchError`` for the smallest failing input."""
    cfg = scaling_config(recipe, role)
    strategy = strategy if strategy is not None else scaled_decision_tensors(
        cfg, allow_ragged=allow_ragged, allow_nonfinite=allow_nonfinite, max_elements=max_elements)

    def differs(x: torch.Tensor) -> Difference | None:
        return _quantizer_mismatch(x, quantize(x.clone()), quantize_tensor(x, cfg))

    def prop(x: torch.Tensor) -> None:
        diff = differs(x)
        if diff is not None:
            name = getattr(recipe, "name", recipe)
            raise MismatchError(f"quantiser differs from lowprec.quantize_tensor with {name!r}"
                                f" ({role}) at the first differing place:\n  {diff.text}\ninput: {_show_tensor(x)}", x)

    def reduce(x: torch.Tensor) -> tuple[torch.Tensor, str] | None:
        diff = differs(x)
        tile = quantize_tensor(x, cfg).tile
        smaller = _quantizer_reduced(x, diff, tile, cfg.scale_format == "ue4m3") if diff is not None else None
        if smaller is None or torch.equal(smaller, x) or (again := differs(smaller)) is None:
            return None
        return smaller, f"it also fails reduced to {_show_tensor(smaller)}:\n  {again.text}"

    _run(prop, strategy, settings, examples, reduce)


# ---- GEMMs ----------------------------------------------------------------------------------------
def _gemm_mismatch(ops: GemmOperands, got: Any, want: torch.Tensor, model: AccumulatorModel) -> Difference | None:
    """What first differs between the user's GEMM result and the reference, or None."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return Difference(f"the GEMM returned {shape}; expected a float32 tensor of shape {tuple(want.shape)}", 0, 0)
    g, w = got.to(torch.float32), want
    if model.nan_output == "canonical":
        diff = g.view(torch.int32) != w.view(torch.int32)
    else:
        diff = _bits32(g) != _bits32(w)
    bad = diff.nonzero()
    if not len(bad):
        return None
    i, j = (int(v) for v in bad[0])
    gb, wb = int(g[i, j:j + 1].view(torch.int32)) & 0xFFFFFFFF, int(w[i, j:j + 1].view(torch.int32)) & 0xFFFFFFFF
    first_bit = 32 - (gb ^ wb).bit_length()
    scales = ""
    if ops.a_scales is not None and ops.b_scales is not None:
        scales = f"\n  a_scales[{i}] = {ops.a_scales[i].tolist()}\n  b_scales[:, {j}] = {ops.b_scales[:, j].tolist()}"
    return Difference(f"out[{i}, {j}] (K = {ops.a.shape[1]}): reference {_hex(float(w[i, j]))} = {wb:#010x}, yours "
                      f"{_hex(float(g[i, j]))} = {gb:#010x}, first differing bit {first_bit} (0 = sign)\n"
                      f"  a[{i}, :] = {ops.a[i].tolist()}\n  b[:, {j}] = {ops.b[:, j].tolist()}{scales}", i, j)


def _one_dot(ops: GemmOperands, i: int, j: int) -> GemmOperands:
    """The (1, K) x (K, 1) GEMM of output element (i, j) of ``ops``."""
    a_sc = ops.a_scales[i:i + 1] if ops.a_scales is not None else None
    b_sc = ops.b_scales[:, j:j + 1] if ops.b_scales is not None else None
    return GemmOperands(ops.a[i:i + 1].clone(), ops.b[:, j:j + 1].clone(), a_sc, b_sc)


def _gemm_reduced(ops: GemmOperands, diff: Difference, fails: Callable[[GemmOperands], bool]) -> GemmOperands:
    """The differing output's single dot product, with every product (a_k, b_k) set to (0, 0) that the failure
    does not need (one pass along K, keeping each zeroing that still fails)."""
    one = _one_dot(ops, diff.row, diff.col)
    if not fails(one):
        return ops
    for k in range(one.a.shape[1]):
        if one.a[0, k] == 0 and one.b[k, 0] == 0:
            continue
        trial = GemmOperands(one.a.clone(), one.b.clone(), one.a_scales, one.b_scales)
        trial.a[0, k], trial.b[k, 0] = 0.0, 0.0
        if fails(trial):
            one = trial
    return one


def assert_gemm_matches(gemm: Callable[..., torch.Tensor], model: AccumulatorModel | str, *,
                        examples: int | None = None, settings: Settings | None = None,
                        strategy: st.SearchStrategy[GemmOperands] | None = None, max_m: int = 3, max_n: int = 3,
                        max_k: int | None = None, allow_nonfinite: bool = False) -> None:
    """Property-test ``gemm`` against ``lowprec.emulated_matmul`` with ``model`` bit for bit (module doc).
    Inputs: ``strategy`` if given, else ``gemm_operands(model, max_m, max_n, max_k, allow_nonfinite)``;
    ``examples`` and ``settings`` as for ``assert_matches_reference``. Raises ``MismatchError``."""
    model = get_accumulator(model)
    strategy = strategy if strategy is not None else gemm_operands(model, max_m, max_n, max_k, allow_nonfinite)

    def differs(ops: GemmOperands) -> Difference | None:
        want = emulated_matmul(ops.a, ops.b, model, a_scales=ops.a_scales, b_scales=ops.b_scales)
        return _gemm_mismatch(ops, gemm(*(t.clone() for t in ops.args())), want, model)

    def prop(ops: GemmOperands) -> None:
        diff = differs(ops)
        if diff is not None:
            raise MismatchError(f"GEMM differs from lowprec.emulated_matmul with {model.name!r}:\n  {diff.text}", ops)

    def reduce(ops: GemmOperands) -> tuple[GemmOperands, str] | None:
        diff = differs(ops)
        smaller = _gemm_reduced(ops, diff, lambda o: differs(o) is not None) if diff is not None else ops
        again = differs(smaller) if smaller is not ops else None
        if again is None:
            return None
        nonzero = int(((smaller.a[0] != 0) | (smaller.b[:, 0] != 0)).sum())
        return smaller, f"it also fails as one dot product with {nonzero} non-zero products:\n  {again.text}"

    _run(prop, strategy, settings, examples, reduce)

