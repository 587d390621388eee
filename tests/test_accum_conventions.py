"""Issue 12, part 2: the zero convention, overflow of a truncated result and the NaN bits of the output
(``AccumulatorModel.zero_exponent``, ``overflow``, ``nan_output``; SPEC 2b). Closed forms from the
hardware description show what each option does; hypothesis shows that the scalar Fraction reference,
the vectorised torch path and the native C build agree bit for bit, NaN bits included."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_accum import reference_matmul

import lowprec as lp
from lowprec.accum import CANONICAL_NAN32, AccumulatorModel

FLT_MAX = 3.4028234663852886e38
NATIVE_OK = lp.accum.native_unsupported(lp.get_accumulator("hopper_fp8"), torch.device("cpu")) is None


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.float().contiguous().view(torch.int32)


def implementations(model: AccumulatorModel) -> list[str]:
    native = lp.accum.native_unsupported(model, torch.device("cpu")) is None
    return ["reference", "eager", *(["native"] if native else [])]


def compute(impl: str, a: torch.Tensor, b: torch.Tensor, model: AccumulatorModel,
            c: torch.Tensor | None = None) -> torch.Tensor:
    if impl == "reference":
        return reference_matmul(a, b, model, c)
    return lp.emulated_matmul(a, b, model, c, backend=impl)


def skip_zeros(name: str) -> AccumulatorModel:
    return replace(lp.get_accumulator(name), name=f"{name}/skip_zeros", zero_exponent=None)


# ---- the zero convention: closed forms ------------------------------------------------------------
BF16_TF32 = ["ampere_bf16", "hopper_bf16", "ampere_tf32", "hopper_tf32"]


@pytest.mark.parametrize("name", BF16_TF32)
def test_zero_next_to_a_huge_co_operand_truncates_the_group(name):
    """0 x 2^121 is the term 0 * 2^(-126 + 121): E = -5, so two products of 2^-38 (33 binades below E,
    more than the 24/25 bits kept) are truncated away; without the convention they sum to 2^-37."""
    a = torch.tensor([[0.0, 2.0**-19, 2.0**-19]])
    b = torch.tensor([[2.0**121], [2.0**-19], [2.0**-19]])
    model = lp.get_accumulator(name)
    for impl in implementations(model):
        assert bits(compute(impl, a, b, model)).item() == 0
        assert compute(impl, a, b, skip_zeros(name)).item() == 2.0**-37


def rz_fp32_subnormal(v: Fraction) -> float:
    """v (0 <= v < 2^-126) truncated to float32's subnormal grid 2^-149."""
    q = Fraction(2) ** -149
    return float(math.floor(v / q) * q)


@pytest.mark.parametrize("name", BF16_TF32)
def test_a_zero_c_lifts_e_to_minus_126_when_every_product_is_tiny(name):
    """Products (1 + 3/128)(1 + 5/128) 2^-140 below 2^-126: a zero C is the term 0 * 2^-126, so each
    product is truncated to a multiple of 2^(-126 - f) before the exact sum; without the convention
    E = -140 keeps them whole. The float32 subnormal result differs by one ulp (closed forms)."""
    model = lp.get_accumulator(name)
    K, f = min(model.group_size, 8), model.align_bits
    sa, sb = 1 + 3 / 128, 1 + 5 / 128
    a, b = torch.full((1, K), sa * 2.0**-70), torch.full((K, 1), sb * 2.0**-70)
    p, q = Fraction(sa) * Fraction(sb) * Fraction(2) ** -140, Fraction(2) ** (-126 - f)
    with_zero_term = rz_fp32_subnormal(K * math.floor(p / q) * q)
    without = rz_fp32_subnormal(K * p)
    assert with_zero_term != without
    for impl in implementations(model):
        assert compute(impl, a, b, model).item() == with_zero_term
        assert compute(impl, a, b, skip_zeros(name)).item() == without


