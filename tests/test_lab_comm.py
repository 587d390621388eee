"""The communication study: byte counts from their definitions, resumable results, user configs."""

import pandas as pd
import pytest

from lowprec.lab import comm


def test_bytes_per_token_from_the_definitions():
    vol = comm.volume_table(comm.MoEConfig()).set_index("format")
    # FP8 + one float32 scale per 128 elements: 1 + 4/128 bytes per element vs 2 for BF16
    assert vol.loc["e4m3_1x128", "vs_bf16"] == pytest.approx((1 + 4 / 128) / 2)
    assert vol.loc["e4m3_1x128", "bytes_per_token_copy"] == 7168 * (1 + 4 / 128)
    assert vol.loc["logfmt10", "bytes_per_token_copy"] == 7168 * (10 / 8 + 8 / 128)
    assert vol.loc["bf16", "bytes_per_token_all_experts"] == 7168 * 2 * 8
    assert vol.loc["bf16", "bytes_per_token_inter_node"] == 7168 * 2 * 4


def test_study_writes_resumes_and_takes_a_user_config(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--tokens", "8", "--hidden", "256", "--ffn", "64", "--top-k", "6"]
    comm.main(argv)
    df = pd.read_csv(tmp_path / "comm_formats.csv")
    assert set(df["stage"]) == {"dispatch", "combine"} and len(df) == 2 * len(comm.FORMATS)
    assert (df["data"] == comm.DATA_LABEL).all()
    vol = pd.read_csv(tmp_path / "comm_volume.csv")
    assert set(vol["config"]) == {"DeepSeek-V3", "user"}
    assert (vol[vol["config"] == "user"]["top_k"] == 6).all()
    capsys.readouterr()
    comm.main(argv)
    assert "SNR" not in capsys.readouterr().out                       # nothing recomputed
    assert len(pd.read_csv(tmp_path / "comm_formats.csv")) == len(df)
