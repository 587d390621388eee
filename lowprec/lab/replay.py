"""Study 2, GEMM replay: every GEMM recorded in a training trace, through formats x scalings x accumulators.

Data: a ``lowprec.training`` trace (by default the quick BF16 run's last step): for every quantised linear
of the model its Fprop, Dgrad and Wgrad operands as the BF16 GEMMs consumed them (see
``lowprec.training.traces``). Each GEMM is replayed with each scaling recipe below, its operands quantised
along K exactly as ``lowprec.nn`` quantises them in training (``nn.operand_configs``), and multiplied by
``scaled_matmul`` with each accumulator:

* ``fp32``: each K block's exact sum rounded once to float32, then ``out = fma(sa * sb, partial, out)``
  (the ideal FP32-accumulating block-scaled GEMM);
* ``hopper_fp8_promoted``: DeepGEMM on H800 as the lab models it bit for bit (E8M13 accumulator, 13
  fraction bits, promotion to FP32 every 128);
* ``hopper_fp8``: the same unit with no promotion (the accumulation DeepSeek-V3 rejected).
MX recipes are replayed with ``fp32`` only (Hopper has no MX instruction). With 1x128 / 128x128 scales the
block-scaled GEMM applies the scales per K block of 128 outside the tensor core, so every block starts a
fresh accumulator and ``hopper_fp8`` equals ``hopper_fp8_promoted`` there (promotion is inherent in
fine-grained scaling); the two differ for per-tensor and per-row scalings, whose one K block spans all of K.

To bound the cost of bit-faithful accumulation, each GEMM is replayed on its first ``rows`` rows of A and
first ``cols`` columns of B (all of K; the quantisation itself sees the whole operands). The reference is
the float64 product of the recorded (unquantised) operands on the same slice. Metrics per GEMM:

* ``norm_rel_err`` = ||C - C_ref||_F / ||C_ref||_F (quantisation and accumulation together);
* ``accum_rel_err`` = ||C - C_exact||_F / ||C_exact||_F with C_exact the exact sum of the same quantised
  operands (the accumulator's own share);
* ``deepgemm_diff`` = 1 - 2 sum(C * C_ref) / sum(C^2 + C_ref^2) in float64, DeepGEMM's acceptance metric
  (SPEC 3): an FP8 GEMM passes when it is below 0.001 (``accepted``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..nn import operand_configs  # noqa: E402
from ..report import Figure, Table  # noqa: E402
from ..gemm import scaled_matmul  # noqa: E402
from ..scaling import QuantizedTensor, Recipe, ScalingConfig, get_recipe, quantize_tensor  # noqa: E402
from ..accum import get_accumulator  # noqa: E402
from .common import StudyOutput, definition_id, load_checked_trace, open_trace, prepare_out_dir, resolve_params  # noqa: E402
from .store import ResultStore  # noqa: E402
from .sweep import run_sweep  # noqa: E402

STUDY = "gemm_replay"
DEEPGEMM_ACCEPT = 1e-3
_E4M3_TENSOR = ScalingConfig("e4m3fn", (-1, -1), scale_op="mul_ratio")


def _in_e5m2(recipe: Recipe, name: str) -> Recipe:
    """``recipe`` with E5M2 elements for every role (tiles and amax floor kept)."""
    def e5m2(c: ScalingConfig) -> ScalingConfig:
        return ScalingConfig("e5m2", c.tile, amax_floor=c.amax_floor)
    return Recipe(name, e5m2(recipe.activation), e5m2(recipe.weight), e5m2(recipe.grad))


SCALINGS: dict[str, Recipe] = {
    "deepseek_v3": get_recipe("deepseek_v3"),
    "deepseek_v3_ue8m0": get_recipe("deepseek_v3_ue8m0"),
    "e5m2_1x128": _in_e5m2(get_recipe("deepseek_v3"), "e5m2_1x128"),
    "e4m3_tensor": Recipe("e4m3_tensor", _E4M3_TENSOR, _E4M3_TENSOR, _E4M3_TENSOR),
    "rowwise": get_recipe("rowwise"),
    "mxfp8": get_recipe("mxfp8"),
}
ACCUMULATORS = ["fp32", "hopper_fp8_promoted", "hopper_fp8"]
QUICK = {"rows": 32, "cols": 32}
FULL = {"rows": 128, "cols": 128}
COMMON = {"scalings": list(SCALINGS), "accumulators": ACCUMULATORS}


def _slice(q: QuantizedTensor, rows: int, cols: int) -> QuantizedTensor:
    """The first ``rows`` x ``cols`` of a 2-D quantised tensor with the scales of the tiles they lie in."""
    rows, cols = min(rows, q.codes.shape[0]), min(cols, q.codes.shape[1])
    tr, tc = q.tile
    tiles = (slice(math.ceil(rows / tr)), slice(math.ceil(cols / tc)))
    return QuantizedTensor(q.codes[:rows, :cols].contiguous(), q.scales[tiles].contiguous(), q.config, (rows, cols),
                           q.tensor_scale, None if q.multipliers is None else q.multipliers[tiles].contiguous())


def _frobenius_rel(c: torch.Tensor, ref: torch.Tensor) -> float:
    denom = ref.norm().item()
    return (c - ref).norm().item() / denom if denom > 0 else (0.0 if c.norm().item() == 0 else math.inf)


def compute_point(config: Mapping[str, Any], trace_path: str) -> list[dict]:
    """All GEMMs of the trace under one (scaling, accumulator): one row per GEMM."""
    trace = load_checked_trace(trace_path, config["trace"])
    scaling = SCALINGS[config["scaling"]]
    rows = []
    for g in trace.gemms():
        cfg_a, cfg_b = operand_configs(scaling, g.kind)
        qa = _slice(quantize_tensor(g.a, cfg_a), config["rows"], g.a.shape[1])
        qb = _slice(quantize_tensor(g.b, cfg_b), g.b.shape[0], config["cols"])
        ref = g.a[: qa.shape[0]].double() @ g.b[:, : qb.shape[1]].double()
        c = scaled_matmul(qa, qb, torch.float64, accumulator=config["accumulator"], allow_mixed=True)
        exact = scaled_matmul(qa, qb, torch.float64, accumulator="float64", allow_mixed=True)
        denom = (c * c + ref * ref).sum().item()
        diff = 1 - 2 * (c * ref).sum().item() / denom if denom > 0 else 0.0
        rows.append({"step": g.step, "layer": g.layer, "layer_type": g.layer_type, "gemm": g.kind,
                     "M": int(g.a.shape[0]), "K": int(g.a.shape[1]), "N": int(g.b.shape[1]),
                     "norm_rel_err": _frobenius_rel(c, ref), "accum_rel_err": _frobenius_rel(c, exact),
                     "deepgemm_diff": diff, "accepted": bool(diff < DEEPGEMM_ACCEPT)})
    return rows


def _check(p: Mapping[str, Any]) -> None:
    problems = [f"unknown scaling {s!r} (known: {', '.join(SCALINGS)})" for s in p["scalings"] if s not in SCALINGS]
    problems += [f"unknown accumulator {a!r} (known: {', '.join(ACCUMULATORS)})" for a in p["accumulators"]
                 if a not in ACCUMULATORS]
    problems += [f"{k} must be a positive int, got {p[k]!r}" for k in ("rows", "cols")
                 if not isinstance(p[k], int) or p[k] < 1]
    if problems:
        raise ValueError(f"{STUDY}: " + "; ".join(problems))


def points(p: Mapping[str, Any], trace_id: str) -> list[dict]:
    return [{"scaling": s, "accumulator": a, "trace": trace_id, "rows": p["rows"], "cols": p["cols"],
             "definitions": definition_id(SCALINGS[s], a if a == "fp32" else get_accumulator(a))}
            for s in p["scalings"] for a in p["accumulators"]
            if a == "fp32" or SCALINGS[s].activation.scale_format == "fp32"]


def run(store: ResultStore, out_dir: Path, *, trace: Path | str, quick: bool = False, seed: int = 0, jobs: int = 1,
        dask: str | None = None, progress: bool = True, **params: Any) -> StudyOutput:
    """Replay every GEMM of ``trace`` (a trace directory; validated before any work). ``params``: scalings,
    accumulators, rows, cols (quick: 32 x 32 outputs per GEMM; full: 128 x 128). ``seed`` is unused (the
    data is the trace) and accepted for a uniform call."""
    p = resolve_params(STUDY, params, {**(QUICK if quick else FULL), **COMMON})
    _check(p)
    out_dir = prepare_out_dir(out_dir)
    td = open_trace(trace)
    tr, tid = td.trace, td.sha256
    sweep = run_sweep(STUDY, points(p, tid), functools.partial(compute_point, trace_path=str(td.path)), store,
                      jobs=jobs, dask=dask, progress=progress, desc="GEMM replay")
    df = sweep.rows
    df.to_csv(out_dir / f"{STUDY}.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out_dir / f"{STUDY}_summary.csv", index=False)
    source = (f"store study '{STUDY}'; {df[['layer', 'gemm']].drop_duplicates().shape[0]} GEMMs recorded at step(s) "
              f"{', '.join(map(str, tr.steps))} of the BF16 training run {tr.index.get('run_key', '?')[:12]} "
              f"(trace {tid[:12]}); first {p['rows']} rows x {p['cols']} columns of each output")
    png = plot(df, out_dir / f"{STUDY}.png")
    caption = ("Median normwise relative error ||C - C_ref|| / ||C_ref|| of the recorded GEMMs replayed under each "
               "scaling recipe (rows) and accumulator, per GEMM type (left) and per layer type with the fp32 "
               "accumulator (right); C_ref is the float64 product of the recorded BF16 operands.")
    return {"frames": {STUDY: df, f"{STUDY}_summary": summary}, "figures": [Figure(png, caption, source)],
            "tables": [Table(summary, "Per scaling recipe, accumulator and GEMM type: median and max normwise "
                             "relative error, the accumulator's own share (median), the worst DeepGEMM diff and the "
                             f"fraction of GEMMs DeepGEMM's test would accept (diff < {DEEPGEMM_ACCEPT})", source)],
            "sweep": sweep}


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["scaling", "accumulator", "gemm"], sort=False)
    return g.agg(gemms=("norm_rel_err", "size"), median_norm_rel_err=("norm_rel_err", "median"),
                 max_norm_rel_err=("norm_rel_err", "max"), median_accum_rel_err=("accum_rel_err", "median"),
                 max_deepgemm_diff=("deepgemm_diff", "max"), accepted=("accepted", "mean")).reset_index()


def _heatmap(ax: plt.Axes, table: pd.DataFrame, title: str, lo: float, hi: float) -> Any:
    vals = np.log10(table.to_numpy(dtype=float).clip(min=1e-12))
    im = ax.imshow(vals, cmap="viridis_r", aspect="auto", vmin=lo, vmax=hi)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(j, i, f"{v:.1e}", ha="center", va="center", fontsize=8,
                color="white" if np.log10(max(v, 1e-12)) > (lo + hi) / 2 else "black")
    ax.set_title(title, fontsize=10)
    return im


def plot(df: pd.DataFrame, path: Path) -> Path:
    by_kind = df.pivot_table(index=["scaling", "accumulator"], columns="gemm", values="norm_rel_err",
                             aggfunc="median", sort=False)
    by_kind.index = [f"{s} / {a}" for s, a in by_kind.index]
    fp32 = df[df["accumulator"] == "fp32"]
    by_layer = fp32.pivot_table(index="scaling", columns="layer_type", values="norm_rel_err", aggfunc="median",
                                sort=False)
    lo = math.floor(np.log10(max(df["norm_rel_err"].min(), 1e-12)))
    hi = math.ceil(np.log10(max(df["norm_rel_err"].max(), 1e-12)))
    fig, axes = plt.subplots(2, 1, figsize=(11, 0.42 * (len(by_kind) + len(by_layer)) + 3.5), layout="constrained",
                             gridspec_kw={"height_ratios": [len(by_kind) + 1, len(by_layer) + 2]})
    im = _heatmap(axes[0], by_kind, "median normwise relative error, by GEMM type", lo, hi)
    _heatmap(axes[1], by_layer, "median normwise relative error, by layer type (fp32 accumulator)", lo, hi)
    cbar = fig.colorbar(im, ax=axes, shrink=0.6, pad=0.02)
    cbar.set_label("log10 of the error")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    from .common import run_from_args, study_parser

    ap = study_parser(__doc__)
    ap.add_argument("--trace", type=Path, required=True, help="a trace directory (lowprec.training)")
    ap.add_argument("--scalings", nargs="+", choices=list(SCALINGS))
    ap.add_argument("--accumulators", nargs="+", choices=ACCUMULATORS)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--cols", type=int)
    args = ap.parse_args(argv)
    res = run_from_args(run, args, ("trace", "scalings", "accumulators", "rows", "cols"))
    out = args.out
    print(res["tables"][0].frame.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out / (STUDY + '.csv')} and {res['figures'][0].path}")
