"""The native emulated GEMM (cuda_ext/accum_cpu.c, accum_cuda.cu) and the block-scaled GEMM built on it
(``emulated_scaled_matmul``) compute the bits of the eager torch path, for every model ``native_unsupported``
accepts: each preset it covers (FP8, FP6/FP4 and fp16 inputs, fp16 outputs) and custom models exercising every
knob the kernel takes (alignment by rtz/rdown/rne, the accumulator aligned or added after the group, promotion,
narrow accumulators, overflow to Inf or IEEE, zeros with or without an exponent, mixed operand formats).
``_native_emulated_matmul`` (the native path without the float64 prologue) is held to the same bits.
``emulated_scaled_matmul`` is also checked against a scalar oracle built from ``reference_dot`` (exact
``Fraction`` arithmetic) and the exactly rounded fold written with ``fractions``."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp
from lowprec.accum import AccumulatorModel, _native_emulated_matmul, emulated_scaled_matmul, native_unsupported

CPU = torch.device("cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUSTOM = [
    AccumulatorModel("c_rdown", group_size=4, align_bits=10, align_rounding="rdown"),
    AccumulatorModel("c_rdown_tiny_f", group_size=8, align_bits=2, align_rounding="rdown",
                     input_formats=("e5m2", "e5m2")),
    AccumulatorModel("c_rne_after", group_size=8, align_bits=12, align_rounding="rne", align_with_acc=False,
                     acc_format="bf16", acc_rounding="rne"),
    AccumulatorModel("c_promote_fp16acc", group_size=16, promote_every=32, acc_format="fp16", acc_rounding="rne"),
    AccumulatorModel("c_skip_zeros_ieee", group_size=32, zero_exponent=None, overflow="ieee", nan_output="ieee"),
    AccumulatorModel("c_mixed", ("e5m2", "e4m3fn"), group_size=16, align_bits=14, promote_every=64),
    AccumulatorModel("c_fp6_fp4", ("e3m2", "e2m1"), group_size=8, align_bits=9, align_rounding="rne"),
    AccumulatorModel("c_fp16_rdown", ("fp16", "fp16"), group_size=4, align_bits=24, align_rounding="rdown",
                     acc_format="fp32"),
    AccumulatorModel("c_big_group", group_size=1 << 14, align_bits=13),
    AccumulatorModel("c_e8m0_rdown", ("e8m0", "e5m2"), group_size=4, align_bits=6, align_rounding="rdown",
                     acc_format="fp32", zero_exponent=-127),
    AccumulatorModel("c_bf16_rne", ("bf16", "bf16"), group_size=8, align_bits=20, align_rounding="rne",
                     promote_every=16),
]
PRESETS = [m for m in lp.list_accumulators() if native_unsupported(m, CPU) is None]
MODELS = PRESETS + CUSTOM


def assert_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """The same float32 bits everywhere (NaN payloads included)."""
    assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (got, want)


def assert_same(got: torch.Tensor, want: torch.Tensor, model: AccumulatorModel) -> None:
    """assert_bits, where NaN bits are part of the model's contract (canonical NaNs); else NaN-ness."""
    if model.nan_output == "ieee":
        assert torch.equal(got.isnan(), want.isnan())
        got, want = got.nan_to_num(0.0), want.nan_to_num(0.0)
    assert_bits(got, want)


def test_native_covers_these_presets_and_says_why_not_the_others():
    covered = {m.name for m in PRESETS}
    assert {"hopper_fp8", "hopper_fp8_promoted", "ada_fp8", "volta_fp16", "ampere_fp16", "ampere_bf16",
            "ampere_tf32"} <= covered
    assert all(native_unsupported(m, CPU) is None for m in CUSTOM)
    why = {name: native_unsupported(lp.get_accumulator(name), CPU) for name in
           ("hopper_fp16", "exact", "blackwell_mxf8f6f4")}
    assert "int32" in why["hopper_fp16"]                  # 16 terms of 25 fraction bits
    assert "aligned terms" in why["exact"]
    assert "block scales" in why["blackwell_mxf8f6f4"]


