"""Training step time per recipe beside the BF16 step, same run: the default call a user makes
(``MoETransformer(cfg, recipe)``, forward + backward + AdamW step on one batch, default backends).

Recipes are timed round-robin (one step of each, repeated) so that machine noise hits all of them alike;
the median over repeats is reported with the thread count. Target (issue 9): deepseek_v3 within 2x of bf16.

Usage: python benchmarks/bench_training.py [--repeats 7] [--threads 2] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lowprec.nn import list_training_recipes
from lowprec.training.model import ModelConfig, MoETransformer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (2, args.batch, args.seq), generator=g)
    runs = {}
    for recipe in list_training_recipes():
        torch.manual_seed(0)
        model = MoETransformer(ModelConfig(), recipe)
        runs[recipe.name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def step(name: str) -> float:
        model, opt = runs[name]
        t0 = time.perf_counter()
        loss, _ = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in runs}
    for name in runs:                       # warm-up: native builds, first-call allocations
        step(name)
    for _ in range(args.repeats):
        for name in runs:
            times[name].append(step(name))
    tokens = args.batch * args.seq
    base = statistics.median(times["bf16"])
    print(f"MoETransformer {ModelConfig()}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"median of {args.repeats} round-robin repeats, torch {torch.__version__}")
    print(f"{'recipe':14s} {'step s':>8s} {'tokens/s':>10s} {'step / bf16 step':>17s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14s} {med:8.3f} {tokens / med:10,.0f} {med / base:17.2f}")


if __name__ == "__main__":
    main()
