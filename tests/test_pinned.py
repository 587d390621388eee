"""Pinned behaviour with expectations that do NOT come from the code under test (issue 15).

Every expected value here is a closed form derived by hand from the published rule (../shared/SPEC.md,
the module docs' step-by-step contracts), an exact ``fractions`` computation, or an independent
transcription of a library's helper (numpy float32 arithmetic + ml_dtypes' float8 cast). No test reads a
preset's or recipe's fields to build its expectation, so a wrong constant in lowprec cannot move the
expectation along with it. tests/mutants.md lists the mutation each test was verified to kill.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch

import lowprec as lp
from lowprec import logfmt
from lowprec.accum import native_unsupported

F32 = np.float32
CPU = torch.device("cpu")


# ---- helpers (independent of lowprec) ------------------------------------------------------------------
def fp32_rne(v: Fraction) -> Fraction:
    """IEEE binary32 round-to-nearest-even of an exact positive normal rational (no overflow)."""
    assert v > 0
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1                                   # 2^e <= v < 2^(e+1)
    ulp = Fraction(2) ** (e - 23)
    return round(v / ulp) * ulp                  # Python rounds a Fraction half to even


def split(v: float) -> tuple[float, float]:
    """x, y with x * y == v exactly: y = 2^floor(k/2) for v = m * 2^k, x = v / y (the significand rides on x)."""
    if v == 0:
        return 0.0, 0.0
    k = math.frexp(abs(v))[1] - 1                # floor(log2 |v|), exact
    y = 2.0 ** (k // 2)
    return v / y, y


def dot_operands(products: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """a (1 x K), b (K x 1) whose k-th product is products[k] exactly (a_k * b_k in any format that holds
    both factors; emulated_matmul's input check refuses a factor that is not a value of the format)."""
    pairs = [split(p) for p in products]
    a = torch.tensor([[x for x, _ in pairs]], dtype=torch.float32)
    b = torch.tensor([[y for _, y in pairs]], dtype=torch.float32).T.contiguous()
    return a, b


def has_native(model: str) -> bool:
    return native_unsupported(lp.get_accumulator(model), CPU) is None


def skip_without_native_scaling(backend: str) -> None:
    if backend == "native" and (why := lp.scaling.native_unsupported(lp.get_recipe("deepseek_v3").activation, CPU)):
        pytest.skip(why)


def run_all(model: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None,
            backends: tuple[str, ...] = ("eager", "native")) -> dict[str, torch.Tensor]:
    """The result of every implementation of ``model`` that runs here: reference_dot, eager, native."""
    M, N = a.shape[0], b.shape[1]
    cc = torch.zeros(M, N) if c is None else c
    out = {"reference": torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(cc[i, j]))
                                       for j in range(N)] for i in range(M)], dtype=torch.float32)}
    for be in backends:
        if be == "native" and not has_native(model):
            continue
        out[be] = lp.emulated_matmul(a, b, model, c, backend=be)
    return out


def assert_all(results: dict[str, torch.Tensor], expected: list[list[float]]) -> None:
    want = torch.tensor(expected, dtype=torch.float64)
    for be, got in results.items():
        assert torch.equal(got.double(), want), f"{be}: got {got.double().tolist()}, expected {want.tolist()}"


