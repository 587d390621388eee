"""Bit-exactness of encode/decode/quantize: exhaustive over codes and rounding boundaries, and
cross-checked against independent implementations (gfloat, ml_dtypes, torch's casts)."""

from __future__ import annotations

import gfloat
import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracles import GFLOAT_ROUNDING, ML_DTYPES, TORCH_DTYPES, gfloat_format

import lowprec as lp
from lowprec.formats import FloatFormat
from lowprec.testing.strategies import float32_near_grid, formats

SMALL = [f for f in lp.list_formats() if f.bits <= 16] + [lp.get_format(n) for n in (
    "e3m4", "e3m4fn", "e6m5fnuz", "e5m10fn", "e2m5", "e4m2", "e7m8")]
DIRECTED = ["rne", "rna", "rtz", "rup", "rdown", "rto"]


def _ids(fmts: list[FloatFormat]) -> list[str]:
    return [f.name for f in fmts]


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise: equal as values with the same sign bit, or both NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | ((a == b) & (np.signbit(a) == np.signbit(b)))


def all_codes(fmt: FloatFormat) -> torch.Tensor:
    return torch.arange(1 << fmt.bits, dtype=torch.int64)


# ---- exhaustive: every code ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", SMALL, ids=_ids(SMALL))
def test_every_code_decodes_as_gfloat_says(fmt):
    ours = lp.decode(all_codes(fmt), fmt).double().numpy()
    ref = gfloat.decode_ndarray(gfloat_format(fmt), np.arange(1 << fmt.bits))
    assert same_bits(ours, ref).all()


@pytest.mark.parametrize("fmt", [f for f in SMALL if f.bits == 8], ids=_ids([f for f in SMALL if f.bits == 8]))
def test_uint8_codes_decode_as_gfloat_says(fmt):
    """uint8 codes take the fast paths (torch's float8 widening, NaNs from the table): every code, every bit."""
    ours = lp.decode(all_codes(fmt).to(torch.uint8), fmt).double().numpy()
    ref = gfloat.decode_ndarray(gfloat_format(fmt), np.arange(1 << fmt.bits))
    assert same_bits(ours, ref).all()
    fast, table = lp.decode(all_codes(fmt).to(torch.uint8), fmt), lp.decode(all_codes(fmt), fmt)
    assert torch.equal(fast.view(torch.int32), table.view(torch.int32))     # NaN bit patterns included


@pytest.mark.parametrize("name", sorted(set(ML_DTYPES) & {f.name for f in SMALL}))
def test_every_code_decodes_as_ml_dtypes_says(name):
    fmt = lp.get_format(name)
    view = np.uint8 if fmt.bits <= 8 else np.uint16
    ref = np.arange(1 << fmt.bits).astype(view).view(ML_DTYPES[name]) if fmt.bits in (8, 16) else \
        np.arange(1 << fmt.bits).astype(np.uint8).view(ML_DTYPES[name])
    assert same_bits(lp.decode(all_codes(fmt), fmt).numpy(), ref.astype(np.float64)).all()


@pytest.mark.parametrize("rounding", DIRECTED + ["stochastic"])
@pytest.mark.parametrize("fmt", SMALL, ids=_ids(SMALL))
def test_encode_decode_roundtrip_every_code(fmt, rounding):
    codes = all_codes(fmt)
    vals = lp.decode(codes, fmt)
    keep = ~torch.isnan(vals)
    if not fmt.has_negative_zero and fmt.signed:
        keep &= codes != fmt.sign_mask  # no -0 code to round-trip to
    back = lp.encode(vals[keep], fmt, rounding, generator=torch.Generator().manual_seed(0)).long()
    assert torch.equal(back, codes[keep])


