"""The native emulated GEMM (cuda_ext/accum_cpu.c, accum_cuda.cu) and the block-scaled GEMM built on it
(``emulated_scaled_matmul``) compute the bits of the eager torch path, for every model ``native_unsupported``
accepts: each preset it covers (FP8, FP6/FP4 and fp16 inputs, fp16 outputs) and custom models exercising every
knob the kernel takes (alignment by rtz/rdown/rne, the accumulator aligned or added after the group, promotion,
narrow accumulators, overflow to Inf or IEEE, zeros with or without an exponent, mixed operand formats).
``_native_emulated_matmul`` (the native path without the float64 prologue) is held to the same bits, and so is the
header's scalar ``lp_dot_block`` -- the code each thread of the CUDA kernel runs -- built for the host twice: by the
C compiler (``accum_cpu.c``'s ``lp_emulated_matmul_scalar``) and, where nvcc is installed, by nvcc from
``accum_cuda.cu`` itself. The 25-bit presets (Hopper and Blackwell fp16/bf16, Blackwell FP8), whose group sums
can pass 2^31, are checked on data that does pass it, against ``reference_dot``, and a kernel forced to sum a
group in int32 is shown to fail there.
``emulated_scaled_matmul`` is also checked against a scalar oracle built from ``reference_dot`` (exact
``Fraction`` arithmetic) and the exactly rounded fold written with ``fractions``."""

from __future__ import annotations

import contextlib
import ctypes
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp
from lowprec import ops
from lowprec.accum import (AccumulatorModel, BlockScale, _native_emulated_matmul, _native_model_args,
                           emulated_scaled_matmul, native_unsupported)
from lowprec.native import NVCCFLAGS, AccumModelC, library, source_dir

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
    # group sums past int32 (the chunked sum): two E4M3 products per int32 sum (F = 28), fp16 in chunks of 4 with
    # the accumulator added after the group, a bf16 promoted model, nearest-even fp16 and bf16 terms, mixed E5M2
    # x TF32 (the significand path)
    AccumulatorModel("c_f28_rdown", group_size=8, align_bits=28, align_rounding="rdown", acc_format="fp32"),
    AccumulatorModel("c_f27_after", ("fp16", "fp16"), group_size=5, align_bits=27, align_rounding="rne",
                     align_with_acc=False, acc_format="fp32", acc_rounding="rne"),
    AccumulatorModel("c_bf16_f25_promoted", ("bf16", "bf16"), group_size=32, align_bits=25, acc_format="fp32",
                     promote_every=64),
    AccumulatorModel("c_fp16_f25_rne", ("fp16", "fp16"), group_size=32, align_bits=25, align_rounding="rne",
                     acc_format="fp32"),
    AccumulatorModel("c_e5m2_tf32_f26", ("e5m2", "tf32"), group_size=16, align_bits=26, align_rounding="rdown",
                     acc_format="fp32", zero_exponent=None),
    AccumulatorModel("c_bf16_f25_rne", ("bf16", "bf16"), group_size=16, align_bits=25, align_rounding="rne",
                     acc_format="fp32", acc_rounding="rne"),
]
# the presets that were not native while the kernels summed a group in int32 (16 or 32 terms of 25 bits)
WIDE_PRESETS = ["hopper_fp16", "hopper_fp16_f16acc", "hopper_bf16", "hopper_mma_fp16", "hopper_mma_bf16",
                "blackwell_fp16", "blackwell_bf16", "blackwell_fp8", "rtx_blackwell_fp8", "rtx_blackwell_fp8_k16"]
# block scales inside the fused step (Blackwell kind::mxf8f6f4), through _native_emulated_matmul's scales
MX = [lp.get_accumulator("blackwell_mxf8f6f4"),
      AccumulatorModel("c_mx16_rdown", ("e4m3fn", "e5m2"), group_size=32, align_bits=13, align_rounding="rdown",
                       acc_format="fp32", block_scale=BlockScale(16)),
      AccumulatorModel("c_mx_fp4_fp6_promoted", ("e2m1", "e3m2"), group_size=16, align_bits=25, acc_format="fp32",
                       zero_exponent=None, promote_every=64, block_scale=BlockScale(32))]
PRESETS = [m for m in lp.list_accumulators() if native_unsupported(m, CPU) is None and m.block_scale is None]
MODELS = PRESETS + CUSTOM