def test_a_zero_accumulator_term_on_the_native_path():
    """The same lift through the C build's zero accumulator term: of the <= 8-bit formats the native
    backend takes, only E8M0 has products below 2^-126. 2^-70 x 2^-70 = 2^-140 under a zero C at
    2^-127 keeps 5 bits down to 2^-132 and vanishes (+0); with zero terms taking no part it stays."""
    model = AccumulatorModel("e8m0_tiny", ("e8m0", "e8m0"), group_size=4, align_bits=5, acc_format="fp32",
                             zero_exponent=-127)
    a, b = torch.tensor([[2.0**-70]]), torch.tensor([[2.0**-70]])
    assert "native" in implementations(model) or not NATIVE_OK
    for impl in implementations(model):
        assert bits(compute(impl, a, b, model)).item() == 0
        assert compute(impl, a, b, replace(model, zero_exponent=None)).item() == 2.0**-140


@pytest.mark.parametrize("name", ["hopper_fp8", "ada_fp8", "hopper_fp8_promoted"])
def test_fp8_zero_convention_shows_only_through_a_tiny_c(name):
    """With FP8 operands a zero product ranks at most 2^(-126 + 8) (0 x 448): never above a real product
    (>= 2^-18), so only a C below 2^-118 can feel it. C = 2^-126 (1 + 2^-13) then loses its last bit
    (aligned to E = -118 with 13 bits); without the convention it is exact; C = 0.5 is exact in both."""
    model = lp.get_accumulator(name)
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[448.0], [0.0]])
    tiny, half = torch.tensor([[2.0**-126 * (1 + 2.0**-13)]]), torch.tensor([[0.5]])
    for impl in implementations(model):
        got = compute(impl, a, b, model, tiny).item()
        assert got == (2.0**-126 if not model.promote_every else tiny.item())   # promotion: C stays outside
        assert compute(impl, a, b, skip_zeros(name), tiny).item() == tiny.item()
        assert compute(impl, a, b, model, half).item() == 0.5


# ---- overflow of a truncated result --------------------------------------------------------------
@pytest.mark.parametrize("name", ["hopper_bf16", "ampere_tf32"])
def test_a_truncated_result_reaching_2_to_128_is_inf(name):
    """C = FLT_MAX plus 2^104 is exactly 2^128: Inf under ``overflow="inf"`` (SPEC 2b), FLT_MAX under
    IEEE round-toward-zero; plus 2^103 the truncated value stays FLT_MAX under both; signs mirror."""
    model = lp.get_accumulator(name)
    ieee = replace(model, overflow="ieee")
    c = torch.tensor([[FLT_MAX, -FLT_MAX]])
    a = torch.tensor([[1.0]])
    for impl in implementations(model):
        assert compute(impl, a, torch.tensor([[2.0**104, -(2.0**104)]]), model, c).tolist() == [[math.inf, -math.inf]]
        assert compute(impl, a, torch.tensor([[2.0**104, -(2.0**104)]]), ieee, c).tolist() == [[FLT_MAX, -FLT_MAX]]
        for m in (model, ieee):
            assert compute(impl, a, torch.tensor([[2.0**103, -(2.0**103)]]), m, c).tolist() == [[FLT_MAX, -FLT_MAX]]


FP16_ACC_RZ = AccumulatorModel("fp8_fp16acc_rz", group_size=8, acc_format="fp16", acc_rounding="rtz")


def test_overflow_option_in_a_narrow_accumulator_on_every_implementation():
    """448 x 448 = 200704 >= 2^16 in an fp16 accumulator truncated toward zero: Inf, or 65504 (IEEE);
    448 x 144 = 64512 is below 2^16 and stays in both. The native build covers this model."""
    a = torch.tensor([[448.0], [-448.0]])
    b = torch.tensor([[448.0, 144.0]])
    for impl in implementations(FP16_ACC_RZ):
        assert compute(impl, a, b, FP16_ACC_RZ).tolist() == [[math.inf, 64512.0], [-math.inf, -64512.0]]
        assert compute(impl, a, b, replace(FP16_ACC_RZ, overflow="ieee")).tolist() == [[65504.0, 64512.0],
                                                                                    [-65504.0, -64512.0]]
    assert "native" in implementations(FP16_ACC_RZ) or not NATIVE_OK


