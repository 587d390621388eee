"""Reproduce the FP8-accumulation claim: error of an FP8 GEMM on a Hopper-style accumulator vs K.

DeepSeek-V3 (sec. 3.3.2): "taking GEMM operations of two random matrices with K = 4096 for example ...
the limited accumulation precision in Tensor Cores results in a maximum relative error of nearly 2%";
promoting partial sums to FP32 every N_C = 128 fixes it.

Each point is (distribution, K, M, N, seed, accumulator model): A (M x K) and B (K x N) are drawn from
the distribution with a generator seeded from (seed, distribution, K) (so every model of a (dist, K)
sees the same operands), scaled per tensor so amax maps to 448 and cast to E4M3 (RNE). The reference
C_exact is the exact sum rounded once to float32 (the ``exact`` preset); C is the emulated accumulator
model (bit-exact; the eager / compiled / native backends give the same bits, so the backend is not
part of a point's key).

Operands recorded in training (``trace=DIR``, ``--trace DIR``: distribution ``trace_wgrad``, labelled
"recorded BF16 training trace (step S, run key K)" in every output). They follow the real Wgrad GEMM,
whose reduction runs over tokens: for a linear layer with input x (tokens x in) and output gradient
dy (tokens x out), Wgrad = dy^T x, so A = dy^T and B = x. Per recorded Wgrad GEMM (a *segment*),
M output channels (rows of A) and N input channels (columns of B) are drawn without replacement by a
generator seeded from (seed, step, layer), independent of K; each recorded tensor is scaled per tensor
(its whole amax over all tokens and channels maps to 448, as a per-tensor FP8 recipe would) and cast
to E4M3 (RNE). Along K:

* K <= the first segment's tokens: ONE real Wgrad, its first K tokens (the trace's first Wgrad GEMM
  in index order, e.g. ``layers.0.attn.out`` with batch x seq tokens, K = 128 being its first
  sequence of 128 tokens);
* beyond: the next segments (the trace's Wgrad GEMMs in index order: every layer's attn, shared and
  routed-expert linears, then the next recorded step) are appended along K, each with its own channels
  and scale. That is a sum of several layers' weight gradients, not a gradient the model ever formed:
  it stands for a Wgrad over more tokens with the value statistics of real gradients and activations,
  and a K-sweep of it is nested (the operands at K are a prefix of those at 2K).

K larger than all the trace's Wgrad tokens together is left out for ``trace_wgrad`` (printed, and
said in the caption). The point's key holds the trace's content identity (``common.trace_sha256``),
never its path: another trace recomputes, the same one is reused wherever it lies.

Metrics (one row per point):
* ``norm_rel_err`` = ||C - C_exact||_F / ||C_exact||_F, the normwise relative error;
* ``max_err_over_abs_ab`` = max_ij |C - C_exact|_ij / (|A| |B|)_ij, the error relative to the standard
  bound's scale sum_k |a_ik| |b_kj| (|C - C_exact| <= gamma_K |A||B|);
* ``mean_signed_err_over_abs_ab``: the mean of the same ratio with its sign (a truncating accumulator
  is biased towards zero, so this shows the bias).
The max elementwise relative error |C - C_exact|_ij / |C_exact|_ij is not reported: on zero-mean data
it is dominated by outputs near zero (10,000% for hopper_fp8 at K = 4096) and says nothing.

Which metric is the paper's 2%? Decided here: most likely the relative error of a typical-magnitude
output of a product of random *same-sign* matrices, whose outputs are all far from zero and where
the relative error of each output equals its error over (|A||B|)_ij. So the like-with-like number is
``max_err_over_abs_ab``, and the 2% line is drawn on that panel only; on positive data (uniform_pos,
half_normal) it is the maximum elementwise relative error itself, on zero-mean data it stays
meaningful where the elementwise ratio is not.

Usage: python studies/accum_error_vs_k.py [--quick] [--out lowprec_runs] [--seed 0] [--jobs N]
       [--dask ADDRESS|local] [--ks 128 4096 ...] [--m 64] [--n 64] [--models ...] [--dists ...]
       [--trace RUN_DIR/trace]
"""

from __future__ import annotations

import functools
import hashlib
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
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

