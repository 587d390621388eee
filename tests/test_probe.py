"""``lowprec.probe``: the black-box probe recovers every accumulator preset of ``lowprec.accum`` -- fused sums,
split sums (CDNA3), FMA trees (CDNA1/2), chunk sums (Blackwell FP4) and the exact references -- and random models
of each structure used as black boxes; the fitted model reproduces the box bit for bit; boxes that are no model
(perturbed, non-deterministic, data-dependent) come back "inconsistent" with reasons, never as a fitted model.

The ground truth is always the model that served as the black box, never the probe's output. A field is left out
of a comparison only where ``unobservable`` proves, from the model and the formats alone, that no (a, b) -> d call
of the probe's sizes can tell its value from the probe's choice."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowprec.accum import (AccumulatorModel, BlockScale, ChunkSum, FmaTree, FusedSum, SplitSum, emulated_matmul,
                           get_accumulator, list_accumulators)
from lowprec.formats import get_format
from lowprec.probe import ProbeError, probe, validate

MAX_K = 128                 # the longest probe dot product of these tests (promotion: two intervals)
PRESETS = [m.name for m in list_accumulators()]


def budget(n: int) -> int:
    """``n`` examples under the default hypothesis profile (tests/conftest.py), proportionally more under
    ``HYPOTHESIS_PROFILE=thorough`` (3000 / 60 = 50 times)."""
    return max(1, round(n * settings.default.max_examples / 60))


def box_of(model: AccumulatorModel):
    """``model`` as a black box with the probe's calling convention."""
    if model.block_scale is not None:
        return lambda a, b, sa, sb: emulated_matmul(a, b, model, a_scales=sa, b_scales=sb)
    return lambda a, b: emulated_matmul(a, b, model)


def max_k_of(model: AccumulatorModel) -> int:
    """K long enough for two steps, or for two promotion intervals; at most MAX_K otherwise."""
    if model.promote_every:
        return 2 * model.promote_every
    return min(max(2 * model.group_size + 2, 16), MAX_K)


@functools.cache
def run_probe(model: AccumulatorModel):
    """The probe on ``model`` as a black box (cached: several tests read the same preset's result)."""
    return probe(box_of(model), model.input_formats, max_k=max_k_of(model), block_scale=model.block_scale, trials=8)


def _zero_terms_reach(model: AccumulatorModel) -> bool:
    """Whether zero terms 0 * 2^-126 (SPEC 2b's convention) give other bits than zeros taking no part.

    Every product, chunk term and running sum is a multiple of 2^L (L: the exponents of the two smallest
    subnormals, plus the two smallest block scales for chunk terms). A zero term ranks at most at
    Z = -126 + (the largest exponent of a co-operand; 0 for a zero running sum or zero chunk). It changes nothing
    unless it lifts an alignment (or a split sum's reference exponent) so far that the quantum 2^(E - bits) exceeds
    2^L: Z <= L + bits leaves every term whole, ``bits`` being the fewest kept (align_bits; for split sums also the
    floors of the group sum and the running sum, and the drop distance)."""
    fa, fb = model.formats
    L = (fa.emin - fa.mbits) + (fb.emin - fb.mbits)
    st_ = model.structure
    if isinstance(st_, ChunkSum):
        assert model.block_scale is not None
        L += 2 * model.block_scale.smallest_exponent
        Z = -126
    else:
        Z = -126 + max(fa.emax, fb.emax, 0)
    bits = model.align_bits
    if isinstance(st_, SplitSum):
        bits = min(bits, st_.sum_bits, st_.acc_bits, *([st_.acc_drop] if st_.acc_drop is not None else []))
    return Z > L + bits


def unobservable(model: AccumulatorModel, max_k: int) -> dict[str, str]:
    """The fields of ``model`` that no black-box call with K <= ``max_k`` can show, each with the reason (from the
    model's documented semantics, lowprec.accum's module doc)."""
    out = {"name": "a label", "description": "a label",
           "instruction_k": "a GEMM pads K with zero products to it, which changes no bit (accum module doc)"}
    if model.align_bits is None:
        out["align_rounding"] = out["align_with_acc"] = "exact terms: nothing is aligned (FusedSum exact, FmaTree)"
        out["zero_exponent"] = "exact terms: E, and so the zero exponent, changes nothing (accum step 3)"
    elif not _zero_terms_reach(model):
        out["zero_exponent"] = "no zero term can rank high enough to cut a term (see _zero_terms_reach)"
    if model.promote_every is None:
        out["outer_format"] = out["outer_rounding"] = "no promotion: no outer accumulator"
    acc = get_format(model.acc_format)
    fa, fb = model.formats
    if model.acc_rounding in ("rne", "rna"):
        out["overflow"] = ("rounding to nearest overflows to Inf exactly from max + ulp/2 up, and every value of "
                           "[max + ulp/2, 2^(emax+1)) rounds to Inf under either rule")
    else:
        top = fa.max * fb.max * (model.block_scale.format.max ** 2 if model.block_scale else 1)
        if max_k * top < 2.0 ** (acc.emax + 1):
            out["overflow"] = f"no sum of {max_k} products reaches 2^{acc.emax + 1}"
    if not (fa.has_nan or fa.has_inf or fb.has_nan or fb.has_inf
            or (model.block_scale is not None and model.block_scale.format.has_nan)):
        out["nan_output"] = "no input or scale format holds a NaN or an Inf"
    if model.group_size >= max_k and isinstance(model.structure, FusedSum) and model.align_bits is None:
        out["group_size"] = f"no step boundary within K <= {max_k}: one exact sum either way"
    return out


