"""Training runs: one recipe, one seed, the standard-library corpus; resumable, deterministic, traced.

Contract
--------
* A run is identified by ``run_key(config, corpus)``: the SHA-256 of every field of ``TrainConfig``
  (recipe, model, steps, batch, sequence, optimiser, seed, evaluation and trace settings), the corpus
  hash, the lab and torch versions, the CPU thread count and the CPU (``cpu_identity``: float32 matmul sums
  depend on both; the same code trains to different losses on two CPUs). The
  run lives in ``<out>/<recipe>-<key[:12]>/``; a finished run (``summary.json``) is reused, never
  recomputed; an interrupted one resumes from its last checkpoint and gives the same bits as an
  uninterrupted run (model, optimiser, delayed-scaling histories and logged rows are all checkpointed;
  batches depend on (seed, step) alone).
* Same seed, same model initialisation and the same batches for every recipe. Master weights float32;
  AdamW (float32 moments), linear warm-up then cosine decay to ``min_lr_ratio * lr``, gradient
  clipping by global norm.
* Logged per step: the training cross-entropy (nats per byte) and the step's wall time; every
  ``eval_every`` steps and at the last step: the validation cross-entropy over ``eval_batches`` fixed
  validation batches (the same for every recipe and step). Eval never updates delayed-scaling state.
* Traces: at each step of ``trace_steps``, the operands of every quantised GEMM and the MoE
  dispatch/combine activations of that step are written by ``traces.TraceRecorder`` to ``<run>/trace``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..nn import QuantizedLinear, RoundedRecipe, get_training_recipe
from .corpus import Corpus, load_corpus
from .model import ModelConfig, MoETransformer
from .traces import TraceRecorder

EVAL_SEED = 1_000_003          # validation batches: the same for every run


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "bf16"
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 150
    batch: int = 8
    seq: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 25
    eval_batches: int = 4
    checkpoint_every: int = 25
    trace_steps: tuple[int, ...] = ()
    trace_max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        get_training_recipe(self.recipe)                       # an unknown recipe fails here, before work
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        for name in ("steps", "batch", "seq", "eval_every", "eval_batches", "checkpoint_every", "trace_max_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.warmup >= 0 and self.weight_decay >= 0
                and self.grad_clip > 0 and self.seed >= 0):
            raise ValueError("lr > 0, 0 <= min_lr_ratio <= 1, warmup >= 0, weight_decay >= 0, grad_clip > 0 and "
                             "seed >= 0 are required")
        bad = [s for s in self.trace_steps if not (isinstance(s, int) and 1 <= s <= self.steps)]
        if bad:
            raise ValueError(f"trace_steps {bad} are outside 1..{self.steps}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trace_steps"] = list(self.trace_steps)
        return d


@functools.lru_cache(maxsize=1)
def cpu_identity() -> str:
    """What float32 results depend on besides torch's version and the thread count: the CPU architecture, the
    SIMD level torch dispatches to (its BLAS and kernels pick code paths by it) and the CPU model, so a results
    store carried to another machine recomputes rather than reuses (two CPUs can train to different losses)."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {model or platform.processor()}".strip()


