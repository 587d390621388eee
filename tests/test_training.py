"""lowprec.training: the corpus, deterministic and resumable runs, and GEMM traces.

Runs use a tiny model on a tiny corpus built from a temporary directory (``load_corpus(root=...)``), so
the whole file takes seconds; the standard library itself is not read here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lowprec.training.corpus import Corpus, load_corpus, stdlib_files
from lowprec.training.model import ModelConfig
from lowprec.training.trainer import TrainConfig, replace_config, train
from lowprec.training.traces import TRACE_VERSION, TraceError, TraceRecorder, load_trace

MODEL = ModelConfig(d_model=64, n_layers=1, n_heads=2, n_experts=2, top_k=1, d_expert=64, d_shared=64)
BATCH, SEQ = 2, 16
TOKENS = BATCH * SEQ


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny GEMMs: one intra-op thread (thread hand-offs dominate on a shared 2-core machine); restored.
    The run key records the thread count, so every run in this file shares it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(**changes) -> TrainConfig:
    base = dict(recipe="bf16", model=MODEL, steps=5, batch=BATCH, seq=SEQ, warmup=1, eval_every=2, eval_batches=1,
                checkpoint_every=2)
    base.update(changes)
    return TrainConfig(**base)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def source_text(n: int) -> list[bytes]:
    """``n`` distinct chunks of real Python source (from this test file and lowprec's own sources)."""
    import lowprec.nn
    import lowprec.training.trainer
    text = b"".join(Path(m.__file__).read_bytes() for m in (lowprec.nn, lowprec.training.trainer))
    step = len(text) // n
    return [text[i * step:(i + 1) * step] for i in range(n)]


def in_val(rel: str, val_fraction: float) -> bool:
    """The split rule of the corpus module doc, transcribed."""
    return hashlib.sha256(rel.encode()).digest()[0] < int(256 * val_fraction)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    names = [f"pkg{i}/mod{i}.py" for i in range(12)]
    write_tree(root, dict(zip(names, source_text(len(names)))))
    assert any(in_val(n, 0.25) for n in names) and not all(in_val(n, 0.25) for n in names)
    c = load_corpus(0.25, str(root))
    assert c.val.numel() > 10 * SEQ and c.train.numel() > 10 * SEQ
    return c


def losses(result) -> tuple[np.ndarray, np.ndarray]:
    m = result.metrics
    return m["train_loss"].to_numpy(np.float64), m["val_loss"].to_numpy(np.float64)


def assert_same_bits(r1, r2) -> None:
    t1, v1 = losses(r1)
    t2, v2 = losses(r2)
    assert t1.tobytes() == t2.tobytes()
    assert v1.tobytes() == v2.tobytes()            # NaN (no eval) rows included, bit for bit
    assert list(r1.metrics["step"]) == list(r2.metrics["step"]) == list(range(1, r1.config.steps + 1))


class Kill(Exception):
    pass


def kill_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise Kill
    return on_step


# ---- 7. deterministic, resumable, reusable runs ---------------------------------------------------------
def test_same_seed_same_loss_bits(corpus, tmp_path):
    cfg = config(recipe="deepseek_v3", steps=4)
    r1 = train(cfg, tmp_path / "a", corpus=corpus, progress=False)
    r2 = train(cfg, tmp_path / "b", corpus=corpus, progress=False)
    assert not r1.reused and not r2.reused and r1.key == r2.key
    assert_same_bits(r1, r2)
    assert np.isfinite(losses(r1)[0]).all() and losses(r1)[1][-1] == r1.summary["final_val_loss"]
    r3 = train(replace_config(cfg, seed=1), tmp_path / "c", corpus=corpus, progress=False)
    assert losses(r3)[0][0] != losses(r1)[0][0]                # the comparison above can fail


def test_killed_run_resumes_with_the_same_bits(corpus, tmp_path):
    """te_delayed: the delayed-scaling histories must be checkpointed too, or the bits differ."""
    cfg = config(recipe="te_delayed", steps=6, checkpoint_every=2)
    whole = train(cfg, tmp_path / "whole", corpus=corpus, progress=False)
    with pytest.raises(Kill):
        train(cfg, tmp_path / "killed", corpus=corpus, progress=False, on_step=kill_at(3))
    run_dir = next((tmp_path / "killed").iterdir())
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "summary.json").exists()
    steps_run: list[int] = []
    resumed = train(cfg, tmp_path / "killed", corpus=corpus, progress=False, on_step=steps_run.append)
    assert steps_run == [3, 4, 5, 6]                          # resumed from the step-2 checkpoint
    assert not resumed.reused and resumed.run_dir == run_dir
    assert_same_bits(whole, resumed)
    assert not (run_dir / "checkpoint.pt").exists()
    for k in ("final_train_loss", "final_val_loss", "tokens", "key", "corpus_sha256"):
        assert resumed.summary[k] == whole.summary[k]


