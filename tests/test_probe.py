"""``lowprec.probe``: the black-box probe recovers the parameters of every NVIDIA fused-sum preset and of random
fused-sum models used as black boxes (their fields are the ground truth), the fitted model reproduces the box bit
for bit, and boxes that no FusedSum expresses (AMD structures, block-scaled FP4, float64 BLAS with a perturbation,
data-dependent or non-deterministic boxes) come back "inconsistent" with reasons, never as a fitted model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowprec.accum import AccumulatorModel, FusedSum, emulated_matmul, get_accumulator, list_accumulators
from lowprec.probe import ProbeError, probe, validate

# the fields a probe must recover exactly (zero_exponent and overflow only where the formats can show them)
RECOVERED = ("group_size", "align_bits", "align_rounding", "align_with_acc", "acc_format", "acc_rounding",
             "promote_every", "nan_output", "block_scale", "input_formats")
NVIDIA = [m.name for m in list_accumulators()
          if isinstance(m.structure, FusedSum) and m.align_bits is not None and m.nan_output == "canonical"]
NOT_FUSED = [m.name for m in list_accumulators() if not isinstance(m.structure, FusedSum)]


def box_of(model: AccumulatorModel):
    """``model`` as a black box with the probe's calling convention."""
    if model.block_scale is not None:
        return lambda a, b, sa, sb: emulated_matmul(a, b, model, a_scales=sa, b_scales=sb)
    return lambda a, b: emulated_matmul(a, b, model)


def run_probe(model: AccumulatorModel):
    """The probe on ``model``: K long enough for two steps, or for two promotion intervals."""
    max_k = 2 * model.promote_every if model.promote_every else max(2 * model.group_size + 2, 16)
    return probe(box_of(model), model.input_formats, max_k=max_k, block_scale=model.block_scale, trials=8)


def assert_recovered(model: AccumulatorModel, result) -> None:
    assert result.status == "fitted", (model.name, result.summary())
    fitted = result.model
    for name in RECOVERED:
        assert getattr(fitted, name) == getattr(model, name), (model.name, name, result.summary())
    for name, feature in (("zero_exponent", "zero_exponent"), ("overflow", "range")):
        f = result.features[feature]
        if f.status == "inferred" and (feature != "range" or f.value["overflow"] is not None):
            assert getattr(fitted, name) == getattr(model, name), (model.name, name, result.summary())
    assert result.validation is not None and result.validation.agree and result.validation.elements > 0
    calls = result.calls
    assert all(n <= 2 for name, n in calls.items() if name != "validation"), calls
    assert sum(n for name, n in calls.items() if name != "validation") <= 16, calls


@pytest.mark.parametrize("name", NVIDIA)
def test_probe_recovers_every_nvidia_fused_preset(name):
    model = get_accumulator(name)
    assert_recovered(model, run_probe(model))


def test_the_preset_set_covers_every_input_family():
    fmts = {get_accumulator(n).input_formats[0] for n in NVIDIA}
    assert {"e4m3fn", "fp16", "bf16", "tf32"} <= fmts
    assert any(get_accumulator(n).promote_every for n in NVIDIA)
    assert any(get_accumulator(n).block_scale for n in NVIDIA)


def test_features_carry_their_evidence_and_call_counts():
    result = run_probe(get_accumulator("hopper_fp8"))
    order = result.features["order"]
    assert order.value == {"group_size": 32, "family": "cut", "promote_every": None}
    assert order.inputs and len(order.outputs) == 2 * 32 + 1 and order.calls == 1
    assert result.features["align_bits"].value == 13 and "k <= 13" in result.features["align_bits"].text
    assert result.features["zero_exponent"].status == "unobservable"   # FP8: no zero product outranks a term
    assert "status: fitted" in result.summary()


FORMATS = ("e4m3fn", "e5m2", "fp16", "bf16")