Gemm = Callable[..., torch.Tensor]                     # the signature of ops.emulated_gemm
NATIVE_GEMM: Gemm = ops.emulated_gemm                    # the op itself (tests below route the native path)


def _host_gemm(fn: Callable[..., object]) -> Gemm:
    """A ctypes entry point ``fn(a, b, seed, M, K, N, model, exp_a, exp_b, scale_block, out)`` that runs
    ``lp_dot_block`` per output element on the host, in the op's signature (``lowprec::emulated_matmul``)."""
    def gemm(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor, ints: list[int], acc_max: float,
             outer_max: float, exp_a: torch.Tensor | None = None, exp_b: torch.Tensor | None = None,
             scale_block: int = 0) -> torch.Tensor:
        a, b, seed = a.float().contiguous(), b.float().contiguous(), seed.double().contiguous()
        xa, xb = (None if x is None else x.to(torch.int32).contiguous() for x in (exp_a, exp_b))
        M, K = a.shape
        N = b.shape[1]
        out = torch.zeros(M, N, dtype=torch.float32)
        ptr = lambda t: ctypes.c_void_p(None if t is None else t.data_ptr())  # noqa: E731
        if out.numel():
            fn(ptr(a), ptr(b), ptr(seed), ctypes.c_int64(M), ctypes.c_int64(K), ctypes.c_int64(N),
               ctypes.byref(AccumModelC(*ints, acc_max, outer_max)), ptr(xa), ptr(xb), ctypes.c_int64(scale_block),
               ptr(out))
        return out
    return gemm


SCALAR_GEMM = _host_gemm(library("accum_cpu").lp_emulated_matmul_scalar)   # the CUDA kernel's per-thread code


def int32_gemm(a: torch.Tensor, b: torch.Tensor, seed: torch.Tensor, ints: list[int], acc_max: float,
               outer_max: float, *scales: object) -> torch.Tensor:
    """The native op with ``sum_chunk`` set to 0: every group summed in one int32 (wrapping), as the kernels did
    before they covered the 25-bit presets -- deliberately wrong where a group's sum passes 2^31."""
    assert AccumModelC.INT_FIELDS[-1] == "sum_chunk"
    return NATIVE_GEMM(a, b, seed, [*ints[:-1], 0], acc_max, outer_max, *scales)


@contextlib.contextmanager
def routed(gemm: Gemm) -> Iterator[None]:
    """``emulated_matmul``'s native path (``_native_emulated_matmul``: the seed, step 7, step 8 in Python) with
    ``gemm`` in place of the op."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "emulated_gemm", gemm)
        yield


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
            "ampere_tf32", *WIDE_PRESETS} <= covered
    assert all(native_unsupported(m, CPU) is None for m in CUSTOM)
    why = {name: native_unsupported(lp.get_accumulator(name), CPU)
           for name in ("exact", "blackwell_nvf4", "cdna3_fp8")}
    assert "aligned terms" in why["exact"]
    assert "FP4 chunk sums" in why["blackwell_nvf4"] and "split sums" in why["cdna3_fp8"]
    assert native_unsupported(lp.get_accumulator("blackwell_mxf8f6f4"), CPU) is None      # E8M0 scales: exponents
    # the one limit left on the group sum: a single term (up to 2^(F + 2)) must fit int32, F <= 28
    assert native_unsupported(AccumulatorModel("f28", ("fp16", "fp16"), group_size=64, align_bits=28), CPU) is None
    why29 = native_unsupported(AccumulatorModel("f29", ("fp16", "fp16"), group_size=4, align_bits=29), CPU)
    assert why29 is not None and "int32" in why29 and "align_bits <= 28" in why29


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
    subnormals, zero blocks, zeros beside the largest co-operands, exponents spread over 40 binades, group sums
    at the kernels' int32 bound (every product of the largest significand at one exponent, mostly of one sign,
    with a c of that exponent: over 2^31 units at 25 fraction bits), and now and then a NaN/Inf operand or an
    Inf/huge c."""
    fa, fb = model.formats
    M, K, N = draw(st.integers(1, 5)), draw(st.integers(0, max_k)), draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    a = torch.randn(M, K, generator=g) * 2.0 ** draw(st.integers(-12, 8))
    b = torch.randn(K, N, generator=g) * 2.0 ** draw(st.integers(-12, 8))
    kind = draw(st.sampled_from(["normal", "cancel", "outliers", "tiny", "zeros", "max", "zero_huge", "spread",
                                 "top"]))
    top_exp = draw(st.integers(-3, 3))
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
    elif kind == "zero_huge":                              # a zero beside the largest co-operand lifts E
        hit = torch.rand(K, generator=g) < 0.3
        a[:, hit], b[hit] = 0.0, fb.max * torch.sign(b[hit] + 0.5)
    elif kind == "spread":
        a = a * torch.exp2(torch.randint(-20, 21, a.shape, generator=g).float())
        b = b * torch.exp2(torch.randint(-20, 21, b.shape, generator=g).float())
    elif kind == "top":                                    # group sums at the int32 bound
        sign = lambda t: torch.where(torch.rand(t.shape, generator=g) < 0.9, 1.0, -1.0)  # noqa: E731
        a = sign(a) * (2 - 2.0 ** -fa.mbits) * 2.0 ** top_exp
        b = sign(b) * (2 - 2.0 ** -fb.mbits) * 2.0 ** -top_exp
        b[:, N // 2:] *= -1
    a, b = to_format(a, fa), to_format(b, fb)
    c = None
    if kind == "top" and draw(st.booleans()):
        c = torch.full((M, N), 2 - 2.0 ** -10) * torch.where(b.sum(0) < 0, -1.0, 1.0)[None, :]
    elif draw(st.booleans()):
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
    with routed(SCALAR_GEMM):                              # the header's lp_dot_block (the CUDA kernel's code)
        assert_same(_native_emulated_matmul(a, b, c, model), want, model)


def reference_matmul(a: torch.Tensor, b: torch.Tensor, model: AccumulatorModel,
                     c: torch.Tensor | None = None) -> torch.Tensor:
    """``reference_dot`` (exact ``Fraction`` arithmetic) per output element, float32."""
    cc = torch.zeros(a.shape[0], b.shape[1]) if c is None else c
    return torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(cc[i, j]))
                          for j in range(b.shape[1])] for i in range(a.shape[0])], dtype=torch.float32)


