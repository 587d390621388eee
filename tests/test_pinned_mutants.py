"""Tests written to kill survivors of the mutant catalogue (tools/mutants.toml, issue 15).

Like tests/test_pinned.py, every expectation here is independent of the code under test: a closed form
worked out by hand from the published rule or the module docs' contracts, ml_dtypes' casts, or exact
``fractions`` arithmetic. The catalogue names, for each mutant, the tests that must kill it; the report
(reports/mutation.md) shows which did.
"""

from __future__ import annotations

from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest
import torch
from test_pinned import ALIGNED, DOCUMENTED, assert_all, dot_operands, run_all

import lowprec as lp
from lowprec import logfmt
from lowprec.scaling import ScalingConfig, native_unsupported

F32 = np.float32
CPU = torch.device("cpu")


def e4m3_codes(v: np.ndarray) -> np.ndarray:
    """ml_dtypes' E4M3FN RNE cast of float32 values, as uint8 codes."""
    return v.astype(F32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def backends_for(cfg: ScalingConfig) -> list[str]:
    """eager, and native where it is built here and covers ``cfg``."""
    return ["eager"] + ([] if native_unsupported(cfg, CPU) else ["native"])


# ---- power-of-two scales: a power of two stays, anything else moves by whole binades -------------------
def pow2_rows() -> np.ndarray:
    """Row 0: amax 56 = 448 / 8 (sf = amax / 448 = 2^-3 exactly); row 1: amax 57 (57 / 448 lies in
    (2^-3, 2^-2)); each row also holds -amax / 2 and amax / 7."""
    x = np.zeros((2, 128), dtype=F32)
    for r, amax in enumerate((56.0, 57.0)):
        x[r, 0], x[r, 9], x[r, 100] = amax, -amax / 2, F32(amax / 7)
    return x


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_ue8m0_scale_of_a_power_of_two_is_kept(backend):
    """DeepGEMM UE8M0 (sf rounded UP to a power of two): sf = 2^-3 stays 2^-3 (no mantissa bit is set),
    57 / 448 goes up to 2^-2. Codes: x * (1 / sf) = 8 x and 4 x, cast RNE (ml_dtypes)."""
    cfg = lp.get_recipe("deepseek_v3_ue8m0").activation
    if backend not in backends_for(cfg):
        pytest.skip("the native scaling backend is not available here")
    x = pow2_rows()
    q = lp.quantize_tensor(torch.from_numpy(x), "deepseek_v3_ue8m0", "activation", backend=backend)
    assert q.scales[:, 0].tolist() == [2.0**-3, 2.0**-2]
    want = np.stack([e4m3_codes(x[0] * F32(8)), e4m3_codes(x[1] * F32(4))])
    assert np.array_equal(q.codes.numpy(), want)
    assert q.dequantize()[0, 0].item() == 56.0                 # 448 * 2^-3: the amax survives exactly


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_power_of_two_multiplier_is_rounded_down_to_its_binade(backend):
    """Transformer Engine's power-of-two scaling rounds the multiplier 448 / amax DOWN to a power of two
    by keeping sign and exponent bits: 448 / 56 = 8 stays 8; 448 / 57 = 7.86 becomes 4 (not 6, which a
    mask keeping one mantissa bit gives). sf = 1 / multiplier: 2^-3 and 2^-2."""
    cfg = ScalingConfig("e4m3fn", (1, 128), scale_op="mul_ratio", pow2=True)
    if backend not in backends_for(cfg):
        pytest.skip("the native scaling backend does not cover this configuration here")
    x = pow2_rows()
    q = lp.quantize_tensor(torch.from_numpy(x), cfg, backend=backend)
    assert q.scales[:, 0].tolist() == [2.0**-3, 2.0**-2]
    want = np.stack([e4m3_codes(x[0] * F32(8)), e4m3_codes(x[1] * F32(4))])
    assert np.array_equal(q.codes.numpy(), want)


# ---- mul_inv keeps 1 / sf finite: sf is at least 2^-126 (module doc), on every backend ------------------
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_mul_inv_scale_is_at_least_2_pow_minus_126(backend):
    """A tile of float32 subnormals: amax / 448 underflows below 2^-126, so the scale is 2^-126 and the
    multiplier 2^126 (a subnormal sf would make 1 / sf infinite and every code NaN). Codes: ml_dtypes' cast
    of x * 2^126 (exact in float32). div has no such floor: its sf is amax / 448 itself."""
    cfg = ScalingConfig("e4m3fn", (1, 4), scale_op="mul_inv")
    if backend not in backends_for(cfg):
        pytest.skip("the native scaling backend is not available here")
    x = np.array([[1e-39, -5e-40, 3e-40, 0.0]], dtype=F32)
    q = lp.quantize_tensor(torch.from_numpy(x), cfg, backend=backend)
    assert q.scales.item() == 2.0**-126
    assert np.array_equal(q.codes.numpy(), e4m3_codes(x * F32(2.0**126)))
    qd = lp.quantize_tensor(torch.from_numpy(x), cfg, backend=backend, scale_op="div")
    assert qd.scales.item() == float(F32(1e-39) / F32(448.0)) < 2.0**-126


# ---- an accumulator's subnormal range: below 2^emin the quantum is 2^(emin - mbits) ---------------------
@pytest.mark.parametrize("rounding, want", [
    ("rtz", [2.0**-24, 0.0, 2.0**-23]),     # 1.5 -> 1, 2^-8 -> 0, 2.5 -> 2 quanta
    ("rne", [2.0**-23, 0.0, 2.0**-23]),     # the ties 1.5 and 2.5 quanta go to the even 2
])
def test_narrow_accumulator_rounds_subnormal_sums_to_its_quantum(rounding, want):
    """E5M2 products summed into an FP16 accumulator (align_with_acc off, so the accumulator's own rounding
    decides); FP16's subnormal quantum is 2^-24. The products 3 * 2^-25 (3 * 2^-16 times 2^-9, both E5M2
    values), 2^-32 (2^-16 squared) and 5 * 2^-25 (1.25 * 2^-14 times 2^-9) are 1.5, 2^-8 and 2.5 quanta.
    On the reference, eager and native paths."""
    model = lp.AccumulatorModel("e5m2_fp16acc", ("e5m2", "e5m2"), group_size=4, align_bits=13,
                                align_with_acc=False, acc_format="fp16", acc_rounding=rounding)
    a = torch.tensor([[3 * 2.0**-16, 0.0], [0.0, 2.0**-16], [5 * 2.0**-16, 0.0]])
    b = torch.tensor([[2.0**-9], [2.0**-16]])
    assert_all(run_all(model, a, b), [[w] for w in want])


# ---- alignment toward -inf (a custom model): a floor, exact on integers ----------------------------------
def test_rdown_alignment_on_every_backend():
    """hopper_fp8 with alignment rounding toward -inf. Products 1 and -0.75 * 2^-13 in one group (E = 0, 13
    bits): 1 is exactly 2^13 units and stays; -0.75 units floors to -1: 1 - 2^-13 (truncation would give 1).
    Products 1.5 and 0.75 * 2^-13: 0.75 units floors to 0: 1.5."""
    model = replace(lp.get_accumulator("hopper_fp8"), name="hopper_fp8_rdown", align_rounding="rdown")
    a = torch.tensor([[1.0, -0.75 * 2.0**-7], [1.5, 0.75 * 2.0**-7]])    # times b: 2^-6
    b = torch.tensor([[1.0], [2.0**-6]])
    assert_all(run_all(model, a, b), [[1 - 2.0**-13], [1.5]])


# ---- a typed eXmYfnuz format: bias 2^(X-1), NaN on the negative-zero code -------------------------------
def test_typed_fnuz_format_has_the_fnuz_bias():
    """'e3m2fnuz' (not registered: built from its name) has bias 2^(3-1) = 4, so emin = 1 - 4 = -3, and every
    magnitude code is finite: the top code 0b11111 is exponent field 7, 2^(7-4) * 1.75 = 14. The smallest
    subnormal is 2^(-3-2) = 2^-5; the single NaN is the sign bit alone, 0b100000."""
    f = lp.get_format("e3m2fnuz")
    assert (f.bias, f.emin, f.max, f.min_normal, f.min_subnormal, f.nan_code) == (4, -3, 14.0, 0.125, 2.0**-5, 0x20)
    assert lp.decode(torch.tensor([0x1F, 0x04, 0x01, 0x20]), f).tolist()[:3] == [14.0, 0.125, 2.0**-5]


# ---- MX ceil rules: a power-of-two amax stays in its binade ----------------------------------------------
@pytest.mark.parametrize("rule, amaxes, want", [
    ("ceil", [4.0, 5.0, 0.5], [2.0**(2 - 8), 2.0**(3 - 8), 2.0**(-1 - 8)]),       # 2^(ceil(log2 amax) - emax_elem)
    ("rceil", [56.0, 57.0, 448.0], [2.0**-3, 2.0**-2, 1.0]),                      # 2^ceil(log2(amax / 448))
])
def test_mx_ceil_rules_on_powers_of_two(rule, amaxes, want):
    """E4M3 elements (emax_elem = 8, max 448). ceil: log2 of a power-of-two amax is an integer, its own
    ceiling (4 -> 2^-6, not 2^-5); rceil (Transformer Engine): amax / 448 = 2^-3 exactly for 56."""
    x = torch.zeros(len(amaxes), 32)
    x[:, 0] = torch.tensor(amaxes)
    x[:, 5] = -torch.tensor(amaxes) / 2
    q = lp.quantize_tensor(x, ScalingConfig("e4m3fn", (1, 32), scale_format="e8m0", mx_rule=rule))
    assert q.scales[:, 0].tolist() == want


# ---- the margin lowers the target: sf = amax / (max / 2^margin) ------------------------------------------
@pytest.mark.parametrize("scale_op", ["mul_inv", "mul_ratio", "div"])
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_margin_halves_the_target(scale_op, backend):
    """margin = 1: the tile's amax 448 maps to 224, not 896: sf = 448 / 224 = 2 and the codes are those of
    x / 2 (exact in float32), cast RNE by ml_dtypes."""
    cfg = ScalingConfig("e4m3fn", (1, 128), margin=1, scale_op=scale_op)
    if backend not in backends_for(cfg):
        pytest.skip("the native scaling backend is not available here")
    x = np.zeros((1, 128), dtype=F32)
    x[0, :4] = [448.0, -300.0, 1.0, 0.01]
    q = lp.quantize_tensor(torch.from_numpy(x), cfg, backend=backend)
    assert q.scales.item() == 2.0
    assert np.array_equal(q.codes.numpy(), e4m3_codes(x / F32(2)))


# ---- Transformer Engine: current scaling divides; gradients are E5M2; most_recent reads the latest amax --
def te_near_boundary(amax: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, TE codes, reciprocal-order codes): x holds amax and the float32 neighbours of (E4M3 midpoint) /
    scale on which TE's multiplier 448 / amax (a true float32 division) and 448 * (1 / amax) give different
    codes. Found here with numpy and ml_dtypes alone."""
    a = F32(amax)
    m_div, m_rcp = F32(F32(448) / a), F32(F32(448) * F32(F32(1) / a))
    assert m_div != m_rcp
    vals = np.arange(127, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    xs = [a]
    for mid in (vals[1:] + vals[:-1]) / 2:
        x = F32(mid / float(m_div))
        for v in (np.nextafter(x, F32(0)), x, np.nextafter(x, F32(np.inf))):
            if abs(v) <= a and e4m3_codes(v * m_div) != e4m3_codes(v * m_rcp):
                xs += [v, -v]
    x = np.array([xs], dtype=F32)
    return x, e4m3_codes(x * m_div), e4m3_codes(x * m_rcp)


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_te_current_scaling_multiplier_is_a_true_division(backend):
    """te_current's default (no scale_op=) on data where the division order decides the codes."""
    if backend not in backends_for(lp.get_recipe("te_current").activation):
        pytest.skip("the native scaling backend is not available here")
    x, want, other = te_near_boundary()
    assert (want != other).sum() >= 20                               # the data separates the two orders
    q = lp.quantize_tensor(torch.from_numpy(x), "te_current", backend=backend)
    assert np.array_equal(q.codes.numpy(), want)
    assert q.scales.item() == float(F32(1) / (F32(448) / F32(3.0)))


@pytest.mark.parametrize("recipe", ["te_delayed", "te_current"])
def test_te_recipes_are_hybrid(recipe):
    """Transformer Engine's HYBRID format: E4M3 for activations and weights, E5M2 for gradients. A gradient
    of amax 57344 (E5M2's max) is stored as E5M2 code 0x7B with scale 1."""
    x = torch.tensor([[57344.0, -1.0, 0.5, 0.0]])
    kinds = {}
    for role in ("activation", "weight", "grad"):
        q = lp.quantize_tensor(x, recipe, role, history=lp.AmaxHistory() if recipe == "te_delayed" else None)
        kinds[role] = q.fmt.name
        if role == "grad" and recipe == "te_current":
            assert q.scales.item() == 1.0 and q.codes[0, 0].item() == 0x7B
    assert kinds == {"activation": "e4m3fn", "weight": "e4m3fn", "grad": "e5m2"}


def test_delayed_most_recent_reads_the_latest_amax():
    """AmaxHistory(reduction='most_recent') after amaxes 8 then 2: the multiplier is 448 / 2 = 224 (the
    latest), not 448 / 8 (the oldest), and the max reduction gives 448 / 8 = 56."""
    for reduction, want in (("most_recent", 224.0), ("max", 56.0)):
        h = lp.AmaxHistory(reduction=reduction)
        h.push(8.0)
        h.push(2.0)
        assert h.update_scale(448.0, 0) == want
        q = lp.quantize_tensor(torch.tensor([[1.0, -0.5]]), "te_delayed", history=h)
        assert q.scales.item() == float(F32(1) / F32(want))


# ---- LogFMT: a value exactly between two levels goes to the larger magnitude (module contract) ----------
def test_logfmt_ties_go_to_the_larger_magnitude():
    """LogFMT-3 on a tile with min |x| = 1 and max |x| = 4: levels 1, 2, 4 (step = ln 4 / 2 = ln 2; the
    float32 metadata give these exactly, as tests/test_pinned.py checks). 1.5 and 3 are exact midpoints in
    linear space: they go up, to 2 and 4, with their signs."""
    x = torch.tensor([[1.0, 4.0, 1.5, 3.0, -1.5, -3.0, 1.4999999, 3.0000002] + [0.0] * 8])
    got = logfmt.quantize(x, 3, tile=16)[0, :8].tolist()
    assert got == [1.0, 4.0, 2.0, 4.0, -2.0, -4.0, 1.0, 4.0]


# ---- the accumulator's round-to-nearest: ties to even, on every backend --------------------------------
def test_accumulator_rounding_to_nearest_ties_to_even():
    """hopper_fp8 with an RNE accumulator (a custom model: the presets truncate). Products 1.5, 1.5 and
    t * 2^-13 in one group: alignment keeps all three exactly (13 bits at E = 0), the sum 3 + t * 2^-13 lies in
    the binade [2, 4) where E8M13's ulp is 2^-12. t = 1: a tie between 3 (even) and 3 + 2^-12 (odd): 3.
    t = 3: a tie between 3 + 2^-12 (odd) and 3 + 2^-11 (even): 3 + 2^-11. t = -1: 3 - 2^-13, a tie between
    3 - 2^-12 (odd) and 3: 3."""
    model = replace(lp.get_accumulator("hopper_fp8"), name="hopper_fp8_rne", acc_rounding="rne")
    ts = (1, 3, -1)
    a = torch.tensor([[1.5, 1.5, t * 2.0**-7] for t in ts])          # t * 2^-7 * 2^-6 = t * 2^-13
    b = torch.tensor([[1.0], [1.0], [2.0**-6]])
    assert_all(run_all(model, a, b), [[3.0], [3 + 2.0**-11], [3.0]])


# ---- non-finite elements are cast without saturation, natively too -------------------------------------
@pytest.mark.parametrize("fmt, dtype, max_code", [("e4m3fn", ml_dtypes.float8_e4m3fn, 0x7E),
                                                   ("e5m2", ml_dtypes.float8_e5m2, 0x7B)])
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_inf_and_nan_elements_are_not_saturated(fmt, dtype, max_code, backend):
    """+-Inf and NaN among finite values (nonfinite='element'): they keep ml_dtypes' unsaturated cast, Inf ->
    NaN in E4M3FN (0x7F / 0xFF), Inf in E5M2 (0x7C / 0xFC), while the finite amax 2 maps to the max code
    (448 = 0x7E in E4M3FN, 57344 = 0x7B in E5M2)."""
    cfg = ScalingConfig(fmt, (1, 8))
    if backend not in backends_for(cfg):
        pytest.skip("the native scaling backend is not available here")
    x = np.array([[2.0, np.inf, -np.inf, np.nan, 1.0, 0.0, -0.5, 0.25]], dtype=F32)
    q = lp.quantize_tensor(torch.from_numpy(x), cfg, backend=backend)
    want = x[0, 1:4].astype(dtype).view(np.uint8)
    assert q.codes[0, 1:4].tolist() == want.tolist()
    assert q.codes[0, 0].item() == max_code


# ---- deepseek_v3_ue8m0 weights: 128 x 128 blocks, each with its own power-of-two scale --------------------
def test_ue8m0_weights_are_scaled_per_128x128_block():
    """A 256 x 256 weight (the (K, N) operand): four 128 x 128 blocks with amax 56, 57, 1 and 0. DeepGEMM's
    UE8M0 scale is amax / 448 rounded up to a power of two, amax clamped to 1e-4: 2^-3, 2^-2, 2^-8
    (1 / 448 = 2^-8.8) and 2^-22 (1e-4 / 448 = 2.2e-7, between 2^-23 and 2^-22)."""
    w = torch.zeros(256, 256)
    w[3, 5], w[100, 200], w[130, 7], w[200, 60] = 56.0, -57.0, 1.0, 0.5
    q = lp.quantize_tensor(w, "deepseek_v3_ue8m0", "weight")
    assert q.scales.tolist() == [[2.0**-3, 2.0**-2], [2.0**-8, 2.0**-22]]


# ---- every documented group size: a smaller group shows through a cancellation -------------------------
@pytest.mark.parametrize("name", ALIGNED)
def test_preset_group_size_by_cancellation(name):
    """B, -B, then G - 2 products p = 2^(eB - f - 1) (half a unit of the alignment next to B), K = G: in one
    group of G, E is B's exponent, every p is truncated away and B - B cancels: exactly 0. A smaller group
    leaves some p's in a group of their own, summed exactly: a non-zero result. (tests/test_pinned.py's
    probe B + G p cannot see a halved group when its partial sum G p / 2 is below the accumulator's ulp of B,
    as for hopper_tf32: f = 25 alignment bits, a 23-bit accumulator.)"""
    _, G, f, _, eB = DOCUMENTED[name]
    B, p = 2.0**eB, 2.0 ** (eB - f - 1)
    a, b = dot_operands([B, -B] + [p] * (G - 2))
    assert_all(run_all(name, a, b), [[0.0]])
