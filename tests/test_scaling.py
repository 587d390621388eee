"""Scaling recipes: each option reproduces the published rule it names, bit for bit; MX against an
independent transcription of OCP MX v1.0; error bounds, scale invariance, ragged tiles, bad input."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import lowprec as lp
from lowprec.rounding import round_exact
from lowprec.scaling import ScalingConfig
from lowprec.testing.strategies import heavy_tailed_tensors


def rand(*shape, seed=0, scale=10.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale * torch.exp2(torch.randint(-4, 4, shape, generator=g).float())


# ---- DeepGEMM's casts, transcribed from its test helpers (torch's native E4M3 cast) --------------
def deepgemm_per_token(x, op="mul_inv"):
    m, n = x.shape
    xp = torch.nn.functional.pad(x, (0, (-n) % 128)).view(m, -1, 128)
    amax = xp.abs().float().amax(dim=2).clamp(1e-4)
    sf = amax / 448.0
    y = {"mul_inv": lambda: xp * (1.0 / sf.unsqueeze(2)),
         "mul_rcp_ratio": lambda: xp * (448.0 / amax.unsqueeze(2)),           # older DeepGEMM, verbatim
         "mul_ratio": lambda: xp * (torch.tensor(448.0) / amax.unsqueeze(2)),  # TE: a true division
         "div": lambda: xp / sf.unsqueeze(2)}[op]()
    return y.to(torch.float8_e4m3fn).view(torch.uint8).view(m, -1)[:, :n], sf


def deepgemm_per_block(x):
    m, n = x.shape
    xp = torch.nn.functional.pad(x, (0, (-n) % 128, 0, (-m) % 128))
    v = xp.view(-1, 128, xp.shape[1] // 128, 128)
    amax = v.abs().float().amax(dim=(1, 3), keepdim=True).clamp(1e-4)
    sf = amax / 448.0
    y = (v * (1.0 / sf)).to(torch.float8_e4m3fn).view(torch.uint8).view_as(xp)[:m, :n]
    return y, sf.view(v.shape[0], v.shape[2])


@pytest.mark.parametrize("shape", [(5, 128), (3, 300), (17, 1000)])
def test_deepseek_v3_activation_is_deepgemm_per_token_cast(shape):
    x = rand(*shape, seed=shape[1])
    x[0, :7] = 0.0                                   # partly zero tile
    q = lp.quantize_tensor(x, "deepseek_v3", "activation")
    codes, sf = deepgemm_per_token(x)
    assert torch.equal(q.codes, codes) and torch.equal(q.scales, sf)


def near_boundaries(rows: int = 64) -> torch.Tensor:
    """Tiles of 128 whose first element sets the amax and the rest sit on (scaled) E4M3 midpoints,
    where an ulp of difference before the cast changes the code."""
    g = torch.Generator().manual_seed(5)
    amax = torch.rand(rows, generator=g) * 100 + 0.01
    sf = amax / 448.0
    lo = lp.decode(torch.arange(0, 126), "e4m3").double()
    mids = ((lo + lp.decode(torch.arange(1, 127), "e4m3").double()) / 2).float()[:127]
    x = torch.cat([amax[:, None], mids[None, :] * sf[:, None], torch.zeros(rows, 1)], dim=1)
    return x


@pytest.mark.parametrize("op", ["mul_inv", "mul_ratio", "mul_rcp_ratio", "div"])
def test_each_scale_op_is_its_rule(op):
    for x in (rand(64, 512, seed=3), near_boundaries()):
        q = lp.quantize_tensor(x, "deepseek_v3", "activation", scale_op=op)
        codes, _ = deepgemm_per_token(x, op)
        assert torch.equal(q.codes, codes)


def test_scale_ops_really_differ_near_boundaries():
    """The three orders of arithmetic are different functions (else the option would be moot)."""
    x = near_boundaries()
    ops = ("mul_inv", "mul_ratio", "mul_rcp_ratio", "div")
    c = {op: lp.quantize_tensor(x, "deepseek_v3", scale_op=op).codes for op in ops}
    assert all(not torch.equal(c[p], c[q]) for i, p in enumerate(ops) for q in ops[i + 1:])


@pytest.mark.parametrize("shape", [(128, 256), (200, 130)])
def test_deepseek_v3_weight_is_deepgemm_per_block_cast(shape):
    x = rand(*shape, seed=7)
    q = lp.quantize_tensor(x, "deepseek_v3", "weight")
    codes, sf = deepgemm_per_block(x)
    assert torch.equal(q.codes, codes) and torch.equal(q.scales, sf)


def test_ue8m0_scales_round_up_to_powers_of_two():
    x = rand(8, 256, seed=8)
    q = lp.quantize_tensor(x, "deepseek_v3_ue8m0")
    _, sf = deepgemm_per_token(x)
    want = torch.exp2(torch.ceil(torch.log2(sf.double()))).float()     # DeepGEMM: up to the next power of 2
    assert torch.equal(q.scales, want)
    assert torch.equal(q.codes, (x.view(8, 2, 128) / want[:, :, None]).to(torch.float8_e4m3fn)
                       .view(torch.uint8).view(8, 256))
    assert q.scale_codes.dtype == torch.uint8


def test_te_current_scaling_rule():
    x = rand(33, 77, seed=9)
    amax = x.abs().max()
    scale = torch.tensor(448.0) / amax                                  # TE: multiplier, float32
    q = lp.quantize_tensor(x, "te_current")
    assert torch.equal(q.codes, (x * scale).to(torch.float8_e4m3fn).view(torch.uint8))
    assert q.scales.item() == (1.0 / scale).item()
    pow2 = lp.quantize_tensor(x, "te_current", pow2=True)
    masked = (scale.view(torch.int32) & torch.tensor(-(1 << 23), dtype=torch.int32)).view(torch.float32)
    assert pow2.scales.item() == (1.0 / masked).item()
    assert lp.quantize_tensor(torch.zeros(4, 4), "te_current").scales.item() == 1.0   # amax 0 -> scale 1
    grad = lp.quantize_tensor(x, "te_current", "grad")
    assert grad.fmt.name == "e5m2"


def test_te_delayed_scaling_history():
    h = lp.AmaxHistory(length=3)
    xs = [torch.full((4, 4), v) for v in (2.0, 8.0, 0.0, 1.0, 1.0, 1.0)]
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)                 # noqa: E731
    sf_of = lambda amax: (1.0 / (f32(448.0) / f32(amax))).item()         # noqa: E731  TE: scale_inv = 1/scale
    got = [lp.quantize_tensor(x, "te_delayed", history=h).scales.item() for x in xs]
    # step 1: no history -> 1; then the max over the last <= 3 amaxes *before* this step; amax 0 kept
    assert got == [1.0, sf_of(2.0), sf_of(8.0), sf_of(8.0), sf_of(8.0), sf_of(1.0)]
    assert h.amaxes == [1.0, 1.0, 1.0]
    recent = lp.AmaxHistory(reduction="most_recent")
    lp.quantize_tensor(xs[1], "te_delayed", history=recent)
    lp.quantize_tensor(xs[2], "te_delayed", history=recent)             # amax 0 recorded: scale kept
    assert lp.quantize_tensor(xs[3], "te_delayed", history=recent).scales.item() == sf_of(8.0)


# ---- MX: an independent transcription of the OCP MX v1.0 rules ------------------------------------
def ocp_mx_block(vals: list[float], fmt: str, rule: str) -> tuple[float, list[float]]:
    f = lp.get_format(fmt)
    finite = [abs(v) for v in vals if math.isfinite(v)]
    if len(finite) < len(vals):
        return math.nan, [math.nan] * len(vals)
    amax = max(finite)
    if amax == 0:
        return 2.0**-127, [0.0] * len(vals)
    m, e = math.frexp(amax)                         # amax = m * 2^e, m in [0.5, 1)
    floor_log2 = e - 1
    if rule == "floor":
        shared = floor_log2 - f.emax
    elif rule == "ceil":
        shared = floor_log2 + (m != 0.5) - f.emax
    elif rule == "even":
        r = round_exact(Fraction(amax), lp.get_format(f"e10m{f.mbits}"), "rne")
        shared = math.frexp(r)[1] - 1 - f.emax
    else:  # rceil
        ratio = Fraction(amax) / Fraction(f.max)
        # floor(log2(ratio)), exact: no float32 amax / max lies within 2^-53 of a power of two it differs from
        k = math.frexp(float(ratio))[1] - 1
        shared = k + (Fraction(2) ** k != ratio)
    shared = max(-127, min(127, shared))
    X = Fraction(2) ** shared
    return float(X), [round_exact(Fraction(v) / X, f, "rne", saturate=True) for v in vals]


@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m3", "e3m2", "e2m1"])
def test_mx_matches_ocp_transcription(fmt, rule):
    g = torch.Generator().manual_seed(hash((fmt, rule)) % 2**31)
    x = torch.randn(6, 64, generator=g) * torch.exp2(torch.randint(-20, 20, (6, 1), generator=g).float())
    x[0, :32] = 0.0                                                   # all-zero block
    x[1, :32] = 448.0 * torch.linspace(-1, 1, 32)                     # exact power-of-two amax edge
    x[2, 5] = 1.99 * 2.0**15                                          # clamps in E5M2 (above its max)
    x[3, :32] = torch.randn(32, generator=g) * 1e-39                  # float32-subnormal amax
    x[4, 40] = math.nan
    q = lp.quantize_tensor(x, ScalingConfig(fmt, (1, 32), scale_format="e8m0", mx_rule=rule, nonfinite="tile_nan"))
    deq = q.dequantize(torch.float64)
    for r in range(6):
        for blk in range(2):
            vals = x[r, 32 * blk: 32 * blk + 32].tolist()
            X, elems = ocp_mx_block(vals, fmt, rule)
            got_X = q.scales[r, blk].item()
            assert (math.isnan(X) and math.isnan(got_X)) or got_X == X, (r, blk)
            want = torch.tensor(elems, dtype=torch.float64) * X
            got = deq[r, 32 * blk: 32 * blk + 32]
            assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()])


def test_mx_nan_policies():
    x = torch.ones(1, 64)
    x[0, 3] = math.nan
    blk = lp.quantize_tensor(x, "mxfp8")
    assert blk.dequantize()[0, :32].isnan().all() and not blk.dequantize()[0, 32:].isnan().any()
    assert blk.scale_codes[0, 0].item() == 0xFF
    elem = lp.quantize_tensor(x, "mxfp8", nonfinite="element")
    d = elem.dequantize()[0]
    assert d.isnan().sum().item() == 1 and d[3].isnan() and torch.equal(d[:3], torch.ones(3))


def test_nan_and_inf_never_spread_by_default():
    x = rand(2, 256, seed=12)
    x[0, 10], x[1, 20] = math.nan, math.inf
    q = lp.quantize_tensor(x, "deepseek_v3")
    d = q.dequantize()
    assert d.isnan().sum().item() == 2                               # E4M3 has no Inf: Inf -> NaN
    assert torch.isfinite(q.scales).all()


# ---- properties ---------------------------------------------------------------------------------
def element_scales(q) -> torch.Tensor:
    """Each element's scale (float64), broadcast from its tile."""
    R, C = q.codes.shape
    return q.scales.double().repeat_interleave(q.tile[0], 0).repeat_interleave(q.tile[1], 1)[:R, :C]


