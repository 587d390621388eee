"""LogFMT-8 encode/decode throughput beside the E4M3 1x128 quantize of the same tensor, one run.

Usage: python benchmarks/bench_logfmt.py [--rows 4096] [--cols 7168] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lowprec as lp  # noqa: E402
from common import best_time, report  # noqa: E402
from lowprec import logfmt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=7168)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.cols, generator=torch.Generator().manual_seed(0))
    enc = logfmt.encode(x, 8)
    q = lp.quantize_tensor(x, "deepseek_v3")
    print(f"{args.rows} x {args.cols} float32, {args.threads} threads")
    rows = [
        ("E4M3 1x128 quantize_tensor, eager", best_time(lambda: lp.quantize_tensor(x, "deepseek_v3"), 2)),
        ("E4M3 1x128 quantize_tensor, compiled",
         best_time(lambda: lp.quantize_tensor(x, "deepseek_v3", backend="compiled"), 2)),
        ("E4M3 1x128 dequantize", best_time(q.dequantize, 2)),
        ("LogFMT-8 encode (1x128)", best_time(lambda: logfmt.encode(x, 8), 2)),
        ("LogFMT-8 decode", best_time(lambda: logfmt.decode(enc), 2)),
    ]
    report(rows, x.numel(), "Melem/s", "E4M3 1x128 quantize_tensor, eager")


if __name__ == "__main__":
    main()