WIDE = [lp.get_accumulator(n) for n in WIDE_PRESETS] + [m for m in CUSTOM if m.align_bits >= 25]
CANNOT_PASS_INT32 = {"rtx_blackwell_fp8_k16"}           # 16 E4M3 products: |sum| <= (16 * 1.875^2 + 2) 2^25 < 2^31


def sum_chunk(model: AccumulatorModel) -> int:
    return dict(zip(AccumModelC.INT_FIELDS, _native_model_args(model)[0]))["sum_chunk"]


@pytest.mark.parametrize("model", WIDE, ids=[m.name for m in WIDE])
def test_group_sums_past_int32(model):
    """Two groups of products of the largest significands at exponent 0 (so E = 0), with c = +-(2 - 2^-10) (the
    accumulator's term at E too): the first group's sum, in units of 2^(E - F), is worked out exactly here, from
    the rule (the products and c are integers in those units), and passes 2^31 - 1 (and -2^31 for the negated
    column) wherever the model's largest sum can. Row 1 (c = 0) stays just below 2^31 on the fp16 presets. Every
    kernel (the vectorised CPU one, the scalar lp_dot_block) gives reference_dot's bits; the kernel forced to sum
    a group in int32 does not, wherever the sum passes 2^31 -- so this data does reach the overflow."""
    fa, fb = model.formats
    G, F = model.group_size, model.align_bits
    xa, xb, xc = 2 - 2.0 ** -fa.mbits, 2 - 2.0 ** -fb.mbits, 2 - 2.0 ** -10
    K = 2 * G
    a, b = torch.full((2, K), xa), torch.full((K, 2), xb)
    b[:, 1] = -xb
    c = torch.tensor([[xc, -xc], [0.0, 0.0]])
    seeded = model.align_with_acc and not model.promote_every          # c is the first group's accumulator term
    units = G * Fraction(xa) * Fraction(xb) * 2**F + (Fraction(xc) * 2**F if seeded else 0)
    assert units.denominator == 1
    passes = units > 2**31 - 1
    assert passes == (model.name not in CANNOT_PASS_INT32)
    if model.name in CANNOT_PASS_INT32:    # over all data: terms <= 1.875^2 2^F, the accumulator's < 2^(F + 1)
        assert G * Fraction(15, 8) ** 2 * 2**F + 2**(F + 1) < 2**31
    assert (sum_chunk(model) == 0) == (model.name in CANNOT_PASS_INT32)     # the plain int32 sum where it holds
    want = reference_matmul(a, b, model, c)
    assert_same(lp.emulated_matmul(a, b, model, c, backend="native"), want, model)
    with routed(SCALAR_GEMM):
        assert_same(_native_emulated_matmul(a, b, c, model), want, model)
    with routed(int32_gemm):
        wrong = _native_emulated_matmul(a, b, c, model)
    if passes:
        assert not torch.equal(wrong[0].view(torch.int32), want[0].view(torch.int32)), (wrong, want)
    else:
        assert_same(wrong, want, model)