def _half_ulp_bound(x: torch.Tensor, q) -> torch.Tensor:
    """Half an ulp of the element grid at |x| / sf, times sf (element-wise, float64)."""
    f = q.fmt
    sf = element_scales(q)
    v = (x.double().abs() / sf).clamp(min=f.min_normal)
    _, e = torch.frexp(v)
    ulp = torch.ldexp(torch.ones_like(v), e.long() - 1 - f.mbits)
    return 0.5 * ulp * sf


@pytest.mark.parametrize("recipe", ["deepseek_v3_ue8m0", "mxfp8"])
@given(x=heavy_tailed_tensors())
def test_roundtrip_error_within_half_ulp_at_tile_scale(recipe, x):
    q = lp.quantize_tensor(x, recipe)
    err = (q.dequantize(torch.float64) - x.double()).abs()
    fin = torch.isfinite(q.dequantize())
    bound = _half_ulp_bound(x, q)
    if recipe == "mxfp8":  # OCP floor rule clamps the top of the block to max: error up to the clamp
        bound = torch.maximum(bound, (x.double().abs() - q.fmt.max * element_scales(q)).clamp(min=0))
    assert fin.all() and (err <= bound * (1 + 1e-12)).all()


@pytest.mark.parametrize("recipe", ["deepseek_v3_ue8m0", "mxfp8"])
@given(x=heavy_tailed_tensors(), k=st.integers(-20, 20))
def test_power_of_two_scales_are_scale_invariant(recipe, x, k):
    x = x.clamp(-1e30, 1e30)                                # x * 2^20 stays finite in float32
    assume(x.abs().max() > 1e-20)                            # all-zero/tiny tiles have no scale to move
    a = lp.quantize_tensor(x, recipe)
    b = lp.quantize_tensor(x * 2.0**k, recipe)
    nz = a.scales > 2.0**-100
    if recipe == "deepseek_v3_ue8m0":
        nz &= (a.scales * 2.0**k > 1e-4 / 448 * 2) & (a.scales > 1e-4 / 448 * 2)   # away from the amax floor
    assert torch.equal((b.scales[nz].double() / a.scales[nz].double()), torch.full_like(b.scales[nz].double(), 2.0**k))
    rows = nz.repeat_interleave(a.tile[0], 0).repeat_interleave(a.tile[1], 1)[: x.shape[0], : x.shape[1]]
    assert torch.equal(a.codes[rows], b.codes[rows])