# ---- 1. every accumulator preset, pinned to its documented hardware behaviour --------------------------
# SPEC 2 / 2b ([KM], [MS], [ISCA]): input format, products per fused group G, fraction bits kept after
# alignment f, accumulator mantissa bits m; alignment truncates toward zero, the accumulator rounds toward
# zero. eB: the binade of the probes' leading product, chosen so that every probe product is a product of
# two values of the input format (FP8 products lie in [2^-18, 448^2]).
DOCUMENTED = {
    "hopper_fp8": ("e4m3fn", 32, 13, 13, 0),          # ISCA 3.1.1: 32 products, 13 bits, E8M13 (FP22)
    "hopper_fp8_promoted": ("e4m3fn", 32, 13, 13, 0),
    "ada_fp8": ("e4m3fn", 16, 13, 13, 0),             # KM/MS: Ada fp8 m16n8k32 split in two 16-product steps
    "blackwell_fp8": ("e4m3fn", 32, 25, 23, 9),       # B200 tcgen05 f8f6f4: 32 products, f = 25, fp32 RZ
    "volta_fp16": ("fp16", 4, 23, 23, 0),
    "ampere_fp16": ("fp16", 8, 24, 23, 0),
    "ampere_bf16": ("bf16", 8, 24, 23, 0),
    "ampere_tf32": ("tf32", 4, 24, 23, 0),
    "hopper_fp16": ("fp16", 16, 25, 23, 0),
    "hopper_bf16": ("bf16", 16, 25, 23, 0),
    "hopper_tf32": ("tf32", 8, 25, 23, 0),
    # SPEC 2b [MS]: Turing f = 24; Hopper/Blackwell mma.sync and tcgen05 f16/tf32 f = 25; RTX Blackwell fp8 f = 25
    "turing_fp16": ("fp16", 8, 24, 23, 0),
    "turing_fp16_m8n8k4": ("fp16", 4, 24, 23, 0),
    "hopper_mma_fp16": ("fp16", 16, 25, 23, 0),
    "hopper_mma_bf16": ("bf16", 16, 25, 23, 0),
    "hopper_mma_tf32": ("tf32", 8, 25, 23, 0),
    "blackwell_fp16": ("fp16", 16, 25, 23, 0),
    "blackwell_bf16": ("bf16", 16, 25, 23, 0),
    "blackwell_tf32": ("tf32", 8, 25, 23, 0),
    "rtx_blackwell_fp8": ("e4m3fn", 32, 25, 23, 9),
    "rtx_blackwell_fp8_k16": ("e4m3fn", 16, 25, 23, 9),
}
ALIGNED = sorted(DOCUMENTED)
# Presets whose structure the rows above cannot express, pinned by closed forms in tests/test_accum_units.py
# (fp16 outputs, mixed operands, block scales, chunk sums, AMD split sums and FMA trees) or below (references).
PINNED_ELSEWHERE = {
    "exact", "fp32_sequential", "cdna3_fp32", "volta_fp16_f16acc", "ampere_fp16_f16acc", "hopper_fp16_f16acc",
    "hopper_fp8_f16acc", "ada_fp8_f16acc", "hopper_fp8_e4m3_e5m2", "blackwell_mxf8f6f4", "blackwell_mxf4",
    "blackwell_nvf4", "cdna3_fp16", "cdna3_bf16", "cdna3_xf32", "cdna3_fp8", "cdna2_fp16", "cdna2_bf16",
    "cdna1_fp16", "cdna1_bf16",
}


def test_every_preset_is_pinned_here():
    """A new preset needs a documented row (or its own probe): nothing may go unpinned."""
    assert {m.name for m in lp.list_accumulators()} == set(DOCUMENTED) | PINNED_ELSEWHERE


@pytest.mark.parametrize("name", ALIGNED)
def test_preset_input_format(name):
    assert lp.get_accumulator(name).input_formats == (DOCUMENTED[name][0],) * 2


@pytest.mark.parametrize("name", ALIGNED)
def test_preset_group_size(name):
    """p = 2^(eB - f - 1) is half a unit of the alignment next to B = 2^eB, so it is truncated away in any
    group that holds B, and summed exactly in a group of p's alone (k p's: k p, of which the even part
    survives next to B later).
    G p's then B: the first group sums them to G p (G is even), kept next to B: B + G p. A group larger
    than G holds B with all the p's (B); a smaller one that does not divide G leaves some p beside B.
    G - 1 p's then B (K = G): one group, every p truncated: B. A smaller group sums at least two p's
    alone (B + 2p or more)."""
    _, G, f, _, eB = DOCUMENTED[name]
    B, p = 2.0**eB, 2.0 ** (eB - f - 1)
    a, b = dot_operands([p] * G + [B])
    assert_all(run_all(name, a, b), [[B + G * p]])
    a, b = dot_operands([p] * (G - 1) + [B])
    assert_all(run_all(name, a, b), [[B]])


