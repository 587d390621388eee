"""The communication study: byte counts from their definitions, keyed resume, user configs, bad input."""

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from lowprec.lab import comm
from lowprec.lab.common import DEFAULT_OUT, STORE_NAME
from lowprec.lab.store import ResultStore

TINY = ["--tokens", "8", "--hidden", "256", "--ffn", "64", "--no-progress"]


def test_bytes_per_token_from_the_definitions():
    vol = comm.volume_table(comm.MoEConfig()).set_index("format")
    # FP8 + one float32 scale per 128 elements: 1 + 4/128 bytes per element vs 2 for BF16
    assert vol.loc["e4m3_1x128", "vs_bf16"] == pytest.approx((1 + 4 / 128) / 2)
    assert vol.loc["e4m3_1x128", "bytes_per_token_copy"] == 7168 * (1 + 4 / 128)
    assert vol.loc["logfmt10", "bytes_per_token_copy"] == 7168 * (10 / 8 + 8 / 128)
    assert vol.loc["bf16", "bytes_per_token_all_experts"] == 7168 * 2 * 8
    assert vol.loc["bf16", "bytes_per_token_inter_node"] == 7168 * 2 * 4


def test_study_writes_reuses_and_recomputes_what_changed(tmp_path, capsys):
    comm.main(["--out", str(tmp_path), *TINY, "--top-k", "6"])
    df = pd.read_csv(tmp_path / "comm_formats.csv")
    assert set(df["stage"]) == {"dispatch", "combine"} and len(df) == 2 * len(comm.FORMATS)
    assert (df["data"] == comm.DATA_ID).all() and (df["tokens"] == 8).all()
    assert (df["snr_db"] > 20).all()
    vol = pd.read_csv(tmp_path / "comm_volume.csv")
    assert set(vol["config"]) == {"DeepSeek-V3", "user"} and (vol[vol["config"] == "user"]["top_k"] == 6).all()
    assert (tmp_path / "comm_formats.png").stat().st_size > 0
    capsys.readouterr()
    comm.main(["--out", str(tmp_path), *TINY])
    assert "reused 12 of 12 points" in capsys.readouterr().out
    for changed in (["--seed", "1"], ["--tokens", "16"]):         # the stale-resume case of issue 10
        argv = ["--out", str(tmp_path), *TINY, *changed]
        comm.main(argv)
        assert "reused 0 of 12 points" in capsys.readouterr().out
    new = pd.read_csv(tmp_path / "comm_formats.csv")
    assert (new["tokens"] == 16).all() and not new["snr_db"].equals(df["snr_db"])
    assert len(ResultStore(tmp_path / STORE_NAME).frame(comm.STUDY)) == 3 * 12


def test_run_returns_captioned_figures_and_tables(tmp_path):
    with ResultStore(tmp_path / STORE_NAME) as store:
        res = comm.run(store, tmp_path / "out", quick=True, tokens=4, hidden=128, ffn=32, formats=["bf16", "logfmt8"],
                       progress=False)
    assert res["sweep"].computed == 4 and set(res["frames"]) == {comm.STUDY, "comm_volume"}
    (fig,) = res["figures"]
    assert fig.path.exists() and "SNR" in fig.caption and comm.DATA_LABEL in fig.source
    assert all(t.caption and t.source for t in res["tables"])


@pytest.mark.parametrize("params,match", [({"bogus": 1}, "no parameter bogus"),
                                          ({"formats": ["fp4"]}, "unknown format 'fp4'"),
                                          ({"hidden": 200}, "multiple of 128"),
                                          ({"tokens": 0}, "tokens must be a positive int")])
def test_bad_parameters_are_refused_before_work(tmp_path, params, match):
    with ResultStore(tmp_path / STORE_NAME) as store:
        with pytest.raises(ValueError, match=match):
            comm.run(store, tmp_path, progress=False, **params)
        assert store.studies() == []


def test_an_unwritable_output_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="output directory"):
        comm.main(["--out", str(tmp_path / "file" / "sub"), *TINY])


def test_default_output_is_git_ignored():
    repo = Path(__file__).resolve().parents[1]
    try:
        rc = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_OUT / STORE_NAME)], cwd=repo).returncode
    except FileNotFoundError:
        pytest.skip("no git")
    if rc == 128:
        pytest.skip("not a git checkout")
    assert rc == 0 and not DEFAULT_OUT.parts[0] == "reports"