# ---- exhaustive: every rounding boundary --------------------------------------------------------
def _neighbours(fmt: FloatFormat):
    """(lo, hi, code_lo, code_hi) for every pair of adjacent non-negative finite values."""
    mags = torch.arange(fmt.max_code + 1, dtype=torch.int64)
    vals = lp.decode(mags, fmt).double()
    ok = ~torch.isnan(vals)
    mags, vals = mags[ok], vals[ok]
    order = torch.argsort(vals)
    mags, vals = mags[order], vals[order]
    return vals[:-1], vals[1:], mags[:-1], mags[1:]


@pytest.mark.parametrize("fmt", [f for f in SMALL if f.mbits <= 22], ids=_ids([f for f in SMALL if f.mbits <= 22]))
def test_every_rounding_boundary(fmt):
    """Midpoints and their float32 neighbours round as each mode's definition says."""
    lo, hi, clo, chi = _neighbours(fmt)
    mid = ((lo + hi) / 2).float()
    assert torch.equal(mid.double(), (lo + hi) / 2)                     # midpoints are float32 values
    below, above = torch.nextafter(mid, torch.tensor(-np.inf)), torch.nextafter(mid, torch.tensor(np.inf))
    even_is_lo = (clo % 2) == 0
    sign = [1, -1] if fmt.signed else [1]
    for s in sign:
        neg = s < 0
        expect = {  # expected magnitude code at (below, mid, above), from the definitions alone
            "rne": (clo, torch.where(even_is_lo, clo, chi), chi),
            "rna": (clo, chi, chi),
            "rtz": (clo, clo, clo),
            "rup": (chi, chi, chi) if not neg else (clo, clo, clo),
            "rdown": (clo, clo, clo) if not neg else (chi, chi, chi),
            "rto": (torch.where(even_is_lo, chi, clo),) * 3,
        }
        for rounding, exp in expect.items():
            for x, want in zip((below, mid, above), exp):
                got = lp.encode(s * x, fmt, rounding, saturate=True).long()
                want_code = want | (fmt.sign_mask if neg else 0)
                if not fmt.has_negative_zero:
                    want_code = torch.where(want == 0, 0, want_code)
                assert torch.equal(got, want_code), (rounding, s)


def test_e4m3_overflow_edge():
    x = torch.tensor([448.0, 464.0, np.nextafter(np.float32(464), np.float32(1e9)), 465.0, 1e9, -465.0])
    assert lp.quantize(x, "e4m3").tolist()[:2] == [448.0, 448.0]
    assert torch.isnan(lp.quantize(x, "e4m3")[2:]).all()
    assert lp.quantize(x, "e4m3", saturate=True).tolist() == [448.0] * 5 + [-448.0]
    assert lp.quantize(x, "e4m3", "rtz").tolist() == [448.0] * 5 + [-448.0]
    assert torch.isnan(lp.quantize(x, "e4m3", "rdown")[-1])