@pytest.mark.parametrize("lo_b,span", [(-51, 125), (-52, 126)])
def test_the_data_range_fast_path_at_its_bound(lo_b, span):
    """bf16 operands take the CPU kernel's fast path when their own exponents allow it (accum_cpu.c,
    lp_prescale_for_data): a' = a * 2^(7 - lo_a), b' likewise, with a' * b' below 2^125. At the bound: a spans
    2^-58 .. 1.99 (lo_a = -58), b 2^lo_b .. 1.99; 16 products of 1.99^2 beside c = 2^40 put the group's scale far
    below 2^-126, where a scale clamped to 2^-126 leaves each pre-scaled product just under 1/2 (spans of 125
    bits: the fast path, exact) or just under 1 (126: it must not be taken, nearest-even would round each term to
    1 and the 16 of them would show above c's ulp). reference_dot's bits either way."""
    model = next(m for m in CUSTOM if m.name == "c_bf16_f25_rne")
    top = 2 - 2.0 ** -7
    a, b = torch.zeros(2, 16), torch.zeros(16, 2)
    a[0], b[:, 0] = top, top
    a[1, 0], b[0, 1] = 2.0 ** -58, 2.0 ** lo_b
    assert (0 + 58 + 8) + (0 - lo_b + 8) == span       # hi - lo + mbits + 1, for a and for b
    c = torch.tensor([[2.0 ** 40, 0.0], [1.0, 0.0]])
    want = reference_matmul(a, b, model, c)
    assert want[0, 0].item() == 2.0 ** 40               # each product term rounds to 0 (2^-15 of a unit)
    assert_same(lp.emulated_matmul(a, b, model, c, backend="native"), want, model)
    assert_same(lp.emulated_matmul(a, b, model, c, backend="eager"), want, model)


def test_the_model_struct_mirrors_the_header():
    """``AccumModelC`` (ctypes) has the fields of ``lp_accum_model`` in lowprec_accum.h, in order (the int32 ones,
    then the two doubles), and ``_native_model_args`` gives one int per int32 field."""
    text = (source_dir() / "lowprec_accum.h").read_text()
    body = re.sub(r"/\*.*?\*/", "", re.search(r"typedef struct \{(.*?)\} lp_accum_model;", text, re.S).group(1),
                  flags=re.S)
    fields = [(decl.split(None, 1)[0], name.strip()) for decl in body.split(";") if decl.strip()
              for name in decl.split(None, 1)[1].split(",")]
    assert fields == [*(("int32_t", n) for n in AccumModelC.INT_FIELDS), ("double", "acc_max"),
                      ("double", "outer_max")]
    assert [f[0] for f in AccumModelC._fields_] == [*AccumModelC.INT_FIELDS, "acc_max", "outer_max"]
    for model in MODELS:
        assert len(_native_model_args(model)[0]) == len(AccumModelC.INT_FIELDS)


@pytest.mark.parametrize("model", MODELS + MX, ids=[m.name for m in MODELS + MX])
def test_sum_chunk_is_the_int32_bound(model):
    """With T the largest product term, ceil((2 - 2^-mbits_a)(2 - 2^-mbits_b) 2^F) (the largest significands,
    exactly), and the accumulator's term below 2^(F + 1): sum_chunk is 0 (one int32 sum per group) exactly when
    a group's G products and the accumulator's term always fit int32, else sum_chunk products always fit int32
    and one more may not."""
    fa, fb = model.formats
    F, G, top = model.align_bits, model.group_size, 2**31 - 1
    T = math.ceil((2 - Fraction(1, 2**fa.mbits)) * (2 - Fraction(1, 2**fb.mbits)) * 2**F)
    group = G * T + (2 ** (F + 1) if model.align_with_acc else 0)
    chunk = sum_chunk(model)
    if chunk == 0:
        assert group <= top
    else:
        assert group > top and 1 <= chunk and chunk * T <= top < (chunk + 1) * T