def test_finished_run_reused_changed_config_not(corpus, tmp_path):
    cfg = config(steps=4)
    first = train(cfg, tmp_path, corpus=corpus, progress=False)
    called: list[int] = []
    again = train(cfg, tmp_path, corpus=corpus, progress=False, on_step=called.append)
    assert again.reused and called == [] and again.run_dir == first.run_dir
    assert_same_bits(first, again)                            # through the CSV, bit for bit
    assert again.summary == json.loads((first.run_dir / "summary.json").read_text())
    other = train(replace_config(cfg, lr=1e-3), tmp_path, corpus=corpus, progress=False, on_step=called.append)
    assert not other.reused and called == [1, 2, 3, 4] and other.run_dir != first.run_dir
    assert losses(other)[0][-1] != losses(first)[0][-1]
    model_change = replace_config(cfg, model_d_expert=32)
    assert model_change.model.d_expert == 32
    assert not train(model_change, tmp_path, corpus=corpus, progress=False).reused


def test_resumed_run_keeps_earlier_trace_steps(corpus, tmp_path):
    cfg = config(steps=5, checkpoint_every=2, trace_steps=(2, 5))
    whole = train(cfg, tmp_path / "whole", corpus=corpus, progress=False)
    assert load_trace(whole.trace_dir).steps == [2, 5]
    with pytest.raises(Kill):
        train(cfg, tmp_path / "killed", corpus=corpus, progress=False, on_step=kill_at(3))
    resumed = train(cfg, tmp_path / "killed", corpus=corpus, progress=False)
    assert load_trace(resumed.trace_dir).steps == [2, 5]
    assert resumed.summary["trace_bytes"] == whole.summary["trace_bytes"]


def test_resumed_run_keeps_the_trace_size_cap(corpus, tmp_path):
    """The cap counts over the whole trace, across a kill: a resumed run records what an uninterrupted one does."""
    probe = train(config(steps=2, trace_steps=(2,)), tmp_path / "probe", corpus=corpus, progress=False)
    one_step = probe.summary["trace_bytes"]
    cfg = config(steps=5, checkpoint_every=2, trace_steps=(2, 5), trace_max_bytes=int(one_step * 1.5))
    whole = train(cfg, tmp_path / "whole", corpus=corpus, progress=False)
    with pytest.raises(Kill):
        train(cfg, tmp_path / "killed", corpus=corpus, progress=False, on_step=kill_at(3))
    resumed = train(cfg, tmp_path / "killed", corpus=corpus, progress=False)
    w, r = load_trace(whole.trace_dir).index, load_trace(resumed.trace_dir).index
    assert w["skipped"] and r["skipped"] == w["skipped"]            # the cap cut step 5 short in both
    assert [f["tensors"] for f in r["files"]] == [f["tensors"] for f in w["files"]]
    assert resumed.summary["trace_bytes"] == whole.summary["trace_bytes"] <= cfg.trace_max_bytes + 4096


