"""emulated_matmul and emulated_scaled_matmul, the default call a user writes, beside torch's float32 matmul
``a @ b`` of the same shape in the same run, against the targets of the native-ops issue (11).

Each round times every row once, in turn (interleaved, so a busy machine slows all rows alike); a row's figure is
its median over the rounds. The default call is ``lp.emulated_matmul(a, b, preset)`` (backend "auto", inputs
checked) on operands of the preset's input format; the block-scaled row is
``emulated_scaled_matmul(a, b, preset, scale_a, scale_b, 128)`` (1 x 128 and 128 x 1 scale blocks).

Usage: python benchmarks/bench_accum.py [--size 1024] [--threads 2] [--rounds 7]
                                        [--models hopper_fp8,hopper_fp8_promoted,ampere_bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import report

import lowprec as lp
from lowprec.accum import emulated_scaled_matmul, native_unsupported

TARGET, AT_LEAST, SCALED_TARGET = 10.0, 20.0, 15.0   # x the float32 matmul (issue 11)


def interleaved_medians(rows: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Each callable run once as a warm-up, then ``rounds`` times in turn; the median seconds of each."""
    for fn in rows.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="M = N = K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="hopper_fp8,hopper_fp8_promoted,ampere_bf16")
    ap.add_argument("--k-block", type=int, default=128, help="K block of the block-scaled GEMM")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, n, generator=g) * 32, torch.randn(n, n, generator=g) * 32
    baseline = "torch float32 a @ b"
    rows: dict[str, Callable[[], object]] = {baseline: lambda: x @ y}
    targets: dict[str, float] = {}
    for name in args.models.split(","):
        model = lp.get_accumulator(name)
        a = lp.quantize(x, model.input_formats[0], saturate=True)
        b = lp.quantize(y, model.input_formats[1], saturate=True)
        path = "native" if native_unsupported(model, a.device) is None else "eager"
        rows[f"emulated_matmul {name} ({path})"] = lambda a=a, b=b, name=name: lp.emulated_matmul(a, b, name)
        targets[f"emulated_matmul {name} ({path})"] = TARGET
        if model.promote_every:
            nb = -(-n // args.k_block)
            sa, sb = torch.rand(n, nb, generator=g) + 0.5, torch.rand(nb, n, generator=g) + 0.5
            label = f"emulated_scaled_matmul {name} ({path})"
            rows[label] = lambda a=a, b=b, name=name, sa=sa, sb=sb: emulated_scaled_matmul(a, b, name, sa, sb,
                                                                                            args.k_block)
            targets[label] = SCALED_TARGET
    print(f"M = N = K = {n}, {args.threads} threads, median of {args.rounds} interleaved rounds, "
          f"torch {torch.__version__}")
    secs = interleaved_medians(rows, args.rounds)
    report(list(secs.items()), n**3, "M MAC/s", baseline)
    print()
    for label, target in targets.items():
        ratio = secs[label] / secs[baseline]
        verdict = "met" if ratio <= target else f"not met (gap {ratio / target:.2f}x)"
        if target == TARGET and ratio > target:
            verdict += f"; the {AT_LEAST:g}x floor: {'met' if ratio <= AT_LEAST else 'not met'}"
        print(f"{label}: {ratio:.1f}x the float32 matmul; target <= {target:g}x: {verdict}")


if __name__ == "__main__":
    main()
