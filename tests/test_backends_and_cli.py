"""The compiled backend computes the same bits as the eager one; the lab command runs."""

import pandas as pd
import pytest
import torch

import lowprec as lp
from lowprec.cli import main


@pytest.mark.parametrize("fmt,rounding", [("e4m3", "rne"), ("e5m2", "stochastic"), ("e8m13", "rtz")])
def test_compiled_backend_matches_eager(fmt, rounding):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50_000, generator=g) * torch.exp2(torch.randint(-30, 30, (50_000,), generator=g).float())
    x[:4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e30])
    rb = torch.randint(0, 1 << 32, x.shape, generator=g)
    kw = dict(random_bits=rb) if rounding == "stochastic" else {}
    assert torch.equal(lp.encode(x, fmt, rounding, backend="compiled", **kw), lp.encode(x, fmt, rounding, **kw))
    a = lp.quantize(x, fmt, rounding, backend="compiled", **kw)
    b = lp.quantize(x, fmt, rounding, **kw)
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        lp.encode(torch.ones(2), "e4m3", backend="cuda")


TINY = {"training": {"recipes": ["bf16", "deepseek_v3"], "steps": 3, "batch": 2, "seq": 32, "eval_every": 3,
                     "model_size": "tiny"},
        "replay": {"scalings": ["deepseek_v3", "e4m3_tensor"], "accumulators": ["fp32", "hopper_fp8"], "rows": 4,
                   "cols": 4},
        "accum": {"ks": [128, 256], "m": 2, "n": 2, "models": ["hopper_fp8", "hopper_fp8_promoted"],
                  "dists": ["uniform_pos", "trace_wgrad"]},
        "comm": {"formats": ["bf16", "e4m3_1x128", "e5m2_1x128", "logfmt8", "logfmt10"]}}


def test_lab_writes_its_report_reuses_and_recomputes(capsys, tmp_path):
    """Every study on tiny parameters: the report with the claims table first; a second run reuses every
    point; a changed seed recomputes the training; the report is rebuilt from the store."""
    from lowprec.lab.runner import LabParams, rebuild_report, run_lab

    run = run_lab(tmp_path, LabParams(studies=TINY), run_id="a", progress=False)
    first = capsys.readouterr().out
    for name in ("report.md", "report.html", "claims.csv", "training_curves.png", "gemm_replay.png",
                 "accum_error_vs_k.png", "comm_formats_trace.png", "cast_errors.csv", "run.json"):
        assert (run / name).stat().st_size > 0, name
    md = (run / "report.md").read_text()
    assert md.index("Claims of the paper") < md.index("1. FP8 vs BF16 training")
    claims = pd.read_csv(run / "claims.csv")
    assert set(claims["verdict"]) <= {"held", "partly", "not held", "not measurable here"} and len(claims) >= 8
    assert "computing" in first
    run_lab(tmp_path, LabParams(studies=TINY), run_id="b", progress=False)
    assert "computing" not in capsys.readouterr().out            # everything reused from the store
    run_lab(tmp_path, LabParams(seed=1, studies=TINY), run_id="c", progress=False)
    assert "training runs: reused 0 of 2 points; computing 2" in capsys.readouterr().out
    assert rebuild_report(run, progress=False) == run
    assert "computing" not in capsys.readouterr().out


def test_lab_bad_input_is_a_clear_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["lab", "--out", str(blocker)]) == 2
    assert "output directory" in capsys.readouterr().err
    assert main(["lab", "--out", str(tmp_path), "--dask", "nonsense"]) == 2
    assert "dask" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_backends_command_lists_every_backend(capsys):
    assert main(["backends"]) == 0
    names = [line[:12].strip() for line in capsys.readouterr().out.splitlines() if line[:1].strip()]
    assert names == ["eager", "compiled", "native CPU", "native CUDA"]
