"""torchao 0.18's float8 and MX scaling in the lab: each ``Quirk`` against an independent transcription of the rule
it names (numpy float32 and exact Python arithmetic over crafted edge values, element casts by ml_dtypes), the
division dequantisation, the ``torchao_*`` recipes and ``TORCHAO_MX_QUIRKS`` against torchao itself when it is
installed (bit for bit over hypothesis-drawn tensors aimed at the decisions), and bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp
from lowprec.scaling import TORCHAO_MX_QUIRKS, Quirk, ScalingConfig, native_unsupported
from lowprec.testing.strategies import scaled_decision_tensors

# OCP element formats, from the specs: max, emax, mantissa bits, and ml_dtypes' type (the independent cast)
ELEM = {"e4m3fn": (448.0, 8, 3, ml_dtypes.float8_e4m3fn), "e5m2": (57344.0, 15, 2, ml_dtypes.float8_e5m2),
        "e2m1": (6.0, 2, 1, ml_dtypes.float4_e2m1fn), "e2m3": (7.5, 2, 3, ml_dtypes.float6_e2m3fn),
        "e3m2": (28.0, 4, 2, ml_dtypes.float6_e3m2fn)}
FLOOR_RULES = ("floor", "ceil", "even")


def f32(v: float) -> float:
    return float(np.float32(v))


def f32_log2(v: float) -> float:
    """log2(v) rounded to float32. torch's float32 log2 (what torchao runs) differs from it in the last bit on a few
    subnormal inputs only, and never in its floor or ceil on the inputs of these tests (checked over every float32
    within 64 ulps of a power of two when this test was written)."""
    return f32(math.log2(v))


def f32_steps(v: float, n: int) -> float:
    """``v`` (a float32 value) moved ``n`` float32 ulps, up for n > 0."""
    x = np.float32(v)
    for _ in range(abs(n)):
        x = np.nextafter(x, np.float32(math.inf if n > 0 else -math.inf))
    return float(x)


def cast(v: np.ndarray, fmt: str) -> np.ndarray:
    """float64 values cast RNE with saturation to ``fmt`` by ml_dtypes (which rounds float64 directly), as float64."""
    fmax, _, _, dtype = ELEM[fmt]
    return np.clip(v, -fmax, fmax).astype(dtype).astype(np.float64)


def ceil_log2(q: Fraction) -> int:
    e = q.numerator.bit_length() - q.denominator.bit_length()       # 2^(e-1) < q < 2^(e+1)
    return e if Fraction(2) ** e >= q else e + 1


def amax_of(vals: np.ndarray) -> float:
    return float(np.abs(vals[np.isfinite(vals)]).max(initial=0.0))


# ---- torchao 0.18's rules, transcribed (each quirk a flag; all flags off = the published rule) -------------------
def floor_family_block(vals: np.ndarray, fmt: str, rule: str, clamp: bool, inf_block: bool
                       ) -> tuple[float, np.ndarray]:
    """(stored scale, dequantised elements) of one float32 block as torchao's ``to_mx`` computes FLOOR/CEIL/EVEN:
    the exponent from the float32 amax's bits (Inf's exponent field 255 when ``inf_block`` and the block holds
    +-Inf, else the finite values' amax), EVEN adding half an element ulp first; stored 2^e, e >= -127; the
    elements divided by 2^e, or by max(2^e, 2^-126) when ``clamp``."""
    _, emax, mbits, _ = ELEM[fmt]
    amax = np.float32(math.inf if inf_block and np.isinf(vals).any() else amax_of(vals))
    b = int(amax.view(np.int32))
    if rule == "even":
        b = (b + (1 << (22 - mbits))) & (0x1FF << 23)
    e = max(((b >> 23) & 0xFF) - 127 + int(rule == "ceil" and (b & 0x7FFFFF) != 0) - emax, -127)
    divisor = max(2.0**e, 2.0**-126) if clamp else 2.0**e
    return 2.0**e, cast(vals.astype(np.float64) / divisor, fmt) * 2.0**e


def rceil_block(vals: np.ndarray, fmt: str, log2_f32: bool, code0_one: bool, inf_block: bool
                ) -> tuple[float, np.ndarray]:
    """(stored scale, dequantised elements) of one float32 block under RCEIL: e = ceil(log2(amax / max)) exactly,
    or as torchao's eager path (``log2_f32``: float32 quotient, float32 log2), clamped to [-127, 127]; a block
    holding +-Inf gets e = 127 (code 254) when ``inf_block``; the elements multiplied by 2^-e, or by 1 for e = -127
    when ``code0_one``."""
    fmax = ELEM[fmt][0]
    amax = amax_of(vals)
    if inf_block and np.isinf(vals).any():
        e = 127
    elif amax == 0:
        e = -127
    elif log2_f32:
        d = float(np.float32(amax) / np.float32(fmax))
        e = -127 if d == 0 else math.ceil(f32_log2(d))
    else:
        e = ceil_log2(Fraction(amax) / Fraction(fmax))
    e = min(max(e, -127), 127)
    mult = 1.0 if code0_one and e == -127 else 2.0**-e
    return 2.0**e, cast(vals.astype(np.float64) * mult, fmt) * 2.0**e


def edge_blocks(fmt: str, with_inf: bool) -> np.ndarray:
    """(n, 32) float32 blocks whose amax sits at the MX decisions of ``fmt``: binade edges 2^k +- 1-2 ulps, RCEIL
    edges max * 2^k +- 1-3 ulps (k outside and inside [-4, 3]), EVEN's rounding edge, the code-0 edges
    2^(emax-126) and max * 2^-127, tiny and subnormal blocks, zero, huge; +-Inf blocks when ``with_inf``.
    The other elements are fractions of the amax (float32)."""
    fmax, emax, mbits, _ = ELEM[fmt]
    amaxes = [f32_steps(2.0**k, s) for k in (-100, -3, 0, 7, 90) for s in (-2, -1, 0, 1, 2)]
    amaxes += [f32_steps(fmax * 2.0**k, s) for k in (-120, -60, -9, -4, 0, 3, 5, 40, 80) for s in (-1, 0, 1, 2, 3)]
    amaxes += [f32_steps((2 - 2.0 ** -(mbits + 1)) * 2.0**k, s) for k in (-50, 0, 20) for s in (-1, 0, 1)]
    amaxes += [f32_steps(2.0 ** (emax - k), s) for k in (126, 127) for s in (-1, 0, 1)]
    amaxes += [1.5 * 2.0 ** (emax - 127), 1.7 * 2.0 ** (emax - 128), 2.0 ** (emax - 131)]
    amaxes += [f32_steps(fmax * 2.0**-127, s) for s in (-1, 0, 1, 2)] + [1e-40, 3e-45, 0.0, 3e38, f32(3.4028235e38)]
    rng = np.random.default_rng(7)
    frac = rng.uniform(-1, 1, (len(amaxes), 32))
    frac[:, 0] = rng.choice([-1.0, 1.0], len(amaxes))
    blocks = (np.array(amaxes)[:, None] * frac).astype(np.float32)
    if with_inf:
        inf = (rng.uniform(-1, 1, (4, 32)) * np.array([[3e38], [1.0], [1e-30], [0.0]])).astype(np.float32)
        inf[:, 5], inf[1, 9], inf[3, 0] = math.inf, -math.inf, -math.inf
        blocks = np.concatenate([blocks, inf])
    return blocks


def assert_blocks(blocks: np.ndarray, cfg: ScalingConfig, rule: Callable[[np.ndarray], tuple[float, np.ndarray]]
                  ) -> None:
    """Each block's scale and dequantised values (float64, exact) under ``cfg`` are ``rule``'s."""
    q = lp.quantize_tensor(torch.from_numpy(blocks), cfg, backend="eager")
    scales, deq = q.scales[:, 0].double().tolist(), q.dequantize(torch.float64).numpy()
    for i, vals in enumerate(blocks):
        x, want = rule(vals)
        assert scales[i] == x, (i, float(vals[0]), scales[i], x)
        assert np.array_equal(deq[i], want), (i, float(vals[0]))
        assert np.array_equal(np.signbit(deq[i]), np.signbit(want)), i


def mx_config(fmt: str, rule: str, *quirks: Quirk) -> ScalingConfig:
    return ScalingConfig(fmt, (1, 32), scale_format="e8m0", mx_rule=rule, nonfinite="tile_nan", quirks=quirks)


# ---- each quirk against its transcription ---------------------------------------------------------------------
@pytest.mark.parametrize("rule", FLOOR_RULES)
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1", "e3m2"])
def test_mx_code0_clamp_divides_by_2_to_the_minus_126(fmt, rule):
    """Blocks below 2^(emax-126) come back at half their value (code 0, divisor 2^-126); every other block, and
    the same blocks without the quirk, follow the rule -- so the transcription with the flag off is the rule."""
    blocks = edge_blocks(fmt, with_inf=False)
    assert_blocks(blocks, mx_config(fmt, rule, Quirk.MX_CODE0_CLAMP),
                  lambda v: floor_family_block(v, fmt, rule, clamp=True, inf_block=False))
    assert_blocks(blocks, mx_config(fmt, rule), lambda v: floor_family_block(v, fmt, rule, False, False))
    code0 = [v for v in blocks if amax_of(v) > 0 and floor_family_block(v, fmt, rule, False, False)[0] == 2.0**-127]
    halved = [(floor_family_block(v, fmt, rule, True, False)[1], floor_family_block(v, fmt, rule, False, False)[1])
              for v in code0]
    assert sum(not np.array_equal(h, r) for h, r in halved) >= 3                # the quirk decides
    assert any(np.abs(h).max() * 2 == np.abs(r).max() for h, r in halved)      # exactly half where no rounding


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1"])
def test_rceil_code0_one_zeroes_tiny_blocks(fmt):
    """A code-0 block (amax <= max * 2^-127) is multiplied by 1, so it dequantises to ~0; without the quirk (the
    rule, as the ``mxfp8_te`` recipe has it) it keeps its values at X = 2^-127."""
    blocks = edge_blocks(fmt, with_inf=False)
    assert_blocks(blocks, mx_config(fmt, "rceil", Quirk.RCEIL_CODE0_ONE),
                  lambda v: rceil_block(v, fmt, False, True, False))
    assert_blocks(blocks, mx_config(fmt, "rceil"), lambda v: rceil_block(v, fmt, False, False, False))
    code0 = [v for v in blocks if 0 < amax_of(v) <= ELEM[fmt][0] * 2.0**-127]
    assert code0 and all(not rceil_block(v, fmt, False, True, False)[1].any() for v in code0)
    assert sum(rceil_block(v, fmt, False, False, False)[1].any() for v in code0) >= 3
    assert replace(lp.get_recipe("mxfp8_te").activation, fmt=fmt) == mx_config(fmt, "rceil")


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1", "e2m3"])
def test_rceil_log2_f32_misses_a_binade_just_above_a_power_of_two(fmt):
    """torchao's eager RCEIL: ceil(log2(float32(amax / max))) in float32, one binade short a few ulps above a power
    of two."""
    blocks = edge_blocks(fmt, with_inf=False)
    assert_blocks(blocks, mx_config(fmt, "rceil", Quirk.RCEIL_LOG2_F32),
                  lambda v: rceil_block(v, fmt, True, False, False))
    short = [rceil_block(v, fmt, True, False, False)[0] / rceil_block(v, fmt, False, False, False)[0] for v in blocks]
    assert set(short) == {0.5, 1.0} and short.count(0.5) >= 5     # max * 2^k + 1-3 ulps, k outside [-4, 3]


@pytest.mark.parametrize("rule", [*FLOOR_RULES, "rceil"])
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1"])
def test_mx_inf_block_takes_the_exponent_of_2_to_the_128(fmt, rule):
    """A block holding +-Inf: exponent 128 - emax (FLOOR/CEIL/EVEN, Inf's exponent field) or code 254 (RCEIL); the
    Inf saturates to +-max, the finite elements are cast at that scale; without the quirk it is a NaN block."""
    blocks = edge_blocks(fmt, with_inf=True)[-4:]
    cfg = mx_config(fmt, rule, Quirk.MX_INF_BLOCK)
    if rule == "rceil":
        assert_blocks(blocks, cfg, lambda v: rceil_block(v, fmt, False, False, True))
    else:
        assert_blocks(blocks, cfg, lambda v: floor_family_block(v, fmt, rule, clamp=False, inf_block=True))
    codes = lp.quantize_tensor(torch.from_numpy(blocks), cfg).scale_codes
    assert set(codes[:, 0].tolist()) == {254 if rule == "rceil" else 255 - ELEM[fmt][1]}
    assert torch.isnan(lp.quantize_tensor(torch.from_numpy(blocks), mx_config(fmt, rule)).scales).all()


def test_mx_inf_block_keeps_nan_blocks_nan():
    x = torch.ones(1, 64)
    x[0, 1], x[0, 2], x[0, 40] = math.inf, math.nan, -math.inf
    q = lp.quantize_tensor(x, mx_config("e4m3fn", "floor", Quirk.MX_INF_BLOCK))
    assert q.scale_codes.tolist() == [[0xFF, 255 - 8]]
    d = q.dequantize(torch.float64)
    assert d[0, :32].isnan().all() and not d[0, 32:].isnan().any() and d[0, 40] == -448.0 * 2.0**120


ROW_FACTORS = (1.0, -0.3, 0.6, -0.999, 0.07)


def pow2_rows() -> list[float]:
    """Row amaxes whose multiplier float32(448 / max(amax, 1e-12)) is a few ulps either side of 2^k, or floored."""
    amaxes = [f32_steps(448.0 * 2.0**-k, s) for k in (-20, -2, 0, 2, 3, 9, 30) for s in range(-3, 9)]
    return amaxes + [0.0, 1e-15, f32(1e-12), 1e-40, f32_steps(0.875, 2)]


def torchao_multiplier(amax: float) -> float:
    """torchao's amax_to_scale: float32(448 / max(amax, 1e-12)), the division in float64."""
    return f32(448.0 / max(amax, 1e-12))


def test_pow2_log2_f32_rounds_up_just_below_a_power_of_two():
    """torchao's float8 power-of-2 multiplier: exp2(floor(log2(m))) in float32 with m = float32(448 / max(amax,
    1e-12)) (float64 division); the rule (TE's bit mask) is the exact floor. Per row, scale and every value."""
    amaxes = [f32(a) for a in pow2_rows()]
    x = (torch.tensor(amaxes, dtype=torch.float64)[:, None] * torch.tensor(ROW_FACTORS, dtype=torch.float64)).float()
    rule_cfg = ScalingConfig("e4m3fn", (1, -1), amax_floor=1e-12, scale_op="mul_ratio", pow2=True)
    for quirk in (True, False):
        q = lp.quantize_tensor(x, rule_cfg, quirks=(Quirk.POW2_LOG2_F32,) if quirk else ())
        deq = q.dequantize(torch.float64).numpy()
        for i, a in enumerate(amaxes):
            m = torchao_multiplier(a)
            k = math.floor(f32_log2(m)) if quirk else math.frexp(m)[1] - 1
            assert q.scales[i, 0].item() == 2.0**-k, (i, a, m)
            assert np.array_equal(deq[i], cast(x[i].double().numpy() * 2.0**k, "e4m3fn") * 2.0**-k), i
    ms = [torchao_multiplier(a) for a in amaxes]
    assert sum(math.floor(f32_log2(m)) != math.frexp(m)[1] - 1 for m in ms) >= 10          # the quirk decides
    assert ms[-1] == f32(511.99994) and lp.quantize_tensor(x[-1:], "torchao_rowwise").scales.item() == 2.0**-9


# ---- torchao's float8 multiplier, division dequantisation, native refusal --------------------------------------
@pytest.mark.parametrize("fmt,fmax", [("e4m3fn", 448.0), ("e5m2", 57344.0), ("e4m3fnuz", 240.0), ("e5m2fnuz", 57344.0)])
def test_torchao_multiplier_is_mul_ratio_with_a_1e_12_floor(fmt, fmax):
    """torchao: float32(fmax / max(float64(amax), 1e-12)) in float64; the lab: mul_ratio in float32 with the floor
    float32(1e-12) -- equal for every amax, the amaxes around the floor included."""
    floor32 = f32(1e-12)
    amaxes = [0.0, 1e-45, 1e-40, 1e-20, 1e-13] + [f32_steps(floor32, s) for s in range(-3, 4)]
    amaxes += [f32_steps(fmax * 2.0**k, s) for k in (-30, 0, 30) for s in (-1, 0, 1)] + [3e38]
    cfg = ScalingConfig(fmt, (-1, -1), amax_floor=1e-12, scale_op="mul_ratio", dequantize="div")
    for a in map(f32, amaxes):
        q = lp.quantize_tensor(torch.tensor([[a, -a / 2]]), cfg)
        m = np.float32(fmax / max(a, 1e-12))
        assert q.multipliers.item() == float(m), a
        assert q.scales.item() == float(np.float32(1) / m), a


def test_division_dequantisation_divides_by_the_multiplier():
    """``dequantize="div"``: value / multiplier in float32 (torchao's to_original_precision), which is not
    value * scale (the float32 reciprocal) for every element -- the field decides."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 64, generator=g) * 3.7
    q = lp.quantize_tensor(x, "torchao_tensorwise")
    m = np.float32(448.0 / amax_of(x.numpy()))
    vals = q.codes.numpy().view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert np.array_equal(q.dequantize().numpy().view(np.int32), (vals / m).view(np.int32))
    assert q.multipliers.item() == float(m) and not np.array_equal(vals / m, vals * (np.float32(1) / m))
    mul = lp.quantize_tensor(x, replace(q.config, dequantize="mul"))
    assert torch.equal(mul.codes, q.codes) and torch.equal(mul.scales, q.scales) and mul.multipliers is None
    assert torch.equal(mul.dequantize(), torch.from_numpy(vals * (np.float32(1) / m)))


@pytest.mark.parametrize("recipe", ["torchao_tensorwise", "torchao_rowwise", "torchao_mxfp8"])
def test_native_backend_refuses_quirks_and_division(recipe):
    cfg = lp.get_recipe(recipe).activation
    assert "no quirks, no dequantize='div'" in (native_unsupported(cfg, torch.device("cpu")) or "")
    x = torch.randn(256, 256)
    with pytest.raises(ValueError, match="native scaling backend"):
        lp.quantize_tensor(x, recipe, backend="native")
    auto, eager = lp.quantize_tensor(x, recipe), lp.quantize_tensor(x, recipe, backend="eager")   # auto: eager
    assert torch.equal(auto.codes, eager.codes) and torch.equal(auto.dequantize(), eager.dequantize())


def test_compiled_backend_matches_eager_on_the_quirks():
    """torch.compile lowers log2/exp2 itself: the quirks' float32 logs must give the eager bits."""
    rows = torch.tensor(pow2_rows())[:, None] * torch.tensor(ROW_FACTORS)
    blocks = torch.from_numpy(edge_blocks("e4m3fn", with_inf=True))
    for recipe, x in (("torchao_rowwise", rows), ("torchao_mxfp8", blocks)):
        a, b = lp.quantize_tensor(x, recipe, backend="compiled"), lp.quantize_tensor(x, recipe, backend="eager")
        assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)