# ---- 8. the same data for every recipe ------------------------------------------------------------------
def test_every_recipe_reads_the_same_batches(corpus, tmp_path, monkeypatch):
    seen: dict[str, list] = {}
    real = Corpus.batch

    def spy(self, split, step, seed, batch, seq):
        x, y = real(self, split, step, seed, batch, seq)
        seen.setdefault(current[0], []).append(((split, step, seed, batch, seq), x.clone(), y.clone()))
        return x, y

    monkeypatch.setattr(Corpus, "batch", spy)
    current = [""]
    for recipe in ("bf16", "e5m2_tensor"):
        current[0] = recipe
        train(config(recipe=recipe, steps=2, eval_every=2), tmp_path, corpus=corpus, progress=False)
    a, b = seen["bf16"], seen["e5m2_tensor"]
    assert [k for k, _, _ in a] == [k for k, _, _ in b]
    assert [k[:2] for k, _, _ in a] == [("train", 1), ("train", 2), ("val", 0)]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (_, xa, ya), (_, xb, yb) in zip(a, b))


def test_batch_depends_only_on_seed_and_step(corpus):
    first = corpus.batch("train", 5, 3, 4, SEQ)
    for s in (1, 7, 2):
        corpus.batch("train", s, 3, 4, SEQ)
    torch.manual_seed(1234)                                    # the global generator plays no part
    again = corpus.batch("train", 5, 3, 4, SEQ)
    copy = Corpus(corpus.train.clone(), corpus.val.clone(), corpus.sha256, corpus.n_files, corpus.root)
    other = copy.batch("train", 5, 3, 4, SEQ)
    for t in (again, other):
        assert torch.equal(first[0], t[0]) and torch.equal(first[1], t[1])
    x, y = first
    assert x.dtype == torch.int64 and x.shape == (4, SEQ) and torch.equal(x[:, 1:], y[:, :-1])
    windows = corpus.train.long().unfold(0, SEQ + 1, 1)       # every window of the training bytes
    for row in torch.cat([x, y[:, -1:]], dim=1):
        assert bool((windows == row).all(dim=1).any())
    assert not torch.equal(corpus.batch("train", 6, 3, 4, SEQ)[0], x)
    assert not torch.equal(corpus.batch("train", 5, 4, 4, SEQ)[0], x)
    with pytest.raises(ValueError):
        corpus.batch("test", 1, 0, 1, SEQ)


# ---- 9. the corpus ----------------------------------------------------------------------------------------
TREE = {
    "a.py": b"import os\n",
    "Upper.py": b"X = 1\n",
    "pkg/__init__.py": b"",
    "pkg/b.py": b"def f():\n    return 2\n",
    "pkg/sub/c.py": b"class C:\n    pass\n",
    "pkg-a.py": b"# string order: '-' < '/'\n",
    "z_last.py": b"print('z')\n" * 5,
    "site-packages/evil.py": b"EVIL = 'site'\n",
    "pkg/site-packages/evil2.py": b"EVIL = 'nested site'\n",
    "pkg/dist-packages/evil3.py": b"EVIL = 'dist'\n",
    "__pycache__/cached.py": b"EVIL = 'cache'\n",
    "notes.txt": b"EVIL = 'not python'\n",
}
EXPECTED_FILES = sorted(["a.py", "Upper.py", "pkg/__init__.py", "pkg/b.py", "pkg/sub/c.py", "pkg-a.py", "z_last.py"])


def fresh_corpus(root: Path, val_fraction: float) -> Corpus:
    return load_corpus.__wrapped__(val_fraction, str(root))      # no lru_cache: the files change under it


def test_corpus_files_split_and_bytes(tmp_path):
    write_tree(tmp_path, TREE)
    rels = [p.relative_to(tmp_path).as_posix() for p in stdlib_files(tmp_path)]
    assert rels == EXPECTED_FILES
    assert rels.index("pkg-a.py") < rels.index("pkg/b.py")       # POSIX string order, not Path order
    vf = 0.5
    val = [r for r in EXPECTED_FILES if in_val(r, vf)]
    train_ = [r for r in EXPECTED_FILES if not in_val(r, vf)]
    assert val and train_
    c = fresh_corpus(tmp_path, vf)
    join = lambda names: b"\0".join((tmp_path / n).read_bytes() for n in names)   # noqa: E731
    assert bytes(c.train.numpy()) == join(train_) and bytes(c.val.numpy()) == join(val)
    assert c.train.dtype == torch.uint8 and c.n_files == (len(train_), len(val)) and c.root == str(tmp_path)
    assert b"EVIL" not in bytes(c.train.numpy()) + bytes(c.val.numpy())
    again = fresh_corpus(tmp_path, vf)
    assert again.sha256 == c.sha256 and torch.equal(again.train, c.train)
    assert load_corpus(vf, str(tmp_path)) is load_corpus(vf, str(tmp_path))   # loaded once per process