@pytest.mark.parametrize("name", ALIGNED)
def test_preset_alignment_bits(name):
    """B - 7/8 B + t in one group (E = eB): t = 2^-f B is kept (a multiple of 2^-f relative to 2^E),
    t = 0.75 * 2^-f B is truncated toward zero to 0 (f + 1 bits or RNE would keep 2^-(f+1) B or 2^-f B).
    The sums B/8 + t lie in the binade 2^(eB - 3), where the accumulator's m >= f - 2 bits hold them."""
    _, _, f, _, eB = DOCUMENTED[name]
    B = 2.0**eB
    kept, cut = 2.0 ** (eB - f), 0.75 * 2.0 ** (eB - f)
    for t, want in ((kept, B / 8 + kept), (cut, B / 8)):
        a, b = dot_operands([B, -0.875 * B, t])
        assert_all(run_all(name, a, b), [[want]])


@pytest.mark.parametrize("name", ALIGNED)
def test_preset_negative_term_truncates_toward_zero(name):
    """B - 0.75 * 2^-f B: the negative term truncates toward zero to 0, so exactly B (toward -inf, as
    two's-complement shifting would, or RNE: one unit, B - 2^-f B)."""
    _, _, f, _, eB = DOCUMENTED[name]
    B = 2.0**eB
    a, b = dot_operands([B, -0.75 * 2.0 ** (eB - f)])
    assert_all(run_all(name, a, b), [[B]])


@pytest.mark.parametrize("name", ALIGNED)
def test_preset_accumulator_format_and_rounding(name):
    """1.5B + 1.5B + 1.5 ulp, where ulp = 2^(eB + 1 - m) is the accumulator's ulp at 3B (the aligned term
    3 * 2^-m relative to B is a multiple of 2^-f): truncated to m bits, 3B + ulp (RNE: 3B + 2 ulp; more
    mantissa bits: 3B + 1.5 ulp)."""
    _, _, _, m, eB = DOCUMENTED[name]
    B = 2.0**eB
    ulp = 2.0 ** (eB + 1 - m)
    a, b = dot_operands([1.5 * B, 1.5 * B, 1.5 * ulp])
    assert_all(run_all(name, a, b), [[3 * B + ulp]])


def test_promotion_interval_128():
    """1 then 159 products of 2^-14 (K = 160). Without promotion every group holds the accumulator 1, so
    each 2^-14 (a quarter unit at 2^-13) is truncated: exactly 1. hopper_fp8_promoted restarts the
    accumulator at K = 128 (V3: N_C = 128): products 129..160 (one group of 32) sum exactly to 2^-9, added
    in FP32: 1 + 2^-9. Promoting every 32 would give 1 + 4 * 2^-9, every 64: 1 + 3 * 2^-9."""
    a, b = dot_operands([1.0] + [2.0**-14] * 159)
    assert_all(run_all("hopper_fp8", a, b), [[1.0]])
    assert_all(run_all("hopper_fp8_promoted", a, b), [[1 + 2.0**-9]])


def test_exact_preset_sums_exactly_and_rounds_once():
    """'exact': FP8 products summed exactly, rounded once to float32 RNE: 1 * 1 + 2^-9 * 2^-9 = 1 + 2^-18."""
    a = torch.tensor([[1.0, 2.0**-9]])
    assert_all(run_all("exact", a, a.T.contiguous(), backends=("eager",)), [[1 + 2.0**-18]])


