"""The native kernels of quant_cpu.c and logfmt_cpu.c against the eager (torch) references, bit for bit:
MX quantisation (every MX rule, E8M0 scales, NaN tiles), the elementwise cast (every deterministic mode, FP8,
FP6, FP4; exhaustive over float16/bfloat16 patterns and on every rounding boundary +-2 ulp) and LogFMT-n."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp
from lowprec import logfmt, native, rounding, scaling
from lowprec.scaling import ScalingConfig
from lowprec.testing.strategies import float32_near_grid, heavy_tailed_tensors

pytestmark = pytest.mark.skipif(native.library_status("quant_cpu") is not None
                                or native.library_status("logfmt_cpu") is not None,
                                reason="the native CPU kernels do not build here")

MODES = ("rne", "rna", "rtz", "rup", "rdown", "rto")
CAST_FORMATS = ("e4m3fn", "e5m2", "e4m3fnuz", "e5m2fnuz", "e3m4", "e2m3", "e3m2", "e2m1")
MX_FORMATS = ("e4m3fn", "e5m2", "e2m3", "e3m2", "e2m1")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bits (NaN payloads and signed zeros included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {4: torch.int32, 2: torch.int16, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal where not NaN, NaN in the same places (a NaN's payload is outside the dequantize contract)."""
    return (a.shape == b.shape and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a[~a.isnan()].view(torch.int32), b[~b.isnan()].view(torch.int32)))


# ---- MX (E8M0 scales) ----------------------------------------------------------------------------------------
def assert_mx_matches(x: torch.Tensor, cfg: ScalingConfig) -> None:
    a, b = lp.quantize_tensor(x, cfg, backend="native"), lp.quantize_tensor(x, cfg, backend="eager")
    assert same_bits(a.codes, b.codes)
    assert same_values(a.scales, b.scales)
    assert same_values(lp.fake_quantize(x, cfg, backend="native"), b.dequantize())


@st.composite
def mx_configs(draw: st.DrawFn) -> ScalingConfig:
    fmt = draw(st.sampled_from(MX_FORMATS))
    nonfinite = draw(st.sampled_from(["tile_nan"] + (["element"] if lp.get_format(fmt).has_nan else [])))
    return ScalingConfig(fmt, draw(st.sampled_from([(1, 32), (32, 1), (1, 16), (2, 64), (3, 7), (1, -1), (-1, -1)])),
                         scale_format="e8m0", mx_rule=draw(st.sampled_from(scaling.MX_RULES)), nonfinite=nonfinite)


@given(x=heavy_tailed_tensors(max_rows=40, max_cols=300), cfg=mx_configs(), special=st.booleans(),
       transpose=st.booleans())
def test_mx_native_matches_eager(x, cfg, special, transpose):
    if special:
        x[0, 0], x[-1, -1] = math.nan, -math.inf
    assert_mx_matches(x.t() if transpose else x, cfg)           # x.t(): a non-contiguous input


def mx_edge_tensor(fmt: lp.FloatFormat) -> torch.Tensor:
    """One 32-element row per edge case, each row its own MX block: amax a power of two, one float32 ulp
    either side of it, at the `even` rule's rounding point (the element mantissa's midpoint below the next
    binade) +-1 ulp, at the `rceil` rule's edges (max_elem * 2^k +-1 ulp), subnormal and tiny amaxes, an
    all-zero block, a -0 block, NaN and Inf blocks, the largest float32."""
    amaxes: list[float] = []
    for k in (-149, -140, -127, -126, -125, -100, -20, -1, 0, 1, 7, 60, 120, 126, 127):
        p = np.float32(2.0**k)
        even_edge = np.float32((2.0 - 2.0 ** -(fmt.mbits + 1)) * 2.0 ** (k - 1))
        rceil_edge = np.float32(fmt.max * 2.0 ** (k - fmt.emax)) if k - fmt.emax > -149 else p
        for v in (p, even_edge, rceil_edge):
            amaxes += [float(v), float(np.nextafter(v, np.float32(0))), float(np.nextafter(v, np.float32(np.inf)))]
    amaxes += [float(np.finfo(np.float32).max), 0.0]
    amaxes = [a for a in amaxes if a >= 0 and math.isfinite(a)]
    g = torch.Generator().manual_seed(7)
    rows = []
    for a in amaxes:
        row = (torch.rand(32, generator=g) * 2 - 1) * a
        row[int(torch.randint(0, 32, (1,), generator=g))] = -a if len(rows) % 2 else a
        rows.append(row)
    rows.append(torch.full((32,), -0.0))
    nan_row, inf_row = torch.ones(32), torch.ones(32)
    nan_row[5], inf_row[9] = math.nan, -math.inf
    rows += [nan_row, inf_row]
    return torch.stack(rows)


