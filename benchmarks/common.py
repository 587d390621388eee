"""Shared timing helper for the benchmark scripts: best-of-n wall time after a warm-up call."""

from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(rows: list[tuple[str, float]], n: int, unit: str, baseline: str) -> None:
    """Print each row's throughput and its ratio to the row named ``baseline`` (same run)."""
    base = dict(rows)[baseline]
    print(f"{'what':46s} {'seconds':>9s} {unit:>12s} {'time / ' + baseline:>28s}")
    for name, sec in rows:
        print(f"{name:46s} {sec:9.4f} {n / sec / 1e6:12.1f} {sec / base:28.2f}")
