"""Format descriptions: the published constants (OCP OFP8 / MX v1.0, IEEE 754), names, bad formats."""

import math

import pytest

import lowprec as lp
from lowprec.formats import FloatFormat

# (name, bits, max, min normal, min subnormal) as stated in the OCP and IEEE specifications
PUBLISHED = [
    ("e4m3fn", 8, 448.0, 2.0**-6, 2.0**-9),
    ("e5m2", 8, 57344.0, 2.0**-14, 2.0**-16),
    ("e4m3fnuz", 8, 240.0, 2.0**-7, 2.0**-10),
    ("e5m2fnuz", 8, 57344.0, 2.0**-15, 2.0**-17),
    ("e8m0", 8, 2.0**127, 2.0**-127, 2.0**-127),
    ("e2m3", 6, 7.5, 1.0, 0.125),
    ("e3m2", 6, 28.0, 0.25, 0.0625),
    ("e2m1", 4, 6.0, 1.0, 0.5),
    ("bf16", 16, 3.3895313892515355e38, 2.0**-126, 2.0**-133),
    ("fp16", 16, 65504.0, 2.0**-14, 2.0**-24),
    ("tf32", 19, 3.4011621342146535e38, 2.0**-126, 2.0**-136),
    ("e8m13", 22, (2 - 2.0**-13) * 2.0**127, 2.0**-126, 2.0**-139),
]


@pytest.mark.parametrize("name,bits,vmax,vmin_normal,vmin_sub", PUBLISHED)
def test_published_constants(name, bits, vmax, vmin_normal, vmin_sub):
    f = lp.get_format(name)
    assert (f.bits, f.max, f.min_normal, f.min_subnormal) == (bits, vmax, vmin_normal, vmin_sub)


def test_special_value_flags():
    e4m3, e5m2, fnuz, e8m0, e2m1 = (lp.get_format(n) for n in ("e4m3", "e5m2", "e4m3fnuz", "e8m0", "e2m1"))
    assert (e4m3.has_inf, e4m3.has_nan, e4m3.nan_code, e4m3.has_negative_zero) == (False, True, 0x7F, True)
    assert (e5m2.has_inf, e5m2.inf_code, e5m2.nan_code) == (True, 0x7C, 0x7E)
    assert (fnuz.nan_code, fnuz.has_negative_zero) == (0x80, False)
    assert (e8m0.signed, e8m0.has_zero, e8m0.nan_code) == (False, False, 0xFF)
    assert not e2m1.has_nan and not e2m1.has_inf


@pytest.mark.parametrize("alias,name", [
    ("e4m3", "e4m3fn"), ("float8_e4m3fn", "e4m3fn"), ("FP8_E4M3", "e4m3fn"), ("float8_e5m2", "e5m2"),
    ("fp22", "e8m13"), ("bfloat16", "bf16"), ("float16", "fp16"), ("fp4", "e2m1"), ("ue8m0", "e8m0"),
    ("float8_e8m0fnu", "e8m0"), ("float6_e3m2fn", "e3m2"), ("float8_e4m3fnuz", "e4m3fnuz")])
def test_aliases(alias, name):
    assert lp.get_format(alias).name == name


def test_custom_exmy():
    f = lp.get_format("e3m4")
    assert (f.ebits, f.mbits, f.bias, f.special, f.bits) == (3, 4, 3, "ieee", 8)
    assert f.max == (2 - 2.0**-4) * 2.0**3            # top binade reserved for Inf/NaN
    g = lp.get_format("e3m4fn")
    assert g.max == (2 - 2 * 2.0**-4) * 2.0**4
    h = lp.get_format("e4m3fnuz")
    assert lp.get_format("e4m3FNUZ") == h


@pytest.mark.parametrize("kwargs,match", [
    (dict(ebits=0, mbits=3, bias=0, special="ieee"), "exponent bit"),
    (dict(ebits=1, mbits=3, bias=0, special="ieee"), "Inf and NaN"),
    (dict(ebits=8, mbits=30, bias=127), "at most 32"),
    (dict(ebits=4, mbits=3, bias=7, special="weird"), "special-value"),
    (dict(ebits=4, mbits=3, bias=7, special="fnuz", signed=False), "sign bit"),
    (dict(ebits=4, mbits=3, bias=7, has_zero=False), "has_zero"),
])
def test_impossible_formats(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FloatFormat("bad", **kwargs)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown format 'e4m3x'"):
        lp.get_format("e4m3x")
    with pytest.raises(TypeError):
        lp.get_format(8)


def test_registry_lists_each_format_once():
    names = [f.name for f in lp.list_formats()]
    assert len(names) == len(set(names)) and {"e4m3fn", "e5m2", "e8m13", "tf32"} <= set(names)
    assert math.isclose(lp.get_format("tf32").max, lp.get_format("fp32").max, rel_tol=2**-10)
