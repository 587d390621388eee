"""emulated_matmul and emulated_scaled_matmul, the default call a user writes, beside torch's float32 matmul
``a @ b`` of the same shape in the same run, against the targets of the native-ops issue (11).

Each round times every row once, in turn (interleaved, so a busy machine slows all rows alike); a row's figure is
its median over the rounds (the eager rows, minutes per call, run in the first ``--eager-rounds`` only). The
default call is ``lp.emulated_matmul(a, b, preset)`` (backend "auto", inputs checked) on operands of the preset's
input format; the block-scaled row is ``emulated_scaled_matmul(a, b, preset, scale_a, scale_b, 128)`` (1 x 128 and
128 x 1 scale blocks). For the presets of ``--eager-models`` the same call with ``backend="eager"`` (the torch
path, the default before the native kernels covered them) is timed in the same rounds, and native / eager printed.

The defaults time the 25-bit presets the native kernels cover since issue 12 (hopper_bf16: bf16 operands, the
fast path where their own exponent range allows it, as for randn * 32; blackwell_fp8: FP8 operands, groups of 32)
and hopper_fp8 (the int32 fast path) with its promoted and block-scaled forms. The thread count is printed:
``--threads`` for torch, ``OMP_NUM_THREADS`` for the native kernels' OpenMP (its default: every core).

Usage: python benchmarks/bench_accum.py [--size 1024] [--threads 2] [--rounds 7]
                                        [--models hopper_bf16,blackwell_fp8,hopper_fp8,hopper_fp8_promoted,ampere_bf16]
                                        [--eager-models hopper_bf16,blackwell_fp8] [--eager-rounds 1]
"""

from __future__ import annotations

import argparse
import os
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


def interleaved_medians(rows: dict[str, Callable[[], object]], rounds: int,
                        few: dict[str, int] | None = None) -> dict[str, float]:
    """Each callable run once as a warm-up, then ``rounds`` times in turn; the median seconds of each. A row
    named in ``few`` (the slow eager rows: minutes per call) has no warm-up (it builds nothing) and runs only in
    the first ``few[name]`` rounds, still in turn with the others."""
    few = few or {}
    for name, fn in rows.items():
        if name not in few:
            fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds):
        for name, fn in rows.items():
            if r >= few.get(name, rounds):
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="M = N = K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="hopper_bf16,blackwell_fp8,hopper_fp8,hopper_fp8_promoted,ampere_bf16")
    ap.add_argument("--eager-models", default="hopper_bf16,blackwell_fp8",
                    help="presets also timed with backend='eager' (comma-separated; empty: none)")
    ap.add_argument("--eager-rounds", type=int, default=1,
                    help="rounds of the eager rows (1-3 minutes per call at 1024 on two cores)")
    ap.add_argument("--k-block", type=int, default=128, help="K block of the block-scaled GEMM")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, n, generator=g) * 32, torch.randn(n, n, generator=g) * 32
    baseline = "torch float32 a @ b"
    rows: dict[str, Callable[[], object]] = {baseline: lambda: x @ y}
    targets: dict[str, float] = {}
    eager_pairs: dict[str, str] = {}                    # default-call row -> its eager row
    eager = {name for name in args.eager_models.split(",") if name}
    for name in args.models.split(","):
        model = lp.get_accumulator(name)
        a = lp.quantize(x, model.input_formats[0], saturate=True)
        b = lp.quantize(y, model.input_formats[1], saturate=True)
        path = "native" if native_unsupported(model, a.device) is None else "eager"
        rows[f"emulated_matmul {name} ({path})"] = lambda a=a, b=b, name=name: lp.emulated_matmul(a, b, name)
        targets[f"emulated_matmul {name} ({path})"] = TARGET
        if name in eager and path == "native":
            label = f"emulated_matmul {name} (backend='eager')"
            rows[label] = lambda a=a, b=b, name=name: lp.emulated_matmul(a, b, name, backend="eager")
            eager_pairs[f"emulated_matmul {name} ({path})"] = label
        if model.promote_every:
            nb = -(-n // args.k_block)
            sa, sb = torch.rand(n, nb, generator=g) + 0.5, torch.rand(nb, n, generator=g) + 0.5
            label = f"emulated_scaled_matmul {name} ({path})"
            rows[label] = lambda a=a, b=b, name=name, sa=sa, sb=sb: emulated_scaled_matmul(a, b, name, sa, sb,
                                                                                            args.k_block)
            targets[label] = SCALED_TARGET
    print(f"M = N = K = {n}, torch threads {torch.get_num_threads()}, native OpenMP threads "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', f'unset (every core: {os.cpu_count()})')}, "
          f"median of {args.rounds} interleaved rounds, torch {torch.__version__}")
    print(f"eager rows: {args.eager_rounds} of the rounds, no warm-up")
    secs = interleaved_medians(rows, args.rounds, {label: args.eager_rounds for label in eager_pairs.values()})
    report(list(secs.items()), n**3, "M MAC/s", baseline)
    print()
    for label, target in targets.items():
        ratio = secs[label] / secs[baseline]
        verdict = "met" if ratio <= target else f"not met (gap {ratio / target:.2f}x)"
        if target == TARGET and ratio > target:
            verdict += f"; the {AT_LEAST:g}x floor: {'met' if ratio <= AT_LEAST else 'not met'}"
        print(f"{label}: {ratio:.1f}x the float32 matmul; target <= {target:g}x: {verdict}")
    for label, eager_label in eager_pairs.items():
        print(f"{label}: {secs[label] / secs[eager_label]:.3f}x its eager time ({secs[eager_label]:.2f} s; "
              f"eager is {secs[eager_label] / secs[baseline]:.0f}x the float32 matmul)")


if __name__ == "__main__":
    main()