# ---- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,where", [
    (dict(tile=(1, -1), scale_op="mul_ratio", quirks={"pow2_log2_f32"}), "pow2=True"),
    (dict(tile=(1, -1), pow2=True, quirks={"pow2_log2_f32"}), "scale_op 'mul_ratio'"),
    (dict(scale_format="e8m0", quirks={"pow2_log2_f32"}), "current scaling"),
    (dict(scale_format="e8m0", mx_rule="rceil", quirks={"mx_code0_clamp"}), "'floor', 'ceil' or 'even'"),
    (dict(scale_format="e8m0", quirks={"rceil_code0_one"}), "mx_rule 'rceil'"),
    (dict(scale_format="e8m0", mx_rule="even", quirks={"rceil_log2_f32"}), "mx_rule 'rceil'"),
    (dict(quirks={"mx_inf_block"}), "MX scaling"),
    (dict(fmt="e2m1", tile=(1, 16), scale_format="ue4m3", quirks={"mx_inf_block"}), "MX scaling"),
    (dict(amax_source="delayed", scale_op="mul_ratio", quirks={"rceil_code0_one"}), "mx_rule 'rceil'"),
])
def test_a_quirk_where_it_has_no_effect_is_refused(kwargs, where):
    cfg = {"fmt": "e4m3fn", "tile": (1, 32), **kwargs}
    with pytest.raises(ValueError, match=f"quirk '[a-z0-9_]+' has no effect .*{where}"):
        ScalingConfig(**cfg)


