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
