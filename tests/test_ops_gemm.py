"""The emulated-GEMM custom ops of lowprec.ops (``lowprec::emulated_matmul``, ``lowprec::emulated_scaled_matmul``):
torch.library.opcheck on each (schema, fake implementation, autograd registration, dispatch), and torch.compile
(fullgraph=True) through them (no graph break). Their bits against the eager path: tests/test_native_gemm.py."""

from __future__ import annotations

import math

import pytest
import torch

import lowprec as lp
from lowprec import native
from lowprec.accum import _native_model_args

pytestmark = pytest.mark.skipif(native.library_status("accum_cpu") is not None,
                                reason="the native CPU kernels do not build here")


def operands(M: int = 5, K: int = 70, N: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 values with a zero row and a subnormal; M, N and K ragged against every tile of the kernel."""
    g = torch.Generator().manual_seed(seed)
    a = lp.quantize(torch.randn(M, K, generator=g) * 8, "e4m3fn", saturate=True)
    b = lp.quantize(torch.randn(K, N, generator=g), "e4m3fn", saturate=True)
    a[0] = 0.0
    a[1, 2] = 2.0 ** -9
    return a, b


@pytest.mark.parametrize("name", ["hopper_fp8", "hopper_fp8_promoted"])
def test_emulated_matmul_opcheck(name):
    a, b = operands()
    seed = torch.randn(5, 9, dtype=torch.float64).float().double()
    torch.library.opcheck(torch.ops.lowprec.emulated_matmul.default, (a, b, seed, *_native_model_args(
        lp.get_accumulator(name))))


@pytest.mark.parametrize("with_ieee", [False, True])
def test_emulated_scaled_matmul_opcheck(with_ieee):
    a, b = operands()
    sa, sb = torch.rand(5, 3) + 0.5, torch.rand(3, 9) + 0.5
    ieee = torch.zeros(3, 5, 9) if with_ieee else None
    if with_ieee:
        ieee[1, 2, 3] = -math.inf                # replaces that block's partial: out[2, 3] = -Inf (no NaN: opcheck)
    ints, acc_max, outer_max = _native_model_args(lp.get_accumulator("hopper_fp8_promoted"))
    torch.library.opcheck(torch.ops.lowprec.emulated_scaled_matmul.default,
                          (a, b, sa, sb, ieee, 32, ints, acc_max, outer_max))


def test_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) traces through both ops (their fake implementations) and runs them."""
    a, b = operands()
    sa, sb = torch.rand(5, 3) + 0.5, torch.rand(3, 9) + 0.5
    ints, acc_max, outer_max = _native_model_args(lp.get_accumulator("hopper_fp8_promoted"))

    def f(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        plain = torch.ops.lowprec.emulated_matmul(a, b, seed, ints, acc_max, outer_max)
        return plain + torch.ops.lowprec.emulated_scaled_matmul(a, b, sa, sb, None, 32, ints, acc_max, outer_max)

    seed = torch.zeros(5, 9, dtype=torch.float64)
    want = f(a, b, seed, sa, sb)
    got = torch.compile(f, fullgraph=True, backend="eager")(a, b, seed, sa, sb)
    assert torch.equal(got, want)