@pytest.mark.parametrize("kwargs", [dict(scale_op="mul_ratio", pow2=True), dict(scale_op="mul_inv"),
                                    dict(scale_op="div"), dict(scale_format="e8m0"),
                                    dict(fmt="e2m1", tile=(1, 16), scale_format="ue4m3")])
def test_division_dequantisation_where_it_has_no_effect_is_refused(kwargs):
    with pytest.raises(ValueError, match="dequantize='div' has no effect"):
        ScalingConfig(**{"fmt": "e4m3fn", "tile": (1, 32), "dequantize": "div", **kwargs})


def test_bad_quirks_and_dequantize_values():
    with pytest.raises(ValueError, match="unknown quirk 'pow2_floor'; known: mx_code0_clamp, mx_inf_block"):
        ScalingConfig(scale_format="e8m0", quirks={"pow2_floor"})
    with pytest.raises(ValueError, match="unknown quirk 3"):
        ScalingConfig(scale_format="e8m0", quirks=[3])
    with pytest.raises(TypeError, match="quirks must be a set of Quirk names"):
        ScalingConfig(scale_format="e8m0", quirks="mx_inf_block")
    with pytest.raises(ValueError, match="dequantize must be one of"):
        ScalingConfig(dequantize="divide")
    with pytest.raises(ValueError, match="unknown quirk"):      # the config is checked before the tensor is looked at
        lp.quantize_tensor(None, "torchao_mxfp8", quirks={"bogus"})
    cfg = ScalingConfig(scale_format="e8m0", quirks=["mx_inf_block", Quirk.MX_INF_BLOCK, "mx_code0_clamp"])
    assert cfg.quirks == (Quirk.MX_CODE0_CLAMP, Quirk.MX_INF_BLOCK)      # a set, stored sorted
    assert "quirks=(Quirk.MX_CODE0_CLAMP, Quirk.MX_INF_BLOCK)" in repr(cfg)


