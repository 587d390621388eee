"""The compiled backend computes the same bits as the eager one; the lab command runs."""

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


def test_lab_writes_its_report_and_resumes(capsys, tmp_path):
    assert main(["lab", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "e4m3fn" in out and "hopper_fp8_promoted" in out
    for name in ("formats.csv", "accum_error_vs_k.csv", "accum_error_vs_k.png", "comm_formats.csv",
                 "comm_volume.csv", "comm_formats.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "accum_error_vs_k.csv").read_text().count("\n")
    assert main(["lab", "--out", str(tmp_path)]) == 0           # resumes: nothing recomputed or duplicated
    assert "K=" not in capsys.readouterr().out
    assert (tmp_path / "accum_error_vs_k.csv").read_text().count("\n") == rows


def test_backends_command_lists_every_backend(capsys):
    assert main(["backends"]) == 0
    names = [line[:12].strip() for line in capsys.readouterr().out.splitlines() if line[:1].strip()]
    assert names == ["eager", "compiled", "native CPU", "native CUDA"]
