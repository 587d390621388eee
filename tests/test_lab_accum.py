"""The accumulation study: metrics that mean something, keyed resume, bad input."""

import pandas as pd
import pytest
import torch

import lowprec as lp
from lowprec.lab import accum_vs_k as acc
from lowprec.lab.common import STORE_NAME
from lowprec.lab.store import ResultStore

TINY = ["--ks", "128", "256", "--m", "4", "--n", "4", "--models", "hopper_fp8", "blackwell_fp8",
        "--dists", "normal", "uniform_pos", "--backend", "eager", "--no-progress"]


def test_bound_metric_is_the_elementwise_relative_error_on_positive_data():
    cfg = {"dist": "uniform_pos", "K": 1024, "M": 4, "N": 4, "seed": 0, "model": "hopper_fp8"}
    (row,) = acc.compute_point(cfg)
    g = torch.Generator().manual_seed(acc._operand_seed(0, "uniform_pos", 1024))
    a, b = acc.fp8_operand((4, 1024), "uniform_pos", g), acc.fp8_operand((1024, 4), "uniform_pos", g)
    exact = lp.emulated_matmul(a, b, "exact").double()
    c = lp.emulated_matmul(a, b, "hopper_fp8").double()
    assert row["max_err_over_abs_ab"] == pytest.approx(((c - exact).abs() / exact).max().item(), rel=1e-6)
    assert row["norm_rel_err"] == pytest.approx(((c - exact).norm() / exact.norm()).item())
    assert row["mean_signed_err_over_abs_ab"] < 0                       # truncation: biased towards zero


def test_zero_mean_data_keeps_the_bound_metric_small():
    """On N(0,1) operands the elementwise relative error blows up near zero outputs; the bound metric does not."""
    (row,) = acc.compute_point({"dist": "normal", "K": 4096, "M": 8, "N": 8, "seed": 0, "model": "hopper_fp8"})
    assert 0 < row["max_err_over_abs_ab"] < 1e-3 < row["norm_rel_err"] < 2e-2


def test_study_writes_reuses_and_recomputes_what_changed(tmp_path, capsys):
    acc.main(["--out", str(tmp_path), *TINY])
    df = pd.read_csv(tmp_path / "accum_error_vs_k.csv")
    assert len(df) == 2 * 2 * 2 and {"max_err_over_abs_ab", "norm_rel_err"} <= set(df.columns)
    assert "max_rel_err" not in df.columns
    assert (tmp_path / "accum_error_vs_k.png").stat().st_size > 0
    capsys.readouterr()
    acc.main(["--out", str(tmp_path), *TINY, "--seed", "123"])          # the stale-resume case of issue 10
    assert "reused 0 of 8 points" in capsys.readouterr().out
    acc.main(["--out", str(tmp_path), *TINY, "--ks", "128", "512"])      # K = 512 is new, 128 is reused
    assert "reused 4 of 8 points" in capsys.readouterr().out


def test_run_returns_the_figure_and_the_comparison_at_the_papers_k(tmp_path):
    with ResultStore(tmp_path / STORE_NAME) as store:
        res = acc.run(store, tmp_path, ks=[4096], m=2, n=2, models=["hopper_fp8"], dists=["uniform_pos"],
                      progress=False)
    (fig,) = res["figures"]
    assert fig.path.exists() and "2%" in fig.caption and "store study" in fig.source
    (table,) = res["tables"]
    assert table.frame["vs_paper_2pct"].iloc[0] == pytest.approx(table.frame["max_err_over_abs_ab"].iloc[0] / 0.02)


@pytest.mark.parametrize("params,match", [({"bogus": 1}, "no parameter bogus"),
                                          ({"models": ["nope"]}, "unknown model 'nope'"),
                                          ({"dists": ["cauchy"]}, "unknown distribution 'cauchy'"),
                                          ({"ks": [0]}, "ks must be positive"),
                                          ({"backend": "cuda"}, "backend must be")])
def test_bad_parameters_are_refused_before_work(tmp_path, params, match):
    with ResultStore(tmp_path / STORE_NAME) as store:
        with pytest.raises(ValueError, match=match):
            acc.run(store, tmp_path, quick=True, progress=False, **params)
        assert store.studies() == []
