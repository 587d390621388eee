"""Golden vectors (issue 14): generated cases verify against the model that made them, a different model or a
flipped bit is reported with the first differing bit, and a tampered or malformed directory is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import lowprec as lp
from lowprec import vectors


def write_results(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("name", ["hopper_fp8", "blackwell_nvf4", "cdna3_fp8", "hopper_fp16_f16acc"])
def test_vectors_verify_against_their_own_model(tmp_path, name):
    manifest = vectors.generate(name, 2 * len(vectors.KINDS), tmp_path, seed=3)
    assert manifest["model"]["name"] == name and sum(manifest["kinds"].values()) == 2 * len(vectors.KINDS)
    cases = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text().splitlines()]
    fa, fb = lp.get_accumulator(name).formats
    assert all(len(c["a"][0]) == 2 + -(-fa.bits // 4) and len(c["b"][0]) == 2 + -(-fb.bits // 4) for c in cases)
    res = write_results(tmp_path / "r.jsonl", vectors.results_of(tmp_path, name))
    assert vectors.verify(tmp_path, res) == []
    assert (tmp_path / "README.md").read_text().startswith(f"# Golden vectors: {name}")


def test_a_different_model_is_caught_with_the_first_differing_bit(tmp_path):
    vectors.generate("hopper_fp8", 90, tmp_path, seed=0)
    wrong = replace(lp.get_accumulator("hopper_fp8"), align_bits=14)     # one more alignment bit than H100 keeps
    report = vectors.verify(tmp_path, write_results(tmp_path / "r.jsonl", vectors.results_of(tmp_path, wrong)))
    assert report and {"alignment_cut", "cancellation"} & {r["kind"] for r in report}
    for r in report:
        diff = int(r["expected"], 16) ^ int(r["got"], 16)
        assert r["first_differing_bit"] == diff.bit_length() - 1


def test_one_flipped_bit_and_a_missing_case_are_reported(tmp_path):
    vectors.generate("ada_fp8", 10, tmp_path, seed=1)
    rows = vectors.results_of(tmp_path, "ada_fp8")
    rows[3]["out"] = f"0x{int(rows[3]['out'], 16) ^ (1 << 5):08x}"
    del rows[7]
    report = {r["id"]: r for r in vectors.verify(tmp_path, write_results(tmp_path / "r.jsonl", rows))}
    assert set(report) == {3, 7}
    assert report[3]["first_differing_bit"] == 5 and report[7]["got"] is None


def test_first_differing_bit():
    assert vectors.first_differing_bit(0x3F800000, 0xBF800000) == 31
    assert vectors.first_differing_bit(0x3F800000, 0x3F800001) == 0
    assert vectors.first_differing_bit(7, 7) is None


def test_tampered_or_malformed_directories_are_refused(tmp_path):
    vectors.generate("hopper_fp8", 5, tmp_path)
    lines = (tmp_path / "cases.jsonl").read_text().splitlines()
    (tmp_path / "cases.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="does not match the manifest's SHA-256"):
        vectors.load(tmp_path)
    with pytest.raises(ValueError, match="is missing"):
        vectors.load(tmp_path / "nowhere")


def test_bad_results_and_arguments(tmp_path):
    vectors.generate("hopper_fp8", 3, tmp_path)
    (tmp_path / "r.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(ValueError, match="line 1"):
        vectors.verify(tmp_path, tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="cases must be a positive int"):
        vectors.generate("hopper_fp8", 0, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown accumulator model"):
        vectors.generate("h100", 3, tmp_path / "y")


def test_the_command_line(tmp_path, capsys):
    from lowprec.cli import main

    out = tmp_path / "v"
    assert main(["vectors", "generate", "--model", "hopper_fp8", "--cases", "9", "--out", str(out)]) == 0
    rows = vectors.results_of(out, "hopper_fp8")
    assert main(["vectors", "verify", str(out), str(write_results(tmp_path / "ok.jsonl", rows))]) == 0
    assert "9 of 9 cases match: every bit" in capsys.readouterr().out
    rows[4]["out"] = f"0x{int(rows[4]['out'], 16) ^ 1:08x}"
    assert main(["vectors", "verify", str(out), str(write_results(tmp_path / "bad.jsonl", rows))]) == 1
    text = capsys.readouterr().out
    assert "case 4" in text and "first differing bit 0" in text and "8 of 9 cases match" in text
    assert main(["vectors", "verify", str(tmp_path / "nowhere"), str(tmp_path / "ok.jsonl")]) == 2
    assert "is not a vector directory" in capsys.readouterr().err


def test_help_has_no_markup(capsys):
    from lowprec.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