def test_fp32_sequential_is_one_fma_at_a_time():
    """IEEE float32 FMA per product in K order. 1 then four 2^-24: each 1 + 2^-24 is a tie that rounds to
    even, 1 (an exact sum, or groups of 2..4, would reach 1 + 2^-22). (1 + 2^-23) + 2^-24 is a tie that
    rounds to even, up: 1 + 2^-22 (toward zero: 1 + 2^-23)."""
    ones = torch.ones(5, 1)
    assert_all(run_all("fp32_sequential", torch.tensor([[1.0] + [2.0**-24] * 4]), ones, backends=("eager",)), [[1.0]])
    assert_all(run_all("fp32_sequential", torch.tensor([[1 + 2.0**-23, 2.0**-24]]), ones[:2], backends=("eager",)),
               [[1 + 2.0**-22]])


# ---- 2. double rounding: the float64 round-to-odd helper -------------------------------------------------
def test_exact_model_does_not_double_round():
    """c + 256^2 + 2^-9 * 2^-9 with c = 2^40: the exact sum 2^40 + 2^16 + 2^-18 is just above the float32
    tie (ulp 2^17), so RNE gives 2^40 + 2^17. A plain float64 sum loses the 2^-18 and leaves an exact tie
    (rounded to even: 2^40); round-to-odd must nudge that even float64 sum. The mirror case, c = 2^40 + 2^17
    (odd) and 2^16 - 2^-18, is just below the tie: c."""
    x = torch.tensor([[256.0, 2.0**-9]])
    cases = [(x.T.contiguous(), 2.0**40, Fraction(2**16) + Fraction(1, 2**18)),
             (torch.tensor([[256.0], [-(2.0**-9)]]), 2.0**40 + 2.0**17, Fraction(2**16) - Fraction(1, 2**18))]
    for b, c, dot in cases:
        want = fp32_rne(Fraction(c) + dot)
        assert want == (2**40 + 2**17)                  # both cases, by the arithmetic in the docstring
        got = lp.emulated_matmul(x, b, "exact", c=torch.tensor([[c]]))
        assert Fraction(float(got[0, 0])) == want


def test_fp32_sequential_does_not_double_round():
    """c = 2^40 + 2^17 (odd) plus (2^8 (1 + 2^-23)) * (2^8 (1 - 2^-23)) = 2^16 - 2^-30: just below the tie,
    so float32 RNE keeps c. Without round-to-odd the float64 sum is the exact tie c + 2^16, which rounds to
    even: up, 2^40 + 2^18."""
    c, xa, xb = 2.0**40 + 2.0**17, 2.0**8 * (1 + 2.0**-23), 2.0**8 * (1 - 2.0**-23)
    want = fp32_rne(Fraction(c) + Fraction(xa) * Fraction(xb))
    assert want == Fraction(c)
    got = lp.emulated_matmul(torch.tensor([[xa]]), torch.tensor([[xb]]), "fp32_sequential", c=torch.tensor([[c]]))
    assert Fraction(float(got[0, 0])) == want


@pytest.mark.parametrize("model", [
    lp.AccumulatorModel("pin_promote_rtz", promote_every=32, outer_rounding="rtz"),        # outer + acc
    lp.AccumulatorModel("pin_noalign_rtz", align_with_acc=False, acc_format="fp32"),      # acc + group sum
], ids=lambda m: m.name)
def test_round_to_odd_under_directed_rounding(model):
    """c = 2^40 and one product -2^-9 * 2^-9 = -2^-18: the exact sum 2^40 - 2^-18 truncates toward zero to
    the float32 below 2^40, 2^40 - 2^16. The plain float64 sum is 2^40 (a round-to-nearest that drops the
    -2^-18), which would truncate to 2^40; round-to-odd must nudge it down. Both places where the
    emulation adds in float64 before a final rounding, on every backend (the C helper on the native one)."""
    a, b = torch.tensor([[2.0**-9]]), torch.tensor([[-(2.0**-9)]])
    want = 2**40 - 2**16                                 # float32 ulp below 2^40 is 2^16: the float32 below
    assert want < Fraction(2**40) - Fraction(1, 2**18) < want + 2**16
    results = run_all(model, a, b, torch.tensor([[2.0**40]]))
    assert "native" in results or not has_native(model)
    assert_all(results, [[float(want)]])