@given(x=heavy_tailed_tensors(max_cols=300))
def test_ragged_last_tile_is_zero_padding(x):
    q = lp.quantize_tensor(x, "deepseek_v3")
    pad = (-x.shape[1]) % 128
    qp = lp.quantize_tensor(torch.nn.functional.pad(x, (0, pad)), "deepseek_v3")
    assert q.codes.shape == x.shape and torch.equal(q.codes, qp.codes[:, : x.shape[1]])
    assert torch.equal(q.scales, qp.scales)


@pytest.mark.parametrize("op", ["mul_inv", "mul_ratio", "mul_rcp_ratio", "div"])
def test_tiny_amax_tiles_are_not_lost(op):
    """A tile of float32 subnormals: every scale op keeps the values (no Inf multiplier, no zeroing)."""
    x = torch.tensor([[1e-39, -5e-40, 3e-40, 0.0]])
    d = lp.quantize_tensor(x, ScalingConfig("e4m3fn", (1, 4), scale_op=op)).dequantize(torch.float64)
    assert ((d - x.double()).abs() <= 2.0**-3 * x.double().abs()).all() and d[0, 3] == 0


def test_nd_tensors_use_the_last_dim():
    x = rand(2, 3, 256, seed=13)
    q = lp.quantize_tensor(x, "deepseek_v3")
    assert q.dequantize().shape == x.shape and q.scales.shape == (6, 2)


