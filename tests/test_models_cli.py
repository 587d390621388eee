"""``lowprec models``: every accumulator preset with its parameters and source, as text, one preset in full, or
JSON that rebuilds the preset; an unknown name is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import lowprec as lp
from lowprec.cli import main
from lowprec.lab.presets import model_from_parameters

PRESETS = lp.list_accumulators()


def test_models_lists_every_preset_with_its_description(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["name", "inputs"] and "accumulator" in header and "overflow" in header
    rows = [ln for ln in lines[1:] if not ln.startswith(" ")]
    assert [r.split()[0] for r in rows] == [m.name for m in PRESETS]
    for m in PRESETS:                                   # each row is followed by its description, indented
        i = lines.index(next(r for r in rows if r.split()[0] == m.name))
        assert lines[i + 1] == "    " + m.description
    cols = lines[0].index("accumulator")                # aligned: every row's accumulator starts in that column
    assert {r[cols:].split()[0] for r in rows} >= {"fp32", "e8m13", "fp16"}


def test_models_text_states_documented_parameters(capsys):
    """hopper_fp8 by hand (DeepSeek-V3, ISCA 2025): E4M3 inputs, wgmma K = 32, one step of 32 products, 13
    fraction bits truncated, E8M13 accumulator truncated, C aligned with the products, no promotion."""
    assert main(["models", "--name", "hopper_fp8"]) == 0
    fields = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["inputs"] == "e4m3fn" and fields["instr K"] == "32" and fields["products/step"] == "32"
    assert fields["fraction bits"] == "13" and fields["align rounding"] == "rtz"
    assert fields["accumulator"] == "e8m13 rtz" and fields["C in alignment"] == "yes"
    assert fields["promotion"] == "-" and fields["zero terms"] == "0 * 2^-126"
    assert "ISCA" in fields["description"]


def test_models_json_round_trips_every_preset(capsys):
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == [m.name for m in PRESETS]
    for d, m in zip(data, PRESETS):
        assert model_from_parameters(d) == m, m.name
    mx = next(d for d in data if d["name"] == "blackwell_mxf4")
    assert mx["structure"] == {"kind": "ChunkSum", "chunk": 16}
    assert mx["block_scale"] == {"block": 32, "scale_format": "e8m0"}
    assert mx["input_formats"] == ["e2m1", "e2m1"] and mx["align_bits"] == 35


def test_models_json_one_preset(capsys):
    assert main(["models", "--json", "--name", "cdna3_fp8"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "cdna3_fp8" and d["group_size"] == 16 and d["acc_rounding"] == "rne"
    assert d["structure"] == {"kind": "SplitSum", "sum_bits": 31, "acc_bits": 24, "interleave": 2, "acc_drop": 25}
    assert model_from_parameters(d) == lp.get_accumulator("cdna3_fp8")


def test_models_unknown_name_is_one_line_and_exit_2(capsys):
    assert main(["models", "--name", "hopper_fp9"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("lowprec models: error:") and "hopper_fp9" in err


def test_models_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "lowprec.cli", "models", "--json", "--name", "ada_fp8"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["group_size"] == 16
