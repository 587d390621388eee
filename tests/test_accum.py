"""Accumulator models: the exact scalar reference and the vectorised emulation agree bit for bit;
closed forms show how many bits are kept; an FPRev probe reveals each model's summation tree."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lowprec as lp
from lowprec.accum import AccumulatorModel


def reference_matmul(a: torch.Tensor, b: torch.Tensor, model, c: torch.Tensor | None = None) -> torch.Tensor:
    M, N = a.shape[0], b.shape[1]
    c = torch.zeros(M, N) if c is None else c
    return torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(c[i, j]))
                          for j in range(N)] for i in range(M)], dtype=torch.float32)


def assert_same(x: torch.Tensor, y: torch.Tensor) -> None:
    assert torch.equal(x.isnan(), y.isnan())
    keep = ~x.isnan()
    assert torch.equal(x[keep], y[keep]) and torch.equal(x[keep].signbit(), y[keep].signbit())


CUSTOM = [
    AccumulatorModel("g4_rdown", group_size=4, align_bits=10, align_rounding="rdown"),
    AccumulatorModel("g8_rne_noacc", group_size=8, align_bits=12, align_rounding="rne", align_with_acc=False,
                     acc_format="bf16", acc_rounding="rne"),
    AccumulatorModel("g16_promote32", group_size=16, promote_every=32, acc_format="fp16", acc_rounding="rne"),
    AccumulatorModel("e5m2_fp32", ("e5m2", "e4m3fn"), group_size=8, align_bits=None, acc_format="fp32"),
]
FP8_MODELS = [m for m in lp.list_accumulators()
              if m.input_formats == ("e4m3fn", "e4m3fn") and m.block_scale is None] + CUSTOM


@st.composite
def fp8_operands(draw, fa="e4m3fn", fb="e4m3fn"):
    M, K, N = draw(st.integers(1, 3)), draw(st.integers(1, 150)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["normal", "cancel", "outliers", "subnormal", "zeros"]))
    a = torch.randn(M, K, generator=g) * 2.0 ** draw(st.integers(-8, 6))
    b = torch.randn(K, N, generator=g) * 2.0 ** draw(st.integers(-8, 6))
    if kind == "cancel":
        b[K // 2:] = -b[: K - K // 2].flip(0) if K > 1 else b[K // 2:]
        a[:, K // 2:] = a[:, : K - K // 2].flip(1) if K > 1 else a[:, K // 2:]
    elif kind == "outliers":
        a[torch.rand(M, K, generator=g) < 0.05] *= 300
    elif kind == "subnormal":
        a, b = a * 2.0**-8, b * 2.0**-6
    elif kind == "zeros":
        a[:, : min(K, 40)] = 0
    a = lp.quantize(a, fa, saturate=True)
    b = lp.quantize(b, fb, saturate=True)
    c = None
    if draw(st.booleans()):
        c = lp.quantize(torch.randn(M, N, generator=g) * 2.0 ** draw(st.integers(-10, 10)), "e8m13", "rtz")
    if draw(st.integers(0, 9)) == 0:
        a[0, draw(st.integers(0, K - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return a, b, c


@pytest.mark.parametrize("model", FP8_MODELS, ids=[m.name for m in FP8_MODELS])
@given(ops=fp8_operands())
def test_reference_and_vectorised_agree(model, ops):
    a, b, c = ops
    if model.input_formats[0] == "e5m2":
        a = lp.quantize(a, "e5m2", saturate=True)
    assert_same(lp.emulated_matmul(a, b, model, c), reference_matmul(a, b, model, c))


@pytest.mark.parametrize("name", ["volta_fp16", "ampere_bf16", "hopper_bf16", "fp32_sequential", "hopper_tf32"])
@given(seed=st.integers(0, 2**31), K=st.integers(1, 70))
def test_wide_input_models_agree(name, seed, K):
    model = lp.get_accumulator(name)
    g = torch.Generator().manual_seed(seed)
    fmt = model.input_formats[0]
    a = lp.quantize(torch.randn(2, K, generator=g) * 10, fmt, saturate=True).float()
    b = lp.quantize(torch.randn(K, 2, generator=g) * torch.exp2(torch.randint(-12, 12, (K, 2), generator=g)),
                    fmt, saturate=True).float()
    assert_same(lp.emulated_matmul(a, b, model), reference_matmul(a, b, model))


# ---- closed forms ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kept_bits", [("hopper_fp8", 13), ("ada_fp8", 13), ("fp32_sequential", 23),
                                            ("blackwell_fp8", 23), ("exact", 23)])
def test_one_plus_tiny_shows_the_bits_kept(name, kept_bits):
    """1 + 2^-j survives exactly when j <= the bits the model keeps (group alignment, then the
    accumulator format): 13 for Hopper/Ada FP8, float32's 23 elsewhere."""
    for j in range(1, 19):
        a = torch.tensor([[1.0, 2.0 ** -(j // 2)]])
        b = torch.tensor([[1.0], [2.0 ** -(j - j // 2)]])
        out = lp.emulated_matmul(a, b, name).item()
        assert out == (1 + 2.0**-j if j <= kept_bits else 1.0), j


def test_truncation_vs_rne_and_negative_terms():
    a = torch.tensor([[1.0, 1.5 * 2.0**-7]])
    b = torch.tensor([[1.0], [2.0**-7]])                                # 1 + 0.75 * 2^-13 (0.75 of an ulp)
    trunc = lp.get_accumulator("hopper_fp8")
    assert lp.emulated_matmul(a, b, trunc).item() == 1.0
    rne = replace(trunc, align_rounding="rne", acc_rounding="rne")
    assert lp.emulated_matmul(a, b, rne).item() == 1 + 2.0**-13        # the term rounds up to a whole ulp
    neg = torch.tensor([[1.0, -(2.0**-7)]]), torch.tensor([[1.0], [2.0**-8]])  # 1 - 2^-15
    assert lp.emulated_matmul(*neg, trunc).item() == 1.0                # toward zero: the term vanishes
    floor = replace(trunc, align_rounding="rdown")
    assert lp.emulated_matmul(*neg, floor).item() == 1 - 2.0**-13      # toward -inf: a whole 2^-13 goes


def test_group_size_changes_the_answer():
    """32 copies of 2^-14 after a 1 are cut one by one (each is aligned to the 1); summed in their own
    group *before* the 1 they add up exactly to 2^-9 and survive: grouping and order are visible."""
    ones_first = torch.tensor([[1.0] + [2.0**-7] * 32])
    small_first = torch.tensor([[2.0**-7] * 32 + [1.0]])
    b1 = torch.cat([torch.tensor([[1.0]]), torch.full((32, 1), 2.0**-7)])
    b2 = torch.cat([torch.full((32, 1), 2.0**-7), torch.tensor([[1.0]])])
    hopper = lp.get_accumulator("hopper_fp8")
    assert lp.emulated_matmul(ones_first, b1, hopper).item() == 1.0
    assert lp.emulated_matmul(small_first, b2, hopper).item() == 1.0 + 32 * 2.0**-14
    assert lp.emulated_matmul(ones_first, b1, "exact").item() == 1.0 + 32 * 2.0**-14


# ---- FPRev: reveal the summation tree -------------------------------------------------------------
def fprev_survivors(model, K: int) -> np.ndarray:
    """counts[i, j]: units that survive when +M sits at i and -M at j (all other products = u)."""
    big, unit = 448.0, 2.0**-9                                 # M / u = 448^2 / 2^-18 ~ 2^35.6
    pairs = [(i, j) for i in range(K) for j in range(K) if i != j]
    counts = np.zeros((K, K), dtype=np.int64)
    for start in range(0, len(pairs), 64):
        chunk = pairs[start:start + 64]
        a = torch.full((len(chunk), K), unit)
        b = torch.full((K, len(chunk)), unit)
        for r, (i, j) in enumerate(chunk):
            a[r, i], a[r, j], b[i, r], b[j, r] = big, -big, big, big
        out = torch.diagonal(lp.emulated_matmul(a, b, model)).double()
        for r, (i, j) in enumerate(chunk):
            counts[i, j] = int(out[r] / unit**2)
    return counts


def predicted_survivors(model, K: int, i: int, j: int) -> int:
    """What the model says. Without promotion: only units in groups after the later big term survive
    (earlier ones are aligned to M and cut). With promotion every P: if +M and -M share a block, the
    block's partial sum loses its units up to the later group, earlier blocks' units are safe in the
    FP32 outer sum; if they are in different blocks, the outer sum holds M in between, so only units
    in blocks after the later one survive."""
    G, P = model.group_size, model.promote_every
    if P and i // P != j // P:
        return max(0, K - (max(i, j) // P + 1) * P)
    safe_before = (i // P) * P if P else 0
    return safe_before + max(0, K - (max(i, j) // G + 1) * G)


@pytest.mark.parametrize("model", [
    replace(lp.get_accumulator("hopper_fp8"), group_size=4), replace(lp.get_accumulator("hopper_fp8"), group_size=8),
    lp.get_accumulator("ada_fp8"), lp.get_accumulator("hopper_fp8"),
    replace(lp.get_accumulator("hopper_fp8_promoted"), group_size=8, promote_every=16),
    lp.get_accumulator("fp32_sequential"),
], ids=["g4", "g8", "ada_g16", "hopper_g32", "promoted_g8_every16", "fp32_sequential"])
def test_fprev_reveals_group_and_promotion_structure(model):
    K = 48
    counts = fprev_survivors(model, K)
    want = np.array([[predicted_survivors(model, K, i, j) if i != j else 0 for j in range(K)] for i in range(K)])
    assert np.array_equal(counts, want)


# ---- the paper's number, at a size that runs in seconds -------------------------------------------
def test_hopper_error_grows_with_k_and_promotion_fixes_it():
    g = torch.Generator().manual_seed(0)
    K = 4096
    a = lp.quantize(torch.rand(4, K, generator=g) * 2, "e4m3")
    b = lp.quantize(torch.rand(K, 4, generator=g) * 2, "e4m3")
    exact = lp.emulated_matmul(a, b, "exact").double()
    rel = lambda m: ((lp.emulated_matmul(a, b, m).double() - exact).abs() / exact.abs()).max().item()  # noqa: E731
    assert rel("hopper_fp8") > 1e-2                              # percent-level error without promotion
    assert rel("hopper_fp8_promoted") < rel("hopper_fp8") / 10


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(group_size=0), "group_size"), (dict(align_bits=60), "align_bits"),
    (dict(align_rounding="up"), "align_rounding"), (dict(acc_rounding="sideways"), "rounding"),
    (dict(acc_format="e4m3fn"), "acc_format"), (dict(promote_every=100), "multiple"),
    (dict(acc_format="nope"), "unknown format"),
])
def test_inconsistent_models_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AccumulatorModel("bad", **kwargs)


def test_bad_matmul_inputs():
    a, b = torch.ones(2, 3), torch.ones(4, 2)
    with pytest.raises(ValueError, match="shape mismatch"):
        lp.emulated_matmul(a, b, "hopper_fp8")
    with pytest.raises(ValueError, match="not e4m3fn values"):
        lp.emulated_matmul(torch.full((2, 3), 0.3), torch.ones(3, 2), "hopper_fp8")
    with pytest.raises(TypeError):
        lp.emulated_matmul(torch.ones(2, 3, dtype=torch.int32), torch.ones(3, 2), "hopper_fp8")
    with pytest.raises(ValueError, match="unknown accumulator"):
        lp.emulated_matmul(torch.ones(2, 3), torch.ones(3, 2), "tpu")
    with pytest.raises(ValueError, match="c must be"):
        lp.emulated_matmul(torch.ones(2, 3), torch.ones(3, 2), "hopper_fp8", c=torch.ones(3, 3))
    with pytest.raises(ValueError, match="do not sum exactly"):
        lp.emulated_matmul(torch.ones(2, 300), torch.ones(300, 2), AccumulatorModel(
            "x", ("e5m2", "e5m2"), group_size=300, align_bits=None, acc_format="fp32"))


@pytest.mark.parametrize("name", ["hopper_fp8_promoted", "blackwell_fp8"])
def test_compiled_backend_matches_eager(name):
    g = torch.Generator().manual_seed(11)
    a = lp.quantize(torch.randn(33, 300, generator=g) * 3, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(300, 17, generator=g), "e4m3", saturate=True)
    a[0, 5] = math.inf
    c = torch.randn(33, 17, generator=g)
    assert_same(lp.emulated_matmul(a, b, name, c, backend="compiled"), lp.emulated_matmul(a, b, name, c))


NATIVE = [m for m in FP8_MODELS if lp.accum.native_unsupported(m, torch.device("cpu")) is None]


def test_native_covers_the_fp8_presets():
    assert {"hopper_fp8", "hopper_fp8_promoted", "ada_fp8"} <= {m.name for m in NATIVE}
    assert "align_bits" not in (lp.accum.native_unsupported(lp.get_accumulator("hopper_fp8"), torch.device("cpu"))
                                or "")


@pytest.mark.parametrize("model", NATIVE, ids=[m.name for m in NATIVE])
@given(ops=fp8_operands())
def test_native_backend_matches_eager(model, ops):
    """The C build of cuda_ext/lowprec_accum.h computes the same bits as the torch implementation."""
    a, b, c = ops
    assert_same(lp.emulated_matmul(a, b, model, c, backend="native"),
                lp.emulated_matmul(a, b, model, c, backend="eager"))


def test_native_backend_refuses_what_it_does_not_cover():
    with pytest.raises(ValueError, match="native backend"):
        lp.emulated_matmul(torch.ones(2, 3), torch.ones(3, 2), "fp32_sequential", backend="native")


def test_accumulator_overflow_stays_inf_in_every_implementation():
    model = CUSTOM[2]                                   # fp16 accumulator (max 65504), promotion every 32
    a = torch.full((2, 64), 448.0)
    a[1, 32:] = -448.0                                  # second row: +Inf block, then a -Inf block
    b = torch.full((64, 1), 448.0)
    ref = reference_matmul(a, b, model)
    for backend in ("eager", "native"):
        assert_same(lp.emulated_matmul(a, b, model, backend=backend), ref)
    assert ref[0, 0].item() == math.inf and math.isnan(ref[1, 0].item())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_build_of_the_shared_header_compiles_and_loads():
    """Compile check only on machines without a GPU: the header is valid device code."""
    from lowprec.native import library
    assert hasattr(library("accum_cuda"), "lp_emulated_matmul_cuda")


@pytest.mark.skipif(not torch.cuda.is_available() or shutil.which("nvcc") is None, reason="needs a GPU and nvcc")
@pytest.mark.parametrize("name", ["hopper_fp8", "hopper_fp8_promoted", "ada_fp8"])
def test_cuda_native_backend_matches_cpu(name):
    g = torch.Generator().manual_seed(3)
    a = lp.quantize(torch.randn(64, 700, generator=g) * 8, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(700, 40, generator=g), "e4m3", saturate=True)
    c = torch.randn(64, 40, generator=g)
    got = lp.emulated_matmul(a.cuda(), b.cuda(), name, c.cuda(), backend="native").cpu()
    assert_same(got, lp.emulated_matmul(a, b, name, c))


@pytest.mark.parametrize("name", ["hopper_fp8", "hopper_fp8_promoted", "ada_fp8", "blackwell_fp8"])
def test_auto_backend_matches_eager(name, monkeypatch):
    """The default backend ("auto") is native where native_unsupported allows it, else eager: the same bits
    as eager either way (Inf and NaN inputs, a seed c, K not a multiple of the group)."""
    g = torch.Generator().manual_seed(17)
    a = lp.quantize(torch.randn(9, 300, generator=g) * 3, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(300, 7, generator=g), "e4m3", saturate=True)
    a[0, 5], b[9, 2] = math.inf, math.nan
    c = torch.randn(9, 7, generator=g)
    calls = []
    native = lp.accum._native_emulated_matmul
    monkeypatch.setattr(lp.accum, "_native_emulated_matmul", lambda *args: calls.append(1) or native(*args))
    assert_same(lp.emulated_matmul(a, b, name, c), lp.emulated_matmul(a, b, name, c, backend="eager"))
    assert len(calls) == (lp.accum.native_unsupported(lp.get_accumulator(name), a.device) is None)