# ---- scaled_matmul ---------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["deepseek_v3", "mxfp8", "rowwise", "te_current"])
def test_scaled_matmul_against_float64(recipe):
    a, b = rand(40, 512, seed=20), rand(512, 24, seed=21)
    qa, qb = lp.quantize_tensor(a, recipe, "activation"), lp.quantize_tensor(b, recipe, "weight")
    da, db = qa.dequantize(torch.float64), qb.dequantize(torch.float64)
    mag = da.abs() @ db.abs()
    exact = lp.scaled_matmul(qa, qb, torch.float64, accumulator="float64")
    assert ((exact - da @ db).abs() <= 1e-13 * mag).all()            # float64 rounding of da @ db only
    fp32 = lp.scaled_matmul(qa, qb).double()
    n_blocks = -(-512 // min(qa.tile[1], qb.tile[0]))  # per block: partial, scale_a * scale_b and the FMA round
    assert ((fp32 - exact).abs() <= 3 * n_blocks * 2.0**-24 * mag).all()
    hopper = lp.scaled_matmul(qa, qb, accumulator="hopper_fp8").double()
    assert ((hopper - exact).abs() <= 2.0**-8 * mag).all()           # 13-bit truncation per 32 products


def test_scaled_matmul_bad_input():
    a = lp.quantize_tensor(rand(8, 256), "deepseek_v3")
    with pytest.raises(ValueError, match="shape mismatch"):
        lp.scaled_matmul(a, lp.quantize_tensor(rand(128, 8), "deepseek_v3", "weight"))
    with pytest.raises(ValueError, match="allow_mixed"):
        lp.scaled_matmul(a, lp.quantize_tensor(rand(256, 8), "deepseek_v3", "weight", fmt="e5m2"))
    with pytest.raises(ValueError, match="K tile"):
        lp.scaled_matmul(a, lp.quantize_tensor(rand(256, 8), "deepseek_v3", "weight", tile=(64, 64)))
    with pytest.raises(ValueError, match="scale formats"):
        lp.scaled_matmul(lp.quantize_tensor(rand(8, 256), "mxfp8"), lp.quantize_tensor(rand(256, 8), "rowwise"))
    with pytest.raises(TypeError):
        lp.scaled_matmul(rand(8, 256), a)


def test_bad_scaling_input():
    with pytest.raises(ValueError, match="unknown recipe"):
        lp.quantize_tensor(rand(4, 4), "deepseek_v4")
    with pytest.raises(ValueError, match="tile"):
        ScalingConfig(tile=(0, 128))
    with pytest.raises(ValueError, match="allow_ragged"):
        lp.quantize_tensor(rand(4, 100), "deepseek_v3", allow_ragged=False)
    with pytest.raises(ValueError, match="history"):
        lp.quantize_tensor(rand(4, 4), "te_delayed")
    with pytest.raises(TypeError):
        lp.quantize_tensor(torch.ones(4, 4, dtype=torch.int32), "deepseek_v3")
    with pytest.raises(ValueError, match="scale_op"):
        ScalingConfig(scale_op="multiply")
    with pytest.raises(ValueError, match="role"):
        lp.quantize_tensor(rand(4, 4), "deepseek_v3", "bias")
    with pytest.raises(ValueError, match="unsigned"):
        ScalingConfig("e8m0")


def test_scales_of_the_wrong_shape():
    q = lp.quantize_tensor(rand(4, 256), "deepseek_v3")
    with pytest.raises(ValueError, match="scales have shape"):
        lp.QuantizedTensor(q.codes, q.scales[:, :1], q.config, q.shape)
    with pytest.raises(ValueError, match="does not match"):
        lp.QuantizedTensor(q.codes, q.scales, q.config, (4, 255))


def test_user_recipe_from_one_place():
    r = lp.register_recipe(lp.Recipe("my_e5m2_rows", ScalingConfig("e5m2", (1, -1)), ScalingConfig("e5m2", (-1, 1)),
                                     ScalingConfig("e5m2", (1, -1))))
    assert lp.get_recipe("my_e5m2_rows") is r
    q = lp.quantize_tensor(rand(4, 64), "my_e5m2_rows", "weight")
    assert q.scales.shape == (1, 64)


@pytest.mark.parametrize("recipe", ["deepseek_v3", "mxfp8"])
def test_compiled_backend_matches_eager(recipe):
    x = rand(48, 300, seed=30)
    x[3, 7] = math.nan
    a = lp.quantize_tensor(x, recipe, backend="compiled")
    b = lp.quantize_tensor(x, recipe)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales.isnan(), b.scales.isnan())
    assert torch.equal(a.scales[~a.scales.isnan()], b.scales[~b.scales.isnan()])