# ---- NaN bits of the output ----------------------------------------------------------------------
def test_nan_results_are_canonical_or_ieee():
    """Inf x 0, Inf - Inf, a negative NaN input: 0x7FFFFFFF on the NVIDIA presets; NaN (any bits) with
    ``nan_output="ieee"``; finite entries of the same call untouched."""
    neg_nan = struct.unpack("<f", struct.pack("<I", 0xFFC00001))[0]
    a = torch.tensor([[math.inf, 0.0], [math.inf, -math.inf], [neg_nan, 1.0], [1.0, 2.0]])
    b = torch.tensor([[0.0], [1.0]])
    b2 = torch.tensor([[1.0], [1.0]])
    for model in (lp.get_accumulator("hopper_fp8"), lp.get_accumulator("hopper_fp8_promoted")):
        for impl in implementations(model):
            out = torch.cat([compute(impl, a[:1], b, model), compute(impl, a[1:], b2, model)])
            assert bits(out[:3]).tolist() == [[CANONICAL_NAN32]] * 3
            assert out[3].item() == 3.0
            ieee = torch.cat([compute(impl, a[:1], b, replace(model, nan_output="ieee")),
                              compute(impl, a[1:], b2, replace(model, nan_output="ieee"))])
            assert ieee[:3].isnan().all() and ieee[3].item() == 3.0


def test_nan_from_inf_accumulators_in_promotion_is_canonical():
    """+Inf block then -Inf block (fp16 inner accumulator overflows): Inf + -Inf in the FP32 promotion."""
    model = AccumulatorModel("g16_promote32", group_size=16, promote_every=32, acc_format="fp16", acc_rounding="rne")
    a = torch.full((1, 64), 448.0)
    a[0, 32:] = -448.0
    b = torch.full((64, 1), 448.0)
    for impl in implementations(model):
        assert bits(compute(impl, a, b, model)).item() == CANONICAL_NAN32
        assert compute(impl, a, b, replace(model, nan_output="ieee")).isnan().item()


# ---- reference, vectorised and native agree (hypothesis) -------------------------------------------
def edge_values(fmt_name: str) -> list[float]:
    f = lp.formats.get_format(fmt_name)
    return [0.0, f.min_subnormal, f.min_normal, f.max, 2.0**f.emax, 1.0, 1.5]