def run_key(config: TrainConfig, corpus: Corpus) -> str:
    """The identity of a run's results (see the module doc)."""
    ident = {"config": config.as_dict(), "corpus_sha256": corpus.sha256, "lab_version": __version__,
             "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_identity()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RunResult:
    config: TrainConfig
    run_dir: Path
    key: str
    metrics: pd.DataFrame            # one row per step: step, train_loss, val_loss (NaN between evals), lr, step_s
    summary: dict[str, Any]
    reused: bool

    @property
    def trace_dir(self) -> Path | None:
        d = self.run_dir / "trace"
        return d if (d / "index.json").is_file() else None


def _lr(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (1-based)."""
    if step <= cfg.warmup:
        return cfg.lr * step / max(1, cfg.warmup)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _evaluate(model: MoETransformer, corpus: Corpus, cfg: TrainConfig) -> float:
    model.eval()
    with torch.no_grad():
        losses = [model.loss(*corpus.batch("val", i, EVAL_SEED, cfg.batch, cfg.seq))[1].item()
                  for i in range(cfg.eval_batches)]
    model.train()
    return sum(losses) / len(losses)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_metrics(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)


def train(config: TrainConfig, out: Path | str, *, corpus: Corpus | None = None, backend: str = "auto",
          progress: bool = True, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train (or reuse, or resume) the run of ``config`` under ``out`` (see the module doc).

    ``backend`` picks the scaling backend (same bits); ``on_step(step)`` is called after every step
    (tests use it to interrupt a run).
    """
    corpus = corpus or load_corpus()
    key = run_key(config, corpus)
    run_dir = Path(out) / f"{config.recipe}-{key[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path, ckpt_path, metrics_path = run_dir / "summary.json", run_dir / "checkpoint.pt", run_dir / "metrics.csv"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("key") == key:
            return RunResult(config, run_dir, key, pd.read_csv(metrics_path), summary, reused=True)
    (run_dir / "config.json").write_text(json.dumps({"key": key, "config": config.as_dict(),
                                                     "corpus_sha256": corpus.sha256}, indent=1))

    recipe = get_training_recipe(config.recipe)
    torch.manual_seed(config.seed)
    model = MoETransformer(config.model, recipe, backend=backend)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    rows: list[dict[str, Any]] = []
    start = 0
    trace_state: dict[str, Any] = {"files": [], "skipped": [], "bytes": 0}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt.get("key") == key:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optim"])
            rows, start = ckpt["rows"], ckpt["step"]
            trace_state = ckpt["trace"]
    trace_dtype = torch.bfloat16 if isinstance(recipe, RoundedRecipe) and recipe.fmt == "bf16" else torch.float32
    recorder = TraceRecorder(run_dir / "trace", dtype=trace_dtype, max_bytes=config.trace_max_bytes,
                             meta={"config": config.as_dict(), "corpus_sha256": corpus.sha256, "run_key": key})
    recorder.restore(trace_state)
    bar = tqdm(range(start + 1, config.steps + 1), initial=start, total=config.steps, disable=not progress,
               desc=f"train {config.recipe}", unit="step", leave=False)
    for step in bar:
        traced = step in config.trace_steps
        if traced:
            recorder.start(step)
            model.set_observers(recorder, recorder.observe_activation)
        for group in opt.param_groups:
            group["lr"] = _lr(config, step)
        t0 = time.perf_counter()
        x, y = corpus.batch("train", step, config.seed, config.batch, config.seq)
        loss, ce = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        step_s = time.perf_counter() - t0
        if traced:
            model.set_observers(None, None)
            recorder.finish()
        if not math.isfinite(ce.item()):
            raise FloatingPointError(f"recipe {config.recipe}: the training loss became {ce.item()} at step {step}")
        row = {"step": step, "tokens": step * config.tokens_per_step, "train_loss": ce.item(),
               "val_loss": math.nan, "lr": _lr(config, step), "step_s": step_s}
        if step % config.eval_every == 0 or step == config.steps:
            row["val_loss"] = _evaluate(model, corpus, config)
            bar.write(f"{config.recipe:>12s} step {step:5d}  train {ce.item():.4f}  val {row['val_loss']:.4f}  "
                      f"{config.tokens_per_step / step_s:,.0f} tok/s")
        rows.append(row)
        bar.set_postfix(loss=f"{ce.item():.3f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_atomic({"key": key, "model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                          "rows": rows, "trace": recorder.state()}, ckpt_path)
            _write_metrics(rows, metrics_path)
        if on_step is not None:
            on_step(step)
    bar.close()
    metrics = pd.DataFrame(rows)
    summary = _summarise(config, key, corpus, metrics, model, recorder)
    summary_path.write_text(json.dumps(summary, indent=1))
    ckpt_path.unlink(missing_ok=True)           # the finished model is not needed to reproduce the numbers
    return RunResult(config, run_dir, key, metrics, summary, reused=False)


def _summarise(cfg: TrainConfig, key: str, corpus: Corpus, metrics: pd.DataFrame, model: MoETransformer,
               recorder: TraceRecorder) -> dict[str, Any]:
    tail = metrics.tail(max(1, cfg.steps // 10))
    step_s = metrics["step_s"].iloc[1:] if len(metrics) > 1 else metrics["step_s"]
    median = statistics.median(step_s.tolist())
    return {"key": key, "recipe": cfg.recipe, "steps": cfg.steps, "tokens": cfg.steps * cfg.tokens_per_step,
            "final_train_loss": float(tail["train_loss"].mean()),
            "final_val_loss": float(metrics["val_loss"].dropna().iloc[-1]),
            "median_step_s": median, "tokens_per_s": cfg.tokens_per_step / median,
            "threads": torch.get_num_threads(), "corpus_sha256": corpus.sha256, "trace_bytes": recorder.bytes_written,
            "trace_skipped": len(recorder.skipped), **model.describe(),
            "quantised_linears": sum(isinstance(m, QuantizedLinear) for m in model.modules())}


def replace_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with fields changed (``model`` fields may be given as ``model_<name>``)."""
    model_changes = {k.removeprefix("model_"): v for k, v in changes.items() if k.startswith("model_")}
    rest = {k: v for k, v in changes.items() if not k.startswith("model_")}
    model = dataclasses.replace(config.model, **model_changes) if model_changes else config.model
    return dataclasses.replace(config, model=model, **rest)
