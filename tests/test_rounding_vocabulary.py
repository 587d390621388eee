"""One rounding vocabulary (``lowprec.Rounding``): every rounding argument of the library takes a member or its
name, stores a member, and refuses every other name -- aliases included -- with a message listing what the
function offers, before any work."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import lowprec as lp
from lowprec import logfmt
from lowprec.codes import Rounding

FORMER_ALIASES = ["nearest", "nearest_even", "even", "rn", "nearest_away", "ties_away", "toward_zero", "trunc", "rz",
                  "ceil", "toward_positive", "ru", "floor", "toward_negative", "rd", "odd", "round_to_odd", "sr"]


def test_members_are_their_names():
    assert [r.value for r in Rounding] == ["rne", "rna", "rtz", "rup", "rdown", "rto", "stochastic"]
    assert Rounding.RNE == "rne" and hash(Rounding.RNE) == hash("rne")
    assert json.dumps({"r": Rounding.RTZ}) == '{"r": "rtz"}'
    assert repr(Rounding.RDOWN) == "Rounding.RDOWN"


@pytest.mark.parametrize("text", ["rne", "RNE", "Rne"])
def test_parse_accepts_names_in_any_case_and_members(text):
    assert Rounding.parse(text) is Rounding.RNE
    assert Rounding.parse(Rounding.RTO) is Rounding.RTO


@pytest.mark.parametrize("alias", FORMER_ALIASES)
def test_no_aliases_anywhere(alias):
    x = torch.tensor([1.3])
    with pytest.raises(ValueError, match="expected one of 'rne', 'rna'"):
        lp.encode(x, "e4m3fn", alias)
    with pytest.raises(ValueError, match="unknown rounding"):
        lp.quantize(x, "e4m3fn", alias)
    with pytest.raises(ValueError, match="acc_rounding"):
        lp.AccumulatorModel("m", acc_rounding=alias)
    with pytest.raises(ValueError, match="LogFMT rounding"):
        logfmt.encode(torch.ones(1, 4), 8, 4, alias)


def test_non_strings_are_type_errors():
    with pytest.raises(TypeError, match="rounding must be a Rounding"):
        lp.encode(torch.tensor([1.0]), "e4m3fn", 0)


def test_each_function_offers_its_own_subset():
    with pytest.raises(ValueError, match="align_rounding 'rup'; expected one of 'rtz', 'rdown', 'rne'"):
        lp.AccumulatorModel("m", align_rounding="rup")
    with pytest.raises(ValueError, match="outer_rounding 'stochastic'"):
        lp.AccumulatorModel("m", outer_rounding="stochastic")
    with pytest.raises(ValueError, match="LogFMT rounding 'rne'; expected one of 'rna', 'stochastic'"):
        logfmt.encode(torch.ones(1, 4), 8, 4, "rne")


def test_models_store_members_and_compare_equal_however_the_mode_was_named():
    m = lp.AccumulatorModel("m", align_rounding="RNE", acc_rounding=Rounding.RNE)
    assert m.align_rounding is Rounding.RNE and m.acc_rounding is Rounding.RNE and m.outer_rounding is Rounding.RNE
    assert m == dataclasses.replace(m, align_rounding=Rounding.RNE, acc_rounding="rne")


def test_logfmt_rounding_is_rna_by_name_member_and_default():
    # a tile of {1, 4}: levels 1 and 4 (Kmax = 3 for 3 bits: levels 1, 2, 4); 3 lies midway between 2 and 4
    x = torch.tensor([[1.0, 3.0, 4.0, 0.0]])
    for rounding in ("rna", Rounding.RNA):
        q = logfmt.quantize(x, 3, 4, rounding, backend="eager")
        assert q.tolist() == [[1.0, 4.0, 4.0, 0.0]]
    assert logfmt.quantize(x, 3, 4, backend="eager").tolist() == [[1.0, 4.0, 4.0, 0.0]]


def test_compiled_graphs_are_told_apart_by_their_models_roundings():
    """torch.compile keys its graphs by the model's fields; members (not strings parsed inside the graph) keep a
    graph compiled for one preset from serving another (found: blackwell_fp8 after hopper_fp8_promoted)."""
    g = torch.Generator().manual_seed(11)
    a = lp.quantize(torch.randn(9, 80, generator=g) * 3, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(80, 5, generator=g), "e4m3", saturate=True)
    base = lp.get_accumulator("hopper_fp8")
    models = ["hopper_fp8_promoted", "blackwell_fp8", base, dataclasses.replace(base, align_rounding="rne"),
              dataclasses.replace(base, acc_rounding="rup"), "ampere_bf16"]
    for model in models:
        x = lp.emulated_matmul(a, b, model, backend="compiled")
        y = lp.emulated_matmul(a, b, model, backend="eager")
        assert torch.equal(x.view(torch.int32), y.view(torch.int32)), model
