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


# -- on operands recorded in training (study 3 on real Wgrad operands) -----------------------------
import shutil  # noqa: E402
import sysconfig  # noqa: E402
from pathlib import Path  # noqa: E402

from safetensors import safe_open  # noqa: E402

from lowprec.lab.common import open_trace  # noqa: E402
from lowprec.training.corpus import load_corpus  # noqa: E402
from lowprec.training.model import ModelConfig  # noqa: E402
from lowprec.training.traces import TraceError  # noqa: E402
from lowprec.training.trainer import TrainConfig, train  # noqa: E402

TINY_MODEL = ModelConfig(d_model=128, n_layers=2, n_heads=2, n_experts=2, top_k=1, d_expert=128, d_shared=128)
TRACE_RUN = {"ks": [128, 512, 2048], "m": 4, "n": 4, "models": ["hopper_fp8"], "dists": ["normal"],
             "backend": "eager", "progress": False}


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two tiny BF16 traces (seeds 0 and 1) of a 2-layer MoE, 2 x 64 tokens a GEMM, on the stdlib's json."""
    root = tmp_path_factory.mktemp("runs")
    corpus = load_corpus(0.5, root=str(Path(sysconfig.get_paths()["stdlib"]) / "json"))
    return [train(TrainConfig(model=TINY_MODEL, steps=2, batch=2, seq=64, trace_steps=(2,), eval_every=1, seed=s),
                  root, corpus=corpus, progress=False).trace_dir for s in (0, 1)]


def test_trace_operands_are_the_recorded_wgrad_operands(traces):
    td = open_trace(traces[0])
    cfg = {"dist": acc.TRACE_DIST, "K": 128, "M": 4, "N": 4, "seed": 0, "model": "hopper_fp8",
           "trace_sha256": td.sha256}
    a, b, used = acc.trace_operands(cfg, str(traces[0]))
    first = acc.wgrad_segments(td.index, 4, 4)[0]
    assert first["tokens"] == 128 and used == [f"{first['layer']}@2[:128]"]      # K <= tokens: one real Wgrad
    with safe_open(str(traces[0] / first["file"]), framework="pt") as st:
        dy, x = st.get_tensor(first["dy"]).float(), st.get_tensor(first["x"]).float()
    dy8, x8 = acc._per_tensor_e4m3(dy), acc._per_tensor_e4m3(x)                # per-tensor scale: whole tensor's amax
    rows = [int(torch.nonzero((dy8.t() == r).all(1))[0]) for r in a]              # each A row is a dy column ...
    cols = [int(torch.nonzero((x8 == c[:, None]).all(0))[0]) for c in b.t()]      # ... each B column an x column
    assert torch.equal(a, dy8[:, rows].t()) and torch.equal(b, x8[:, cols]) and len(set(rows)) == 4
    a2, b2, used2 = acc.trace_operands({**cfg, "K": 512}, str(traces[0]))        # beyond: Wgrads appended along K
    assert a2.shape == (4, 512) and b2.shape == (512, 4) and len(used2) > 1 and used2[0] == used[0]
    assert torch.equal(a2[:, :128], a) and torch.equal(b2[:128], b)              # nested in K
    (row,) = acc.compute_point({**cfg, "K": 512}, trace=str(traces[0]))
    assert 0 < row["max_err_over_abs_ab"] <= row["norm_rel_err"] * 10 < 1


def test_trace_points_are_labelled_and_reused_by_content_not_path(traces, tmp_path, capsys):
    with ResultStore(tmp_path / STORE_NAME) as store:
        res = acc.run(store, tmp_path / "out", trace=traces[0], **TRACE_RUN)
        out = capsys.readouterr().out
        assert "leaves out K = 2048" in out                        # 2 layers x 6 GEMMs x 128 tokens < 2048
        df = res["frames"][acc.STUDY]
        tr = df[df["dist"] == acc.TRACE_DIST]
        assert sorted(tr["K"]) == [128, 512] and (tr["trace_sha256"] == open_trace(traces[0]).sha256).all()
        assert len(df[df["dist"] == "normal"]) == 3 and str(traces[0]) not in df.to_csv()
        (fig,) = res["figures"]
        assert "recorded BF16 training trace (step 2, run key " in fig.source and "synthetic operands" in fig.source
        assert "one real Wgrad" in fig.caption and "K > 1536 is left out" in fig.caption
        moved = shutil.copytree(traces[0], tmp_path / "elsewhere" / "trace")
        again = acc.run(store, tmp_path / "out", trace=moved, **TRACE_RUN)["sweep"]
        assert again.computed == 0 and again.reused == 5
        other = acc.run(store, tmp_path / "out", trace=traces[1], **TRACE_RUN)["sweep"]
        assert other.computed == 2 and other.reused == 3                         # only the trace points


def test_a_corrupted_or_missing_trace_is_refused_before_work(traces, tmp_path):
    bad = shutil.copytree(traces[0], tmp_path / "bad")
    (data,) = bad.glob("*.safetensors")
    data.write_bytes(data.read_bytes()[:-10])
    with ResultStore(tmp_path / STORE_NAME) as store:
        for trace, match in ((bad, "truncated"), (tmp_path / "nope", "not a directory")):
            with pytest.raises(TraceError, match=match):
                acc.run(store, tmp_path / "out", trace=trace, **TRACE_RUN)
        with pytest.raises(ValueError, match="needs a trace"):
            acc.run(store, tmp_path / "out", **{**TRACE_RUN, "dists": [acc.TRACE_DIST]})
        assert store.studies() == [] and not (tmp_path / "out").exists()
    with pytest.raises(TraceError, match="planned for"):
        acc.compute_point({"dist": acc.TRACE_DIST, "K": 128, "M": 4, "N": 4, "seed": 0, "model": "hopper_fp8",
                           "trace_sha256": open_trace(traces[0]).sha256}, trace=str(traces[1]))


def test_cli_trace_option(traces, tmp_path, capsys):
    acc.main(["--out", str(tmp_path), *TINY, "--ks", "128", "--dists", "normal", "--trace", str(traces[0])])
    df = pd.read_csv(tmp_path / "accum_error_vs_k.csv")
    assert set(df["dist"]) == {"normal", acc.TRACE_DIST} and (tmp_path / "accum_error_vs_k.png").stat().st_size > 0
