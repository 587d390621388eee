"""The ``lowprec`` command: ``lowprec lab`` runs the lab's main job on its embedded default data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from .formats import list_formats
from .rounding import quantize


def format_table() -> pd.DataFrame:
    """One row per registered format with its defining fields and derived range."""
    rows = [{"format": f.name, "bits": f.bits, "e": f.ebits, "m": f.mbits, "bias": f.bias, "specials": f.special,
             "max": f.max, "min_normal": f.min_normal, "min_subnormal": f.min_subnormal,
             "aliases": ", ".join(f.aliases[:3])} for f in list_formats()]
    return pd.DataFrame(rows)


def error_summary(n: int = 1 << 16, seed: int = 0) -> pd.DataFrame:
    """Relative RMS error of unscaled casts of N(0,1) and Student-t(3) samples, per format and rounding."""
    g = torch.Generator().manual_seed(seed)
    data = {"normal": torch.randn(n, generator=g),
            "student_t3": torch.distributions.StudentT(3.0).sample((n,))}
    rows = []
    for f in list_formats():
        if not f.signed:
            continue
        for dist, x in data.items():
            for rounding in ("rne", "rtz", "stochastic"):
                q = quantize(x, f, rounding, saturate=True, generator=g, out_dtype=torch.float64)
                err = (q - x.double()).norm() / x.double().norm()
                rows.append({"format": f.name, "data": dist, "rounding": rounding, "rel_rms_error": float(err)})
    return pd.DataFrame(rows).pivot_table(index="format", columns=["data", "rounding"], values="rel_rms_error",
                                          sort=False)


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab import accum_vs_k, comm

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    args.out.mkdir(parents=True, exist_ok=True)
    print("== formats ==")
    table = format_table()
    table.to_csv(args.out / "formats.csv", index=False)
    print(table.to_string(index=False))
    print("\n== relative RMS error of a plain cast (no scaling), 64k samples ==")
    print(error_summary().to_string(float_format=lambda v: f"{v:.2e}"))
    print("\n== FP8 GEMM error vs K by accumulator model (quick: 16 x 16 outputs, K <= 4096) ==")
    accum_vs_k.main(["--quick", "--backend", "eager", "--out", str(args.out)])
    print("\n== MoE dispatch / combine formats (synthetic heavy-tailed activations) ==")
    comm.main(["--out", str(args.out), "--tokens", "64"])
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    """Print one line per backend: its name, whether it runs here, and what it runs or why it cannot."""
    import warnings

    from .native import NativeBuildWarning, backends_report

    with warnings.catch_warnings():                 # the table prints each reason itself
        warnings.simplefilter("ignore", NativeBuildWarning)
        rows = backends_report()
    for r in rows:
        detail = r["detail"].replace("\n", "\n" + " " * 18)
        print(f"{r['backend']:<12} {'yes' if r['available'] else 'no':<4} {detail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lowprec", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    lab = sub.add_parser("lab", help="run the lab's main job on its embedded default data")
    lab.add_argument("--out", type=Path, default=Path("reports/lab"), help="where tables and plots go")
    lab.set_defaults(func=cmd_lab)
    backends = sub.add_parser("backends", help="say which backends (eager, compiled, native CPU/CUDA) run here, "
                                               "and why not (builds the native ones on first use)")
    backends.set_defaults(func=cmd_backends)
    args = ap.parse_args(argv)
    if args.cmd is None:
        args = ap.parse_args(["lab", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
