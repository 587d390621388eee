"""Study 1, FP8 vs BF16 training: the same model, seed and data under every training recipe.

DeepSeek-V3 (sec. 3.3) reports a relative loss error of FP8 training vs BF16 below 0.25% for ~16B and
~230B-parameter MoE models trained on ~1T tokens. This study trains the lab's small MoE transformer
(``lowprec.training.model``) on the Python standard library's sources with each recipe of
``lowprec.nn`` (``bf16`` baseline, ``fp32``, ``deepseek_v3``, ``te_delayed``, ``mxfp8``, the coarse
``e5m2_tensor``) and reports, per recipe, the validation cross-entropy at the last step (nats per byte,
over fixed validation batches: the metric the gap is computed on), the mean training cross-entropy over
the last 10% of steps, their relative gaps to ``bf16`` ((recipe - bf16) / bf16), tokens/s and the median
step time relative to ``bf16`` (measured in the same process, one recipe after another).

A point is one training run: its config is the run's whole ``TrainConfig`` plus the corpus hash and the
CPU thread count (both change the numbers); its rows are the logged steps and one summary row. The
``bf16`` run records a GEMM trace at its last step (``trace_steps``); the other studies replay it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..nn import get_training_recipe  # noqa: E402
from ..report import Figure, Table  # noqa: E402
from ..training.corpus import load_corpus  # noqa: E402
from ..training.model import ModelConfig  # noqa: E402
from ..training.trainer import TrainConfig, cpu_identity, train  # noqa: E402
from .common import StudyOutput, definition_id, prepare_out_dir, resolve_params  # noqa: E402
from .store import ResultStore  # noqa: E402
from .sweep import run_sweep  # noqa: E402

STUDY = "fp8_training"
BASELINE = "bf16"
RECIPES = ["bf16", "fp32", "deepseek_v3", "te_delayed", "mxfp8", "e5m2_tensor"]
PAPER_GAP = 0.0025
MODEL_SIZES = {"tiny": ModelConfig(d_model=128, n_layers=1, n_heads=2, n_experts=2, top_k=1, d_expert=128,
                                    d_shared=128),                       # smoke tests
               "small": ModelConfig(), "base": ModelConfig(d_model=384, n_layers=4, n_heads=6, n_experts=8,
                                                            d_expert=384, d_shared=384)}
QUICK = {"steps": 150, "batch": 8, "seq": 128, "eval_every": 25, "model_size": "small"}
FULL = {"steps": 1500, "batch": 16, "seq": 256, "eval_every": 100, "model_size": "base"}
COMMON = {"recipes": RECIPES, "lr": 3e-3, "trace_max_mb": 48}
STYLE = {"bf16": ("black", "o", "-"), "fp32": ("#7f7f7f", "s", ":"), "deepseek_v3": ("#1f77b4", "^", "-"),
         "te_delayed": ("#2ca02c", "v", "--"), "mxfp8": ("#9467bd", "D", "-."), "e5m2_tensor": ("#d62728", "x", "--")}


def train_config(point: Mapping[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` of a point (the inverse of ``TrainConfig.as_dict``)."""
    d = {k: v for k, v in point.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    return TrainConfig(**{**d, "model": ModelConfig(**d["model"]), "trace_steps": tuple(d["trace_steps"])})


def compute_point(config: Mapping[str, Any], runs_dir: str, progress: bool = False) -> list[dict]:
    """Train (or resume, or reuse) one run; rows: every logged step, then one ``kind='summary'`` row."""
    torch.set_num_threads(config["threads"])
    result = train(train_config(config), Path(runs_dir), progress=progress)
    steps = [{"kind": "step", **{("step_lr" if k == "lr" else k): (None if pd.isna(v) else v) for k, v in r.items()}}
             for r in result.metrics.to_dict("records")]
    summary = {k: v for k, v in result.summary.items() if k not in ("key", "recipe", "steps", "corpus_sha256",
                                                                     "threads")}
    return steps + [{"kind": "summary", "run_dir": str(result.run_dir), **summary}]


def points(p: Mapping[str, Any], seed: int, corpus_sha256: str, threads: int) -> list[dict]:
    model = MODEL_SIZES[p["model_size"]]
    out = []
    for recipe in p["recipes"]:
        cfg = TrainConfig(recipe, model, steps=p["steps"], batch=p["batch"], seq=p["seq"], lr=p["lr"], seed=seed,
                          eval_every=p["eval_every"], checkpoint_every=p["eval_every"],
                          trace_steps=(p["steps"],) if recipe == BASELINE else (),
                          trace_max_bytes=int(p["trace_max_mb"] * (1 << 20)))
        out.append({**cfg.as_dict(), "corpus_sha256": corpus_sha256, "threads": threads, "torch": torch.__version__,
                    "cpu": cpu_identity(), "recipe_def": definition_id(get_training_recipe(recipe))})
    return out


def _check(p: Mapping[str, Any]) -> None:
    problems = []
    for r in p["recipes"]:
        try:
            get_training_recipe(r)
        except ValueError as e:
            problems.append(str(e))
    if BASELINE not in p["recipes"]:
        problems.append(f"the recipes must include the baseline {BASELINE!r}")
    if p["model_size"] not in MODEL_SIZES:
        problems.append(f"unknown model_size {p['model_size']!r} (known: {', '.join(MODEL_SIZES)})")
    problems += [f"{k} must be a positive int, got {p[k]!r}" for k in ("steps", "batch", "seq", "eval_every")
                 if not isinstance(p[k], int) or p[k] < 1]
    if problems:
        raise ValueError(f"{STUDY}: " + "; ".join(problems))


def run(store: ResultStore, out_dir: Path, *, quick: bool = False, seed: int = 0, jobs: int = 1,
        dask: str | None = None, progress: bool = True, runs_dir: Path | None = None, **params: Any) -> StudyOutput:
    """Train every recipe (reusing finished runs), write curves and the gap table into ``out_dir``.
    ``params``: recipes, steps, batch, seq, eval_every, model_size (small | base), lr, trace_max_mb.
    ``runs_dir`` holds the checkpoints and traces (default: ``<store dir>/train_runs``)."""
    p = resolve_params(STUDY, params, {**(QUICK if quick else FULL), **COMMON})
    _check(p)
    out_dir = prepare_out_dir(out_dir)
    runs = prepare_out_dir(runs_dir or Path(store.path).parent / "train_runs").resolve()
    corpus = load_corpus()
    threads = torch.get_num_threads() if jobs == 1 and dask is None else 1
    pts = points(p, seed, corpus.sha256, threads)
    fn = functools.partial(compute_point, runs_dir=str(runs), progress=progress and jobs == 1 and dask is None)
    sweep = run_sweep(STUDY, pts, fn, store, jobs=jobs, dask=dask, progress=progress, desc="training runs")
    curves, summary = split_rows(sweep.rows)
    curves.to_csv(out_dir / "training_curves.csv", index=False)
    summary.to_csv(out_dir / "training_summary.csv", index=False)
    source = (f"store study '{STUDY}'; {summary['steps'].iloc[0]} steps x {p['batch']} x {p['seq']} bytes of the "
              f"Python {'.'.join(map(str, __import__('sys').version_info[:3]))} standard library "
              f"(corpus sha256 {corpus.sha256[:12]}), seed {seed}, {threads} thread(s)")
    png = plot(curves, summary, out_dir / "training_curves.png")
    caption = ("Training of the same small MoE transformer (same seed, same batches) under each recipe. Left: "
               "training cross-entropy (moving average over 10 steps); middle: validation cross-entropy on fixed "
               "held-out files; right: the validation gap to BF16 in percent, with the paper's 0.25% band shaded.")
    table = summary[["recipe", "final_val_loss", "val_gap_pct", "final_train_loss", "train_gap_pct",
                     "tokens_per_s", "step_time_vs_bf16", "steps", "tokens"]]
    return {"frames": {"training_curves": curves, "training_summary": summary},
            "figures": [Figure(png, caption, source)],
            "tables": [Table(table, "Final losses (nats per byte), their relative gap to BF16, speed (tokens/s "
                             "and median step time relative to BF16, same process)", source)],
            "sweep": sweep}


def split_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step curves, one summary row per recipe with gaps to the baseline) from the store's rows."""
    curves = rows[rows["kind"] == "step"].dropna(axis=1, how="all").reset_index(drop=True)
    summary = rows[rows["kind"] == "summary"].dropna(axis=1, how="all").reset_index(drop=True)
    base = summary[summary["recipe"] == BASELINE].iloc[0]
    summary = summary.assign(
        val_gap_pct=100 * (summary["final_val_loss"] - base["final_val_loss"]) / base["final_val_loss"],
        train_gap_pct=100 * (summary["final_train_loss"] - base["final_train_loss"]) / base["final_train_loss"],
        step_time_vs_bf16=summary["median_step_s"] / base["median_step_s"])
    return curves, summary