def test_multipliers_go_with_division_dequantisation_only():
    q = lp.quantize_tensor(torch.randn(4, 8), "torchao_tensorwise")
    with pytest.raises(ValueError, match="dequantize='div', multipliers are missing"):
        lp.QuantizedTensor(q.codes, q.scales, q.config, q.shape)
    with pytest.raises(ValueError, match="dequantize='mul', multipliers are given"):
        lp.QuantizedTensor(q.codes, q.scales, lp.get_recipe("te_current").activation, q.shape, multipliers=q.scales)
    with pytest.raises(ValueError, match="the scales' shape"):
        lp.QuantizedTensor(q.codes, q.scales, q.config, q.shape, multipliers=torch.ones(2, 2))


# ---- against torchao itself -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tao() -> SimpleNamespace:
    pytest.importorskip("torchao")
    from torchao.float8.config import ScalingGranularity
    from torchao.float8.float8_scaling_utils import hp_tensor_to_float8_dynamic
    from torchao.float8.float8_training_tensor import LinearMMConfig
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

    def float8(x: torch.Tensor, dtype: torch.dtype, axis: int | None, pow2: bool):
        kw = {} if axis is None else {"scaling_granularity": ScalingGranularity.AXISWISE, "axiswise_dim": axis}
        t = hp_tensor_to_float8_dynamic(x, dtype, LinearMMConfig(), round_scales_to_power_of_2=pow2, **kw)
        return t._data.view(torch.uint8), t._scale, t.to_original_precision()

    def mx(x: torch.Tensor, fmt: str, rule: str):
        dtype = {"e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e2m1": torch.float4_e2m1fn_x2,
                 "e2m3": "fp6_e2m3", "e3m2": "fp6_e3m2"}[fmt]
        scale, data = to_mx(x, dtype, 32, ScaleCalculationMode(rule))
        codes = data.view(torch.uint8) if fmt in ("e4m3fn", "e5m2") else None
        return scale.view(torch.uint8), codes, to_dtype(data, scale, dtype, 32, torch.float32)

    return SimpleNamespace(float8=float8, mx=mx)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal float32 tensors bit for bit (any NaN equal to any NaN)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.view(torch.int32)[~a.isnan()],
                                                            b.view(torch.int32)[~b.isnan()])


