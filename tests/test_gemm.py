"""lowprec.gemm: scaled_matmul with a block-scaled MMA model (Blackwell mxf8f6f4: the MX scales inside the fused
step) checked element by element against the scalar reference ``reference_dot`` given the same scales; per-K-block
accumulators keep their contract (tests/test_scaling.py, tests/test_native_gemm.py)."""

from __future__ import annotations

import pytest
import torch

import lowprec as lp


def mx_operands(M: int, K: int, N: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(M, K, generator=g) * torch.exp2(torch.randint(-8, 8, (M, K), generator=g).float())
    b = torch.randn(K, N, generator=g)
    qa = lp.quantize_tensor(a, "mxfp8", "activation")                  # tiles (1, 32) along K
    qb = lp.quantize_tensor(b, "mxfp8", "weight", tile=(32, 1))         # tiles (32, 1) along K
    return qa, qb


@pytest.mark.parametrize("K", [32, 96, 80])
def test_block_scaled_mma_matches_the_scalar_reference(K):
    qa, qb = mx_operands(3, K, 2, seed=K)
    got = lp.scaled_matmul(qa, qb, accumulator="blackwell_mxf8f6f4")
    va, vb = qa.values(), qb.values()
    for i in range(3):
        for j in range(2):
            want = lp.reference_dot(va[i].tolist(), vb[:, j].tolist(), "blackwell_mxf8f6f4",
                                    a_scales=qa.scales[i].tolist(), b_scales=qb.scales[:, j].tolist())
            assert got[i, j].item() == want


def test_block_scaled_mma_is_close_to_the_dequantised_product():
    """Not bits, a sanity bound: 25 alignment bits and float32 RZ lose at most a few float32 ulps of the largest
    term per step, far below the data's scale."""
    qa, qb = mx_operands(4, 128, 3)
    exact = qa.dequantize().double() @ qb.dequantize().double()
    got = lp.scaled_matmul(qa, qb, accumulator="blackwell_mxf8f6f4").double()
    bound = (qa.dequantize().double().abs() @ qb.dequantize().double().abs()) * 2.0**-20
    assert ((got - exact).abs() <= bound).all()


def test_block_scaled_mma_needs_mx_operands():
    a = lp.quantize_tensor(torch.randn(2, 128), "deepseek_v3", "activation")
    b = lp.quantize_tensor(torch.randn(128, 2), "deepseek_v3", "weight")
    with pytest.raises(ValueError, match="takes e8m0 scales inside the unit"):
        lp.scaled_matmul(a, b, accumulator="blackwell_mxf8f6f4")
    qa, _ = mx_operands(2, 64, 2)
    qb = lp.quantize_tensor(torch.randn(64, 2), "mxfp8", "weight", tile=(64, 1))
    with pytest.raises(ValueError, match=r"a_q needs tile \(1, 32\) and b_q \(32, 1\)"):
        lp.scaled_matmul(qa, qb, accumulator="blackwell_mxf8f6f4")


def test_per_block_models_still_take_mx_operands():
    """The same MX operands through a per-K-block model (hopper_fp8_promoted): scales applied outside the unit,
    per 32-block, equal to emulated_scaled_matmul on the same values and block scales."""
    qa, qb = mx_operands(2, 96, 2)
    got = lp.scaled_matmul(qa, qb, accumulator="hopper_fp8_promoted")
    want = lp.accum.emulated_scaled_matmul(qa.values(), qb.values(), "hopper_fp8_promoted", qa.scales, qb.scales, 32,
                                           backend="eager")
    assert torch.equal(got, want)


def fp4_operands(recipe: str, M: int, K: int, N: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(M, K, generator=g) * torch.exp2(torch.randint(-4, 4, (M, K), generator=g).float())
    b = torch.randn(K, N, generator=g)
    block = 16 if recipe == "nvfp4" else 32
    return lp.quantize_tensor(a, recipe), lp.quantize_tensor(b, recipe, "weight", tile=(block, 1))


@pytest.mark.parametrize("recipe,model", [("mxfp4", "blackwell_mxf4"), ("nvfp4", "blackwell_nvf4")])
def test_fp4_block_scaled_mma_matches_the_scalar_reference(recipe, model):
    """Blackwell kind::mxf4nvf4 on MXFP4 and NVFP4 operands: every element equals reference_dot on the same values
    and block scales, times alpha = float32(tensor_scale_a * tensor_scale_b) rounded once (NVFP4's epilogue)."""
    qa, qb = fp4_operands(recipe, 3, 128, 2, seed=3)
    got = lp.scaled_matmul(qa, qb, accumulator=model)
    va, vb = qa.values(), qb.values()
    alpha = float(torch.tensor(qa.tensor_scale * qb.tensor_scale, dtype=torch.float32))
    for i in range(3):
        for j in range(2):
            acc = lp.reference_dot(va[i].tolist(), vb[:, j].tolist(), model, a_scales=qa.scales[i].tolist(),
                                   b_scales=qb.scales[:, j].tolist())
            assert got[i, j].item() == float(torch.tensor(acc * alpha, dtype=torch.float32))
    exact = lp.scaled_matmul(qa, qb, torch.float64, accumulator="float64")
    assert torch.allclose(got.double(), exact, rtol=2.0**-20, atol=exact.abs().max().item() * 2.0**-20)


def test_nvfp4_recipe_by_hand():
    """One block of 16 with amax 6 in a tensor of amax 12: S = 448 * 6 / 12 = 224; block scales UE4M3(amax/6 * S):
    224 for amax 6 and 448 for amax 12; decode scale 1/224. The element 6 in the first block is 6 * 224/224 = 6
    (code of 6), the element 12 in the second is 12 * 224/448 = 6: both dequantise exactly."""
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 16] = 6.0, 12.0
    q = lp.quantize_tensor(x, "nvfp4")
    assert q.scales.tolist() == [[224.0, 448.0]]
    assert q.tensor_scale == float(torch.tensor(1 / 224, dtype=torch.float32))
    assert torch.equal(q.values()[0, [0, 16]], torch.tensor([6.0, 6.0]))
    assert torch.equal(q.dequantize()[0, [0, 16]], torch.tensor([6.0, 12.0]).float() * 224 * q.tensor_scale)


def test_nvfp4_config_cannot_hold_one_level_fields():
    with pytest.raises(ValueError, match="NVFP4"):
        lp.ScalingConfig("e2m1", (1, 16), scale_format="ue4m3", nonfinite="tile_nan", pow2=True)
