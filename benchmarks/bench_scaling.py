"""quantize_tensor throughput of the DEFAULT call (1x128 tiles, 128x128 blocks, MX 1x32 E8M0) beside the plain
cast of the same tensor, one run: the ratio is the cost of scaling, printed with the issue's target (<= 1.5x the
plain cast for 1x128 and 128x128, <= 2x for MX 1x32) and whether it is met. Median of ``--repeat`` interleaved
rounds after a warm-up round (every contender sees the same load on a shared machine). Default: 8192 x 8192
float32. ``--compiled`` also times backend='compiled' (torch.compile specialises on the shape: compiles first).

Usage: python benchmarks/bench_scaling.py [--size 8192] [--threads 2] [--repeat 7] [--compiled]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lowprec as lp  # noqa: E402
from bench_cast import median_times  # noqa: E402
from common import report  # noqa: E402

CAST = "plain cast x.to(float8_e4m3fn)"
CASES = [("1x128 (deepseek_v3 activation)", "deepseek_v3", "activation", 1.5),
         ("128x128 (deepseek_v3 weight)", "deepseek_v3", "weight", 1.5),
         ("1x32 E8M0 (mxfp8)", "mxfp8", "activation", 2.0)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--compiled", action="store_true", help="also time backend='compiled' (compiles first)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    print(f"{n} x {n} float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeat} interleaved rounds")
    for _, recipe, role, _ in CASES:                      # the default call's bits: those of the eager reference
        assert torch.equal(lp.quantize_tensor(x[:256], recipe, role).codes,
                           lp.quantize_tensor(x[:256], recipe, role, backend="eager").codes)
        assert torch.equal(lp.quantize_tensor(x, recipe, role).codes[:256],
                           lp.quantize_tensor(x[:256], recipe, role, backend="eager").codes)
    fns = {CAST: lambda: x.to(torch.float8_e4m3fn),
           "lowprec.encode e4m3 (no scaling), default": lambda: lp.encode(x, "e4m3")}
    for label, recipe, role, _ in CASES:                  # the call a user writes: no backend argument
        fns[f"quantize_tensor {label}, default"] = lambda recipe=recipe, role=role: lp.quantize_tensor(x, recipe, role)
        if args.compiled:
            fns[f"quantize_tensor {label}, compiled"] = (
                lambda recipe=recipe, role=role: lp.quantize_tensor(x, recipe, role, backend="compiled"))
    rows = median_times(fns, args.repeat)
    t0 = time.perf_counter()
    lp.quantize_tensor(x, "deepseek_v3", backend="eager")
    rows.append(("quantize_tensor 1x128, eager (1 run)", time.perf_counter() - t0))
    report(rows, n * n, "Melem/s", CAST)
    d = dict(rows)
    for label, _, _, target in CASES:
        ratio = d[f"quantize_tensor {label}, default"] / d[CAST]
        print(f"{label}: {ratio:.2f}x the plain cast (target <= {target}x: {'met' if ratio <= target else 'NOT met'})")


if __name__ == "__main__":
    main()
