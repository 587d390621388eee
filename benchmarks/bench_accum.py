"""emulated_matmul throughput (multiply-adds per second) beside torch's float32 matmul, same run.

Usage: python benchmarks/bench_accum.py [--size 1024] [--threads 2] [--models hopper_fp8,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lowprec as lp  # noqa: E402
from common import best_time, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="M = N = K")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--models", default="hopper_fp8,hopper_fp8_promoted,exact")
    ap.add_argument("--eager", action="store_true", help="also time the eager backend (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    g = torch.Generator().manual_seed(0)
    a = lp.quantize(torch.randn(n, n, generator=g) * 32, "e4m3", saturate=True)
    b = lp.quantize(torch.randn(n, n, generator=g) * 32, "e4m3", saturate=True)
    print(f"M = N = K = {n}, {args.threads} threads, torch {torch.__version__}")
    rows = [("torch float32 matmul", best_time(lambda: a @ b, 3))]
    for name in args.models.split(","):
        lp.emulated_matmul(a[:8, :256], b[:256, :8], name, backend="compiled")          # compile outside the timing
        rows.append((f"emulated_matmul {name} compiled",
                     best_time(lambda: lp.emulated_matmul(a, b, name, backend="compiled", check_inputs=False), 1)))
        if lp.accum.native_unsupported(lp.get_accumulator(name), a.device) is None:
            rows.append((f"emulated_matmul {name} native (C)",
                         best_time(lambda: lp.emulated_matmul(a, b, name, backend="native", check_inputs=False), 2)))
        if args.eager:
            rows.append((f"emulated_matmul {name} eager",
                         best_time(lambda: lp.emulated_matmul(a, b, name, check_inputs=False), 1)))
    report(rows, n**3, "M MAC/s", "torch float32 matmul")


if __name__ == "__main__":
    main()