def plot(curves: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    base = curves[curves["recipe"] == BASELINE].set_index("step")["val_loss"].dropna()
    for recipe, sub in curves.groupby("recipe", sort=False):
        color, marker, ls = STYLE.get(str(recipe), ("#444444", ".", "-"))
        sub = sub.sort_values("step")
        axes[0].plot(sub["tokens"], sub["train_loss"].rolling(10, min_periods=1).mean(), color=color, ls=ls, lw=1.2,
                     label=recipe)
        val = sub.dropna(subset=["val_loss"])
        axes[1].plot(val["tokens"], val["val_loss"], color=color, ls=ls, marker=marker, ms=5, mfc="none",
                     label=recipe)
        gap = 100 * (val.set_index("step")["val_loss"] - base) / base
        gap = gap.dropna()
        axes[2].plot(val.set_index("step").loc[gap.index, "tokens"], gap.values, color=color, ls=ls, marker=marker,
                     ms=5, mfc="none", label=recipe)
    axes[2].axhspan(-100 * PAPER_GAP, 100 * PAPER_GAP, color="#cccccc", alpha=0.5, lw=0, label="paper: < 0.25%")
    axes[2].axhline(0, color="black", lw=0.6)
    titles = ("training loss (moving average)", "validation loss", "validation gap to BF16")
    ylabels = ("cross-entropy (nats / byte)", "cross-entropy (nats / byte)", "(recipe - bf16) / bf16  [%]")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set(title=title, xlabel="tokens seen", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    handles, labels = axes[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trace_dir(summary: pd.DataFrame) -> Path | None:
    """The GEMM trace of the baseline run, if it recorded one."""
    row = summary[summary["recipe"] == BASELINE]
    if row.empty:
        return None
    d = Path(row["run_dir"].iloc[0]) / "trace"
    return d if (d / "index.json").is_file() else None


def main(argv: Sequence[str] | None = None) -> None:
    from .common import run_from_args, study_parser

    ap = study_parser(__doc__)
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--steps", type=int, help="training steps (quick: 150, full: 1500)")
    ap.add_argument("--model-size", dest="model_size", choices=list(MODEL_SIZES),
                    help="small (d_model 256, 2 layers; quick) or base (d_model 384, 4 layers, 8 experts; full)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    args = ap.parse_args(argv)
    res = run_from_args(run, args, ("recipes", "steps", "model_size", "batch", "seq"))
    out = args.out
    print(res["tables"][0].frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / 'training_curves.csv'}, {out / 'training_summary.csv'} and {res['figures'][0].path}")
    if (t := trace_dir(res["frames"]["training_summary"])) is not None:
        print(f"GEMM trace of the {BASELINE} run: {t}")