# ---- cross-checks with independent implementations ----------------------------------------------
def _wide_sample(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Values over the whole float32 range and near the small formats' grids, with specials."""
    g = torch.Generator().manual_seed(seed)
    mant = torch.randn(n, generator=g, dtype=torch.float64)
    expo = torch.randint(-150, 128, (n,), generator=g).double()
    wide = (mant * torch.exp2(expo)).to(dtype)
    near = (torch.randn(n, generator=g) * torch.exp2(torch.randint(-20, 18, (n,), generator=g).float())).to(dtype)
    x = torch.cat([wide, near, torch.tensor([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)])
    return x[torch.isfinite(x.double()) | torch.isnan(x) | torch.isinf(x)]


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_rne_matches_ml_dtypes(name):
    fmt = lp.get_format(name)
    x = _wide_sample(1_000_000, 1)
    if not fmt.has_nan:
        x = x[~torch.isnan(x)]
    if not fmt.signed:
        x = x.abs()[x != 0]
    ref = x.numpy().astype(ML_DTYPES[name]).astype(np.float64)
    # ml_dtypes' E8M0 cast breaks ties away from zero (it has no mantissa bit to make even): that is
    # our "rna"; below 2^-127 it gives 0/NaN where we clamp to 2^-127 (the OCP scale rule), and it
    # rounds float32-subnormal inputs (< 2^-126) up to 2^-126 even when 2^-127 is nearer (gfloat and
    # exact arithmetic side with us there: see test_matches_gfloat and test_every_rounding_boundary)
    rounding = "rna" if name == "e8m0" else "rne"
    ours = lp.quantize(x, fmt, rounding, saturate=not fmt.has_nan).double().numpy()
    if name == "e8m0":
        keep = x.numpy() >= 2.0**-126
        ours, ref = ours[keep], ref[keep]
    assert same_bits(ours, ref).all()


# torch's casts are RNE; to float8_e4m3fn they saturate (Inf too), to the others overflow is Inf/NaN
TORCH_SATURATES = {"e4m3fn": True}


@pytest.mark.parametrize("name", sorted(TORCH_DTYPES))
def test_rne_matches_torch_cast(name):
    x = _wide_sample(1_000_000, 2)
    ref = x.to(TORCH_DTYPES[name]).double().numpy()
    ours = lp.quantize(x, name, saturate=TORCH_SATURATES.get(name, False), backend="eager").double().numpy()
    assert same_bits(ours, ref).all()                  # the readable encoder, not auto (which is torch's cast)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_rne_matches_torch_narrowing_casts(dtype):
    """fp16/bf16 from every input dtype agree with torch's RNE casts -- except that torch casts float64
    through float32 (double rounding): there torch equals *our* rounding of the float32 value."""
    x = _wide_sample(200_000, 3, dtype)
    for name, tdtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        ref = x.to(tdtype).double().numpy()
        ours = lp.quantize(x, name, out_dtype=torch.float64).numpy()
        if dtype == torch.float64:
            assert same_bits(lp.quantize(x.float(), name, out_dtype=torch.float64).numpy(), ref).all()
            direct = gfloat.round_ndarray(gfloat_format(lp.get_format(name)), x.numpy())  # one rounding
            assert same_bits(ours, direct).all()
        else:
            assert same_bits(ours, ref).all()


GFLOAT_FORMATS = [f for f in lp.list_formats()] + [lp.get_format(n) for n in ("e3m4", "e6m5fnuz", "e5m10fn", "e9m13")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32_words", "f64_words"])
@pytest.mark.parametrize("rounding", ["rne", "rna", "rtz", "rup", "rdown", "stochastic"])
@pytest.mark.parametrize("fmt", GFLOAT_FORMATS, ids=_ids(GFLOAT_FORMATS))
def test_matches_gfloat(fmt, rounding, dtype):
    """Both internal word widths (32-bit for float32 inputs where exact, 64-bit otherwise)."""
    x = _wide_sample(100_000, 4).to(dtype)
    if not fmt.has_nan:
        x = x[~torch.isnan(x)]
    if not fmt.signed:
        x = x.abs()[x != 0]
    sat = not fmt.has_nan
    gf = gfloat_format(fmt)
    kw = {}
    srbits = None
    if rounding == "stochastic":
        srbits = torch.randint(0, 1 << 13, x.shape, generator=torch.Generator().manual_seed(5))
        kw = dict(random_bits=srbits, sr_bits=13)
    ref = gfloat.round_ndarray(gf, x.double().numpy(), GFLOAT_ROUNDING[rounding], sat,
                               None if srbits is None else srbits.numpy(), 13 if srbits is not None else 0)
    ours = lp.quantize(x, fmt, rounding, saturate=sat, **kw).double().numpy()
    if fmt.name == "e8m0":
        keep = x.double().numpy() >= 2.0**-127
        ours, ref = ours[keep], ref[keep]
    assert same_bits(ours, ref).all()


def test_round_to_odd_against_exact_definition():
    """rto: exact values stay; an inexact one takes whichever neighbour has the odd code."""
    fmt = lp.get_format("e4m3")
    x = _wide_sample(200_000, 6)
    x = x[torch.isfinite(x) & (x.abs() < 400)]
    lo = lp.quantize(x, fmt, "rtz").double()
    exact = lo == x.double()
    c_lo = lp.encode(x, fmt, "rtz").long() & 0x7F
    c = lp.encode(x, fmt, "rto").long() & 0x7F
    assert torch.equal(c[exact], c_lo[exact])
    assert ((c[~exact] & 1) == 1).all() and ((c[~exact] - c_lo[~exact]).abs() <= 1).all()


# ---- stochastic rounding ------------------------------------------------------------------------
def test_stochastic_probability_is_exact_fraction():
    """Over all 2^n random words, the count that rounds up equals the cut fraction in units of 2^-n."""
    fmt, n = lp.get_format("e4m3"), 8
    lo, hi = 1.0, 1.125
    for k in range(0, 257):
        x = torch.full((256,), lo + (hi - lo) * k / 256, dtype=torch.float64)
        q = lp.quantize(x, fmt, "stochastic", random_bits=torch.arange(256), sr_bits=n, out_dtype=torch.float64)
        assert int((q == hi).sum()) == k and int((q == lo).sum()) == 256 - k


def test_stochastic_is_unbiased_and_reproducible():
    g = torch.Generator().manual_seed(1234)
    x = (torch.rand(2000, generator=g) * 8 - 4).repeat(500)
    q1 = lp.quantize(x, "e4m3", "stochastic", generator=torch.Generator().manual_seed(7))
    q2 = lp.quantize(x, "e4m3", "stochastic", generator=torch.Generator().manual_seed(7))
    q3 = lp.quantize(x, "e4m3", "stochastic", generator=torch.Generator().manual_seed(8))
    assert torch.equal(q1, q2) and not torch.equal(q1, q3)
    # per element: mean of 500 draws within 5 sigma of the Bernoulli spread around x
    mean = q1.view(500, 2000).double().mean(0)
    lo = lp.quantize(x[:2000], "e4m3", "rdown").double()
    hi = lp.quantize(x[:2000], "e4m3", "rup").double()
    p = (x[:2000].double() - lo) / (hi - lo).clamp(min=1e-30)
    sigma = (hi - lo) * torch.sqrt(p * (1 - p) / 500)
    assert ((mean - x[:2000].double()).abs() <= 5 * sigma + 1e-12).all()


# ---- inputs of every float dtype, no double rounding --------------------------------------------
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "e3m2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_every_input_dtype_rounds_its_exact_value(fmt, dtype):
    x = _wide_sample(50_000, 7, dtype)
    x = x[~torch.isnan(x)]
    assert torch.equal(lp.encode(x, fmt, saturate=True), lp.encode(x.double(), fmt, saturate=True))


def test_no_double_rounding_from_float64():
    """A float64 just above an E4M3 midpoint rounds up; through float32 first it would tie to even."""
    mid = 1.0 + 1 / 16                                 # midpoint of 1.0 and 1.125 in E4M3
    x = torch.tensor([mid + 2.0**-40], dtype=torch.float64)
    assert x.float().item() == mid                     # float32 would collapse it onto the tie
    assert lp.quantize(x, "e4m3").item() == 1.125
    assert lp.quantize(x.float(), "e4m3").item() == 1.0


def test_numpy_in_numpy_out():
    x = np.array([1.1, -3.3, 400.0], dtype=np.float32)
    c = lp.encode(x, "e4m3")
    assert isinstance(c, np.ndarray) and c.dtype == np.uint8
    assert np.array_equal(c, x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))
    assert np.array_equal(lp.quantize(x, "e4m3"), x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert isinstance(lp.decode(c, "e4m3"), np.ndarray)


def test_code_dtypes():
    x = torch.ones(3)
    assert lp.encode(x, "e4m3").dtype == torch.uint8
    assert lp.encode(x, "bf16").dtype == torch.int32
    assert lp.encode(x, "e8m13").dtype == torch.int64
    assert lp.decode(lp.encode(x, "e8m13"), "e8m13").dtype == torch.float32
    assert lp.decode(lp.encode(x, "e9m13"), "e9m13").dtype == torch.float64


# ---- properties (hypothesis) --------------------------------------------------------------------
@st.composite
def fmt_and_values(draw):
    fmt = draw(formats(max_bits=22))
    vals = draw(st.lists(float32_near_grid(fmt, allow_special=False), min_size=1, max_size=40))
    return fmt, torch.tensor(vals, dtype=torch.float32)


@given(fmt_and_values(), st.sampled_from(DIRECTED))
def test_monotone_and_idempotent(fv, rounding):
    fmt, x = fv
    xs, _ = torch.sort(x)
    q = lp.quantize(xs, fmt, rounding, saturate=True, out_dtype=torch.float64)
    assert (q[1:] >= q[:-1]).all()
    assert torch.equal(lp.quantize(q, fmt, rounding, saturate=True, out_dtype=torch.float64), q)


@given(fmt_and_values(), st.sampled_from(["rne", "rtz", "rto"]))
def test_sign_symmetry(fv, rounding):
    fmt, x = fv
    if not fmt.signed:
        return
    q = lp.quantize(x, fmt, rounding, saturate=True, out_dtype=torch.float64)
    qn = lp.quantize(-x, fmt, rounding, saturate=True, out_dtype=torch.float64)
    assert torch.equal(qn, -q)
    qu = lp.quantize(x, fmt, "rup", saturate=True, out_dtype=torch.float64)
    assert torch.equal(lp.quantize(-x, fmt, "rdown", saturate=True, out_dtype=torch.float64), -qu)


@given(fmt_and_values(), st.sampled_from(DIRECTED))
def test_error_bounds(fv, rounding):
    """|q - x| <= 1/2 ulp (rne) or < 1 ulp (directed, rto) within range; ulp from the neighbours."""
    fmt, x = fv
    x = x.double()
    x = x[x.abs() <= fmt.max]
    if not fmt.subnormals:
        x = x[(x.abs() >= fmt.min_normal) | (x == 0)]
    lo = lp.quantize(x, fmt, "rdown", out_dtype=torch.float64)
    hi = lp.quantize(x, fmt, "rup", out_dtype=torch.float64)
    assert ((lo <= x) & (x <= hi)).all()
    q = lp.quantize(x, fmt, rounding, out_dtype=torch.float64)
    gap = hi - lo
    err = (q - x).abs()
    if rounding == "rne":
        assert (err <= gap / 2).all()
    else:
        assert ((q == lo) | (q == hi)).all() and (err <= gap).all()


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="floating-point"):
        lp.quantize(torch.arange(4), "e4m3")
    with pytest.raises(TypeError, match="floating-point"):
        lp.encode(np.arange(4), "e4m3")
    with pytest.raises(ValueError, match="unknown rounding 'nearest_odd'"):
        lp.encode(torch.ones(2), "e4m3", "nearest_odd")
    with pytest.raises(TypeError):
        lp.encode(torch.ones(2), "e4m3", "rne", True)  # saturate is keyword-only
    with pytest.raises(ValueError, match="out of range"):
        lp.decode(torch.tensor([256]), "e4m3")
    with pytest.raises(ValueError, match="out of range"):
        lp.decode(torch.tensor([16]), "e2m1")
    with pytest.raises(TypeError, match="integer codes"):
        lp.decode(torch.tensor([1.0]), "e4m3")
    with pytest.raises(ValueError, match="no NaN"):
        lp.encode(torch.tensor([np.nan]), "e2m1")
    with pytest.raises(ValueError, match="unsigned"):
        lp.encode(torch.tensor([-1.0]), "e8m0")
    with pytest.raises(ValueError, match="no zero"):
        lp.encode(torch.tensor([0.0]), "e8m0")
    with pytest.raises(ValueError, match="random_bits"):
        lp.encode(torch.ones(3), "e4m3", "stochastic", random_bits=torch.tensor([0, 1, 512]), sr_bits=8)
    with pytest.raises(ValueError, match="shape"):
        lp.encode(torch.ones(3), "e4m3", "stochastic", random_bits=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sr_bits"):
        lp.encode(torch.ones(3), "e4m3", "stochastic", sr_bits=40)


# ---- the exact-arithmetic scalar reference agrees with the vectorised encoder -------------------
@given(st.data())
def test_round_exact_matches_vectorised(data):
    from fractions import Fraction

    from lowprec.rounding import round_exact
    fmt = data.draw(formats(max_bits=22))
    rounding = data.draw(st.sampled_from(DIRECTED))
    sat = data.draw(st.booleans())
    vals = data.draw(st.lists(float32_near_grid(fmt, allow_special=False), min_size=1, max_size=20))
    vals = [v for v in vals if v != 0] or [1.0]  # a Fraction has no signed zero; zeros are tested above
    ours = lp.quantize(torch.tensor(vals, dtype=torch.float64), fmt, rounding, saturate=sat, out_dtype=torch.float64)
    ref = np.array([round_exact(Fraction(v), fmt, rounding, saturate=sat) for v in vals])
    assert same_bits(ours.numpy(), ref).all()


# ---- backend="auto" (torch's cast where it gives the same bits) == eager ---------------------------
AUTO_FORMATS = sorted(lp.rounding.TORCH_CASTS, key=lambda f: f.name)
F32_NANS = [0x7FC00000, 0x7F800001, 0x7FBFFFFF, 0x7FFFFFFF, 0x7FC00001, 0xFFC00000, 0xFF800001, 0xFFFFFFFF]


def _f32(bits: list[int] | torch.Tensor) -> torch.Tensor:
    """float32 values of 32-bit patterns (ints in [0, 2^32))."""
    b = torch.as_tensor(bits, dtype=torch.int64)
    return torch.where(b >= 1 << 31, b - (1 << 32), b).to(torch.int32).view(torch.float32)


def _auto_boundaries(fmt: FloatFormat) -> torch.Tensor:
    """Every float32 within 2 ulps of a rounding decision of ``fmt``, both signs: every value, every midpoint
    of adjacent values, the overflow midpoint above max, half the smallest subnormal, 0; then +-0, +-Inf,
    the float32 extremes and NaNs with assorted payloads and signs."""
    lo, hi, _, _ = _neighbours(fmt)
    ulp_max = 2.0 ** (fmt.emax - fmt.mbits)
    points = torch.cat([lo, hi, (lo + hi) / 2, torch.tensor([fmt.max + ulp_max / 2, fmt.min_subnormal / 2])])
    assert torch.equal(points.float().double(), points)                  # every decision point is a float32
    bits = points.float().view(torch.int32).long().unique()
    near = (bits[:, None] + torch.arange(-2, 3)).flatten().clamp(0, 0x7F800000).unique()
    special = [0x7F800000, 0x7F7FFFFF, 0x00000001, 0x007FFFFF, 0x00800000, *F32_NANS]
    mags = torch.cat([near, torch.tensor(special)])
    return _f32(torch.cat([mags, mags | (1 << 31)]))


def _same_codes_and_values(x: torch.Tensor, fmt: FloatFormat, saturate: bool,
                           out_dtypes: tuple[torch.dtype | None, ...] = (None,)) -> None:
    """encode and quantize (to each of ``out_dtypes``) by backend="auto" equal eager, every bit."""
    assert torch.equal(lp.encode(x, fmt, saturate=saturate), lp.encode(x, fmt, saturate=saturate, backend="eager"))
    for out_dtype in out_dtypes:
        a = lp.quantize(x, fmt, saturate=saturate, out_dtype=out_dtype)
        e = lp.quantize(x, fmt, saturate=saturate, out_dtype=out_dtype, backend="eager")
        view = {torch.float64: torch.int64, torch.float32: torch.int32}.get(a.dtype, torch.int16)
        assert a.dtype == e.dtype and torch.equal(a.view(view), e.view(view)), out_dtype


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("fmt", AUTO_FORMATS, ids=_ids(AUTO_FORMATS))
def test_auto_equals_eager_on_every_boundary(fmt, saturate):
    """float32 near every rounding boundary and special value; other layouts (strided, 2-D, offset, one by
    one: torch's other loops) on the whole set for 8-bit formats, on 20k of its values for 16-bit ones."""
    assert lp.rounding.torch_cast_dtype(torch.ones(1), fmt, "rne") is lp.rounding.TORCH_CASTS[fmt]
    x = _auto_boundaries(fmt)
    _same_codes_and_values(x, fmt, saturate, (None, torch.float64, torch.float16))
    x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:20_000]]
    _same_codes_and_values(torch.stack([x, -x], 1)[:, 0], fmt, saturate)           # non-contiguous
    _same_codes_and_values(x[: x.numel() // 8 * 8].view(8, -1).t(), fmt, saturate)
    _same_codes_and_values(x[1:], fmt, saturate)                                    # another vector alignment
    for v in x[:50]:
        _same_codes_and_values(v.reshape(1), fmt, saturate)                        # scalar loops
        _same_codes_and_values(v.reshape(()), fmt, saturate)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_auto_equals_eager_on_every_half_precision_input(dtype):
    """All 2^16 float16 / bfloat16 bit patterns (NaNs included), to every format auto casts to."""
    x = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype)
    for fmt in AUTO_FORMATS:
        for saturate in (False, True):
            _same_codes_and_values(x, fmt, saturate)


@pytest.mark.parametrize("fmt", AUTO_FORMATS, ids=_ids(AUTO_FORMATS))
def test_auto_special_values_anywhere_in_a_large_tensor(fmt):
    """One NaN (payloads, either sign), Inf or overflowing value at any vector lane of a large tensor, or
    alone in a 0-dim tensor, takes the lab's rule; empty and in-range tensors too."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1029, generator=g) * min(fmt.max / 8, 1e4)
    threshold = lp.rounding._overflow_threshold(fmt)                 # the smallest float32 that overflows
    below, at = lp.quantize(torch.tensor([np.nextafter(np.float32(threshold), np.float32(0)), threshold]), fmt,
                            backend="eager").tolist()
    assert below == fmt.max and not np.isfinite(at)
    bad = [*_f32([0x7FC00000, 0xFF800001, 0x7FFFFFFF]).tolist(), np.inf, -np.inf, threshold, -threshold,
           float(np.nextafter(np.float32(threshold), np.float32(0)))]
    for saturate in (False, True):
        _same_codes_and_values(torch.empty(0), fmt, saturate)
        _same_codes_and_values(base, fmt, saturate)
        for v in bad:
            _same_codes_and_values(torch.tensor(v, dtype=torch.float32), fmt, saturate)     # 0-dim
        for pos in (0, 7, 8, 15, 16, 1028):
            for v in bad:
                x = base.clone()
                x[pos] = v
                _same_codes_and_values(x, fmt, saturate)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64), st.sampled_from(AUTO_FORMATS), st.booleans())
def test_auto_equals_eager_on_random_bit_patterns(bits, fmt, saturate):
    _same_codes_and_values(_f32(bits), fmt, saturate, (None, torch.float64))


def test_auto_takes_eager_where_torch_would_differ():
    """float64 (torch double-rounds through float32), other modes and formats: the eager encoder."""
    x = torch.ones(3)
    rule = lp.rounding.torch_cast_dtype
    assert rule(x.double(), lp.get_format("e4m3"), "rne") is None
    assert rule(x, lp.get_format("e4m3"), "rna") is None
    assert rule(x, lp.get_format("e2m1"), "rne") is None
    x64 = torch.tensor([1.0 + 1 / 16 + 2.0**-40], dtype=torch.float64)   # above an E4M3 tie only in float64
    assert lp.encode(x64, "e4m3").item() == lp.encode(x64, "e4m3", backend="eager").item() == 0x39
    with pytest.raises(ValueError, match="unknown backend"):
        lp.quantize(x, "e4m3", backend="fast")