NVCC_HARNESS = r"""
#include "accum_cuda.cu"
extern "C" void lp_host_matmul(const float *a, const float *b, const double *seed, int64_t M, int64_t K, int64_t N,
                               const lp_accum_model *model, const int32_t *xa, const int32_t *xb, int64_t xblock,
                               float *out) {
    const int64_t nx = xa ? (K + xblock - 1) / xblock : 0;
    for (int64_t i = 0; i < M * N; i++)
        out[i] = (float)lp_dot_block(a + i / N * K, 1, b + i % N, N, 0, K, seed ? seed[i] : 0.0, model,
                                     xa ? xa + i / N * nx : NULL, xb ? xb + i % N : NULL, N, xblock);
}
"""


@pytest.fixture(scope="module")
def nvcc_host_gemm(tmp_path_factory: pytest.TempPathFactory) -> Gemm:
    """accum_cuda.cu compiled by nvcc (its flags, no contraction on the host either) with a host entry point that
    runs the kernel's per-thread lp_dot_block: the CUDA translation unit's bits, without a GPU."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    d = Path(tmp_path_factory.mktemp("nvcc_host"))
    (d / "harness.cu").write_text(NVCC_HARNESS)
    cmd = ["nvcc", *NVCCFLAGS, "-Xcompiler", "-ffp-contract=off", "-I", str(source_dir()), "-o",
           str(d / "harness.so"), str(d / "harness.cu")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}{p.stdout}"
    return _host_gemm(ctypes.CDLL(str(d / "harness.so")).lp_host_matmul)


NVCC_MODELS = [*WIDE, *(lp.get_accumulator(n) for n in ("hopper_fp8_promoted", "ampere_bf16", "ada_fp8_f16acc")),
               *(m for m in CUSTOM if m.name in ("c_rdown", "c_rne_after", "c_skip_zeros_ieee"))]


@pytest.mark.parametrize("model", NVCC_MODELS, ids=[m.name for m in NVCC_MODELS])
@given(data=st.data())
def test_the_cuda_kernel_body_built_by_nvcc_matches_eager(nvcc_host_gemm, model, data):
    a, b, c = data.draw(operands(model))
    with routed(nvcc_host_gemm):
        assert_same(_native_emulated_matmul(a, b, c, model), lp.emulated_matmul(a, b, model, c, backend="eager"),
                    model)


@given(data=st.data())
def test_the_cuda_kernel_body_built_by_nvcc_takes_block_scales(nvcc_host_gemm, data):
    model = data.draw(st.sampled_from(MX))
    a, b, c, sa, sb = data.draw(mx_operands(model))
    with routed(nvcc_host_gemm):
        assert_same(_native_emulated_matmul(a, b, c, model, sa, sb),
                    lp.emulated_matmul(a, b, model, c, a_scales=sa, b_scales=sb, backend="eager"), model)


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


# ---- block scales inside the fused step (Blackwell kind::mxf8f6f4) -------------------------------------------


@st.composite
def mx_operands(draw, model: AccumulatorModel):
    """operands() and E8M0 scales (float32 powers of two, 2^-127 .. 2^127): near 1, over the whole range, or at
    its two ends; now and then a NaN scale."""
    a, b, c = draw(operands(model))
    (M, K), N = a.shape, b.shape[1]
    nb = -(-K // model.block_scale.block)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    lo, hi = draw(st.sampled_from([(-3, 3), (-127, 127), (-127, -120), (120, 127)]))
    sa = torch.exp2(torch.randint(lo, hi + 1, (M, nb), generator=g).double()).float()
    sb = torch.exp2(torch.randint(lo, hi + 1, (nb, N), generator=g).double()).float()
    if nb and draw(st.integers(0, 5)) == 0:
        sa[draw(st.integers(0, M - 1)), draw(st.integers(0, nb - 1))] = math.nan
    return a, b, c, sa, sb


@pytest.mark.parametrize("model", MX, ids=[m.name for m in MX])
@given(data=st.data())
def test_block_scaled_native_matches_eager(model, data):
    """The kernels with E8M0 scale exponents added in step 1 (_native_emulated_matmul's a_scales/b_scales): the
    vectorised CPU kernel and the scalar lp_dot_block give the eager path's bits."""
    a, b, c, sa, sb = data.draw(mx_operands(model))
    want = lp.emulated_matmul(a, b, model, c, a_scales=sa, b_scales=sb, backend="eager")
    assert_same(lp.emulated_matmul(a, b, model, c, a_scales=sa, b_scales=sb, backend="native"), want, model)
    assert_same(_native_emulated_matmul(a, b, c, model, sa, sb), want, model)
    with routed(SCALAR_GEMM):
        assert_same(_native_emulated_matmul(a, b, c, model, sa, sb), want, model)


def test_block_scaled_native_matches_reference_at_the_extremes():
    """blackwell_mxf8f6f4 against reference_dot: scales 2^-127 and 2^127 (products far outside float32, terms
    aligned across 500 binades), a zero beside a huge scaled co-operand (its exponent z + the scales lifts E),
    accumulators that overflow to -Inf and stay there though the exact sum is positive, and a short last block;
    then a NaN scale (its dot products NaN, canonical bits) in a second call."""
    model = lp.get_accumulator("blackwell_mxf8f6f4")
    K = 70
    g = torch.Generator().manual_seed(4)
    a = lp.quantize(torch.randn(4, K, generator=g) * 8, "e4m3fn", saturate=True)
    b = lp.quantize(torch.randn(K, 5, generator=g) * 8, "e4m3fn", saturate=True)
    a[1, :10] = 0.0
    b[:10, 1] = 448.0
    sa = torch.tensor([[2.0**-127, 2.0**127, 1.0], [2.0**100, 2.0**-127, 0.5], [2.0**120, 2.0**120, 2.0**120],
                       [1.0, 2.0**-50, 1.0]]).float()
    sb = torch.tensor([[1.0, 2.0**100, 2.0**-127, 2.0**127, 1.0], [2.0**-127, 1.0, 2.0**20, 2.0, 4.0],
                       [2.0**127, 1.0, 1.0, 2.0**-127, 8.0]]).float()
    c = torch.randn(4, 5, generator=g)
    scales = {"a_scales": sa, "b_scales": sb}
    want = torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(c[i, j]),
                                           a_scales=sa[i].tolist(), b_scales=sb[:, j].tolist())
                          for j in range(5)] for i in range(4)], dtype=torch.float32)
    assert want[2, 0].item() == -math.inf and not want.isnan().any()
    assert_same(_native_emulated_matmul(a, b, c, model, sa, sb), want, model)
    assert_same(lp.emulated_matmul(a, b, model, c, backend="eager", **scales), want, model)
    with routed(SCALAR_GEMM):
        assert_same(_native_emulated_matmul(a, b, c, model, sa, sb), want, model)
    sa[3, 1] = math.nan                                 # row 3's dot products are NaN (step 7), the others unchanged
    got = _native_emulated_matmul(a, b, c, model, sa, sb)
    assert (got[3].view(torch.int32) == 0x7FFFFFFF).all()
    assert_same(got[:2], want[:2], model)
    assert_same(got, lp.emulated_matmul(a, b, model, c, backend="eager", **scales), model)