@pytest.mark.parametrize("rule", scaling.MX_RULES)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_mx_native_on_every_scale_edge(fmt, rule):
    x = mx_edge_tensor(lp.get_format(fmt))
    for nonfinite in ["tile_nan"] + (["element"] if lp.get_format(fmt).has_nan else []):
        cfg = ScalingConfig(fmt, (1, 32), scale_format="e8m0", mx_rule=rule, nonfinite=nonfinite)
        assert_mx_matches(x, cfg)
        assert_mx_matches(x[:, :20], cfg)                          # partial blocks
        assert_mx_matches(x.t().contiguous().t(), cfg)             # a column-major layout


@pytest.mark.parametrize("shape", [(0, 32), (5, 0), (0,), (1,), (7,)])
def test_mx_native_on_empty_and_tiny_tensors(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    cfg = lp.get_recipe("mxfp8").activation
    a, b = lp.quantize_tensor(x, cfg, backend="native"), lp.quantize_tensor(x, cfg, backend="eager")
    assert same_bits(a.codes, b.codes) and same_values(a.scales, b.scales) and a.shape == b.shape


def test_auto_takes_native_mx_on_large_tensors(monkeypatch):
    calls = []
    original = scaling._native_quantize

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scaling, "_native_quantize", spy)
    x = torch.randn(64, rounding.AUTO_NATIVE_MIN_NUMEL // 64, generator=torch.Generator().manual_seed(2))
    for name in ("mxfp8", "mxfp8_te"):
        assert same_bits(lp.quantize_tensor(x, name).codes, lp.quantize_tensor(x, name, backend="eager").codes)
    assert len(calls) == 2


# ---- the elementwise cast (encode / quantize) ----------------------------------------------------------------
def cast_inputs_ok(x: torch.Tensor, fmt: lp.FloatFormat) -> torch.Tensor:
    """``x`` with NaNs replaced by 0 for formats without NaN (encode refuses them)."""
    return x if fmt.has_nan else torch.where(x.isnan(), 0.0, x)


def assert_cast_matches(x: torch.Tensor, fmt: lp.FloatFormat, mode: str, saturate: bool) -> None:
    nat = lp.encode(x, fmt, mode, saturate=saturate, backend="native")
    assert same_bits(nat, lp.encode(x, fmt, mode, saturate=saturate, backend="eager"))
    assert same_bits(lp.quantize(x, fmt, mode, saturate=saturate, backend="native"),
                     lp.quantize(x, fmt, mode, saturate=saturate, backend="eager"))


@pytest.mark.parametrize("fmt", CAST_FORMATS)
@pytest.mark.parametrize("src", [torch.float16, torch.bfloat16])
def test_native_cast_on_every_16_bit_pattern(fmt, src):
    """Every float16 / bfloat16 bit pattern, every deterministic mode, saturating or not; the 16-bit tensor is
    handed over as it is (the kernel widens it) and as float32."""
    f = lp.get_format(fmt)
    x = cast_inputs_ok(torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(src), f)
    for mode in MODES:
        for saturate in (False, True):
            assert_cast_matches(x, f, mode, saturate)
            assert_cast_matches(x.float(), f, mode, saturate)


def boundary_points(f: lp.FloatFormat) -> torch.Tensor:
    """Every value of the format, every midpoint between neighbours (and past max), each +-1 and +-2 float32
    ulps, both signs, and the specials."""
    vals = lp.decode(torch.arange(f.max_code + 1), f).double()
    vals = torch.cat([vals[~vals.isnan()], torch.tensor([f.max + 2.0 ** (f.emax - f.mbits)], dtype=torch.float64)])
    vals = vals.sort().values
    pts = torch.cat([vals, (vals[1:] + vals[:-1]) / 2]).float()
    up1 = torch.nextafter(pts, torch.tensor(math.inf))
    up2 = torch.nextafter(up1, torch.tensor(math.inf))
    dn1 = torch.nextafter(pts, torch.tensor(-math.inf))
    dn2 = torch.nextafter(dn1, torch.tensor(-math.inf))
    out = torch.cat([pts, up1, up2, dn1, dn2])
    out = torch.cat([out, -out, torch.tensor([math.inf, -math.inf, math.nan, -math.nan, 3e38, -3e38, 1e-45])])
    return cast_inputs_ok(out, f)


@pytest.mark.parametrize("fmt", CAST_FORMATS)
def test_native_cast_on_every_rounding_boundary(fmt):
    f = lp.get_format(fmt)
    x = boundary_points(f)
    for mode in MODES:
        for saturate in (False, True):
            assert_cast_matches(x, f, mode, saturate)


@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=400), fmt=st.sampled_from(CAST_FORMATS),
       mode=st.sampled_from(MODES), saturate=st.booleans())