# ---- 3. the initial c is rounded into the accumulator by the model's rounding ----------------------------
def test_initial_c_rounds_toward_zero_into_e8m13_on_every_backend():
    """hopper_fp8, zero operands, c = +-(1 + 0.75 * 2^-13): truncated to E8M13, +-1 exactly (RNE into the
    accumulator would give +-(1 + 2^-13); the zero products never outrank it). Eager, compiled, native and
    the scalar reference."""
    c = torch.tensor([[1 + 0.75 * 2.0**-13], [-(1 + 0.75 * 2.0**-13)]])
    a, b = torch.zeros(2, 32), torch.zeros(32, 1)
    results = run_all("hopper_fp8", a, b, c, backends=("eager", "compiled", "native"))
    assert "compiled" in results
    assert_all(results, [[1.0], [-1.0]])


# ---- 4. the C promotion rounding is nearest-even (nearbyint), not C round() -----------------------------
def test_promotion_add_ties_to_even_on_native():
    """hopper_fp8_promoted, outer FP32 RNE. c = 64 (even last bit), one product 2^-9 * 2^-9 = 2^-18 = half
    an ulp of 64: a tie, to even: 64 (C round() goes away: 64 + 2^-17). c = 64 + 2^-17 (odd): up, 64 + 2^-16.
    K = 256 with 2^-18 in both promotion blocks: 64, then 64 again -- two roundings, though the exact sum
    64 + 2^-17 is a float32."""
    if not has_native("hopper_fp8_promoted"):
        pytest.skip("the native CPU backend cannot be built here")
    t = 2.0**-9
    a = torch.zeros(3, 256)
    a[0, 0] = a[1, 0] = a[2, 0] = a[2, 128] = t
    b = torch.zeros(256, 1)
    b[0, 0] = b[128, 0] = t
    c = torch.tensor([[64.0], [64 + 2.0**-17], [64.0]])
    results = run_all("hopper_fp8_promoted", a, b, c)
    assert "native" in results
    assert_all(results, [[64.0], [64 + 2.0**-16], [64.0]])


