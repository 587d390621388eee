"""The closed-form probes of ``lowprec.lab.presets``: on a few presets each probe passes and reveals the value a
vendor's documentation states (written here by hand, not read from the preset), and a model that differs from
its documented parameters fails exactly the probes that see the difference -- the table cannot report all-pass
by construction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import lowprec as lp
from lowprec.lab.presets import PROBES, main, probe_model, probe_table, write_probe_report

# preset -> inferred value per probe, from the sources (DeepSeek-V3 ISCA 2025; Khattak & Mikaitis 2025; MMA-Sim):
# order, alignment bits, negative term's cut, negative C's cut, accumulator, promotion (None: n/a). CDNA3 floors C
# (two's complement) but truncates the aligned products.
TZ, NO_CUT = "toward zero", "exact (no cut)"
DOCUMENTED = {
    "hopper_fp8": ("steps of 32, C aligned", "13", TZ, TZ, "13 bits, rtz", None),
    "hopper_fp8_promoted": ("steps of 32, C aligned", "13", TZ, NO_CUT, "13 bits, rtz", "128"),   # C: FP32 reg.
    "ampere_bf16": ("steps of 8, C aligned", "24", TZ, TZ, "23 bits, rtz", None),
    "hopper_fp16_f16acc": ("steps of 16, C aligned", "25", TZ, TZ, "10 bits, rne", None),
    "cdna3_fp8": ("steps of 16, C aligned", "24", TZ, "toward -inf", "23 bits, rne", None),
    "cdna1_bf16": ("pairwise trees of 2", None, None, None, "23 bits, rne", None),
    "blackwell_nvf4": (None, "35", TZ, TZ, "23 bits, rtz", None),
    "fp32_sequential": ("one product at a time", "exact (>= 30)", NO_CUT, NO_CUT, "23 bits, rne", None),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_probes_pass_and_reveal_the_documented_values(name):
    results = probe_model(name)
    assert [r.probe for r in results] == list(PROBES)
    for r, want in zip(results, DOCUMENTED[name]):
        if want is None:
            assert r.status == "n/a" and r.note, (name, r)
        else:
            assert (r.status, r.inferred, r.expected) == ("pass", want, want), (name, r)


HOPPER = lp.get_accumulator("hopper_fp8")


@pytest.mark.parametrize("changes,failing,inferred", [
    ({"align_bits": 14, "group_size": 16}, {"order", "alignment_bits", "negative_cut", "negative_c"},
     {"order": "steps of 16, C aligned", "alignment_bits": "14", "negative_cut": "(-1/2, -1/2) x q"}),
    ({"align_rounding": "rdown"}, {"negative_cut", "negative_c"},
     {"negative_cut": "toward -inf", "negative_c": "toward -inf"}),
    ({"acc_rounding": "rne"}, {"accumulator"}, {"accumulator": "13 bits, rne"}),
    ({"acc_format": "e8m12"}, {"accumulator"}, {"accumulator": "12 bits, ?"}),
    ({"align_with_acc": False}, {"order", "negative_c"},
     {"order": "steps of 32, C added after", "negative_c": "exact (no cut)"}),
])
def test_a_model_unlike_its_documentation_fails(changes, failing, inferred):
    """Documented as hopper_fp8, emulated with other parameters: the probes that see the change fail (and name
    what they saw), the others still pass. At 14 bits q = 2^-13 is 2 units: -0.75 q and -0.5 q are -1.5 and -1
    units, truncated to -1 unit each, i.e. -q/2. An E8M12 register keeps 3 + 1.5 * 2^-12 only to 12 bits."""
    results = {r.probe: r for r in probe_model(HOPPER, replace(HOPPER, **changes))}
    assert {p for p, r in results.items() if r.status == "fail"} == failing
    assert {p for p, r in results.items() if r.status == "pass"} == set(PROBES) - {"promotion"} - failing
    for probe, value in inferred.items():
        assert results[probe].inferred == value


def test_wrong_promotion_interval_and_tree_size_fail():
    promoted = lp.get_accumulator("hopper_fp8_promoted")
    res = {r.probe: r for r in probe_model(promoted, replace(promoted, promote_every=64))}
    assert (res["promotion"].status, res["promotion"].inferred) == ("fail", "64")
    tree = lp.get_accumulator("cdna1_fp16")                # documented groups of 4, emulated as pairs
    res = {r.probe: r for r in probe_model(tree, replace(tree, group_size=2, instruction_k=2))}
    assert (res["order"].status, res["order"].inferred) == ("fail", "pairwise trees of 2")


def test_probe_model_refuses_a_model_on_other_operands():
    with pytest.raises(ValueError, match="other operands"):
        probe_model("hopper_fp8", lp.get_accumulator("hopper_fp16"))


def test_report_files(tmp_path):
    table = probe_table(["hopper_fp8_promoted", "cdna1_bf16"])
    assert list(table.columns) == ["preset", "probe", "expected", "inferred", "status", "scale", "note"]
    md, csv = write_probe_report(tmp_path, table)
    assert pd.read_csv(csv, keep_default_na=False).equals(table)
    text = md.read_text()
    assert "| hopper_fp8_promoted | steps of 32, C aligned (pass) | 13 (pass) |" in text
    assert "FMA trees round IEEE float32 sums" in text and "cdna1_bf16" in text
    with pytest.raises(ValueError, match="does not exist"):
        write_probe_report(tmp_path / "missing", table)


def test_main_refuses_bad_input_before_work(tmp_path):
    with pytest.raises(ValueError, match="unknown accumulator model"):
        main(["--out", str(tmp_path), "--name", "nope"])
    with pytest.raises(ValueError, match="does not exist"):
        main(["--out", str(tmp_path / "missing"), "--name", "hopper_fp8"])
    assert not any(tmp_path.iterdir())


def test_committed_report_covers_every_preset_and_nothing_fails():
    """reports/accumulator_presets.csv is regenerated by studies/preset_probes.py; a new preset or a failing
    probe shows here until it is."""
    csv = Path(__file__).resolve().parents[1] / "reports" / "accumulator_presets.csv"
    table = pd.read_csv(csv, keep_default_na=False)
    assert set(table["preset"]) == {m.name for m in lp.list_accumulators()}
    assert set(table["status"]) <= {"pass", "n/a"}
    assert len(table) == len(PROBES) * len(lp.list_accumulators())