def test_corpus_hash_tracks_contents_and_split(tmp_path):
    write_tree(tmp_path, TREE)
    base = fresh_corpus(tmp_path, 0.5)
    (tmp_path / "site-packages/evil.py").write_bytes(b"changed, but excluded\n")
    (tmp_path / "notes.txt").write_bytes(b"changed, not python\n")
    assert fresh_corpus(tmp_path, 0.5).sha256 == base.sha256
    assert fresh_corpus(tmp_path, 0.25).sha256 != base.sha256              # the split rule is hashed
    (tmp_path / "pkg/b.py").write_bytes(b"def f():\n    return 3\n")         # one byte changed
    edited = fresh_corpus(tmp_path, 0.5)
    assert edited.sha256 != base.sha256
    (tmp_path / "pkg/b.py").write_bytes(TREE["pkg/b.py"])
    assert fresh_corpus(tmp_path, 0.5).sha256 == base.sha256
    (tmp_path / "pkg/b.py").rename(tmp_path / "pkg/b2.py")                  # same bytes, another name
    assert fresh_corpus(tmp_path, 0.5).sha256 != base.sha256


def test_corpus_split_stable_when_files_added(tmp_path):
    write_tree(tmp_path, TREE)
    before = fresh_corpus(tmp_path, 0.5)
    added = {f"new/extra{i}.py": f"N = {i}\n".encode() for i in range(6)}
    write_tree(tmp_path, added)
    after = fresh_corpus(tmp_path, 0.5)
    names = sorted(EXPECTED_FILES + list(added))
    for split, corp in (("val", after), ("train", after)):
        want = [n for n in names if in_val(n, 0.5) == (split == "val")]
        assert bytes(corp._split(split).numpy()) == b"\0".join((tmp_path / n).read_bytes() for n in want)
    old_val = [n for n in EXPECTED_FILES if in_val(n, 0.5)]                 # old files keep their split
    assert bytes(before.val.numpy()) == b"\0".join((tmp_path / n).read_bytes() for n in old_val)
    assert sum(after.n_files) == len(names)


def test_corpus_bad_input(tmp_path):
    with pytest.raises(ValueError):
        load_corpus.__wrapped__(0.0, str(tmp_path))
    with pytest.raises(ValueError, match="no Python source"):
        load_corpus.__wrapped__(0.5, str(tmp_path))
    write_tree(tmp_path, {"only.py": b"x = 1\n"})
    with pytest.raises(ValueError, match="empty"):
        load_corpus.__wrapped__(0.5, str(tmp_path))
    tiny = Corpus(torch.zeros(10, dtype=torch.uint8), torch.zeros(10, dtype=torch.uint8), "0" * 64, (1, 1), "x")
    with pytest.raises(ValueError, match="too few"):
        tiny.batch("train", 1, 0, 1, SEQ)


# ---- 10. refused before training -------------------------------------------------------------------------
def test_bad_configs_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown training recipe 'nope'"):
        config(recipe="nope")
    for bad in [(0,), (6,), (2, 9), ("2",)]:
        with pytest.raises(ValueError, match="trace_steps"):
            config(steps=5, trace_steps=bad)
    assert config(steps=5, trace_steps=(1, 5)).trace_steps == (1, 5)
    for field in ("steps", "batch", "seq", "checkpoint_every"):
        with pytest.raises(ValueError):
            config(**{field: 0})
    with pytest.raises(TypeError):
        config(model={"d_model": 64})
    assert list(tmp_path.iterdir()) == []


# ---- 11. traces ----------------------------------------------------------------------------------------
DIMS = {"attn.qkv": (64, 192), "attn.out": (64, 64), "gate_up": (64, 128), "down": (64, 64)}   # (in, out)


