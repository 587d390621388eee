"""Issue 12, part 3: every matrix unit of SPEC 2b as a preset. For each new structure -- fp16 outputs, mixed
operand formats, block-scaled fused sums (Blackwell mxf8f6f4), chunked block-scaled sums (mxf4nvf4: MXFP4 and
NVFP4), AMD CDNA3's split sums and CDNA1/2's FMA trees -- closed forms worked by hand from SPEC 2b's rules pin the
behaviour, and hypothesis checks that the scalar Fraction reference and the vectorised emulation agree bit for bit
on every preset (zeros next to huge values, tiny products, cancellation, NaN/Inf, NaN scales)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lowprec as lp
from lowprec.accum import AccumulatorModel, BlockScale, ChunkSum, FmaTree, FusedSum, SplitSum


def emulate(model, a, b, c=None, **kw) -> float:
    """One output element (1 x K times K x 1), by the vectorised emulation and the scalar reference, which must
    agree bit for bit; returns the value."""
    a_t, b_t = torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32).T.contiguous()
    sc = {}
    if "a_scales" in kw:
        sc = {"a_scales": torch.tensor([kw["a_scales"]]), "b_scales": torch.tensor([kw["b_scales"]]).T.contiguous()}
    c_t = None if c is None else torch.tensor([[c]], dtype=torch.float32)
    got = lp.emulated_matmul(a_t, b_t, model, c_t, **sc).item()
    ref = lp.reference_dot(a, b, model, 0.0 if c is None else c, **kw)
    assert struct_bits(got) == struct_bits(ref), (got, ref)
    return got


def struct_bits(v: float) -> int:
    return torch.tensor(v, dtype=torch.float32).view(torch.int32).item()


# ---- fp16 outputs (SPEC 2b: "fp16 output -> RNE to fp16", canonical NaN 0x7FFF) ---------------------------
@pytest.mark.parametrize("name", ["volta_fp16_f16acc", "ampere_fp16_f16acc", "hopper_fp16_f16acc",
                                  "hopper_fp8_f16acc", "ada_fp8_f16acc"])
def test_fp16_output_rounds_to_nearest_even_fp16(name):
    """fp16's ulp at 1 is 2^-10. 1 + 2^-11 is a tie: to even, 1. 1 + 3 * 2^-11 is a tie between 1 + 2^-10 and
    1 + 2^-9: to even, 1 + 2^-9 (toward zero, as the fp32-output presets: 1 + 2^-10). 2^-8 * 2^-3 = 2^-11 is a
    product of every input format here, and is kept by every alignment (>= 13 bits)."""
    model = lp.get_accumulator(name)
    assert (model.acc_format, model.acc_rounding) == ("fp16", "rne")
    assert emulate(model, [1.0, 2.0**-8], [1.0, 2.0**-3]) == 1.0
    assert emulate(model, [1.0, 2.0**-8, 2.0**-7], [1.0, 2.0**-3, 2.0**-3]) == 1 + 2.0**-9


def test_fp16_output_overflows_and_nans_as_fp16():
    """65504 + 16 = 65520 is fp16's overflow tie: Inf. A NaN input gives fp16's canonical NaN 0x7FFF (float32
    0x7FFFE000, which narrows to 0x7FFF)."""
    model = lp.get_accumulator("hopper_fp16_f16acc")
    assert emulate(model, [65504.0, 16.0], [1.0, 1.0]) == math.inf
    out = lp.emulated_matmul(torch.tensor([[math.nan, 1.0]]), torch.ones(2, 1), model)
    assert out.view(torch.int32).item() == 0x7FFFE000
    assert out.half().view(torch.int16).item() == 0x7FFF


# ---- mixed operand formats ----------------------------------------------------------------------------
def test_mixed_e4m3_e5m2_said_in_the_call():
    """b = 57344 (E5M2's max, not an E4M3 value) is refused by hopper_fp8 and accepted with
    input_formats=("e4m3fn", "e5m2") or the mixed preset; 2^-16 (an E5M2 subnormal) splits as E5M2 (emin -14)."""
    a, b = torch.tensor([[1.0, 1.0]]), torch.tensor([[57344.0], [2.0**-16]])
    with pytest.raises(ValueError, match="not e4m3fn values"):
        lp.emulated_matmul(a, b, "hopper_fp8")
    got = lp.emulated_matmul(a, b, "hopper_fp8", input_formats=("e4m3fn", "e5m2"))
    assert torch.equal(got, lp.emulated_matmul(a, b, "hopper_fp8_e4m3_e5m2"))
    assert got.item() == 57344.0                     # 2^-16 is 2^-31.8 below: truncated (13 bits)
    with pytest.raises(ValueError, match="not e4m3fn values"):
        lp.emulated_matmul(b.T.contiguous(), a.T.contiguous(), "hopper_fp8_e4m3_e5m2")


# ---- Blackwell kind::mxf8f6f4: E8M0 scale exponents inside the fused step -------------------------------
MXF8 = lp.get_accumulator("blackwell_mxf8f6f4")


def test_mx_scale_exponents_add_inside_the_step():
    """1.5 * 1.5 with scales 2^100 and 2^-50: 2.25 * 2^50 exactly. An E4M3 subnormal 2^-9 with scale 2^-120:
    2^-129, below E4M3 and float32's normal range -- pre-scaling the operand could not hold it; float32 RZ
    keeps it (a float32 subnormal, 2^-149 granularity)."""
    assert emulate(MXF8, [1.5], [1.5], a_scales=[2.0**100], b_scales=[2.0**-50]) == 2.25 * 2.0**50
    assert emulate(MXF8, [2.0**-9], [1.0], a_scales=[2.0**-120], b_scales=[1.0]) == 2.0**-129


def test_each_block_takes_its_own_scale():
    """K = 64, two blocks of 32: 1 * 1 in each, scales (1, 1) and (2^20, 2^-5): 1 + 2^15."""
    a, b = [1.0] + [0.0] * 31 + [1.0] + [0.0] * 31, [1.0] * 64
    assert emulate(MXF8, a, b, a_scales=[1.0, 2.0**20], b_scales=[1.0, 2.0**-5]) == 1 + 2.0**15


def test_a_large_scaled_block_truncates_the_accumulator_in_the_same_step():
    """C = 1 + 2^-20 (float32) and products 1 and -1 with scales 2^24 * 1: E = 24, so C is aligned to 25 bits below
    2^24, multiples of 2^-1: C contributes 1 (its 2^-20 truncated), the products cancel: 1. (Exact: 1 + 2^-20, a
    float32; without the scale E = 0 and C survives whole.)"""
    assert emulate(MXF8, [1.0, -1.0], [1.0, 1.0], c=1 + 2.0**-20, a_scales=[2.0**24], b_scales=[1.0]) == 1.0
    assert emulate(MXF8, [1.0, -1.0], [1.0, 1.0], c=1 + 2.0**-20, a_scales=[1.0], b_scales=[1.0]) == 1 + 2.0**-20


def test_a_nan_scale_makes_its_outputs_nan():
    a, b = torch.ones(2, 32), torch.ones(32, 1)
    out = lp.emulated_matmul(a, b, MXF8, a_scales=torch.tensor([[1.0], [math.nan]]), b_scales=torch.ones(1, 1))
    assert out[0].item() == 32.0 and out[1].view(torch.int32).item() == 0x7FFFFFFF


@pytest.mark.parametrize("kwargs,match", [
    ({}, "pass a_scales and b_scales"),
    ({"a_scales": torch.ones(1, 2), "b_scales": torch.ones(1, 1)}, r"a_scales must have shape \(1, 1\)"),
    ({"a_scales": torch.full((1, 1), 3.0), "b_scales": torch.ones(1, 1)}, "not e8m0 scales"),
    ({"a_scales": torch.ones(1, 1, dtype=torch.int32), "b_scales": torch.ones(1, 1)}, "floating-point"),
])
def test_bad_block_scales_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lp.emulated_matmul(torch.ones(1, 32), torch.ones(32, 1), MXF8, **kwargs)


def test_scales_for_a_model_without_block_scaling_are_refused():
    with pytest.raises(ValueError, match="not block-scaled"):
        lp.emulated_matmul(torch.ones(1, 32), torch.ones(32, 1), "hopper_fp8", a_scales=torch.ones(1, 1),
                           b_scales=torch.ones(1, 1))


# ---- Blackwell kind::mxf4nvf4: exact 16-element chunk sums times their scales, then 35 bits ---------------
def test_nvfp4_chunk_sum_is_exact_and_scaled_by_both_ue4m3_scales():
    """16 products 0.5 * 0.5 sum to 4; times the UE4M3 scales 1.125 and 1.125: 5.0625 exactly."""
    assert emulate(lp.get_accumulator("blackwell_nvf4"), [0.5] * 16, [0.5] * 16,
                   a_scales=[1.125], b_scales=[1.125]) == 5.0625


@pytest.mark.parametrize("exponent,want", [(-30, 2.0**-30), (-31, 0.0)])
def test_mxfp4_chunk_terms_align_to_35_bits(exponent, want):
    """Chunks 0 and 1 (scales 1) are +36 and -36 (E = 5); chunk 2 (block 1, scales 2^-15 and 2^(exponent+15+2))
    is 0.5 * 0.5 * 2^(exponent + 2) = 2^exponent. 35 bits below 2^5 keep multiples of 2^-30: 2^-30 survives the
    exact cancellation; 2^-31 is truncated to 0 (an exact sum would keep it)."""
    a = [6.0] + [0.0] * 15 + [-6.0] + [0.0] * 15 + [0.5] + [0.0] * 31
    b = [6.0] + [0.0] * 15 + [6.0] + [0.0] * 15 + [0.5] + [0.0] * 31
    got = emulate(lp.get_accumulator("blackwell_mxf4"), a, b, a_scales=[1.0, 2.0**-15],
                  b_scales=[1.0, 2.0 ** (exponent + 17)])
    assert got == want


# ---- AMD CDNA3: split sums ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cdna3_fp16", "cdna3_bf16", "cdna3_xf32"])
def test_cdna3_group_truncates_at_24_bits_relative_to_its_own_exponent(name):
    """1 - 1 + 2^-12 * 2^-13 in one group (of 8, or 4 for xf32): E = 0, 2^-25 is below 24 bits: 0 (exact: 2^-25).
    2^-12 * 2^-12 = 2^-24 is kept."""
    m = lp.get_accumulator(name)
    assert emulate(m, [1.0, -1.0, 2.0**-12], [1.0, 1.0, 2.0**-13]) == 0.0
    assert emulate(m, [1.0, -1.0, 2.0**-12], [1.0, 1.0, 2.0**-12]) == 2.0**-24


def test_cdna3_floors_c_to_24_bits_relative_to_r():
    """C = -(1 + 2^-23), product 2 * 2 (Eg = 2 = R): C floored (toward -inf) to multiples of 2^-22:
    -(1 + 2^-22); 4 - 1 - 2^-22 = 3 - 2^-22, a float32. (Exact then RNE: 3 - 2^-23 is a tie, to even: 3.)"""
    assert emulate(lp.get_accumulator("cdna3_fp16"), [2.0], [2.0], c=-(1 + 2.0**-23)) == 3 - 2.0**-22


def test_cdna3_floors_the_group_sum_to_31_bits_relative_to_r():
    """C = 1 (R = 0); the group 2^-12 * 2^-12 + 2^-16 * 2^-16 = 2^-24 + 2^-32 (exact in its own alignment) is floored
    to multiples of 2^-31: 2^-24. 1 + 2^-24 is a float32 tie: to even, 1. (Keeping 2^-32: 1 + 2^-23.)"""
    assert emulate(lp.get_accumulator("cdna3_fp16"), [2.0**-12, 2.0**-16], [2.0**-12, 2.0**-16], c=1.0) == 1.0


def test_cdna3_fp8_even_and_odd_halves():
    """Products 256, -1.5 * 2^-16, -256 (indices 0, 1, 2). The even half cancels (E = 8); the odd half is exact
    alone, then floored to 24 bits below 2^8, to multiples of 2^-16: -2^-15. One group aligned together would
    truncate toward zero: -2^-16 (exact: -1.5 * 2^-16)."""
    a, b = [16.0, 1.5 * 2.0**-8, 16.0], [16.0, -(2.0**-8), -16.0]
    m = lp.get_accumulator("cdna3_fp8")
    assert emulate(m, a, b) == -(2.0**-15)
    assert emulate(replace(m, structure=SplitSum(31, 24, interleave=1, acc_drop=25)), a, b) == -(2.0**-16)


def test_cdna3_fp8_drops_a_small_c():
    """C = -2^-20 beside 8 * 8 = 64 (R = 6): Ec = -20 < R - 25, so C is dropped: 64. Floored instead (without the
    drop rule) it would be -2^-18: 64 - 2^-18, a float32."""
    m = lp.get_accumulator("cdna3_fp8")
    assert emulate(m, [8.0], [8.0], c=-(2.0**-20)) == 64.0
    assert emulate(replace(m, structure=SplitSum(31, 24, interleave=2)), [8.0], [8.0], c=-(2.0**-20)) == 64 - 2.0**-18


def test_cdna3_fp32_is_one_fma_at_a_time():
    """1 then two 2^-24: each 1 + 2^-24 is a float32 tie, to even: 1 (one fused sum would give 1 + 2^-23)."""
    assert emulate(lp.get_accumulator("cdna3_fp32"), [1.0, 2.0**-24, 2.0**-24], [1.0, 1.0, 1.0]) == 1.0


# ---- AMD CDNA1/2: pairwise FMA trees ------------------------------------------------------------------
def test_cdna_fma_tree_is_pairwise():
    """Products 1, 2^-24, 2^-24, 0: (1 + 2^-24) is a tie, to even: 1; (2^-24 + 0); 1 + 2^-24: 1. Summed exactly
    and rounded once: 1 + 2^-23. 2^-12 * 2^-12 keeps the inputs normal fp16."""
    a, b = [1.0, 2.0**-12, 2.0**-12, 0.0], [1.0, 2.0**-12, 2.0**-12, 0.0]
    for name in ("cdna1_fp16", "cdna2_fp16"):
        assert emulate(lp.get_accumulator(name), a, b) == 1.0
    assert emulate(lp.get_accumulator("fp32_sequential"), a, b) == 1.0     # sequential FMAs: also 1 here
    assert emulate(lp.get_accumulator("ampere_fp16"), a, b) == 1 + 2.0**-23  # one fused step keeps both 2^-24


def test_cdna1_bf16_groups_of_two_meet_c_sooner():
    """C = 1, products 2^-24, 0, 2^-24, 0. Groups of 2 (cdna1_bf16): 1 + 2^-24 -> 1, twice: 1. A tree of 4 sums
    2^-24 + 2^-24 = 2^-23 first: 1 + 2^-23."""
    a = [2.0**-12, 0.0, 2.0**-12, 0.0]
    assert emulate(lp.get_accumulator("cdna1_bf16"), a, a, c=1.0) == 1.0
    assert emulate(lp.get_accumulator("cdna2_bf16"), a, a, c=1.0) == 1 + 2.0**-23


def test_cdna2_flushes_subnormals_and_cdna1_does_not():
    """bf16 2^-70 * 2^-70 = 2^-140, a float32 subnormal: flushed on CDNA2, kept on CDNA1. A subnormal C = 2^-130:
    the same. A subnormal fp16 input 2^-24: flushed on CDNA2 (2^-24 * 1 -> 0)."""
    assert emulate(lp.get_accumulator("cdna2_bf16"), [2.0**-70], [2.0**-70]) == 0.0
    assert emulate(lp.get_accumulator("cdna1_bf16"), [2.0**-70], [2.0**-70]) == 2.0**-140
    assert emulate(lp.get_accumulator("cdna2_bf16"), [0.0], [0.0], c=2.0**-130) == 0.0
    assert emulate(lp.get_accumulator("cdna1_bf16"), [0.0], [0.0], c=2.0**-130) == 2.0**-130
    assert emulate(lp.get_accumulator("cdna2_fp16"), [2.0**-24], [1.0]) == 0.0
    assert emulate(lp.get_accumulator("cdna1_fp16"), [2.0**-24], [1.0]) == 2.0**-24


# ---- configs that cannot hold what has no effect ------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(structure=FmaTree(), align_bits=24, zero_exponent=None), "FmaTree rounds IEEE sums"),
    (dict(structure=FmaTree(), align_bits=None), "FmaTree rounds IEEE sums"),
    (dict(structure=ChunkSum(16), group_size=64, align_bits=35), "ChunkSum needs block_scale"),
    (dict(structure=SplitSum(), align_with_acc=True), "SplitSum aligns the products"),
    (dict(block_scale=BlockScale(32, "ue4m3")), "power-of-two"),
    (dict(instruction_k=48), "instruction_k=48 must be a positive multiple"),
    (dict(structure="fused"), "structure must be one of"),
])
def test_bad_structures_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AccumulatorModel("bad", **kwargs)


def test_block_scales_are_e8m0_or_ue4m3():
    with pytest.raises(ValueError, match="scale_format must be one of"):
        BlockScale(32, "fp16")


# ---- every preset: the scalar reference and the emulation agree (hypothesis) -----------------------------
PRESETS = [m for m in lp.list_accumulators() if m.name != "exact"]


@st.composite
def unit_operands(draw, model: AccumulatorModel):
    fa, fb = model.formats
    K = draw(st.integers(1, 3 * min(model.group_size, 32) + 5))
    M, N = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    kind = draw(st.sampled_from(["normal", "cancel", "wide", "tiny", "zeros_next_to_huge"]))
    a = torch.randn(M, K, generator=g) * 2.0 ** draw(st.integers(-6, 4))
    b = torch.randn(K, N, generator=g) * 2.0 ** draw(st.integers(-6, 4))
    if kind == "cancel" and K > 1:
        b[K // 2:] = -b[: K - K // 2].flip(0)
        a[:, K // 2:] = a[:, : K - K // 2].flip(1)
    elif kind == "wide":
        a = a * torch.exp2(torch.randint(-20, 20, (M, K), generator=g).float())
    elif kind == "tiny":
        a, b = a * 2.0**-30, b * 2.0**-30
    elif kind == "zeros_next_to_huge":
        a[torch.rand(M, K, generator=g) < 0.4] = 0.0
        b[0] = fb.max
    a, b = lp.quantize(a, fa, saturate=True).float(), lp.quantize(b, fb, saturate=True).float()
    c = None
    if draw(st.booleans()):
        c = lp.quantize(torch.randn(M, N, generator=g) * 2.0 ** draw(st.integers(-30, 10)), model.acc_format, "rtz")
    if draw(st.integers(0, 9)) == 0:
        a[0, draw(st.integers(0, K - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    scales = {}
    if (bs := model.block_scale) is not None:
        nb = -(-K // bs.block)
        if bs.scale_format == "e8m0":
            sa = torch.exp2(torch.randint(-40, 40, (M, nb), generator=g).double())
            sb = torch.exp2(torch.randint(-40, 40, (nb, N), generator=g).double())
        else:
            sa = lp.quantize(torch.rand(M, nb, generator=g) * 448, "ue4m3", saturate=True).double()
            sb = lp.quantize(torch.rand(nb, N, generator=g) * 448, "ue4m3", saturate=True).double()
        if draw(st.integers(0, 9)) == 0:
            sa[0, 0] = math.nan
        scales = {"a_scales": sa.float(), "b_scales": sb.float()}
    return a, b, c, scales


def reference(a, b, model, c, scales) -> torch.Tensor:
    M, N = a.shape[0], b.shape[1]
    cc = torch.zeros(M, N) if c is None else c
    out = []
    for i in range(M):
        row = []
        for j in range(N):
            kw = {"a_scales": scales["a_scales"][i].tolist(), "b_scales": scales["b_scales"][:, j].tolist()} \
                if scales else {}
            row.append(lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(cc[i, j]), **kw))
        out.append(row)
    return torch.tensor(out, dtype=torch.float32)


# the default backend (native where it covers the preset), and eager too where that differs from the default
CASES = [(m, "auto") for m in PRESETS] + [
    (m, "eager") for m in PRESETS if lp.accum.native_unsupported(m, torch.device("cpu")) is None]


@pytest.mark.parametrize("model,backend", CASES, ids=[f"{m.name}-{be}" for m, be in CASES])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_reference_and_emulation_agree_on_every_preset(model, backend, data):
    a, b, c, scales = data.draw(unit_operands(model))
    got = lp.emulated_matmul(a, b, model, c, backend=backend, **scales)
    want = reference(a, b, model, c, scales)
    assert torch.equal(got.isnan(), want.isnan())
    keep = ~got.isnan()
    assert torch.equal(got[keep].view(torch.int32), want[keep].view(torch.int32)), (got, want)
    if model.nan_output == "canonical":
        assert (got[~keep].view(torch.int32) == lp.accum._canonical_nan_bits(model)).all()


def test_every_preset_names_its_unit_and_instruction():
    """A vendor reads the description: no internal shorthand, the source cited by name; every hardware preset
    states its instruction K."""
    for m in lp.list_accumulators():
        assert "SPEC" not in m.description and "(KM)" not in m.description, m.name
        if m.name not in ("exact", "fp32_sequential"):
            assert m.instruction_k is not None, m.name
            assert any(src in m.description for src in ("MMA-Sim", "Mikaitis", "DeepSeek", "hopper_fp8")), m.name
        assert isinstance(m.structure, (FusedSum, ChunkSum, SplitSum, FmaTree))