def test_block_scaled_native_path_checks_its_scales():
    a, b = torch.ones(2, 32), torch.ones(32, 3)
    with pytest.raises(ValueError, match="pass a_scales and b_scales"):
        _native_emulated_matmul(a, b, None, lp.get_accumulator("blackwell_mxf8f6f4"))
    with pytest.raises(ValueError, match="not block-scaled"):
        _native_emulated_matmul(a, b, None, lp.get_accumulator("hopper_fp8"), torch.ones(2, 1), torch.ones(1, 3))


def test_block_scaled_op_opcheck():
    """lowprec::emulated_matmul with its scale exponents: schema, fake implementation, dispatch."""
    model = lp.get_accumulator("blackwell_mxf8f6f4")
    g = torch.Generator().manual_seed(6)
    a = lp.quantize(torch.randn(5, 70, generator=g) * 8, "e4m3fn", saturate=True)
    b = lp.quantize(torch.randn(70, 9, generator=g), "e4m3fn", saturate=True)
    xa, xb = torch.randint(-127, 128, (5, 3), generator=g, dtype=torch.int32), torch.zeros(3, 9, dtype=torch.int32)
    torch.library.opcheck(torch.ops.lowprec.emulated_matmul.default,
                          (a, b, torch.zeros(5, 9, dtype=torch.float64), *_native_model_args(model), xa, xb, 32))


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
        ({"model": "cdna3_fp16", "backend": "native"}, ValueError, "native backend"),
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