import lowprec as lp  # noqa: E402

from ..report import Figure, Table  # noqa: E402
from ..training.traces import TraceError  # noqa: E402
from .common import (  # noqa: E402
    DISTRIBUTIONS, StudyOutput, definition_id, load_checked_trace, open_trace, prepare_out_dir,
    resolve_params, run_from_args, study_parser,
)
from .store import ResultStore  # noqa: E402
from .sweep import run_sweep  # noqa: E402

STUDY = "accum_error_vs_k"
MODELS = ["hopper_fp8", "ada_fp8", "hopper_fp8_promoted", "blackwell_fp8", "fp32_sequential"]
PAPER_K, PAPER_ERR = 4096, 0.02
QUICK = {"ks": [128, 256, 512, 1024, 2048, 4096], "m": 16, "n": 16}
FULL = {"ks": [128, 256, 512, 1024, 2048, 4096, 8192, 16384], "m": 64, "n": 64}
COMMON = {"models": MODELS, "dists": list(DISTRIBUTIONS), "backend": "compiled", "trace": None}
TRACE_DIST = "trace_wgrad"          # operands from a recorded trace (see the module doc)
METRICS = {"max_err_over_abs_ab": "max |C − C_exact| / (|A||B|)",
           "norm_rel_err": "‖C − C_exact‖ / ‖C_exact‖"}
# one look per model: colour, marker, line style; hollow markers of different sizes so that curves
# that coincide (hopper_fp8 and ada_fp8 nearly do) stay visible one over the other
STYLE = {"hopper_fp8": ("#1f77b4", "o", "-", 8), "ada_fp8": ("#d62728", "x", "--", 6),
         "hopper_fp8_promoted": ("#2ca02c", "s", "-.", 6), "blackwell_fp8": ("#9467bd", "^", ":", 6),
         "fp32_sequential": ("#ff7f0e", "D", (0, (5, 2, 1, 2)), 5)}


def fp8_operand(shape: tuple[int, int], dist: str, g: torch.Generator) -> torch.Tensor:
    x = DISTRIBUTIONS[dist](shape, g)
    return lp.quantize(x * (448.0 / x.abs().max()), "e4m3", saturate=True)