def assert_recovered(model: AccumulatorModel, result, max_calls: int = 16) -> None:
    """The fitted model equals ``model`` in every field but the unobservable ones; validation agreed; few calls."""
    assert result.status == "fitted", (model.name, result.summary())
    fitted = result.model
    skip = unobservable(model, max_k_of(model))
    if "zero_exponent" in skip and model.align_bits is not None:    # excused only between these two conventions
        assert {fitted.zero_exponent, model.zero_exponent} <= {None, -126}, (fitted.zero_exponent, model)
    assert dataclasses.replace(fitted, **{f: getattr(model, f) for f in skip}) == model, (
        model.name, {f.name: (getattr(fitted, f.name), getattr(model, f.name)) for f in dataclasses.fields(model)
                     if f.name not in skip and getattr(fitted, f.name) != getattr(model, f.name)}, result.summary())
    assert result.validation is not None and result.validation.agree and result.validation.elements > 0
    calls = result.calls
    assert all(n <= 2 for name, n in calls.items() if name != "validation"), calls
    assert sum(n for name, n in calls.items() if name != "validation") <= max_calls, calls
    for name, feature in result.features.items():
        assert feature.calls == calls[name] and (feature.calls == 0 or feature.inputs), (name, feature)


@pytest.mark.parametrize("name", PRESETS)
def test_probe_recovers_every_preset(name):
    model = get_accumulator(name)
    result = run_probe(model)
    assert_recovered(model, result)
    assert type(result.model.structure) is type(model.structure)


def test_the_preset_set_covers_every_structure_and_input_family():
    models = [get_accumulator(n) for n in PRESETS]
    assert {type(m.structure) for m in models} == {FusedSum, SplitSum, FmaTree, ChunkSum}
    assert {"e4m3fn", "e4m3fnuz", "e2m1", "fp16", "bf16", "tf32", "fp32"} <= {m.input_formats[0] for m in models}
    assert any(m.promote_every for m in models) and any(m.block_scale for m in models)
    assert any(isinstance(m.structure, SplitSum) and m.structure.interleave == 2 for m in models)
    assert any(isinstance(m.structure, FmaTree) and m.structure.flush_subnormals for m in models)


def test_unobservable_fields_do_not_change_a_bit():
    """The excused fields of each preset, set to the probe's convention, give the same bits on random inputs."""
    for name in PRESETS:
        model = get_accumulator(name)
        skip = unobservable(model, max_k_of(model))
        alt = {"zero_exponent": -126 if model.zero_exponent is None else None,
               "overflow": "inf" if model.overflow == "ieee" else "ieee"}
        changes = {f: v for f, v in alt.items() if f in skip and not (f == "zero_exponent" and isinstance(
            model.structure, FmaTree))}
        if not changes:
            continue
        other = dataclasses.replace(model, **changes)
        v = validate(box_of(model), other, trials=3, max_k=min(max_k_of(model), 64), seed=3)
        assert v.agree, (name, changes, v.mismatches[:3])


def test_features_carry_their_evidence_and_call_counts():
    result = run_probe(get_accumulator("hopper_fp8"))
    order = result.features["order"]
    assert order.value == {"group_size": 32, "family": "cut", "promote_every": None}
    assert order.inputs and len(order.outputs) == 2 * 32 + 1 and order.calls == 1
    assert result.features["align_bits"].value == 13 and "k <= 13" in result.features["align_bits"].text
    assert result.features["zero_exponent"].status == "unobservable"   # FP8: no zero product outranks a term
    assert "status: fitted" in result.summary()