@pytest.fixture(scope="module")
def traced(corpus, tmp_path_factory):
    """A bf16 run traced at step 2, with the tensors the recorder was handed captured on the side."""
    seen: dict[str, torch.Tensor] = {}
    real_observe, real_act = TraceRecorder.observe, TraceRecorder.observe_activation

    def observe(self, layer, tensors):
        if self._step is not None:
            seen.update({f"{layer}.{k}": v.detach().clone() for k, v in tensors.items()})
        real_observe(self, layer, tensors)

    def observe_activation(self, layer, kind, t):
        if self._step is not None:
            seen[f"{layer}.{kind}"] = t.detach().clone()
        real_act(self, layer, kind, t)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TraceRecorder, "observe", observe)
        mp.setattr(TraceRecorder, "observe_activation", observe_activation)
        result = train(config(steps=3, trace_steps=(2,)), tmp_path_factory.mktemp("traced"), corpus=corpus,
                       progress=False)
    return result, seen


def test_trace_round_trip(traced, corpus):
    result, seen = traced
    trace = load_trace(result.trace_dir)
    idx = trace.index
    assert trace.steps == [2] and idx["version"] == TRACE_VERSION and idx["corpus_sha256"] == corpus.sha256
    assert idx["run_key"] == result.key and idx["skipped"] == []
    f = idx["files"][0]
    assert f["file"] == "step_00000002.safetensors" and f["bytes"] == (result.trace_dir / f["file"]).stat().st_size
    assert f["sha256"] == hashlib.sha256((result.trace_dir / f["file"]).read_bytes()).hexdigest()
    assert set(f["tensors"]) == set(seen) and {t["dtype"] for t in f["tensors"].values()} == {"bfloat16"}
    assert trace.nbytes == result.summary["trace_bytes"] > 0
    linears = sorted({n.rsplit(".", 1)[0] for n in seen if n.endswith(".w")})
    assert {"layers.0.attn.qkv", "layers.0.attn.out", "layers.0.moe.shared.gate_up",
            "layers.0.moe.shared.down"} <= set(linears)
    gemms = list(trace.gemms())
    assert sorted((g.layer, g.kind) for g in gemms) == sorted((layer, k) for layer in linears
                                                              for k in ("fprop", "dgrad", "wgrad"))
    expert_tokens = {}
    for g in gemms:
        key = next(k for k in DIMS if g.layer.endswith(k))
        n_in, n_out = DIMS[key]
        x, w, dy = (seen[f"{g.layer}.{k}"].bfloat16().float() for k in ("x", "w", "dy"))
        T = x.shape[0]
        if ".expert" in g.layer:
            expert_tokens[g.layer.rsplit(".", 1)[0]] = T
        else:
            assert T == TOKENS
        want = {"fprop": ((T, n_in), (n_in, n_out), x, w.t()), "dgrad": ((T, n_out), (n_out, n_in), dy, w),
                "wgrad": ((n_out, T), (T, n_in), dy.t(), x)}[g.kind]
        assert tuple(g.a.shape) == want[0] and tuple(g.b.shape) == want[1], (g.layer, g.kind)
        assert g.a.dtype == torch.float32 and torch.equal(g.a, want[2]) and torch.equal(g.b, want[3])
        assert g.step == 2
    assert sum(expert_tokens.values()) == TOKENS * MODEL.top_k          # every routed token, once per choice
    assert [g.kind for g in trace.gemms("wgrad")] == ["wgrad"] * len(linears)
    acts = {kind: list(trace.activations(kind)) for kind in ("dispatch", "combine")}
    assert [(s, layer, tuple(t.shape)) for s, layer, t in acts["dispatch"]] == [(2, "layers.0.moe", (TOKENS, 64))]
    assert [(s, layer, tuple(t.shape)) for s, layer, t in acts["combine"]] == [
        (2, "layers.0.moe", (TOKENS * MODEL.top_k, 64))]
    for kind in ("dispatch", "combine"):
        assert torch.equal(acts[kind][0][2], seen[f"layers.0.moe.{kind}"].bfloat16().float())
    with pytest.raises(ValueError):
        list(trace.gemms("backward"))


@pytest.fixture
def trace_copy(traced, tmp_path) -> Path:
    dst = tmp_path / "trace"
    shutil.copytree(traced[0].trace_dir, dst)
    return dst


