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


# -- on a recorded training trace (study 4 on real activations) -------------------------------------
import shutil  # noqa: E402
import sysconfig  # noqa: E402

from safetensors import safe_open  # noqa: E402

from lowprec.lab.common import open_trace  # noqa: E402
from lowprec.training.corpus import load_corpus  # noqa: E402
from lowprec.training.model import ModelConfig  # noqa: E402
from lowprec.training.traces import TraceError  # noqa: E402
from lowprec.training.trainer import TrainConfig, train  # noqa: E402

TINY_MODEL = ModelConfig(d_model=128, n_layers=2, n_heads=2, n_experts=2, top_k=1, d_expert=128, d_shared=128)
FEW = ["bf16", "e4m3_1x128", "logfmt8"]


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two tiny BF16 traces (seeds 0 and 1) of a 2-layer MoE, on a small real corpus (the stdlib's json)."""
    root = tmp_path_factory.mktemp("runs")
    corpus = load_corpus(0.5, root=str(Path(sysconfig.get_paths()["stdlib"]) / "json"))
    return [train(TrainConfig(model=TINY_MODEL, steps=2, batch=2, seq=64, trace_steps=(2,), eval_every=1, seed=s),
                  root, corpus=corpus, progress=False).trace_dir for s in (0, 1)]


def test_trace_points_compute_are_labelled_and_reused_by_content_not_path(traces, tmp_path, capsys):
    with ResultStore(tmp_path / STORE_NAME) as store:
        res = comm.run(store, tmp_path / "out", trace=traces[0], formats=FEW, progress=False)
        assert res["sweep"].computed == 2 * 2 * len(FEW)                  # stages x MoE layers x formats
        pooled, layers = res["frames"]["comm_formats_trace"], res["frames"]["comm_formats_trace_layers"]
        assert len(pooled) == 2 * len(FEW) and set(layers["layer"]) == {"layers.0.moe", "layers.1.moe"}
        assert (layers["data"] == comm.TRACE_DATA_ID).all()
        assert (layers["trace_sha256"] == open_trace(traces[0]).sha256).all()
        assert "path" not in "".join(layers.columns) and str(traces[0]) not in layers.to_csv()
        bf16 = pooled[pooled["format"] == "bf16"]            # the recorded values are BF16: that cast is exact
        assert (bf16["snr_db"] == float("inf")).all() and (bf16["gemm_rel_err"] == 0).all()
        fp8 = pooled.set_index(["stage", "format"]).loc[("dispatch", "e4m3_1x128")]
        assert 20 < fp8["snr_db"] < 45 and 1e-3 < fp8["gemm_rel_err"] < 0.1
        last = layers[(layers["layer"] == "layers.1.moe") & (layers["stage"] == "combine")]["gemm_weight"]
        assert last.str.contains("last layer").all()
        (fig,) = res["figures"]
        assert fig.path.name == "comm_formats_trace.png" and (tmp_path / "out" / "comm_formats_trace.csv").is_file()
        assert "recorded BF16 training trace (step 2, run key " in fig.source and "synthetic" not in fig.source
        assert "recorded BF16 training trace" in fig.caption

        moved = shutil.copytree(traces[0], tmp_path / "elsewhere" / "trace")      # same content, another path
        assert comm.run(store, tmp_path / "out", trace=moved, formats=FEW, progress=False)["sweep"].reused == 12
        other = comm.run(store, tmp_path / "out", trace=traces[1], formats=FEW, progress=False)["sweep"]
        assert other.computed == 12 and not other.rows["snr_db"].equals(layers["snr_db"])


def test_dispatch_gemm_replays_the_recorded_routing(traces, tmp_path):
    """The dispatch GEMM error equals the one computed from each expert's own recorded input rows."""
    td = open_trace(traces[0])
    cfg = {"stage": "dispatch", "format": "e4m3_1x128", "data": comm.TRACE_DATA_ID, "trace_sha256": td.sha256,
           "step": 2, "layer": "layers.0.moe"}
    (row,) = comm.compute_point(cfg, trace=str(traces[0]))
    f = comm._BY_NAME["e4m3_1x128"]
    num = den = 0.0
    with safe_open(str(traces[0] / "step_00000002.safetensors"), framework="pt") as st:
        for e in range(TINY_MODEL.n_experts):
            if f"layers.0.moe.expert{e}.gate_up.x" not in td.index["files"][0]["tensors"]:
                continue
            x = st.get_tensor(f"layers.0.moe.expert{e}.gate_up.x").float()
            w = st.get_tensor(f"layers.0.moe.expert{e}.gate_up.w").double().t()
            num += ((f.fn(x).double() - x.double()) @ w).square().sum().item()
            den += (x.double() @ w).square().sum().item()
    assert row["gemm_rel_err"] == pytest.approx((num / den) ** 0.5, rel=1e-9)
    with pytest.raises(TraceError, match="planned for"):                  # a worker given another trace refuses
        comm.compute_point(cfg, trace=str(traces[1]))


def test_a_corrupted_or_missing_trace_is_refused_before_work(traces, tmp_path):
    bad = shutil.copytree(traces[0], tmp_path / "bad")
    (data,) = bad.glob("*.safetensors")
    raw = bytearray(data.read_bytes())
    raw[-7] ^= 0xFF
    data.write_bytes(bytes(raw))
    with ResultStore(tmp_path / STORE_NAME) as store:
        for trace, match in ((bad, "SHA-256"), (tmp_path / "nope", "not a directory"), (tmp_path, "no index.json")):
            with pytest.raises(TraceError, match=match):
                comm.run(store, tmp_path / "out", trace=trace, progress=False)
        with pytest.raises(ValueError, match="size the synthetic data"):
            comm.run(store, tmp_path / "out", trace=traces[0], tokens=8, progress=False)
        assert store.studies() == [] and not (tmp_path / "out").exists()


def test_cli_trace_option(traces, tmp_path, capsys):
    comm.main(["--out", str(tmp_path), "--trace", str(traces[0]), "--formats", "e4m3_1x128", "--no-progress"])
    out = capsys.readouterr().out
    assert "recorded BF16 training trace" in out and (tmp_path / "comm_formats_trace.png").stat().st_size > 0
    assert not (tmp_path / "comm_formats.csv").exists()
