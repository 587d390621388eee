"""The torch custom ops of lowprec.ops: torch.library.opcheck on each (schema, fake/meta implementation,
autograd registration, dispatch), and torch.compile(fullgraph=True) through the public functions' native
paths (no graph break). The ops' bits against the eager references: tests/test_native_quant.py."""

from __future__ import annotations

import pytest
import torch

import lowprec as lp
from lowprec import logfmt, native, ops
from lowprec.codes import MxRuleCode, RoundingCode, ScaleOpCode

pytestmark = pytest.mark.skipif(native.library_status("quant_cpu") is not None
                                or native.library_status("logfmt_cpu") is not None,
                                reason="the native CPU kernels do not build here")


def sample(rows: int = 5, cols: int = 70, seed: int = 0) -> torch.Tensor:
    """Finite values (opcheck compares outputs without equal_nan), a zero row, -0 and a subnormal, a ragged last
    tile of every tiling used below."""
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 3
    x[0] = 0.0
    x[1, 2], x[2, 3] = -0.0, 1e-40
    return x


@pytest.mark.parametrize("dequantize", [False, True])
@pytest.mark.parametrize("mx", [False, True])
def test_quantize_tiles_opcheck(mx, dequantize):
    fmt = ops.format_args(lp.get_format("e4m3fn"))
    args = (sample(), fmt, [1, 32], int(ScaleOpCode.mul_inv), False, True, mx, int(MxRuleCode.floor), 448.0, 0.0,
            dequantize)
    torch.library.opcheck(torch.ops.lowprec.quantize_tiles.default, args)


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("fmt", ["e2m1", "e5m2"])
def test_encode_opcheck(fmt, values):
    args = (sample(), ops.format_args(lp.get_format(fmt)), int(RoundingCode.rto), True, values)
    torch.library.opcheck(torch.ops.lowprec.encode.default, args)


@pytest.mark.parametrize("tile", [32, 128])
def test_logfmt_ops_opcheck(tile):
    x = sample()
    torch.library.opcheck(torch.ops.lowprec.logfmt_encode.default, (x, 8, tile, logfmt.LOG_RANGE))
    codes, mins, steps = torch.ops.lowprec.logfmt_encode(x, 8, tile, logfmt.LOG_RANGE)
    torch.library.opcheck(torch.ops.lowprec.logfmt_decode.default, (codes, mins, steps, 8, tile))


def test_format_args_round_trip_every_registered_format():
    for f in lp.list_formats():
        g = ops.args_format(ops.format_args(f))
        assert (g.ebits, g.mbits, g.bias, g.special, g.signed, g.subnormals, g.has_zero) == \
               (f.ebits, f.mbits, f.bias, f.special, f.signed, f.subnormals, f.has_zero)
    with pytest.raises(ValueError, match="7 ints"):
        ops.args_format([4, 3])


def test_public_native_paths_compile_without_graph_breaks():
    """quantize_tensor (1x128 and MX), encode, quantize and the LogFMT codec with backend='native' inside one
    torch.compile(fullgraph=True) function (aot_eager: dynamo and the fake implementations, no C++ compile);
    the compiled results have the bits of the plain calls. (Formats with a NaN: for the others encode checks
    its input for NaN first, a data-dependent ValueError that no graph can hold.)"""
    def f(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q = lp.quantize_tensor(x, "deepseek_v3", backend="native")
        mx = lp.quantize_tensor(x, "mxfp8", backend="native")
        enc = logfmt.encode(x, 8, 32, backend="native")
        return (q.codes, q.scales, mx.codes, mx.scales, lp.encode(x, "e4m3fn", "rtz", backend="native"),
                lp.quantize(x, "e5m2", "rna", backend="native"), logfmt.decode(enc, backend="native"))

    x = torch.randn(8, 96, generator=torch.Generator().manual_seed(3))
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    for a, b in zip(got, f(x)):
        assert torch.equal(a.view(torch.uint8) if a.dtype != torch.uint8 else a,
                           b.view(torch.uint8) if b.dtype != torch.uint8 else b)