def test_bytes_on_the_wire():
    q = lp.quantize_tensor(rand(4, 256), "deepseek_v3")
    assert q.nbytes() == 4 * 256 + 4 * 2 * 4                          # 1 byte a code + float32 per 1x128
    mx4 = lp.quantize_tensor(rand(4, 256), ScalingConfig("e2m1", (1, 32), scale_format="e8m0", nonfinite="tile_nan"))
    assert mx4.nbytes() == 4 * 256 // 2 + 4 * 8 and mx4.nbytes(packed=False) == 4 * 256 + 4 * 8


# ---- the native (C) scaling kernel: the same bits as the torch path ------------------------------
NATIVE_FORMATS = ["e4m3fn", "e5m2", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2", "e2m1", "e3m4"]


@pytest.mark.parametrize("fmt", NATIVE_FORMATS)
def test_native_encoder_on_every_rounding_boundary(fmt):
    """With amax = max the scale is exactly 1, so the kernel's codes are a plain saturating RNE cast:
    compare them with encode() on every representable value, midpoint and the midpoints' neighbours."""
    f = lp.get_format(fmt)
    vals = lp.decode(torch.arange(f.max_code + 1), f).double()
    vals = vals[~vals.isnan()].sort().values
    mids = ((vals[1:] + vals[:-1]) / 2).float()
    pts = torch.cat([vals.float(), mids, torch.nextafter(mids, torch.tensor(-1e30)),
                     torch.nextafter(mids, torch.tensor(1e30))])
    pts = torch.cat([pts, -pts, torch.tensor([f.max])])
    cfg = ScalingConfig(fmt, (1, -1), nonfinite="tile_nan")
    q = lp.quantize_tensor(pts[None, :], cfg, backend="native")
    assert q.scales.item() == 1.0
    assert torch.equal(q.codes[0], lp.encode(pts, f, saturate=True))


@st.composite
def native_configs(draw):
    fmt = draw(st.sampled_from(NATIVE_FORMATS))
    tile = draw(st.sampled_from([(1, 128), (128, 128), (1, 32), (1, -1), (-1, 1), (-1, -1), (3, 5)]))
    return ScalingConfig(fmt, tile,
                         margin=draw(st.integers(0, 2)), amax_floor=draw(st.sampled_from([0.0, 1e-4])),
                         pow2=draw(st.booleans()), scale_op=draw(st.sampled_from(["mul_inv", "mul_ratio",
                                                                                   "mul_rcp_ratio", "div"])),
                         nonfinite=draw(st.sampled_from(["tile_nan"] + (["element"] if lp.get_format(fmt).has_nan
                                                                        else []))))


@given(x=heavy_tailed_tensors(max_rows=6, max_cols=300), cfg=native_configs(), special=st.booleans())
def test_native_scaling_matches_torch(x, cfg, special):
    if special:
        x[0, 0], x[-1, -1] = math.nan, -math.inf
    a, b = lp.quantize_tensor(x, cfg, backend="native"), lp.quantize_tensor(x, cfg)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.scales.isnan(), b.scales.isnan()) and torch.equal(a.scales.nan_to_num(), b.scales.nan_to_num())


