"""Reproduce the FP8-accumulation claim: error of an FP8 GEMM on a Hopper-style accumulator vs K.

DeepSeek-V3 (sec. 3.3.2): with ~14 bits kept, the maximum relative error of an FP8 GEMM at K = 4096
is nearly 2%; promoting partial sums to FP32 every N_C = 128 fixes it. For each input distribution
and K, operands are drawn, scaled per tensor so amax maps to 448 and cast to E4M3 (RNE); the
reference is the exact sum rounded once to float32 (``exact`` preset); the models are the emulated
accumulators. Rows are appended to the CSV as they finish; a re-run resumes.

Usage: python studies/accum_error_vs_k.py [--out reports] [--quick]  (or: lowprec lab)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import lowprec as lp  # noqa: E402
from .common import DISTRIBUTIONS, ResultsCSV  # noqa: E402

MODELS = ["hopper_fp8", "hopper_fp8_promoted", "ada_fp8", "blackwell_fp8", "fp32_sequential"]


def fp8_operand(shape: tuple[int, int], dist: str, g: torch.Generator) -> torch.Tensor:
    x = DISTRIBUTIONS[dist](shape, g)
    return lp.quantize(x * (448.0 / x.abs().max()), "e4m3", saturate=True)


def run(out: Path, ks: list[int], m: int, n: int, seed: int, models: list[str], backend: str) -> Path:
    csv = ResultsCSV(out / "accum_error_vs_k.csv", key=("dist", "K", "model"))
    for dist in DISTRIBUTIONS:
        for K in ks:
            if all(csv.has(dist=dist, K=K, model=mod) for mod in models):
                continue
            g = torch.Generator().manual_seed(seed + K)
            a, b = fp8_operand((m, K), dist, g), fp8_operand((K, n), dist, g)
            exact = lp.emulated_matmul(a, b, "exact", backend=backend).double()
            nz = exact != 0
            for mod in models:
                if csv.has(dist=dist, K=K, model=mod):
                    continue
                native_ok = lp.accum.native_unsupported(lp.get_accumulator(mod), a.device) is None
                out_m = lp.emulated_matmul(a, b, mod, backend="native" if native_ok else backend,
                                           check_inputs=False).double()
                err = (out_m - exact).abs()
                rel = err[nz] / exact[nz].abs()
                csv.add({"dist": dist, "K": K, "model": mod, "M": m, "N": n,
                         "max_rel_err": rel.max().item(), "median_rel_err": rel.median().item(),
                         "norm_rel_err": (err.norm() / exact.norm()).item(),
                         "mean_signed_rel": ((out_m - exact)[nz] / exact[nz].abs()).mean().item()})
                print(f"{dist:12s} K={K:6d} {mod:22s} max rel {rel.max().item():.3e}  "
                      f"norm rel {(err.norm() / exact.norm()).item():.3e}", flush=True)
    return csv.path


def plot(csv_path: Path, out: Path) -> Path:
    df = pd.read_csv(csv_path)
    dists = list(dict.fromkeys(df["dist"]))
    metrics = [("max_rel_err", "max elementwise relative error"), ("norm_rel_err", "||error|| / ||exact||")]
    fig, axes = plt.subplots(2, len(dists), figsize=(4.2 * len(dists), 7), sharey="row", squeeze=False)
    for row, (metric, label) in enumerate(metrics):
        for ax, dist in zip(axes[row], dists):
            for mod, sub in df[df["dist"] == dist].groupby("model", sort=False):
                sub = sub.sort_values("K")
                ax.plot(sub["K"], sub[metric], marker="o", ms=3, label=mod)
            ax.axhline(0.02, color="grey", ls="--", lw=0.8)
            ax.axvline(4096, color="grey", ls=":", lw=0.8)
            ax.set(xscale="log", yscale="log", title=dist if row == 0 else "", xlabel="K")
        axes[row][0].set_ylabel(label)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("E4M3 GEMM vs exact, by accumulator model (dashed: the 2% DeepSeek-V3 reports at K = 4096)")
    fig.tight_layout()
    path = out / "accum_error_vs_k.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--quick", action="store_true", help="small M, N and K <= 4096 (about a minute)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="compiled", choices=["eager", "compiled"],
                    help="for the models the native (C) backend does not cover")
    args = ap.parse_args(argv)
    ks = [128, 256, 512, 1024, 2048, 4096] + ([] if args.quick else [8192, 16384])
    m = n = 16 if args.quick else 64
    csv_path = run(args.out, ks, m, n, args.seed, MODELS, args.backend)
    print(f"wrote {csv_path} and {plot(csv_path, args.out)}")


if __name__ == "__main__":
    main()
