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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    print(f"{n} x {n} float32, {args.threads} threads, torch {torch.__version__}")
    cases = [("1x128 (deepseek_v3 activation)", "deepseek_v3", "activation"),
             ("128x128 (deepseek_v3 weight)", "deepseek_v3", "weight"),
             ("1x32 E8M0 (mxfp8)", "mxfp8", "activation")]
    rows = [("plain cast x.to(float8_e4m3fn)", best_time(lambda: x.to(torch.float8_e4m3fn), 3)),
            ("lowprec.encode e4m3 (no scaling), compiled", best_time(lambda: lp.encode(x, "e4m3", backend="compiled"), 3))]
    for label, recipe, role in cases:
        rows.append((f"quantize_tensor {label}, compiled",
                     best_time(lambda: lp.quantize_tensor(x, recipe, role, backend="compiled"), 3)))
        full = lp.quantize_tensor(x, recipe, role, backend="compiled")      # same bits as eager (on 256 rows,
        assert torch.equal(full.codes[:256], lp.quantize_tensor(x[:256], recipe, role).codes)  # whole tiles)
    for label, recipe, role in cases[:2]:
        rows.append((f"quantize_tensor {label}, native (C)",
                     best_time(lambda: lp.quantize_tensor(x, recipe, role, backend="native"), 3)))
        assert torch.equal(lp.quantize_tensor(x, recipe, role, backend="native").codes[:256],
                           lp.quantize_tensor(x[:256], recipe, role).codes)
    rows.append(("quantize_tensor 1x128, eager", best_time(lambda: lp.quantize_tensor(x, "deepseek_v3"), 1)))
    report(rows, n * n, "Melem/s", "plain cast x.to(float8_e4m3fn)")


if __name__ == "__main__":
    main()