FLOAT8_CASES = [("torchao_tensorwise", "activation"), ("torchao_tensorwise", "grad"),
                ("torchao_rowwise", "activation"), ("torchao_rowwise", "weight"), ("torchao_rowwise", "grad")]


@pytest.mark.parametrize("recipe,role", FLOAT8_CASES)
@given(data=st.data())
def test_float8_recipes_are_torchao_bit_for_bit(tao, recipe, role, data):
    """Codes, scales (the reciprocal torch._scaled_mm gets; the multipliers too for tensorwise) and dequantised
    values equal torchao's, over tensors at the recipe's decisions: amax at binade edges, multipliers an ulp from a
    power of two, amax below the 1e-12 floor, zeros, scaled midpoints, saturating values. A tile holding NaN or
    +-Inf dequantises to NaN in both (its codes and scale are not compared)."""
    x = data.draw(scaled_decision_tensors(recipe, role, allow_nonfinite=True))
    q = lp.quantize_tensor(x, recipe, role)
    dtype = torch.float8_e5m2 if (recipe, role) == ("torchao_tensorwise", "grad") else torch.float8_e4m3fn
    axis = None if recipe == "torchao_tensorwise" else (0 if role == "weight" else -1)
    codes, scale, deq = tao.float8(x, dtype, axis, recipe == "torchao_rowwise")
    scale = scale.reshape(q.scales.shape)
    ok = ~q.scales.isnan()
    assert torch.equal(q.scales[ok].view(torch.int32), scale.reciprocal()[ok].view(torch.int32))
    if q.multipliers is not None:
        assert torch.equal(q.multipliers[ok].view(torch.int32), scale[ok].view(torch.int32))
    ok_elem = ok.repeat_interleave(q.tile[0], 0).repeat_interleave(q.tile[1], 1)
    assert torch.equal(q.codes[ok_elem], codes[ok_elem])
    assert same_bits(q.dequantize(), deq)