def test_native_cast_on_random_float32_patterns(bits, fmt, mode, saturate):
    f = lp.get_format(fmt)
    x = torch.tensor(np.array(bits, dtype=np.uint32).view(np.int32)).view(torch.float32)
    assert_cast_matches(cast_inputs_ok(x, f), f, mode, saturate)


@given(data=st.data(), fmt=st.sampled_from(CAST_FORMATS), mode=st.sampled_from(MODES))
def test_native_cast_near_the_grid(data, fmt, mode):
    f = lp.get_format(fmt)
    x = torch.tensor(data.draw(st.lists(float32_near_grid(f, allow_special=f.has_nan), min_size=1, max_size=64)),
                     dtype=torch.float32)
    assert_cast_matches(x, f, mode, data.draw(st.booleans()))


def test_native_cast_keeps_shape_layout_and_empties():
    f = lp.get_format("e2m1")
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(3)).t()     # non-contiguous
    assert_cast_matches(x, f, "rna", False)
    for shape in [(0,), (3, 0)]:
        assert_cast_matches(torch.empty(shape), f, "rtz", True)


def test_auto_casts_with_native_where_torch_has_no_proven_cast(monkeypatch):
    calls = []
    original = rounding._native_cast

    def spy(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(rounding, "_native_cast", spy)
    big = torch.randn(rounding.AUTO_NATIVE_MIN_NUMEL, generator=torch.Generator().manual_seed(4)) * 4
    for fmt, mode in [("e4m3fn", "rtz"), ("e2m1", "rne"), ("e3m2", "rup"), ("e4m3fn", "rne")]:
        assert same_bits(lp.encode(big, fmt, mode), lp.encode(big, fmt, mode, backend="eager"))
        assert same_bits(lp.quantize(big, fmt, mode), lp.quantize(big, fmt, mode, backend="eager"))
    lp.encode(big[:100], "e2m1")                          # small: eager
    lp.encode(big.double(), "e2m1")                       # float64 input: eager (not covered)
    assert calls == ["rtz", "rtz", "rne", "rne", "rup", "rup"]      # e4m3fn RNE: torch's own cast


def test_native_cast_refuses_what_it_does_not_cover():
    x = torch.ones(4)
    for kwargs, match in [({"fmt": "e2m1", "rounding": "stochastic"}, "stochastic"),
                          ({"fmt": "bf16"}, "<= 8-bit"), ({"fmt": "e8m0"}, "<= 8-bit"),
                          ({"fmt": "e2m1", "x": x.double()}, "float64")]:
        args = {"x": x, **kwargs}
        with pytest.raises(ValueError, match=match):
            lp.encode(args.pop("x"), backend="native", **args)


# ---- LogFMT ---------------------------------------------------------------------------------------------------
def assert_logfmt_matches(x: torch.Tensor, nbits: int, tile: int) -> None:
    a = logfmt.encode(x, nbits, tile, pad=True, backend="native")
    b = logfmt.encode(x, nbits, tile, pad=True, backend="eager")
    assert same_bits(a.codes, b.codes) and same_bits(a.min, b.min) and same_bits(a.step, b.step)
    assert same_bits(logfmt.decode(b, backend="native"), logfmt.decode(b, backend="eager"))


@given(x=heavy_tailed_tensors(max_rows=6, max_cols=300), nbits=st.integers(logfmt.MIN_BITS, logfmt.MAX_BITS),
       tile=st.sampled_from([1, 3, 32, 128, 256]), special=st.booleans(), transpose=st.booleans())
def test_logfmt_native_matches_eager(x, nbits, tile, special, transpose):
    if special:
        x[0, 0], x[-1, -1] = math.nan, -math.inf
    assert_logfmt_matches(x.t() if transpose else x, nbits, tile)


@pytest.mark.parametrize("nbits", [3, 4, 5, 8, 10, 12, 16])
def test_logfmt_native_on_edge_tiles(nbits):
    """Zero, -0 and NaN/Inf tiles, a tile of equal magnitudes (step 0), nearly equal magnitudes (many equal
    float32 levels), subnormals, a dynamic range beyond 2^32 (lo raised), the float32 extremes, ragged tiles."""
    g = torch.Generator().manual_seed(nbits)
    x = torch.randn(12, 300, generator=g) * torch.exp2(torch.randint(-40, 40, (12, 300), generator=g).float())
    x[0] = 0.0
    x[1] = -0.0
    x[2, 7] = math.nan
    x[3, 100] = -math.inf
    x[4] = -3.0
    x[5] = torch.linspace(1.0, 1.0000005, 300)
    x[6] *= 1e-38
    x[7, ::3] = torch.finfo(torch.float32).max
    x[7, 1::3] = 1e-45
    x[8, ::2] = -0.0
    x[9] = torch.exp2(torch.arange(300.0) - 150.0)
    x[10, :] = 1e-45
    for tile in (1, 7, 128, 300):
        assert_logfmt_matches(x, nbits, tile)
    assert_logfmt_matches(torch.tensor(2.5), nbits, 128)
    assert_logfmt_matches(x[0:3, 0], nbits, 2)


def test_logfmt_auto_is_native_on_large_cpu_tensors_and_refuses_what_native_cannot(monkeypatch):
    calls = []
    original = logfmt._resolve_backend

    def spy(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(logfmt, "_resolve_backend", spy)
    x = torch.randn(8, rounding.AUTO_NATIVE_MIN_NUMEL // 8, generator=torch.Generator().manual_seed(5))
    enc = logfmt.encode(x, 8)
    assert same_bits(logfmt.decode(enc), logfmt.decode(logfmt.encode(x, 8, backend="eager"), backend="eager"))
    logfmt.encode(x, 8, rounding="stochastic")
    assert calls[:2] == ["native", "native"] and calls[-1] == "eager"
    with pytest.raises(ValueError, match="rna"):
        logfmt.encode(x, 8, rounding="stochastic", backend="native")
    with pytest.raises(ValueError, match="unknown backend"):
        logfmt.encode(x, 8, backend="fast")