def test_split_sum_evidence():
    """CDNA3 fp8: the running sum is floored at 24 bits and dropped beyond 25 binades, the group sum floored at 31
    bits, the products in two interleaved subsets -- each read from its own feature."""
    result = run_probe(get_accumulator("cdna3_fp8"))
    f = result.features
    assert f["acc_alignment"].value["floored"] == (24, 25) and not f["acc_alignment"].value["aligned"]
    assert f["interleave"].value == 2 and f["sum_floor"].value["sum_bits"][0] == 31
    assert f["structure"].value == "SplitSum(31, 24, 2, 25)"
    assert all(result.calls[n] == 1 for n in ("acc_alignment", "interleave", "sum_floor"))


def test_fma_tree_evidence():
    result = run_probe(get_accumulator("cdna2_bf16"))
    assert result.features["order"].value["family"] == "tree" and "pairwise trees of 4" in \
        result.features["order"].text
    assert result.features["flush_subnormals"].value is True
    assert result.features["subnormal_inputs"].value == "flushed"


def test_chunk_sum_evidence():
    result = run_probe(get_accumulator("blackwell_nvf4"))
    f = result.features
    assert f["chunk"].value == 16 and f["order"].value["group_size"] == 64 and f["align_bits"].value == 35
    assert f["structure"].value == "ChunkSum(16)"


# ---- random models ---------------------------------------------------------------------------------------
FORMATS = ("e4m3fn", "e5m2", "fp16", "bf16")
FPREV_BITS = {"e4m3fn": 27, "e4m3fnuz": 28}            # the FPRev gap 2^n of the probe's order feature (else 29)


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


@st.composite
def split_models(draw) -> AccumulatorModel:
    """Random split sums (CDNA3-like) within the probe's reach: fp32 accumulator; products cut at f bits with
    f >= 25 - log2 G (the accumulator's 23 bits show within one step) and f < n - log2 G (the FPRev units of a
    subset without M, summed exactly, must still be floored away beside M = 2^n u); the group sum floored at 1..6
    bits more than f and within the crafted terms' exponent reach; the running sum floored at 16..25 bits and
    dropped (if at all) 0..2 binades further, inside the 28 binades the probe's safe outputs span (E4M3FNUZ)."""
    fmt = draw(st.sampled_from(("fp16", "bf16", "tf32", "e4m3fnuz", "e5m2fnuz")))
    G = draw(st.sampled_from((4, 8, 16)))
    n = FPREV_BITS.get(fmt, 29)
    f = draw(st.integers(min_value=25 - int(math.log2(G)), max_value=n - 1 - int(math.log2(G))))
    reach = 33 if fmt == "e4m3fnuz" else 44
    sum_bits = draw(st.integers(min_value=f + 1, max_value=min(f + 6, reach)))
    acc_bits = draw(st.integers(min_value=16, max_value=25))
    drop = draw(st.sampled_from((None, acc_bits, acc_bits + 1, acc_bits + 2)))
    return AccumulatorModel(
        "random", (fmt, fmt), G, f, draw(st.sampled_from(("rtz", "rdown"))), False, "fp32",
        draw(st.sampled_from(("rne", "rtz"))), zero_exponent=draw(st.sampled_from((None, -126))),
        nan_output=draw(st.sampled_from(("canonical", "ieee"))), overflow=draw(st.sampled_from(("inf", "ieee"))),
        structure=SplitSum(sum_bits, acc_bits, draw(st.sampled_from((1, 2))), drop))


@st.composite
def tree_models(draw) -> AccumulatorModel:
    """Random FMA trees (CDNA1/2-like): 2..16 products per tree, fp32 nodes rounded to nearest, with or without
    flushing. The FPRev units must vanish beside M = 2^n u at every node: a tree's t units stay below half an ulp
    of M, t < 2^(n - 24)."""
    fmt = draw(st.sampled_from(("fp16", "bf16", "tf32", "e4m3fn", "e5m2")))
    sizes = [t for t in (2, 4, 8, 16) if t < 2 ** (FPREV_BITS.get(fmt, 29) - 24)]
    return AccumulatorModel(
        "random", (fmt, fmt), draw(st.sampled_from(sizes)), None, acc_format="fp32",
        acc_rounding=draw(st.sampled_from(("rne", "rna"))), align_with_acc=False, zero_exponent=None,
        nan_output=draw(st.sampled_from(("canonical", "ieee"))), overflow=draw(st.sampled_from(("inf", "ieee"))),
        structure=FmaTree(draw(st.booleans())))


