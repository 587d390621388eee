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
naming the first differing element with its input, codes and scales; ``examples_needed`` on the error is how
many examples ran up to and including the first failing one. Hypothesis settings: ``check_settings()`` (no
deadline, no example database, one bug reported; the example budget of the active hypothesis profile, 100 by
default) unless ``settings=`` is passed; ``examples=N`` sets only the budget.
"""

from __future__ import annotations

import math
from typing import Any, Callable

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
        self.examples_needed: int | None = None


def check_settings(**overrides: Any) -> Settings:
    """The checks' hypothesis settings: the active profile's, with no deadline, no example database, slow-data
    health checks off and one bug reported; ``overrides`` replace any of them."""
    base: dict[str, Any] = dict(deadline=None, database=None, report_multiple_bugs=False,
                                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much])
    return Settings(**{**base, **overrides})


def _run(prop: Callable[[Any], None], strategy: st.SearchStrategy[Any], settings: Settings | None,
         examples: int | None) -> None:
    """Run ``prop`` on examples of ``strategy`` under ``settings``; count the examples up to the first
    failure and put the count on the error hypothesis raises for the shrunk example."""
    s = settings if settings is not None else check_settings()
    s = Settings(s, report_multiple_bugs=False, **({"max_examples": examples} if examples is not None else {}))
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


def _quantizer_mismatch(x: torch.Tensor, got: Any, ref: QuantizedTensor) -> str | None:
    """What first differs between the user's result ``got`` and the reference ``ref`` for input ``x``, or None
    when they agree (formats: the module doc)."""
    cfg, fmt = ref.config, ref.fmt
    shape = tuple(ref.codes.shape)
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
        return (f"{where(r, c)}\n  reference dequantised value {_hex(float(want.reshape(shape)[r, c]))} "
                f"(code {int(ref.codes[r, c]):#x}, scale {_hex(float(ref.scales[r // tr, c // tc]))}), "
                f"yours {_hex(float(got.reshape(shape)[r, c]))}")
    if isinstance(got, QuantizedTensor):
        got = (got.codes, got.scales, got.tensor_scale)
    if not isinstance(got, (tuple, list)) or len(got) not in (2, 3):
        raise TypeError("the quantiser must return a QuantizedTensor, (codes, scales), (codes, scales, "
                        f"tensor_scale) or the dequantised float tensor; got {type(got).__name__}")
    codes = _as_codes(got[0], shape)
    scales = _as_scales(got[1], cfg, tuple(ref.scales.shape))
    bad_scale = (_bits32(scales) != _bits32(ref.scales)).nonzero()
    bad_code = (codes != ref.codes.to(torch.int64)).nonzero()
    if len(got) == 3 and _bits32(torch.tensor(float(got[2]))) != _bits32(torch.tensor(ref.tensor_scale)):
        return f"tensor scale: reference {_hex(ref.tensor_scale)}, yours {_hex(float(got[2]))}"
    if len(bad_code):
        r, c = (int(v) for v in bad_code[0])
        i, j = r // tr, c // tc
        return (f"{where(r, c)}\n  reference code {int(ref.codes[r, c]):#x} "
                f"({float(decode(ref.codes[r, c:c + 1].to(torch.int64), fmt)[0])!r}), scale "
                f"{_hex(float(ref.scales[i, j]))}\n  your code {int(codes[r, c]):#x} "
                f"({float(decode(codes[r, c:c + 1], fmt)[0])!r}), scale {_hex(float(scales[i, j]))}")
    if len(bad_scale):
        i, j = (int(v) for v in bad_scale[0])
        return (f"scale of tile ({i}, {j}) of {(tr, tc)}: reference {_hex(float(ref.scales[i, j]))}, yours "
                f"{_hex(float(scales[i, j]))} (every code agrees)")
    return None


def _show_tensor(x: torch.Tensor, limit: int = 64) -> str:
    """``x`` in full (float32 repr) when small, else its shape and non-zero count."""
    if x.numel() <= limit:
        return f"torch.tensor({x.tolist()!r}, dtype=torch.float32)"
    return f"a {tuple(x.shape)} float32 tensor with {int((x != 0).sum())} non-zero elements (the error's .example)"


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

    def prop(x: torch.Tensor) -> None:
        ref = quantize_tensor(x, cfg)
        problem = _quantizer_mismatch(x, quantize(x.clone()), ref)
        if problem is not None:
            raise MismatchError(f"quantiser differs from lowprec.quantize_tensor with {getattr(recipe, 'name', recipe)!r}"
                                f" ({role}) at the first differing place:\n  {problem}\ninput: {_show_tensor(x)}", x)

    _run(prop, strategy, settings, examples)


# ---- GEMMs ----------------------------------------------------------------------------------------
def _gemm_mismatch(ops: GemmOperands, got: Any, want: torch.Tensor, model: AccumulatorModel) -> str | None:
    """What first differs between the user's GEMM result and the reference, or None."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"the GEMM returned {shape}; expected a float32 tensor of shape {tuple(want.shape)}"
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
    return (f"out[{i}, {j}] (K = {ops.a.shape[1]}): reference {_hex(float(w[i, j]))} = {wb:#010x}, yours "
            f"{_hex(float(g[i, j]))} = {gb:#010x}, first differing bit {first_bit} (0 = sign)\n"
            f"  a[{i}, :] = {ops.a[i].tolist()}\n  b[:, {j}] = {ops.b[:, j].tolist()}{scales}")


def assert_gemm_matches(gemm: Callable[..., torch.Tensor], model: AccumulatorModel | str, *,
                        examples: int | None = None, settings: Settings | None = None,
                        strategy: st.SearchStrategy[GemmOperands] | None = None, max_m: int = 3, max_n: int = 3,
                        max_k: int | None = None, allow_nonfinite: bool = False) -> None:
    """Property-test ``gemm`` against ``lowprec.emulated_matmul`` with ``model`` bit for bit (module doc).
    Inputs: ``strategy`` if given, else ``gemm_operands(model, max_m, max_n, max_k, allow_nonfinite)``;
    ``examples`` and ``settings`` as for ``assert_matches_reference``. Raises ``MismatchError``."""
    model = get_accumulator(model)
    strategy = strategy if strategy is not None else gemm_operands(model, max_m, max_n, max_k, allow_nonfinite)

    def prop(ops: GemmOperands) -> None:
        want = emulated_matmul(ops.a, ops.b, model, a_scales=ops.a_scales, b_scales=ops.b_scales)
        problem = _gemm_mismatch(ops, gemm(*(t.clone() for t in ops.args())), want, model)
        if problem is not None:
            raise MismatchError(f"GEMM differs from lowprec.emulated_matmul with {model.name!r}:\n  {problem}", ops)

    _run(prop, strategy, settings, examples)

