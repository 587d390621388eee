"""quantize_tensor throughput (1x128 tiles, 128x128 blocks, MX 1x32) beside the plain cast of the same
tensor, one run: the ratio is the cost of scaling. Default: 8192 x 8192 float32. The compiled path is
timed at one shape (torch.compile specialises on it); after a second shape it generalises, and the
dynamic-shape kernels measured 3-4x slower here.

Usage: python benchmarks/bench_scaling.py [--size 8192] [--threads 2]
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
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compiled", action="store_true", help="also time backend='compiled' (compiles first)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    print(f"{n} x {n} float32, {args.threads} threads, torch {torch.__version__}")
    cases = [("1x128 (deepseek_v3 activation)", "deepseek_v3", "activation"),
             ("128x128 (deepseek_v3 weight)", "deepseek_v3", "weight"),
             ("1x32 E8M0 (mxfp8)", "mxfp8", "activation")]
    rows = [("plain cast x.to(float8_e4m3fn)", best_time(lambda: x.to(torch.float8_e4m3fn), 3)),
            ("lowprec.encode e4m3 (no scaling), default", best_time(lambda: lp.encode(x, "e4m3"), 3))]
    for label, recipe, role in cases:                  # the call a user writes: no backend argument
        rows.append((f"quantize_tensor {label}, default", best_time(lambda: lp.quantize_tensor(x, recipe, role), 3)))
        assert torch.equal(lp.quantize_tensor(x, recipe, role).codes[:256],           # same bits as eager
                           lp.quantize_tensor(x[:256], recipe, role, backend="eager").codes)
        if args.compiled:
            rows.append((f"quantize_tensor {label}, compiled",
                         best_time(lambda: lp.quantize_tensor(x, recipe, role, backend="compiled"), 3)))
    rows.append(("quantize_tensor 1x128, eager",
                 best_time(lambda: lp.quantize_tensor(x, "deepseek_v3", backend="eager"), 1)))
    report(rows, n * n, "Melem/s", "plain cast x.to(float8_e4m3fn)")


if __name__ == "__main__":
    main()