@st.composite
def chunk_models(draw) -> AccumulatorModel:
    """Random chunk sums (Blackwell FP4-like): E2M1 operands, blocks of 16 or 32 with E8M0 or UE4M3 scales,
    chunks of 8 or 16 within a block, steps of 32 or 64 products (two to four blocks, at least four chunks), chunk
    terms aligned to f bits with f >= m + 1 (the accumulator's bits show within one step) and within the scales'
    reach."""
    block = draw(st.sampled_from((16, 32)))
    scale = draw(st.sampled_from(("e8m0", "ue4m3")))
    chunk = draw(st.sampled_from([c for c in (8, 16) if block % c == 0]))
    G = draw(st.sampled_from([G for G in (32, 64) if G >= 2 * block and G // chunk >= 4]))
    acc = draw(st.sampled_from(("fp32", "e8m13")))
    m = {"fp32": 23, "e8m13": 13}[acc]
    f = draw(st.integers(min_value=m + 1, max_value=38))
    return AccumulatorModel(
        "random", ("e2m1", "e2m1"), G, f, draw(st.sampled_from(("rtz", "rdown", "rne"))), draw(st.booleans()), acc,
        draw(st.sampled_from(("rtz", "rne", "rdown", "rup"))), zero_exponent=draw(st.sampled_from((-126, None))),
        nan_output=draw(st.sampled_from(("canonical", "ieee"))), overflow=draw(st.sampled_from(("inf", "ieee"))),
        structure=ChunkSum(chunk), block_scale=BlockScale(block, scale))


@settings(max_examples=budget(6))
@given(fused_models())
def test_probe_recovers_random_fused_models(model):
    assert_recovered(model, run_probe(model))


@settings(max_examples=budget(4))
@given(split_models())
def test_probe_recovers_random_split_sums(model):
    assert_recovered(model, run_probe(model))


@settings(max_examples=budget(4))
@given(tree_models())
def test_probe_recovers_random_fma_trees(model):
    assert_recovered(model, run_probe(model))


@settings(max_examples=budget(3))
@given(chunk_models())
def test_probe_recovers_random_chunk_sums(model):
    assert_recovered(model, run_probe(model))


# ---- boxes that are no model --------------------------------------------------------------------------------
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


def test_fused_sum_that_flushes_subnormal_inputs_is_inconsistent():
    """hopper_fp16 behind a front end that flushes subnormal operands: only an FMA tree flushes, and this is none."""
    model = get_accumulator("hopper_fp16")

    def box(a, b):
        a, b = (torch.where(x.abs() < 2.0**-14, 0.0, x) for x in (a, b))
        return emulated_matmul(a, b, model)

    result = probe(box, ("fp16", "fp16"), max_k=34)
    assert result.status == "inconsistent" and result.features["subnormal_inputs"].value == "flushed"


def test_split_sum_with_a_perturbed_floor_is_inconsistent():
    """cdna3_fp16 whose outputs below 2^-10 are one ulp off: every feature fits, validation does not."""
    model = get_accumulator("cdna3_fp16")

    def box(a, b):
        out = emulated_matmul(a, b, model)
        return torch.where((out.abs() < 2.0**-10) & (out != 0), torch.nextafter(out, torch.zeros_like(out)), out)

    result = probe(box, ("fp16", "fp16"), max_k=18, trials=10)
    assert result.status == "inconsistent" and result.model is None and result.reasons


def test_chunk_sum_box_that_ignores_its_scales_is_inconsistent():
    model = get_accumulator("blackwell_mxf4")
    result = probe(lambda a, b, sa, sb: emulated_matmul(a, b, model, a_scales=torch.ones_like(sa),
                                                        b_scales=torch.ones_like(sb)),
                   ("e2m1", "e2m1"), max_k=130, block_scale=model.block_scale, trials=8)
    assert result.status == "inconsistent" and result.model is None and result.reasons


def test_broken_contract_raises_and_nan_is_reported():
    with pytest.raises(ProbeError, match="shape"):
        probe(lambda a, b: torch.zeros(2, 2), max_k=16)
    with pytest.raises(ValueError, match="max_k"):
        probe(lambda a, b: a @ b, max_k=2)
    with pytest.raises(TypeError, match="block_scale"):
        probe(lambda a, b: a @ b, block_scale="e8m0")
    hopper = get_accumulator("hopper_fp8")
    result = probe(lambda a, b: torch.where(emulated_matmul(a, b, hopper) == 1.0, math.nan,
                                            emulated_matmul(a, b, hopper)), max_k=66)
    assert result.status == "inconsistent" and any("NaN for finite inputs" in r for r in result.reasons)


def test_validate_lists_mismatches_of_a_wrong_model():
    v = validate(box_of(get_accumulator("hopper_fp8")), get_accumulator("ada_fp8"), trials=10)
    assert not v.agree and v.n_mismatches >= len(v.mismatches) > 0 and v.calls == 10
    m = v.mismatches[0]
    assert m.got != m.want and f"0x{m.got:08X}" in str(m)
