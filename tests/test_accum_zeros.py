"""Issue 12, part 1: zeros never make NaN. Groups with no non-zero term (leading zero blocks with C = 0,
a zero block right after an exact cancellation, all-zero rows and columns, K padded with zeros) on every
preset, with its own zero convention and with "zero terms take no part" (where a group can be empty),
on every backend that runs it. Expected values are closed forms (exact products of small
floats) or the scalar Fraction reference ``reference_dot``, never the code under test."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch

import lowprec as lp
from lowprec.accum import AccumulatorModel


def variants(preset: AccumulatorModel) -> list[AccumulatorModel]:
    """The preset, and where its zeros take part in the search for E, the same with zero terms taking no
    part: only then can a group have no term at all (the path of the bug)."""
    if preset.zero_exponent is None:
        return [preset]
    return [preset, replace(preset, name=f"{preset.name}/skip_zeros", zero_exponent=None)]


MODELS = [m for p in lp.list_accumulators() for m in variants(p)]


# torch.compile costs 10-20 s per model on CPU (and dynamo recompiles one function for at most 8 models
# per process), so the compiled backend runs the bug's two paths -- float64 terms (align_bits = 24, the
# reported NaN) and float32 terms (the narrow FP8 path) -- plus one hardware zero convention. It traces
# the same ``_group_update`` that the eager runs check on every model.
COMPILED = {"ampere_fp16/skip_zeros", "hopper_fp8/skip_zeros", "ampere_bf16"}


def backends(model: AccumulatorModel) -> list[str]:
    out = ["eager", "compiled"] if model.name in COMPILED else ["eager"]
    if lp.accum.native_unsupported(model, torch.device("cpu")) is None:
        out.append("native")
    if torch.cuda.is_available() and lp.accum.native_unsupported(model, torch.device("cuda")) is None:
        out.append("cuda")
    return out


CASES = [(m, be) for m in MODELS for be in backends(m)]
IDS = [f"{m.name}-{be}" for m, be in CASES]


def unit_scales(model: AccumulatorModel, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scales of 1 for a block-scaled model (its zeros behave as any model's), nothing otherwise."""
    if model.block_scale is None:
        return {}
    nb = -(-a.shape[1] // model.block_scale.block)
    return {"a_scales": torch.ones(a.shape[0], nb), "b_scales": torch.ones(nb, b.shape[1])}


def run(a: torch.Tensor, b: torch.Tensor, model: AccumulatorModel, backend: str,
        c: torch.Tensor | None = None) -> torch.Tensor:
    if backend == "cuda":
        sc = {k: v.cuda() for k, v in unit_scales(model, a, b).items()}
        return lp.emulated_matmul(a.cuda(), b.cuda(), model, None if c is None else c.cuda(), backend="native",
                                  **sc).cpu()
    return lp.emulated_matmul(a, b, model, c, backend=backend, **unit_scales(model, a, b))


def reference(a: torch.Tensor, b: torch.Tensor, model: AccumulatorModel, c: torch.Tensor) -> torch.Tensor:
    """``reference_dot`` per output element (scales of 1 for a block-scaled model)."""
    nb = -(-a.shape[1] // model.block_scale.block) if model.block_scale else 0
    sc = {"a_scales": [1.0] * nb, "b_scales": [1.0] * nb} if model.block_scale else {}
    return torch.tensor([[lp.reference_dot(a[i].tolist(), b[:, j].tolist(), model, float(c[i, j]), **sc)
                          for j in range(b.shape[1])] for i in range(a.shape[0])], dtype=torch.float32)


def assert_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same float32 bits (so +0 is not -0); no NaN is expected anywhere here."""
    assert not got.isnan().any(), got
    assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (got, want)


X, Y, C0 = 1.5, 1.5, 0.75           # X, Y: values of every input format (FP4 too); X * Y = 2.25 exactly


def length(model: AccumulatorModel) -> int:
    """K: four groups (and two promotion blocks), a multiple of the group so compiled code sees one shape."""
    g = min(model.group_size, 16)
    return max(4 * g, 2 * (model.promote_every or 0))


@functools.lru_cache(maxsize=None)
def zero_cases(K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Output (i, i) holds case i; ``want[i]`` is its closed form. Row 0 of a and column 0 of b are
    zero, so row 0 and column 0 of the result are +0 (row 1 of a is zero too: that row is c)."""
    a, b, c = torch.zeros(6, K), torch.zeros(K, 6), torch.zeros(6, 6)
    want = [0.0] * 6
    c[1, 1] = want[1] = C0                                      # zero row, non-zero C: C exactly
    a[2, K - 1], b[K - 1, 2] = X, Y                             # leading empty groups with C = 0
    want[2] = X * Y
    a[3, :2], b[:2, 3] = torch.tensor([1.0, -1.0]), 1.0         # exact cancellation, then zero groups: +0
    a[4, :2], b[:2, 4] = torch.tensor([-2.0, 2.0]), 1.0         # the same from a negative partial sum ...
    a[4, K - 1], b[K - 1, 4] = X, Y                             # ... then empty groups, then X * Y
    want[4] = X * Y
    a[5, K // 4], b[K // 4, 5] = -X, Y                          # one product in a middle group, zeros after
    want[5] = -X * Y
    return a, b, c, want


@pytest.mark.parametrize("model,backend", CASES, ids=IDS)
def test_zero_groups_give_closed_forms(model, backend):
    K = length(model)
    a, b, c, want = zero_cases(K)
    out = run(a, b, model, backend, c)
    assert_bits(torch.diagonal(out), torch.tensor(want))
    assert_bits(out[0], torch.zeros(6))
    assert_bits(out[:, 0], torch.zeros(6))
    assert_bits(out[1], c[1])
    assert_bits(out, reference(a, b, model, c))


def test_the_reported_case():
    """The issue's example: all zeros on ampere_fp16 (align_bits = 24) gave NaN."""
    for model in ("ampere_fp16", replace(lp.get_accumulator("ampere_fp16"), zero_exponent=None)):
        out = lp.emulated_matmul(torch.zeros(1, 16), torch.zeros(16, 1), model)
        assert out.view(torch.int32).item() == 0                 # +0, not NaN and not -0
        assert math.copysign(1.0, lp.reference_dot([0.0] * 16, [0.0] * 16, model)) == 1.0


def padded_operands(model: AccumulatorModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, c) with K = 1.5 groups: values of the input formats with zeros, a zero row and column,
    subnormals (row 0 of b), and a C with zeros and values the accumulator format must round."""
    g = torch.Generator().manual_seed(12)
    K = max(3 * min(model.group_size, 16) // 2, 3)
    fa, fb = model.formats
    a = torch.randn(6, K, generator=g) * torch.exp2(torch.randint(-4, 4, (6, K), generator=g).float())
    b = torch.randn(K, 6, generator=g)
    a[torch.rand(6, K, generator=g) < 0.2] = 0.0
    a[1], b[:, 2] = 0.0, 0.0
    b[0] = fb.min_subnormal
    c = torch.randn(6, 6, generator=g) * 1e3
    c[:, 3:] = 0.0
    return lp.quantize(a, fa, saturate=True).float(), lp.quantize(b, fb, saturate=True).float(), c


@pytest.mark.parametrize("model,backend", CASES, ids=IDS)
def test_padding_k_with_zeros_changes_nothing(model, backend):
    """Zeros appended to K (a's columns, b's rows) up to four groups -- past a promotion boundary where
    there is one -- give the scalar reference's result for the unpadded operands."""
    a, b, c = padded_operands(model)
    K, Kp = a.shape[1], length(model)
    ap, bp = torch.zeros(6, Kp), torch.zeros(Kp, 6)
    ap[:, :K], bp[:K] = a, b
    assert_bits(run(ap, bp, model, backend, c), reference(a, b, model, c))
