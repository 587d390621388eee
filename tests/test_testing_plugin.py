"""lowprec.testing: the decision-aiming strategies, the ready-made checks and the pytest11 plugin.

The checks must catch a set of mutant kernels -- small hand-written quantisers one edit away from a correct one,
and GEMMs that are hopper_fp8 with one knob changed -- within hypothesis's default budget of 100 examples
(derandomised, so the counts are reproducible); the examples each needed are printed (``pytest -s``) and recorded
in the plugin's docstring.
The correct hand-written kernels, and the lab's own functions wrapped as user callables, must pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import torch
from hypothesis import Phase, assume, given, settings
from hypothesis import strategies as st

import lowprec as lp
from lowprec.accum import get_accumulator
from lowprec.testing import MismatchError, assert_gemm_matches, assert_matches_reference, check_settings
from lowprec.testing.strategies import (
    accumulator_models,
    float32_near_grid,
    formats,
    gemm_operands,
    heavy_tailed_tensors,
    scaled_decision_tensors,
)

pytest_plugins = ["pytester"]

BUDGET = 100                                   # hypothesis's default max_examples
# the mutant tests count the examples up to the first failure; shrinking it would only cost time here
MUTANT_SETTINGS = check_settings(max_examples=BUDGET, derandomize=True, phases=[Phase.generate])
PASS_SETTINGS = check_settings(max_examples=40, derandomize=True)


# ---- hand-written kernels, as a downstream project would write them ---------------------------------
def deepgemm_1x128(x: torch.Tensor, *, op: str = "mul_inv", amax_floor: float = 1e-4,
                   rounding: str = "rne") -> tuple[torch.Tensor, torch.Tensor]:
    """DeepGEMM-style E4M3 1x128 activation cast (cols a multiple of 128): amax per tile clamped to
    ``amax_floor``, sf = amax / 448, scaled value by ``op``, cast with saturation. Returns (codes, sf)."""
    rows, cols = x.shape
    t = x.reshape(rows, cols // 128, 128)
    amax = t.abs().amax(dim=-1, keepdim=True).clamp(min=amax_floor)
    sf = amax / 448.0
    scaled = {"mul_inv": lambda: t * (1.0 / sf),
              "div": lambda: t / sf,                                              # x / (amax / 448)
              "mul_ratio": lambda: t * (torch.full_like(amax, 448.0) / amax),     # a true division
              "mul_rcp_ratio": lambda: t * (448.0 * torch.reciprocal(amax))}[op]()
    codes = lp.encode(scaled, "e4m3fn", rounding, saturate=True)
    return codes.reshape(rows, cols), sf.reshape(rows, cols // 128)


def mx_e4m3(x: torch.Tensor, *, exponent_offset: int = 0, saturate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MXFP8 (E4M3, 1x32 blocks, floor rule): X = 2^(floor(log2 amax) - 8), clamped to [-127, 127]
    (2^-127 for an all-zero block), elements RNE(x / X). Returns (codes, X as float32)."""
    rows, cols = x.shape
    t = x.reshape(rows, cols // 32, 32).double()
    amax = t.abs().amax(dim=-1, keepdim=True)
    _, e = torch.frexp(torch.where(amax > 0, amax, 1.0))             # amax = m * 2^e, m in [0.5, 1)
    exp = torch.where(amax > 0, (e - 1 - 8 + exponent_offset).clamp(-127, 127), -127)
    scale = torch.ldexp(torch.ones_like(amax), exp)
    codes = lp.encode((t / scale).float(), "e4m3fn", saturate=saturate)
    return codes.reshape(rows, cols), scale.float().reshape(rows, cols // 32)


def scalar_gemm(model: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A GEMM of ``lowprec.reference_dot`` calls (the exact scalar reference, one dot product at a time)."""
    out = [[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model) for j in range(b.shape[1])]
           for i in range(a.shape[0])]
    return torch.tensor(out, dtype=torch.float64).float()


def model_gemm(model: lp.AccumulatorModel, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A user's GEMM that computes as ``model`` does (a mutant when ``model`` is a changed preset)."""
    return lp.emulated_matmul(a, b, model)


HOPPER = get_accumulator("hopper_fp8")
QUANTISER_MUTANTS: dict[str, tuple[Callable[[torch.Tensor], Any], str]] = {
    "1x128 true division x / (amax / 448)": (partial(deepgemm_1x128, op="div"), "deepseek_v3"),
    "1x128 x * (448 / amax) (true division)": (partial(deepgemm_1x128, op="mul_ratio"), "deepseek_v3"),
    "1x128 x * (448 * (1 / amax))": (partial(deepgemm_1x128, op="mul_rcp_ratio"), "deepseek_v3"),
    "1x128 ties away from zero": (partial(deepgemm_1x128, rounding="rna"), "deepseek_v3"),
    "1x128 amax floor 1e-3": (partial(deepgemm_1x128, amax_floor=1e-3), "deepseek_v3"),
    "MXFP8 exponent + 1": (partial(mx_e4m3, exponent_offset=1), "mxfp8"),
    "MXFP8 exponent - 1": (partial(mx_e4m3, exponent_offset=-1), "mxfp8"),
    "MXFP8 saturation off": (partial(mx_e4m3, saturate=False), "mxfp8"),
}
GEMM_MUTANTS: dict[str, lp.AccumulatorModel] = {
    "hopper_fp8 with 14 alignment bits": replace(HOPPER, align_bits=14),
    "hopper_fp8 with groups of 16": replace(HOPPER, group_size=16, instruction_k=16),
    "hopper_fp8 with RNE alignment": replace(HOPPER, align_rounding="rne"),
}


@pytest.mark.parametrize("name", list(QUANTISER_MUTANTS))
def test_quantiser_mutant_is_caught(name: str) -> None:
    """Each mutant quantiser fails assert_matches_reference within the budget; the error names the first
    differing element with its codes and scales."""
    kernel, recipe = QUANTISER_MUTANTS[name]
    with pytest.raises(MismatchError) as err:
        assert_matches_reference(kernel, recipe, settings=MUTANT_SETTINGS)
    print(f"\nEXAMPLES NEEDED | {name} | {recipe} | {err.value.examples_needed}")
    assert 1 <= err.value.examples_needed <= BUDGET
    assert "first differing place" in str(err.value)
    assert ("reference code" in str(err.value)) or ("scale of tile" in str(err.value))


@pytest.mark.parametrize("name", list(GEMM_MUTANTS))
def test_gemm_mutant_is_caught(name: str) -> None:
    """Each mutant GEMM fails assert_gemm_matches(hopper_fp8) within the budget, naming the first differing bit."""
    with pytest.raises(MismatchError) as err:
        assert_gemm_matches(partial(model_gemm, GEMM_MUTANTS[name]), "hopper_fp8", settings=MUTANT_SETTINGS)
    print(f"\nEXAMPLES NEEDED | {name} | hopper_fp8 | {err.value.examples_needed}")
    assert 1 <= err.value.examples_needed <= BUDGET
    assert "first differing bit" in str(err.value) and "it also fails as one dot product" in str(err.value)
    reduced = err.value.reduced
    assert reduced.a.shape[0] == reduced.b.shape[1] == 1
    assert not torch.equal(partial(model_gemm, GEMM_MUTANTS[name])(reduced.a, reduced.b),
                           lp.emulated_matmul(reduced.a, reduced.b, "hopper_fp8"))


def test_quantiser_failure_is_reduced_to_the_deciding_elements() -> None:
    """The report of the true-division mutant ends with a reduced input: zeros but the differing element and its
    tile's amax, which still fails."""
    with pytest.raises(MismatchError) as err:
        assert_matches_reference(QUANTISER_MUTANTS["1x128 true division x / (amax / 448)"][0], "deepseek_v3",
                                 settings=MUTANT_SETTINGS)
    reduced = err.value.reduced
    assert "it also fails reduced to" in str(err.value) and int((reduced != 0).sum()) == 2
    codes, sf = deepgemm_1x128(reduced, op="div")
    ref = lp.quantize_tensor(reduced, "deepseek_v3")
    assert torch.equal(sf, ref.scales) and not torch.equal(codes, ref.codes)


@pytest.mark.parametrize("kernel, recipe, role", [
    (deepgemm_1x128, "deepseek_v3", "activation"),
    (mx_e4m3, "mxfp8", "activation"),
    (partial(lp.fake_quantize, recipe_or_scaling="nvfp4"), "nvfp4", "activation"),       # dequantised values
    (partial(lp.quantize_tensor, recipe_or_scaling="deepseek_v3", role="weight"), "deepseek_v3",
     "weight"),                                                     # a QuantizedTensor, 128x128 blocks
])
def test_correct_quantisers_pass(kernel: Callable[[torch.Tensor], Any], recipe: str, role: str) -> None:
    """Correct kernels (hand-written, and the lab's own functions wrapped as user kernels, which exercise the
    dequantised-values and QuantizedTensor paths of the comparison) pass every example."""
    assert_matches_reference(kernel, recipe, role, settings=PASS_SETTINGS if role == "activation" else
                             check_settings(max_examples=12, derandomize=True))


def test_correct_gemms_pass() -> None:
    """The exact scalar reference as a user's GEMM, and the eager emulation of a block-scaled preset with the
    4-argument signature."""
    assert_gemm_matches(partial(scalar_gemm, "hopper_fp8"), "hopper_fp8", settings=check_settings(max_examples=15),
                        max_m=2, max_n=2)
    mx = get_accumulator("blackwell_mxf8f6f4")
    assert_gemm_matches(lambda a, b, sa, sb: lp.emulated_matmul(a, b, mx, a_scales=sa, b_scales=sb, backend="eager"),
                        mx, settings=PASS_SETTINGS)


def test_check_rejects_unusable_results() -> None:
    """A result of the wrong kind or shape is reported as such, not compared."""
    with pytest.raises(TypeError, match="must return a QuantizedTensor"):
        assert_matches_reference(lambda x: "codes", "deepseek_v3", settings=MUTANT_SETTINGS)
    with pytest.raises(ValueError, match="codes have shape"):
        assert_matches_reference(lambda x: (torch.zeros(1, dtype=torch.uint8), torch.ones(1)), "deepseek_v3",
                                 settings=MUTANT_SETTINGS)


# ---- the strategies ----------------------------------------------------------------------------------
@settings(max_examples=40)
@given(st.data())
def test_strategies_are_warning_free(data: st.DataObject) -> None:
    """No strategy warns (issue 13: numpy overflow warnings downstream): formats up to float32 (whose top
    midpoints and 'inside' points lie past FLT_MAX), outliers past float32's range, decisions, models, operands."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fmt = data.draw(st.sampled_from([lp.get_format(n) for n in ("fp32", "bf16", "tf32", "e8m0")]) | formats())
        v = data.draw(float32_near_grid(fmt))
        x = data.draw(heavy_tailed_tensors(outlier_scale=1e38))
        t = data.draw(scaled_decision_tensors(data.draw(st.sampled_from(["deepseek_v3", "mxfp8", "nvfp4"]))))
        ops = data.draw(gemm_operands(data.draw(accumulator_models()), max_k=40))
    assert math.isnan(v) or v == float(torch.tensor(v, dtype=torch.float32))         # a float32 value
    assert torch.isfinite(x).all() and torch.isfinite(t).all() and ops.a.dtype == torch.float32


@settings(max_examples=30)
@given(st.data())
def test_decision_tensors_keep_the_drawn_scale_and_aim_at_midpoints(data: st.DataObject) -> None:
    """deepseek_v3 decision tensors: every tile's scale is its amax element's (no element exceeds it), and
    at least a quarter of the scaled values inside the E4M3 range lie within 2 float32 ulps of an E4M3 rounding
    midpoint (midpoints computed here from the E4M3 grid; uniform data would put about 1e-6 there)."""
    x = data.draw(scaled_decision_tensors("deepseek_v3", max_tiles=(2, 2), fills=["decisions"]))
    q = lp.quantize_tensor(x, "deepseek_v3")
    sf = q.scales.repeat_interleave(128, 1)
    amax = x.abs().reshape(x.shape[0], -1, 128).amax(-1).repeat_interleave(128, 1)
    assert torch.equal(sf, torch.clamp(amax, min=1e-4) / 448.0)
    y = (x * (1.0 / sf)).abs().double()
    grid = torch.unique(lp.decode(torch.arange(0x7F), "e4m3fn").double())
    mids = (grid[:-1] + grid[1:]) / 2
    near = (y[..., None] - mids).abs().amin(-1) <= 2.5 * torch.finfo(torch.float32).eps * y
    inner = (y > 0) & (y < 440) & (amax >= 1e-4)    # in tiles whose amax is under the floor no midpoint is reachable
    assume(int(inner.sum()) >= 16)
    assert float(near[inner].double().mean()) > 0.25


@settings(max_examples=25)
@given(accumulator_models(), st.data())
def test_random_models_run_on_their_operands(model: lp.AccumulatorModel, data: st.DataObject) -> None:
    """Random models are valid and emulated_matmul runs them on gemm_operands (values of their formats, block
    scales of the right shape)."""
    ops = data.draw(gemm_operands(model, max_k=70))
    out = lp.emulated_matmul(ops.a, ops.b, model, a_scales=ops.a_scales, b_scales=ops.b_scales)
    assert out.shape == (ops.a.shape[0], ops.b.shape[1]) and out.dtype == torch.float32
    assert (ops.a_scales is None) == (model.block_scale is None)


# ---- the pytest11 plugin -----------------------------------------------------------------------------
DOWNSTREAM = '''
import pytest
import torch
import lowprec as lp


def my_cast(x):
    rows, cols = x.shape
    t = x.reshape(rows, cols // 128, 128)
    sf = t.abs().amax(-1, keepdim=True).clamp(min=1e-4) / 448.0
    return lp.encode(t * (1.0 / sf), "e4m3fn", saturate=True).reshape(rows, cols), sf.reshape(rows, -1)


def test_cast(assert_matches_reference):
    assert_matches_reference(my_cast, "deepseek_v3")


def test_gemm(assert_gemm_matches, lowprec_settings):
    assert lowprec_settings.max_examples == 3
    assert_gemm_matches(lambda a, b: lp.emulated_matmul(a, b, "hopper_fp8", backend="eager"), "hopper_fp8")
'''


def test_pytest11_plugin_serves_a_downstream_project(pytester: pytest.Pytester) -> None:
    """A downstream test file uses the fixtures with no import of the plugin: the pytest11 entry point loads
    it (in a fresh interpreter, as a downstream CI runs), and --lowprec-examples sets the budget."""
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    result = pytester.runpytest_subprocess("--lowprec-examples=3", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
