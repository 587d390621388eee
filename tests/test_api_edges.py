"""Issue 13's edges, found when the lab was tried as a new user would: each bad input gets a clear error naming the
problem before any work, configs cannot hold a field that has no effect, and empty tensors work."""

from __future__ import annotations

import pytest
import torch

import lowprec as lp


@pytest.mark.parametrize("name", ["e0m3", "e1m0", "e5m0", "e8m24", "e11m2"])
def test_custom_format_names_are_validated(name):
    with pytest.raises(ValueError, match="'eXmY' needs 1 <= X <= 10"):
        lp.get_format(name)


def test_custom_fn_formats_may_have_one_exponent_bit():
    assert lp.get_format("e1m2fn").max == 3.0          # codes 0..6 finite: 0.5-steps up to 1.5 * 2


def test_generator_must_be_a_torch_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        lp.quantize(torch.ones(3), "e4m3", rounding="stochastic", generator=0)


def test_tile_must_be_a_pair():
    with pytest.raises(TypeError, match=r"tile must be a pair \(rows, cols\)"):
        lp.quantize_tensor(torch.ones(3, 4), "deepseek_v3", tile=128)


@pytest.mark.parametrize("recipe", ["deepseek_v3", "mxfp8", "nvfp4", "te_current"])
@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (2, 0, 4)])
def test_empty_tensors_quantise(recipe, shape):
    x = torch.ones(shape)
    q = lp.quantize_tensor(x, recipe)
    assert q.dequantize().shape == x.shape
    assert lp.fake_quantize(x, recipe).shape == x.shape


@pytest.mark.parametrize("values", [[[1e300, 1.0, -2e300, 3.0]], [[1e-50, 2e-50]]])
def test_float64_values_float32_cannot_hold_are_refused(values):
    with pytest.raises(ValueError, match="float32 cannot hold"):
        lp.quantize_tensor(torch.tensor(values, dtype=torch.float64), "deepseek_v3")


def test_float64_within_float32_is_rounded_to_float32_first():
    x = torch.randn(4, 256, dtype=torch.float64)
    assert torch.equal(lp.quantize_tensor(x, "deepseek_v3").codes, lp.quantize_tensor(x.float(), "deepseek_v3").codes)


@pytest.mark.parametrize("kwargs,field,family", [
    (dict(scale_format="e8m0", margin=2), "margin", "MX"),
    (dict(scale_format="e8m0", amax_floor=1e-4), "amax_floor", "MX"),
    (dict(scale_format="e8m0", pow2=True), "pow2", "MX"),
    (dict(scale_format="e8m0", scale_op="div"), "scale_op", "MX"),
    (dict(amax_source="delayed", pow2=True), "pow2", "delayed"),
    (dict(amax_source="delayed", amax_floor=1e-4), "amax_floor", "delayed"),
    (dict(mx_rule="ceil"), "mx_rule", "current"),
])
def test_configs_cannot_hold_fields_without_effect(kwargs, field, family):
    with pytest.raises(ValueError, match=f"{field} has no effect with {family}"):
        lp.ScalingConfig("e4m3fn", (1, 32), **kwargs)


def test_negative_margin_is_refused():
    with pytest.raises(ValueError, match="margin must be an int >= 0"):
        lp.ScalingConfig("e4m3fn", (-1, -1), margin=-3)


def test_fp4_with_a_deepseek_style_config_needs_no_extra_option():
    """E2M1 has no NaN code: the default NaN policy for it is the tile's (an E2M1 config works as written)."""
    cfg = lp.ScalingConfig("e2m1", (1, 128), amax_floor=1e-4)
    assert cfg.nonfinite == "tile_nan"
    x = torch.randn(2, 256)
    x[0, 3] = float("nan")
    q = lp.quantize_tensor(x, cfg)
    assert q.scales[0, 0].isnan() and not q.scales[1].isnan().any()
    assert lp.ScalingConfig("e4m3fn", (1, 128)).nonfinite == "element"