def to_format(x: torch.Tensor, fmt) -> torch.Tensor:
    """x quantised to fmt (saturating), magnitudes for an unsigned format, zeros as 1 for one without zero."""
    if not fmt.signed:
        x = x.abs()
    if not fmt.has_zero:
        x = torch.where(x == 0, 1.0, x)
    return lp.quantize(x, fmt, saturate=True)


@st.composite
def operands(draw, model: AccumulatorModel, max_k: int = 150):
    """a, b of the model's input formats and an optional float32 c: wide magnitudes, cancellation, outliers,
    subnormals, zero blocks, and now and then a NaN/Inf operand or an Inf/huge c."""
    fa, fb = model.formats
    M, K, N = draw(st.integers(1, 5)), draw(st.integers(0, max_k)), draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    a = torch.randn(M, K, generator=g) * 2.0 ** draw(st.integers(-12, 8))
    b = torch.randn(K, N, generator=g) * 2.0 ** draw(st.integers(-12, 8))
    kind = draw(st.sampled_from(["normal", "cancel", "outliers", "tiny", "zeros", "max"]))
    if kind == "cancel" and K > 1:
        h = K // 2
        a[:, K - h:], b[K - h:] = a[:, :h], -b[:h]
    elif kind == "outliers":
        a[torch.rand(M, K, generator=g) < 0.05] *= 2.0 ** 12
    elif kind == "tiny":
        a, b = a * 2.0 ** -10, b * 2.0 ** -10
    elif kind == "zeros":
        a[:, : min(K, 40)] = 0
        b[:, : N // 2] = 0
    elif kind == "max":                                    # the largest significands at the top exponent
        a, b = torch.full_like(a, fa.max) * a.sign(), torch.full_like(b, fb.max) * b.sign()
    a, b = to_format(a, fa), to_format(b, fb)
    c = None
    if draw(st.booleans()):
        c = torch.randn(M, N, generator=g) * 2.0 ** draw(st.integers(-140, 20))
        if draw(st.integers(0, 5)) == 0:
            c[0, 0] = draw(st.sampled_from([math.inf, -math.inf, 3e38, -1e-40]))
    if K and draw(st.integers(0, 7)) == 0:
        a[0, draw(st.integers(0, K - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return a, b, c


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
@given(data=st.data())
def test_native_emulated_matmul_matches_eager(model, data):
    a, b, c = data.draw(operands(model))
    want = lp.emulated_matmul(a, b, model, c, backend="eager")
    for got in (lp.emulated_matmul(a, b, model, c, backend="native"), _native_emulated_matmul(a, b, c, model)):
        assert_same(got, want, model)


@pytest.mark.parametrize("name", ["ampere_fp16", "volta_fp16", "c_fp16_rdown"])
def test_the_largest_group_sums_fit_the_kernel(name):
    """Every product at the largest significand and the same exponent, with and against an accumulator of
    the largest significand: the group sums the int32 bound of native_unsupported admits, against the scalar
    Fraction reference."""
    model = next(m for m in MODELS if m.name == name)
    top = float(np.float16(2.0 - 2.0 ** -10))
    a = torch.full((2, 3 * model.group_size), top)
    b = torch.full((3 * model.group_size, 2), top)
    b[:, 1] = -top
    c = torch.tensor([[1.9998779296875, -1.9998779296875], [0.0, 2.0 ** -14]])
    want = torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(c[i, j]))
                          for j in range(2)] for i in range(2)], dtype=torch.float32)
    assert_bits(lp.emulated_matmul(a, b, model, c, backend="native"), want)