def _operand_seed(seed: int, dist: str, K: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{dist}/{K}".encode()).digest()[:8], "little") >> 1


def points(*, ks: Sequence[int], m: int, n: int, seed: int, models: Sequence[str], dists: Sequence[str],
           trace_sha256: str | None = None, trace_ks: Sequence[int] = ()) -> list[dict]:
    """The grid; ``trace_wgrad`` (in ``dists``) runs over ``trace_ks`` and carries ``trace_sha256``."""
    return [{"dist": d, "K": K, "M": m, "N": n, "seed": seed, "model": mod,
             "model_def": definition_id(lp.get_accumulator(mod)),
             **({"trace_sha256": trace_sha256} if d == TRACE_DIST else {})}
            for d in dists for K in (trace_ks if d == TRACE_DIST else ks) for mod in models]


# -- operands from a recorded trace ----------------------------------------------------------------
def wgrad_segments(index: Mapping[str, Any], m: int, n: int) -> list[dict[str, Any]]:
    """The trace's Wgrad GEMMs in index order (files by step, GEMMs as listed) with at least ``m`` output
    and ``n`` input channels: file, step, layer, dy and x tensor names, tokens, out, in."""
    out = []
    for f in index["files"]:
        for gm in f["gemms"]:
            if gm["kind"] != "wgrad":
                continue
            dy, x = f["tensors"][gm["a"]]["shape"], f["tensors"][gm["b"]]["shape"]
            if dy[1] >= m and x[1] >= n:
                out.append({"file": f["file"], "step": f["step"], "layer": gm["layer"], "dy": gm["a"], "x": gm["b"],
                            "tokens": dy[0], "out": dy[1], "in": x[1]})
    return out


def _per_tensor_e4m3(t: torch.Tensor) -> torch.Tensor:
    """``t`` scaled per tensor (amax -> 448) and cast to E4M3 (RNE); an all-zero tensor stays zero."""
    amax = t.abs().max()
    return lp.quantize(t * (448.0 / amax), "e4m3", saturate=True) if amax > 0 else torch.zeros_like(t)


@functools.lru_cache(maxsize=2)
def _trace_fp8(path: str, sha256: str) -> dict[str, torch.Tensor]:
    """Every Wgrad operand of the trace (dy and x, by ``step:name``), per-tensor scaled and in E4M3."""
    from safetensors import safe_open

    trace = load_checked_trace(path, sha256)
    out: dict[str, torch.Tensor] = {}
    for f in trace.index["files"]:
        with safe_open(str(trace.path / f["file"]), framework="pt") as st:
            for gm in f["gemms"]:
                if gm["kind"] == "wgrad":
                    for name in (gm["a"], gm["b"]):
                        out.setdefault(f"{f['step']}:{name}", _per_tensor_e4m3(st.get_tensor(name).float()))
    return out


def trace_operands(config: Mapping[str, Any], path: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A (M x K) and B (K x N) of a ``trace_wgrad`` point (see the module doc) and the segments used."""
    K, M, N, seed = config["K"], config["M"], config["N"], config["seed"]
    tensors = _trace_fp8(path, config["trace_sha256"])
    trace = load_checked_trace(path, config["trace_sha256"])
    a_parts, b_parts, used, left = [], [], [], K
    for seg in wgrad_segments(trace.index, M, N):
        if left == 0:
            break
        g = torch.Generator().manual_seed(_operand_seed(seed, f"{TRACE_DIST}/{seg['step']}/{seg['layer']}", 0))
        rows, cols = torch.randperm(seg["out"], generator=g)[:M], torch.randperm(seg["in"], generator=g)[:N]
        t = min(left, seg["tokens"])
        a_parts.append(tensors[f"{seg['step']}:{seg['dy']}"][:t, rows].t())
        b_parts.append(tensors[f"{seg['step']}:{seg['x']}"][:t, cols])
        used.append(f"{seg['layer']}@{seg['step']}[:{t}]")
        left -= t
    if left:
        raise ValueError(f"{STUDY}: the trace holds {K - left} Wgrad tokens of at least {M} x {N} channels, "
                         f"fewer than K = {K}")
    return torch.cat(a_parts, 1).contiguous(), torch.cat(b_parts, 0).contiguous(), used


def compute_point(config: Mapping[str, Any], backend: str = "eager", trace: str | None = None) -> list[dict]:
    """The error metrics of one (dist, K, M, N, seed, model) point; ``backend`` for the models that the
    native backend does not cover (the bits do not depend on it). A ``trace_wgrad`` point needs
    ``trace``, the trace's path on this machine (bound with ``functools.partial``, not in the key); its
    content must be the point's ``trace_sha256`` (``TraceError`` otherwise)."""
    dist, K, M, N = config["dist"], config["K"], config["M"], config["N"]
    if dist == TRACE_DIST:
        if trace is None:
            raise ValueError(f"{STUDY}: point {dict(config)} is on a recorded trace; pass its path as trace=")
        a, b, _ = trace_operands(config, str(trace))
    else:
        g = torch.Generator().manual_seed(_operand_seed(config["seed"], dist, K))
        a, b = fp8_operand((M, K), dist, g), fp8_operand((K, N), dist, g)
    model = lp.get_accumulator(config["model"])
    exact = lp.emulated_matmul(a, b, "exact").double()
    native_ok = lp.accum.native_unsupported(model, a.device) is None
    c = lp.emulated_matmul(a, b, model, backend="native" if native_ok else backend, check_inputs=False).double()
    err = c - exact
    scale = a.double().abs() @ b.double().abs()                 # exact: sums of E4M3 products fit float64
    ratio = torch.where(scale > 0, err / scale.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    e_norm, x_norm = err.norm().item(), exact.norm().item()
    # an all-zero product (possible on recorded operands that underflow in E4M3): 0 if C is exact too
    norm_rel = e_norm / x_norm if x_norm > 0 else (0.0 if e_norm == 0 else math.inf)
    return [{"norm_rel_err": norm_rel, "max_err_over_abs_ab": ratio.abs().max().item(),
             "mean_signed_err_over_abs_ab": ratio.mean().item()}]


def _check(p: Mapping[str, Any]) -> None:
    """ValueError listing every parameter value the study cannot run."""
    known = {m.name for m in lp.list_accumulators()}
    problems = [f"unknown model {m!r} (known: {', '.join(sorted(known))})" for m in p["models"] if m not in known]
    problems += [f"unknown distribution {d!r} (known: {', '.join([*DISTRIBUTIONS, TRACE_DIST])})"
                 for d in p["dists"] if d not in DISTRIBUTIONS and d != TRACE_DIST]
    if TRACE_DIST in p["dists"] and p["trace"] is None:
        problems.append(f"distribution {TRACE_DIST!r} needs a trace (trace=DIR, --trace DIR)")
    problems += [f"{k} must be a positive int, got {p[k]!r}" for k in ("m", "n")
                 if not isinstance(p[k], int) or p[k] < 1]
    if not p["ks"] or any(not isinstance(k, int) or k < 1 for k in p["ks"]):
        problems.append(f"ks must be positive ints, got {p['ks']!r}")
    if p["backend"] not in ("eager", "compiled"):
        problems.append(f"backend must be 'eager' or 'compiled', got {p['backend']!r}")
    if problems:
        raise ValueError(f"{STUDY}: " + "; ".join(problems))


def run(store: ResultStore, out_dir: Path, *, quick: bool = False, seed: int = 0, jobs: int = 1,
        dask: str | None = None, progress: bool = True, **params: Any) -> StudyOutput:
    """Run (or reuse) the sweep, write ``accum_error_vs_k.csv`` / ``.png`` into ``out_dir``. ``params``:
    ks, m, n (quick: K <= 4096, 16 x 16 outputs; full: K <= 16384, 64 x 64), models, dists, backend, and
    ``trace``: the path of a recorded trace directory (default None), which adds the ``trace_wgrad``
    distribution (real Wgrad operands, see the module doc) to ``dists``. A trace that does not validate
    is a ``TraceError`` (a ValueError) before any work."""
    p = resolve_params(STUDY, params, {**(QUICK if quick else FULL), **COMMON})
    if p["trace"] is not None and TRACE_DIST not in p["dists"]:
        p["dists"] = [*p["dists"], TRACE_DIST]
    _check(p)
    td = open_trace(p["trace"]) if p["trace"] is not None else None
    trace_ks: list[int] = []
    if td is not None:
        segs = wgrad_segments(td.index, p["m"], p["n"])
        total = sum(s["tokens"] for s in segs)
        if not segs:
            raise TraceError(f"{STUDY}: the trace has no Wgrad GEMM with at least {p['m']} output and {p['n']} input "
                             "channels (m, n)")
        trace_ks = [K for K in p["ks"] if K <= total]
        if dropped := [K for K in p["ks"] if K > total]:
            print(f"{STUDY}: {TRACE_DIST} leaves out K = {', '.join(map(str, dropped))}: the trace holds {total} "
                  "Wgrad tokens", flush=True)
    out_dir = prepare_out_dir(out_dir)
    pts = points(ks=p["ks"], m=p["m"], n=p["n"], seed=seed, models=p["models"], dists=p["dists"],
                 trace_sha256=td.sha256 if td else None, trace_ks=trace_ks)
    from ..native import compiler        # torch.compile needs a C compiler too: without one, eager (same bits)
    backend = p["backend"] if compiler(False) is not None else "eager"
    fn = functools.partial(compute_point, backend=backend, trace=str(td.path) if td else None)
    sweep = run_sweep(STUDY, pts, fn, store, jobs=jobs, dask=dask, progress=progress, desc="accumulation error vs K")
    df = sweep.rows
    csv = out_dir / f"{STUDY}.csv"
    df.to_csv(csv, index=False)
    synthetic = [d for d in p["dists"] if d != TRACE_DIST]
    data = [f"synthetic operands ({', '.join(synthetic)}), seed {seed}"] if synthetic else []
    trace_note = ""
    if td is not None:
        first = segs[0]
        drawn = bool(trace_ks) and min(trace_ks) <= first["tokens"] < max(trace_ks)
        line = " (gold dotted line)" if drawn else ""
        data.append(f"{TRACE_DIST}: Wgrad operands of the {td.label}, trace content sha256 {td.sha256[:12]}")
        trace_note = (f" {TRACE_DIST} (shaded panel): operands of the {td.label}, not synthetic: A = dy^T ({p['m']} "
                      f"output channels of the recorded output gradient x K tokens), B = x (K tokens x {p['n']} input "
                      f"channels of the recorded layer input), each tensor scaled per tensor (amax to 448) and cast to "
                      f"E4M3. Up to K = {first['tokens']}{line} it is one real Wgrad ({first['layer']}, its "
                      f"first K tokens); beyond, the Wgrad operands of the next recorded GEMMs are appended along K "
                      f"(a sum of several layers' weight gradients standing for a larger batch)"
                      + (f"; the trace holds {total} Wgrad tokens, so K > {total} is left out." if len(trace_ks) <
                         len(p["ks"]) else "."))
    source = f"store study '{STUDY}' ({store.path.name}); {'; '.join(data)}; exported to {csv.name}"
    png = plot(df, out_dir / f"{STUDY}.png", trace_label=td.label if td else None,
               trace_single_k=segs[0]["tokens"] if td else None)
    caption = (f"E4M3 GEMM error vs K per accumulator model and input distribution ({p['m']} x {p['n']} outputs). "
               f"Top: max_ij |C - C_exact| / (|A||B|)_ij, the metric comparable to the ~2% DeepSeek-V3 reports at "
               f"K = {PAPER_K} (dashed line; on same-sign data it equals the max elementwise relative error). "
               "Bottom: normwise relative error. Errors of exactly 0 are drawn as triangles on the bottom axis."
               + trace_note)
    at_paper_k = paper_comparison(df)
    tables = [Table(at_paper_k, f"At K = {PAPER_K}: the lab's errors beside the paper's ~2% (vs_paper_2pct = "
                    "max_err_over_abs_ab / 0.02)", source)] if len(at_paper_k) else []
    return {"frames": {STUDY: df}, "figures": [Figure(png, caption, source)], "tables": tables, "sweep": sweep}


def paper_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """The rows at K = 4096 (largest M, N present): both metrics and the ratio to the paper's 2%."""
    at = df[df["K"] == PAPER_K]
    at = at[at["M"] * at["N"] == (at["M"] * at["N"]).max()]
    out = at[["dist", "model", "M", "N", "max_err_over_abs_ab", "norm_rel_err"]].copy()
    out["vs_paper_2pct"] = out["max_err_over_abs_ab"] / PAPER_ERR
    return out.reset_index(drop=True)


def _k_axis(ax: plt.Axes, ks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(ks))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda k, _: f"{k / 1024:g}k" if k >= 1024 else f"{k:g}"))
    ax.tick_params(axis="x", labelsize=8)


def plot(df: pd.DataFrame, path: Path, trace_label: str | None = None, trace_single_k: int | None = None) -> Path:
    """Two rows (the metrics) x one column per distribution; the legend below the panels. The
    ``trace_wgrad`` panels are shaded and titled with ``trace_label``; a dotted line at
    ``trace_single_k`` marks where one real Wgrad ends and concatenated ones begin."""
    dists, ks = list(dict.fromkeys(df["dist"])), sorted(set(df["K"]))
    width = max(3.1 * len(dists) + 0.6, 8.5 if trace_label else 6.5)      # room for the legend and title
    fig, axes = plt.subplots(len(METRICS), len(dists), figsize=(width, 6.4), sharex=True,
                             sharey="row", squeeze=False, layout="constrained")
    any_zero = False
    for row, (metric, label) in enumerate(METRICS.items()):
        positive = df.loc[df[metric] > 0, metric]
        lo = 10.0 ** np.floor(np.log10(positive.min())) / 10 if len(positive) else 1e-12
        hi = 10.0 ** np.ceil(np.log10(2 * max(positive.max() if len(positive) else 1.0, PAPER_ERR)))
        for ax, dist in zip(axes[row], dists):
            for mod, sub in df[df["dist"] == dist].groupby("model", sort=False):
                sub = sub.sort_values("K")
                colour, marker, ls, ms = STYLE.get(mod, ("#444444", ".", "-", 6))
                y = sub[metric].where(sub[metric] > 0)
                ax.plot(sub["K"], y, color=colour, marker=marker, ls=ls, ms=ms, lw=1.3, mfc="none", mew=1.3)
                zeros = sub[sub[metric] == 0]
                if len(zeros):
                    any_zero = True
                    ax.plot(zeros["K"], np.full(len(zeros), lo), ls="none", marker="v", ms=7, color=colour,
                            clip_on=False, zorder=5)
            if metric == "max_err_over_abs_ab":
                ax.axhline(PAPER_ERR, color="black", ls="--", lw=0.9)
            ax.axvline(PAPER_K, color="grey", ls=":", lw=0.8)
            if dist == TRACE_DIST:
                ax.set_facecolor("#fff6e0")
                if trace_single_k is not None and min(ks) <= trace_single_k < max(ks):
                    ax.axvline(trace_single_k, color="#b8860b", ls=(0, (1, 1.5)), lw=1.4)
            ax.set_yscale("log")
            ax.set_ylim(lo, hi)
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, numticks=7))
            ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=[float(s) for s in range(2, 10)], numticks=12))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.grid(True, which="major", color="#e6e6e6", lw=0.6)
            _k_axis(ax, ks)
            if row == 0:
                ax.set_title(f"{dist}\n(recorded trace)" if dist == TRACE_DIST else f"{dist}\n(synthetic)", fontsize=10)
            if row == len(METRICS) - 1:
                ax.set_xlabel("K (reduction length)")
        axes[row][0].set_ylabel(label)
    handles = [Line2D([], [], color=c, marker=mk, ls=ls, ms=ms, mfc="none", mew=1.3, label=mod)
               for mod, (c, mk, ls, ms) in STYLE.items() if mod in set(df["model"])]
    handles.append(Line2D([], [], color="black", ls="--", lw=0.9, label=f"DeepSeek-V3: ~2% at K = {PAPER_K}"))
    if any_zero:
        handles.append(Line2D([], [], color="grey", marker="v", ls="none", ms=7,
                              label="error exactly 0 (at axis floor)"))
    if TRACE_DIST in dists and trace_single_k is not None and min(ks) <= trace_single_k < max(ks):
        handles.append(Line2D([], [], color="#b8860b", ls=(0, (1, 1.5)), lw=1.4,
                              label=f"{TRACE_DIST}: one real Wgrad up to here, concatenated Wgrads beyond"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3 if trace_label else 4, fontsize=8, frameon=False)
    title = "E4M3 GEMM error vs the exactly rounded product, by accumulator model"
    if trace_label is not None and TRACE_DIST in dists:
        title += (f"\n{'synthetic operands and (shaded) ' if len(dists) > 1 else ''}Wgrad operands of the "
                  f"{trace_label}")
    fig.suptitle(title, fontsize=11 if trace_label is None else 10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = study_parser(__doc__)
    ap.add_argument("--ks", type=int, nargs="+", help="reduction lengths (quick: 128..4096, full: 128..16384)")
    ap.add_argument("--m", type=int, help="rows of A (quick: 16, full: 64)")
    ap.add_argument("--n", type=int, help="columns of B (quick: 16, full: 64)")
    ap.add_argument("--models", nargs="+", help=f"accumulator models (default: {' '.join(MODELS)})")
    ap.add_argument("--dists", nargs="+", help=f"input distributions (default: {' '.join(DISTRIBUTIONS)}; "
                    f"{TRACE_DIST} with --trace)")
    ap.add_argument("--backend", choices=["eager", "compiled"],
                    help="for the models the native (C) backend does not cover (same bits; default: compiled)")
    ap.add_argument("--trace", metavar="DIR", help=f"a recorded training trace directory (a run's trace/): adds the "
                    f"'{TRACE_DIST}' distribution, real Wgrad operands (dy^T, x) of the trace")
    args = ap.parse_args(argv)
    res = run_from_args(run, args, ("ks", "m", "n", "models", "dists", "backend", "trace"))
    table = paper_comparison(res["frames"][STUDY])
    print(res["figures"][0].source)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3e}"))
    print(f"wrote {', '.join(str(f.path) for f in res['figures'])} and {args.out / (STUDY + '.csv')}")