@st.composite
def edge_operands(draw: st.DrawFn, model: AccumulatorModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Operands mixing zeros, subnormals and the largest values (zeros next to huge co-operands, tiny
    products), optionally with an exact cancellation (second half of K = minus the first), and a C
    that is zero, tiny (< 2^-118), ordinary or near FLT_MAX."""
    fa, fb = model.input_formats
    M, N = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    K = draw(st.integers(1, 2 * min(model.group_size, 16) + 1))

    def element(fmt: str) -> st.SearchStrategy[float]:
        f = lp.formats.get_format(fmt)
        general = st.builds(lambda m, e: m * 2.0**e, st.floats(1, 2), st.integers(f.emin - f.mbits, f.emax))
        return st.builds(lambda v, neg: -v if neg else v,
                         st.one_of(st.sampled_from(edge_values(fmt)), general), st.booleans())

    a = torch.tensor(draw(st.lists(element(fa), min_size=M * K, max_size=M * K))).reshape(M, K)
    b = torch.tensor(draw(st.lists(element(fb), min_size=K * N, max_size=K * N))).reshape(K, N)
    if K > 1 and draw(st.booleans()):
        h = K // 2
        a[:, K - h:], b[K - h:] = -a[:, :h].flip(1), b[:h].flip(0)
    c_value = st.one_of(st.just(0.0), st.sampled_from([2.0**-140, 2.0**-126 * 1.25, FLT_MAX, 3e38]),
                        st.floats(-1e6, 1e6, width=32))
    c = torch.tensor(draw(st.lists(c_value, min_size=M * N, max_size=M * N)), dtype=torch.float32).reshape(M, N)
    return lp.quantize(a, fa, saturate=True).float(), lp.quantize(b, fb, saturate=True).float(), c


AGREE = [
    lp.get_accumulator("ampere_bf16"), replace(skip_zeros("ampere_bf16"), overflow="ieee"),
    lp.get_accumulator("hopper_tf32"), replace(lp.get_accumulator("volta_fp16"), nan_output="ieee"),
    lp.get_accumulator("blackwell_fp8"), lp.get_accumulator("hopper_fp8"), skip_zeros("hopper_fp8_promoted"),
    FP16_ACC_RZ, replace(FP16_ACC_RZ, name="fp8_fp16acc_rz/ieee_skip_rdown", overflow="ieee", zero_exponent=None,
                                   align_rounding="rdown"),
]


@pytest.mark.parametrize("model", AGREE, ids=[m.name for m in AGREE])
@given(data=st.data())
def test_reference_vectorised_and_native_agree_on_edge_cases(model, data):
    a, b, c = data.draw(edge_operands(model))
    want = reference_matmul(a, b, model, c)
    for impl in implementations(model)[1:]:
        got = compute(impl, a, b, model, c)
        if model.nan_output == "canonical":
            assert torch.equal(bits(got), bits(want)), (impl, got, want)
        else:
            assert torch.equal(got.isnan(), want.isnan())
            assert torch.equal(bits(got)[~got.isnan()], bits(want)[~want.isnan()]), (impl, got, want)


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(zero_exponent=1.5), TypeError, "zero_exponent"), (dict(zero_exponent=True), TypeError, "zero_exponent"),
    (dict(zero_exponent=-5), ValueError, "zero_exponent"), (dict(zero_exponent=-600), ValueError, "float64"),
    (dict(nan_output="quiet"), ValueError, "nan_output"), (dict(overflow="saturate"), ValueError, "overflow"),
])
def test_bad_convention_options_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        AccumulatorModel("bad", **kwargs)


def test_presets_follow_the_hardware_and_the_references_ieee():
    """NVIDIA units follow SPEC 2b (the zero convention, canonical NaN, Inf on overflow); the references and the
    AMD units (for which SPEC 2b states neither: the lab's documented choice) follow IEEE."""
    for m in lp.list_accumulators():
        ieee_reference = m.name in ("exact", "fp32_sequential") or m.name.startswith("cdna")
        assert m.zero_exponent == (None if ieee_reference else -126), m.name
        assert (m.nan_output, m.overflow) == (("ieee", "ieee") if ieee_reference else ("canonical", "inf")), m.name


@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_a_nan_elsewhere_leaves_an_overflowing_dot_product_to_the_model(backend):
    """Step 7 is per dot product: a NaN in row 1 of a must not hand row 0's overflow (the model's truncation
    gives -inf there: -2^130 survives, 2^100 is cut) to IEEE's float64 sum (+inf)."""
    a = torch.zeros(2, 32)
    b = torch.zeros(32, 1)
    a[0, 0], b[0, 0] = -(2.0**65), 2.0**65
    a[0, 16] = b[16, 0] = 2.0**100
    a[1, 0] = math.nan
    out = lp.emulated_matmul(a, b, "hopper_bf16", backend=backend)
    want = lp.reference_dot(a[0].tolist(), b[:, 0].tolist(), "hopper_bf16")
    assert out[0, 0].item() == want
    assert math.isnan(out[1, 0].item())