def test_non_contiguous_and_empty_operands():
    g = torch.Generator().manual_seed(5)
    a = lp.quantize(torch.randn(70, 40, generator=g) * 4, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(33, 70, generator=g), "e4m3", saturate=True)
    for name in ("hopper_fp8", "hopper_fp8_promoted"):
        assert_bits(lp.emulated_matmul(a.t(), b.t(), name, backend="native"),
                    lp.emulated_matmul(a.t().contiguous(), b.t().contiguous(), name, backend="eager"))
        for shape in ((0, 5, 3), (3, 0, 4), (4, 6, 0)):
            M, K, N = shape
            out = lp.emulated_matmul(torch.zeros(M, K), torch.zeros(K, N), name, backend="native")
            assert_bits(out, torch.zeros(M, N))


# ---- emulated_scaled_matmul ---------------------------------------------------------------------------------
SCALED = [lp.get_accumulator(n) for n in ("hopper_fp8", "hopper_fp8_promoted", "ampere_fp16")] + [
    m for m in CUSTOM if m.name in ("c_rdown", "c_rne_after", "c_promote_fp16acc", "c_skip_zeros_ieee")]


@st.composite
def scaled_operands(draw, model: AccumulatorModel):
    a, b, _ = draw(operands(model, max_k=300))
    M, K = a.shape
    N = b.shape[1]
    k_block = draw(st.sampled_from([1, 3, 16, 32, 100, 128]))
    nb = -(-K // k_block)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale_a = torch.rand(M, nb, generator=g) * 2.0 ** draw(st.integers(-20, 20))
    scale_b = torch.rand(nb, N, generator=g) * 2.0 ** draw(st.integers(-20, 20))
    if nb and draw(st.integers(0, 5)) == 0:                 # an MX NaN tile, an overflowing or a tiny scale
        where = (draw(st.integers(0, M - 1)), draw(st.integers(0, nb - 1)))
        scale_a[where] = draw(st.sampled_from([math.nan, math.inf, 3e38, 1e-45, 0.0]))
    return a, b, scale_a, scale_b, k_block


@pytest.mark.parametrize("model", SCALED, ids=[m.name for m in SCALED])
@given(data=st.data())
def test_native_scaled_matmul_matches_eager(model, data):
    a, b, scale_a, scale_b, k_block = data.draw(scaled_operands(model))
    want = emulated_scaled_matmul(a, b, model, scale_a, scale_b, k_block, backend="eager")
    assert_same(emulated_scaled_matmul(a, b, model, scale_a, scale_b, k_block, backend="native"), want, model)


def _f32(v: Fraction) -> float:
    """v rounded to float32, nearest even (an exact oracle: the two float32 neighbours compared as fractions)."""
    x = np.float32(float(v))                              # within one float32 ulp of v
    lo, hi = sorted({x, np.nextafter(x, np.float32(-np.inf)), np.nextafter(x, np.float32(np.inf))},
                    key=lambda f: abs(Fraction(float(f)) - v))[:2]
    dlo, dhi = abs(Fraction(float(lo)) - v), abs(Fraction(float(hi)) - v)
    if dlo != dhi:
        return float(lo)
    return float(lo) if int(np.array(lo).view(np.int32)) % 2 == 0 else float(hi)


@pytest.mark.parametrize("name", ["hopper_fp8", "hopper_fp8_promoted"])
@given(seed=st.integers(0, 2**31), K=st.integers(1, 200), k_block=st.sampled_from([7, 32, 128]))
def test_scaled_matmul_matches_the_scalar_oracle(name, seed, K, k_block):
    """out = f32(out + f32(sa * sb) * partial) block by block, with partial from reference_dot and every
    rounding done on exact fractions."""
    g = torch.Generator().manual_seed(seed)
    M, N = 2, 3
    a = lp.quantize(torch.randn(M, K, generator=g) * 16, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(K, N, generator=g) * 16, "e4m3", saturate=True)
    nb = -(-K // k_block)
    scale_a, scale_b = torch.rand(M, nb, generator=g) * 3, torch.rand(nb, N, generator=g) / 7
    want = torch.zeros(M, N)
    for i in range(M):
        for j in range(N):
            out = Fraction(0)
            for blk in range(nb):
                sl = slice(blk * k_block, (blk + 1) * k_block)
                partial = lp.reference_dot(a[i, sl].tolist(), b[sl, j].tolist(), name)
                s = _f32(Fraction(float(scale_a[i, blk])) * Fraction(float(scale_b[blk, j])))
                out = Fraction(_f32(out + Fraction(s) * Fraction(partial)))
            want[i, j] = float(out)
    for backend in ("native", "eager"):
        assert_bits(emulated_scaled_matmul(a, b, name, scale_a, scale_b, k_block, backend=backend), want)


def test_an_mx_nan_tile_makes_its_rows_nan_with_canonical_bits():
    g = torch.Generator().manual_seed(2)
    a = lp.quantize(torch.randn(4, 96, generator=g), "e4m3", saturate=True)
    b = lp.quantize(torch.randn(96, 5, generator=g), "e4m3", saturate=True)
    scale_a, scale_b = torch.ones(4, 3), torch.ones(3, 5)
    scale_a[2, 1] = math.nan
    for backend in ("native", "eager"):
        out = emulated_scaled_matmul(a, b, "hopper_fp8_promoted", scale_a, scale_b, 32, backend=backend)
        assert out.isnan().sum() == 5 and out[2].isnan().all()
        assert (out[2].view(torch.int32) == 0x7FFFFFFF).all()


def test_scaled_matmul_bad_input_is_refused_before_work():
    a, b = torch.ones(2, 64), torch.ones(64, 3)
    sa, sb = torch.ones(2, 2), torch.ones(2, 3)
    cases = [
        ({"scale_a": torch.ones(2, 3)}, ValueError, "scale_a must have shape"),
        ({"scale_b": torch.ones(2, 3, dtype=torch.float64)}, TypeError, "float32"),
        ({"scale_a": [[1.0]]}, TypeError, "torch tensor"),
        ({"k_block": 0}, ValueError, "k_block"),
        ({"k_block": 32.0}, TypeError, "k_block"),
        ({"a": torch.full((2, 64), 0.3)}, ValueError, "not e4m3fn values"),
        ({"b": torch.ones(63, 3)}, ValueError, "shape mismatch"),
        ({"model": "hopper_fp16", "backend": "native"}, ValueError, "native backend"),
        ({"model": "blackwell_mxf8f6f4"}, ValueError, "block-scaled"),
        ({"backend": "fast"}, ValueError, "unknown backend"),
    ]
    for change, error, match in cases:
        kw = {"a": a, "b": b, "model": "hopper_fp8", "scale_a": sa, "scale_b": sb, "k_block": 32} | change
        with pytest.raises(error, match=match):
            emulated_scaled_matmul(kw.pop("a"), kw.pop("b"), kw.pop("model"), kw.pop("scale_a"), kw.pop("scale_b"),
                                   kw.pop("k_block"), **kw)


@needs_gpu
@pytest.mark.parametrize("name", ["hopper_fp8", "hopper_fp8_promoted", "ampere_fp16"])
def test_cuda_matches_cpu(name):
    g = torch.Generator().manual_seed(3)
    model = lp.get_accumulator(name)
    fa, fb = model.formats
    a = lp.quantize(torch.randn(67, 700, generator=g) * 8, fa, saturate=True)
    b = lp.quantize(torch.randn(700, 45, generator=g), fb, saturate=True)
    a[3, 9] = math.inf
    c = torch.randn(67, 45, generator=g)
    assert_bits(lp.emulated_matmul(a.cuda(), b.cuda(), name, c.cuda(), backend="native").cpu(),
                lp.emulated_matmul(a, b, name, c, backend="native"))
    sa, sb = torch.rand(67, 6, generator=g), torch.rand(6, 45, generator=g)
    sa[5, 2] = math.nan
    assert_bits(emulated_scaled_matmul(a.cuda(), b.cuda(), name, sa.cuda(), sb.cuda(), 128, backend="native").cpu(),
                emulated_scaled_matmul(a, b, name, sa, sb, 128, backend="native"))