@pytest.mark.parametrize("role", ["activation", "weight"])
@given(data=st.data())
def test_mxfp8_recipe_is_torchao_bit_for_bit(tao, role, data):
    """``torchao_mxfp8`` (RCEIL with its quirks) against torchao's to_mx/to_dtype: E8M0 codes, element codes
    (outside NaN blocks) and dequantised values, the weight quantised along K as torchao does on W (N, K)."""
    x = data.draw(scaled_decision_tensors("torchao_mxfp8", role, allow_nonfinite=True))
    q = lp.quantize_tensor(x, "torchao_mxfp8", role)
    xt = x if role == "activation" else x.t().contiguous()
    scale, codes, deq = tao.mx(xt, "e4m3fn", "rceil")
    if role == "weight":
        scale, codes, deq = scale.t(), codes.t(), deq.t()
    assert torch.equal(q.scale_codes, scale)
    nan_block = (q.scale_codes == 0xFF).repeat_interleave(32, 1 if role == "activation" else 0)
    assert torch.equal(q.codes[~nan_block], codes[~nan_block])
    assert same_bits(q.dequantize(), deq)


@st.composite
def mx_decision_blocks(draw: st.DrawFn, fmt: str) -> torch.Tensor:
    """1-4 rows of 1-3 blocks, each block one of ``edge_blocks`` (every MX decision of ``fmt``, +-Inf blocks) or
    a NaN block, its elements shuffled."""
    pool = edge_blocks(fmt, with_inf=True)
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    picks = draw(st.lists(st.integers(-1, len(pool) - 1), min_size=rows * cols, max_size=rows * cols))
    perm = np.random.default_rng(draw(st.integers(0, 2**31))).permutation(32)
    blocks = np.stack([np.full(32, np.nan, np.float32) if i < 0 else pool[i][perm] for i in picks])
    return torch.from_numpy(blocks.reshape(rows, cols * 32))


@pytest.mark.parametrize("rule", [*FLOOR_RULES, "rceil"])
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1", "e2m3", "e3m2"])
@given(data=st.data())
def test_torchao_mx_quirks_are_torchao_bit_for_bit(tao, fmt, rule, data):
    """``TORCHAO_MX_QUIRKS[rule]`` makes any MX element format torchao's to_mx: E8M0 codes, element codes (FP8;
    outside NaN blocks) and dequantised values (every format), over blocks at every decision."""
    x = data.draw(mx_decision_blocks(fmt))
    q = lp.quantize_tensor(x, mx_config(fmt, rule, *TORCHAO_MX_QUIRKS[rule]))
    scale, codes, deq = tao.mx(x, fmt, rule)
    assert torch.equal(q.scale_codes, scale)
    if codes is not None:
        nan_block = (q.scale_codes == 0xFF).repeat_interleave(32, 1)
        assert torch.equal(q.codes[~nan_block], codes[~nan_block])
    assert same_bits(q.dequantize(), deq)