def step_file(d: Path) -> Path:
    return d / "step_00000002.safetensors"


def test_truncated_trace_refused(trace_copy):
    p = step_file(trace_copy)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(TraceError, match="truncated"):
        load_trace(trace_copy)


def test_edited_trace_refused(trace_copy):
    p = step_file(trace_copy)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01                                                   # one bit of one tensor value
    p.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="SHA-256"):
        load_trace(trace_copy)


def test_missing_trace_file_refused(trace_copy):
    step_file(trace_copy).unlink()
    with pytest.raises(TraceError, match="missing"):
        load_trace(trace_copy)


def edit_index(d: Path, fn) -> None:
    idx = json.loads((d / "index.json").read_text())
    fn(idx)
    (d / "index.json").write_text(json.dumps(idx))


def test_wrong_version_or_format_refused(trace_copy):
    load_trace(trace_copy)                                             # the untouched copy loads
    edit_index(trace_copy, lambda i: i.update(version=TRACE_VERSION + 1))
    with pytest.raises(TraceError, match=f"version {TRACE_VERSION + 1}"):
        load_trace(trace_copy)
    edit_index(trace_copy, lambda i: i.update(version=TRACE_VERSION, format="something-else"))
    with pytest.raises(TraceError, match="not a lowprec-gemm-trace index"):
        load_trace(trace_copy)


def test_bad_index_refused(trace_copy, tmp_path):
    (trace_copy / "index.json").write_text('{"format": "lowprec-gemm-trace", "version": ')
    with pytest.raises(TraceError, match="not valid JSON"):
        load_trace(trace_copy)
    (trace_copy / "index.json").write_text("[1, 2]")
    with pytest.raises(TraceError):
        load_trace(trace_copy)
    (trace_copy / "index.json").unlink()
    with pytest.raises(TraceError, match="no index.json"):
        load_trace(trace_copy)
    assert issubclass(TraceError, ValueError)


def test_size_cap_records_skipped_tensors(tmp_path):
    rec = TraceRecorder(tmp_path, max_bytes=900, meta={"corpus_sha256": "abc"})
    x, w, dy = torch.ones(10, 10), torch.full((10, 10), 2.0), torch.full((10, 10), 3.0)   # 400 bytes each
    rec.observe("l", {"x": x})                                         # not recording: ignored
    rec.start(1)
    rec.observe("l", {"x": x, "w": w})
    rec.observe("l", {"dy": dy})                                       # 1200 > 900: skipped
    assert rec.finish() == tmp_path / "step_00000001.safetensors"
    trace = load_trace(tmp_path)
    assert trace.index["skipped"] == ["step 1: l.dy"] and trace.index["max_bytes"] == 900
    assert set(trace.index["files"][0]["tensors"]) == {"l.x", "l.w"}
    assert [g.kind for g in trace.gemms()] == ["fprop"]                # dgrad/wgrad need the skipped dy
    g = next(trace.gemms())
    assert torch.equal(g.a, x) and torch.equal(g.b, w.t())
    rec.start(2)
    rec.observe("l", {"x": x})                                         # the cap is over the whole trace
    assert rec.finish() is None and rec.skipped == ["step 1: l.dy", "step 2: l.x"]
    with pytest.raises(ValueError):
        TraceRecorder(tmp_path, max_bytes=0)
    with pytest.raises(ValueError):
        TraceRecorder(tmp_path, dtype=torch.float16)


def test_size_cap_in_a_run(corpus, tmp_path):
    result = train(config(steps=2, trace_steps=(1,), trace_max_bytes=20_000), tmp_path, corpus=corpus,
                   progress=False)
    trace = load_trace(result.trace_dir)
    skipped = trace.index["skipped"]
    assert result.summary["trace_skipped"] == len(skipped) > 0 and all(s.startswith("step 1: ") for s in skipped)
    stored = trace.index["files"][0]["tensors"]
    nbytes = sum(2 * int(np.prod(t["shape"])) for t in stored.values())   # bfloat16
    assert 0 < nbytes <= 20_000
    assert not set(stored) & {s.removeprefix("step 1: ") for s in skipped}