# ---- 5. DeepSeek-V3 / DeepGEMM scaling: the recipe's defaults ---------------------------------------------
def deepgemm_cast(x: np.ndarray, tile: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """DeepGEMM's test helper, transcribed in numpy float32 (SPEC 3 [DG]): amax per tile in float32,
    clamp(1e-4); sf = amax / 448.0; codes = E4M3 RNE of x * (1.0 / sf) (ml_dtypes' cast). (codes, sf)."""
    x = x.astype(F32)
    R, C = x.shape
    tr, tc = tile
    codes = np.zeros((R, C), dtype=np.uint8)
    sfs = np.zeros((R // tr, C // tc), dtype=F32)
    for i in range(R // tr):
        for j in range(C // tc):
            blk = x[i * tr:(i + 1) * tr, j * tc:(j + 1) * tc]
            amax = np.maximum(np.abs(blk).max(), F32(1e-4))
            sf = F32(amax / F32(448.0))
            inv = F32(F32(1.0) / sf)
            codes[i * tr:(i + 1) * tr, j * tc:(j + 1) * tc] = (blk * inv).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
            sfs[i, j] = sf
    return codes, sfs


def div_cast(x: np.ndarray) -> np.ndarray:
    """DeepSeek-V3's inference kernels, x / (amax / 448), for 1 x 128 tiles (to show the data decides)."""
    x = x.astype(F32)
    amax = np.maximum(np.abs(x).reshape(x.shape[0], -1, 128).max(axis=2), F32(1e-4))
    sf = (amax / F32(448.0)).astype(F32)
    return (x.reshape(x.shape[0], -1, 128) / sf[:, :, None]).astype(F32).astype(ml_dtypes.float8_e4m3fn) \
        .view(np.uint8).reshape(x.shape)


# Near-boundary elements: x * (1 / sf) and x / sf fall on the two sides of an E4M3 rounding midpoint
# (found by searching float32 neighbours of midpoint * sf). Row 0 has amax 3.0 (mul_inv gives the lower
# code), row 1 amax 0.7f (mul_inv gives the higher code).
NEAR_BOUNDARY = [
    (3.0, ["0x1.4924920000000p-16", "0x1.1249260000000p-15", "0x1.7249240000000p-13", "0x1.a924920000000p-12",
           "0x1.7249240000000p-9", "0x1.a924920000000p-6", "0x1.7249240000000p-2", "0x1.7249240000000p+1"]),
    (float(F32(0.7)), ["0x1.8ccccc0000000p-15", "0x1.8ccccc0000000p-13", "0x1.8ccccc0000000p-11",
                       "0x1.8ccccc0000000p-9", "0x1.8ccccc0000000p-8"]),
]


def near_boundary_rows() -> np.ndarray:
    x = np.zeros((2, 128), dtype=F32)
    for r, (amax, hexes) in enumerate(NEAR_BOUNDARY):
        x[r, 0] = amax
        vals = [float.fromhex(h) for h in hexes]
        x[r, 1:1 + len(vals)] = vals
        x[r, 64:64 + len(vals)] = [-v for v in vals]
    return x


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_deepseek_v3_default_scale_op_is_mul_inv(backend):
    """The recipe's own default (no scale_op=) on data where mul_inv and div give different codes."""
    skip_without_native_scaling(backend)
    x = near_boundary_rows()
    want, want_sf = deepgemm_cast(x, (1, 128))
    assert (div_cast(x) != want).sum() >= 20                       # the data separates the two orders
    q = lp.quantize_tensor(torch.from_numpy(x), "deepseek_v3", "activation", backend=backend)
    assert np.array_equal(q.codes.numpy(), want)
    assert np.array_equal(q.scales.numpy(), want_sf)
    # the weight role: 128 x 128 blocks, here two blocks side by side holding the two rows
    w = np.zeros((128, 256), dtype=F32)
    w[5, :128], w[77, 128:] = x[0], x[1]
    want_w, want_wsf = deepgemm_cast(w, (128, 128))
    qw = lp.quantize_tensor(torch.from_numpy(w), "deepseek_v3", "weight", backend=backend)
    assert np.array_equal(qw.codes.numpy(), want_w) and np.array_equal(qw.scales.numpy(), want_wsf)


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_deepseek_v3_amax_floor_is_1e_4(backend):
    """Tiles with amax 5e-4 (above the floor 1e-4, below 1e-3: its own amax is used) and 5e-5 (below:
    clamped to 1e-4), each holding a spread of smaller values; expectation by the transcribed helper."""
    skip_without_native_scaling(backend)
    rng = np.random.default_rng(15)
    x = np.zeros((2, 128), dtype=F32)
    for r, amax in enumerate((5e-4, 5e-5)):
        x[r] = (rng.uniform(-1, 1, 128) * amax).astype(F32)
        x[r, 3] = F32(amax)
    want, want_sf = deepgemm_cast(x, (1, 128))
    assert want_sf[0, 0] == F32(F32(5e-4) / F32(448.0)) and want_sf[1, 0] == F32(F32(1e-4) / F32(448.0))
    assert want[0, 3] == 0x7E and want[1, 3] != 0x7E              # 448 (E4M3 0x7E) only where amax is used
    for role in ("activation", "grad"):
        q = lp.quantize_tensor(torch.from_numpy(x), "deepseek_v3", role, backend=backend)
        assert np.array_equal(q.codes.numpy(), want) and np.array_equal(q.scales.numpy(), want_sf)


# ---- 6. OCP MX v1.0: the floor rule for a power-of-two amax -----------------------------------------------
@pytest.mark.parametrize("fmt, emax_elem", [("e4m3fn", 8), ("e2m1", 2)])   # OCP MX v1.0 table: emax_elem
def test_mx_scale_is_floor_log2_amax_minus_emax(fmt, emax_elem):
    """X = 2^(floor(log2 amax) - emax_elem) per 32-element block (floor(log2) from math.frexp, exact);
    amax = 1, 2, 4, 0.5 (powers of two: ceil(log2) - 1 is one binade too small) and 1.5 * 2^k. The block's
    amax element is then amax / X = 2^emax_elem (or 1.5 * 2^emax_elem: 384 in E4M3, 6 in E2M1, both at most the
    element max), so it dequantises to amax exactly; under a scale one binade too small it would clamp."""
    amaxes = [1.0, 2.0, 4.0, 0.5, 1.5, 0.75, 3.0]
    x = torch.zeros(len(amaxes), 32)
    for r, amax in enumerate(amaxes):
        x[r, 0] = amax
        x[r, 1] = -amax / 2
        x[r, 7] = amax / 4
    q = lp.quantize_tensor(x, "mxfp8", "activation", fmt=fmt)
    want = [2.0 ** ((math.frexp(amax)[1] - 1) - emax_elem) for amax in amaxes]
    assert q.scales[:, 0].tolist() == want
    deq = q.dequantize()
    assert deq[:, 0].tolist() == amaxes
    assert deq[:, 1].tolist() == [-amax / 2 for amax in amaxes]


# ---- 7. LogFMT: step = (max - min) / (2^(n-1) - 2) (SPEC 4) ----------------------------------------------
@pytest.mark.parametrize("nbits, top, inputs, expected", [
    # n = 3: codes 1..3, step = ln 4 / 2 = ln 2: levels 1, 2, 4
    (3, 4.0, [1.0, 4.0, 2.0, 1.4, 1.6, 2.9, 3.1, -3.5, 0.0],
     [1.0, 4.0, 2.0, 1.0, 2.0, 2.0, 4.0, -4.0, 0.0]),
    # n = 4: codes 1..7, step = ln 64 / 6 = ln 2: levels 1, 2, 4, ..., 64
    (4, 64.0, [1.0, 64.0, 2.0, 3.1, 2.9, 47.0, 49.0, -16.0, 0.0, 5.9, 6.1, -23.0, 25.0],
     [1.0, 64.0, 2.0, 4.0, 2.0, 32.0, 64.0, -16.0, 0.0, 4.0, 8.0, -16.0, 32.0]),
])
def test_logfmt_levels_by_hand(nbits, top, inputs, expected):
    """A tile with min |x| = 1 and max |x| = top: by SPEC 4, step = (ln top - ln 1) / (2^(n-1) - 2) and
    level(K) = exp(min + step (K - 1)) -- computed here with math.exp from the float32 metadata (the module
    contract); they are the powers of two 1 .. top, and each input goes to its nearest level in linear space."""
    kmax = 2 ** (nbits - 1) - 1
    step32 = float(F32((math.log(top) - math.log(1.0)) / (2 ** (nbits - 1) - 2)))
    hand = [float(F32(math.exp(0.0 + step32 * (k - 1)))) for k in range(1, kmax + 1)]
    assert hand == [2.0**k for k in range(kmax)] and hand[-1] == top
    x = torch.tensor([inputs + [0.0] * (16 - len(inputs))])
    enc = logfmt.encode(x, nbits, tile=16)
    assert float(enc.min[0, 0]) == 0.0 and float(enc.step[0, 0]) == step32
    assert logfmt.decode(enc)[0, :len(inputs)].tolist() == expected
    assert logfmt.levels(enc.min, enc.step, torch.arange(1, kmax + 1)).flatten().tolist() == hand