@st.composite
def fused_models(draw) -> AccumulatorModel:
    """Random fused-sum models whose every field the probe's crafted inputs can reach: the FPRev unit 2^-n M must
    vanish beside M (n = 27 for E4M3, 30 otherwise) even after the sums the model forms, and the accumulator's
    bits must show within one step (f >= m + 2 - log2 G)."""
    fmt = draw(st.sampled_from(FORMATS))
    G = draw(st.sampled_from((4, 8, 16)))
    acc = draw(st.sampled_from(("fp32", "e8m13", "fp16")))
    m = {"fp32": 23, "e8m13": 13, "fp16": 10}[acc]
    n = 27 if fmt == "e4m3fn" else 30
    lo = max(m + 2 - int(math.log2(G)), 4)
    promote = draw(st.sampled_from((None, 2 * G))) if fmt != "e4m3fn" else None
    if promote and n - 3 - int(math.log2(promote)) < lo:
        promote = None                                    # the units of a promotion interval must vanish beside M
    f = draw(st.integers(min_value=lo, max_value=n - 2 - (int(math.log2(promote)) + 1 if promote else 0)))
    # C added after the step: a sum of units rounded beside +-M must vanish, which only rounding to nearest does
    with_acc = draw(st.booleans()) or m + int(math.log2(G)) + 2 >= n
    acc_modes = ("rtz", "rne", "rdown", "rup") if with_acc else ("rne",)
    return AccumulatorModel(
        "random", (fmt, fmt), G, f, draw(st.sampled_from(("rtz", "rdown", "rne"))), with_acc, acc,
        draw(st.sampled_from(acc_modes)), promote_every=promote,
        zero_exponent=draw(st.sampled_from((-126, None))) if acc != "fp16" else -126,   # fp16: see the probe's doc
        nan_output=draw(st.sampled_from(("canonical", "ieee"))), overflow=draw(st.sampled_from(("inf", "ieee"))))


@settings(max_examples=6)
@given(fused_models())
def test_probe_recovers_random_fused_models(model):
    assert_recovered(model, run_probe(model))


@pytest.mark.parametrize("name", NOT_FUSED)
def test_other_structures_are_inconsistent_not_faked(name):
    model = get_accumulator(name)
    result = run_probe(model)
    assert result.status == "inconsistent" and result.model is None and result.reasons, result.summary()


def test_split_sum_features_that_a_fused_sum_shares_are_recovered():
    """CDNA3: the step size and the products' 24 cut bits are seen; the split C handling fails validation."""
    model = get_accumulator("cdna3_fp16")
    result = run_probe(model)
    assert result.features["order"].value["group_size"] == model.group_size
    assert result.features["align_bits"].value == model.align_bits
    assert result.features["accumulator"].value == {"mbits": 23, "rounding": model.acc_rounding}
    assert result.validation is not None and not result.validation.agree and result.validation.mismatches
    assert any("validation" in r for r in result.reasons)


def test_fma_tree_is_named():
    result = run_probe(get_accumulator("cdna1_fp16"))
    assert result.status == "inconsistent"
    assert "pairwise trees of 4" in result.features["order"].text


def test_flushing_unit_is_inconsistent():
    result = run_probe(get_accumulator("cdna2_fp16"))
    assert result.features["subnormal_inputs"].value == "flushed" and result.status == "inconsistent"


def test_float64_blas_with_a_fixed_perturbation_is_inconsistent():
    def box(a, b):
        out = (a.double() @ b.double()).float()
        bump = (torch.arange(out.numel()).view(out.shape) * 7919 + a.shape[1]) % 5 == 0   # fixed, data-blind
        return torch.where(bump, torch.nextafter(out, torch.full_like(out, math.inf)), out)

    result = probe(box, max_k=40)
    assert result.status == "inconsistent" and result.model is None and result.reasons


def test_non_deterministic_box_is_inconsistent():
    gen = torch.Generator().manual_seed(0)

    def box(a, b):
        out = (a.double() @ b.double()).float()
        return out + out * 2.0**-23 * torch.randint(-1, 2, out.shape, generator=gen)

    result = probe(box, max_k=40)
    assert result.status == "inconsistent" and "non-deterministic" in result.reasons[0]


def test_data_dependent_box_is_inconsistent():
    """hopper_fp8 for short dot products, blackwell_fp8 for long ones: each probe sees one, validation both."""
    hopper, blackwell = get_accumulator("hopper_fp8"), get_accumulator("blackwell_fp8")
    result = probe(lambda a, b: emulated_matmul(a, b, hopper if a.shape[1] <= 40 else blackwell), max_k=66)
    assert result.status == "inconsistent" and result.model is None


def test_broken_contract_raises_and_nan_is_reported():
    with pytest.raises(ProbeError, match="shape"):
        probe(lambda a, b: torch.zeros(2, 2), max_k=16)
    hopper = get_accumulator("hopper_fp8")
    result = probe(lambda a, b: torch.where(emulated_matmul(a, b, hopper) == 1.0, math.nan,
                                            emulated_matmul(a, b, hopper)), max_k=66)
    assert result.status == "inconsistent" and any("NaN for finite inputs" in r for r in result.reasons)


def test_validate_lists_mismatches_of_a_wrong_model():
    v = validate(box_of(get_accumulator("hopper_fp8")), get_accumulator("ada_fp8"), trials=10)
    assert not v.agree and v.n_mismatches >= len(v.mismatches) > 0 and v.calls == 10
    m = v.mismatches[0]
    assert m.got != m.want and f"0x{m.got:08X}" in str(m)