def test_native_scaling_refuses_what_it_does_not_cover():
    with pytest.raises(ValueError, match="native scaling backend"):
        lp.quantize_tensor(rand(4, 64), "te_delayed", backend="native", history=lp.AmaxHistory())
    with pytest.raises(ValueError, match="native scaling backend"):
        lp.quantize_tensor(rand(4, 64), "deepseek_v3", backend="native", fmt="bf16")


# ---- fake_quantize: quantize_tensor(...).dequantize() in one pass ---------------------------------
@pytest.mark.parametrize("recipe,role", [("deepseek_v3", "activation"), ("deepseek_v3", "weight"),
                                         ("te_current", "grad"), ("rowwise", "weight"), ("mxfp8", "activation")])
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_fake_quantize_is_dequantize_of_quantize_tensor(recipe, role, backend):
    """Every element's bits (NaN/Inf tiles, subnormal amaxes, ragged tiles) equal the two-step path's."""
    cfg = lp.get_recipe(recipe).config(role)
    if backend == "native" and lp.scaling.native_unsupported(cfg, torch.device("cpu")):
        pytest.skip("the native backend does not cover this config")
    x = rand(130, 300, seed=5)
    x[3, 7], x[50, 200], x[129, 0] = math.nan, math.inf, -math.inf
    x[60:61, :128] *= 1e-40                                    # a tile of float32 subnormals
    q = lp.quantize_tensor(x, cfg, backend="eager")
    (tr, tc), (R, C) = q.tile, q.codes.shape                     # value(code) * scale, exact, rounded once
    sf = q.scales.double().repeat_interleave(tr, 0).repeat_interleave(tc, 1)[:R, :C]
    ref = (lp.decode(q.codes, cfg.fmt).double() * sf).float()
    assert torch.equal(q.dequantize().view(torch.int32)[~ref.isnan()], ref.view(torch.int32)[~ref.isnan()])
    got = lp.fake_quantize(x, cfg, backend=backend)
    assert got.shape == x.shape
    assert torch.equal(got.view(torch.int32)[~ref.isnan()], ref.view(torch.int32)[~ref.isnan()])
    assert torch.equal(got.isnan(), ref.isnan())


def test_scaled_matmul_decodes_e5m2_operands_as_e5m2():
    """An accumulator preset named for E4M3 runs E5M2 operands with E5M2's exponent range: values normal in
    E5M2 but below E4M3's smallest normal (2^-6) keep their exponent. Expected: the scalar exact reference
    with input_formats = (e5m2, e5m2), then one float32 FMA by the product of the scales."""
    g = torch.Generator().manual_seed(0)
    a, b = 2.0**-26 * (1 + torch.rand(2, 64, generator=g)), 2.0**-26 * (1 + torch.rand(64, 2, generator=g))
    a[0, 0] = b[0, 0] = 1.0              # the per-tensor scale maps 1 to E5M2's max: the rest lands near 2^-10
    cfg = ScalingConfig("e5m2", (-1, -1), scale_op="mul_ratio")
    qa, qb = lp.quantize_tensor(a, cfg), lp.quantize_tensor(b, cfg)
    assert bool((qa.values().abs() < 2.0**-6).any())                # the case that decides it
    model = replace(lp.get_accumulator("hopper_fp8"), input_formats=("e5m2", "e5m2"))
    s = float(torch.tensor(qa.scales.item() * qb.scales.item(), dtype=torch.float32))
    av, bv = qa.values().double(), qb.values().double()
    expected = torch.tensor([[s * lp.reference_dot(av[i].tolist(), bv[:, j].tolist(), model) for j in range(2)]
                             for i in range(2)], dtype=torch.float64).float()
    got = lp.scaled_matmul(qa, qb, accumulator="hopper_fp8")
    assert torch.equal(got, expected)
    e4m3_split = lp.reference_dot(av[1].tolist(), bv[:, 1].tolist(), lp.get_accumulator("hopper_fp8"))
    assert got[1, 1].item() != float(torch.tensor(s * e4m3_split, dtype=torch.float64).float())   # it decides
