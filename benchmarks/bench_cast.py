"""encode/quantize throughput of lowprec beside ml_dtypes and torch's native cast, one run, 16M float32.

Usage: python benchmarks/bench_cast.py [--n 16777216] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ml_dtypes
import torch

sys.path.insert(0, str(Path(__file__).parent))
import lowprec as lp  # noqa: E402
from common import best_time, report  # noqa: E402

CASES = {"e4m3": (ml_dtypes.float8_e4m3fn, torch.float8_e4m3fn), "e5m2": (ml_dtypes.float8_e5m2, torch.float8_e5m2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.n, generator=torch.Generator().manual_seed(0)) * 64
    xn = x.numpy()
    print(f"{args.n} float32 values, {args.threads} threads, torch {torch.__version__}")
    for name, (ml_t, torch_t) in CASES.items():
        codes = lp.encode(x, name, backend="compiled", saturate=name == "e4m3")
        assert torch.equal(codes, x.to(torch_t).view(torch.uint8)), "compiled path disagrees with torch's cast"
        rows = [
            ("torch native cast (x.to(float8))", best_time(lambda: x.to(torch_t), args.repeat)),
            ("ml_dtypes astype", best_time(lambda: xn.astype(ml_t), args.repeat)),
            ("lowprec.encode backend=compiled", best_time(lambda: lp.encode(x, name, backend="compiled"), args.repeat)),
            ("lowprec.encode backend=eager", best_time(lambda: lp.encode(x, name), 1)),
            ("torch cast + cast back", best_time(lambda: x.to(torch_t).float(), args.repeat)),
            ("ml_dtypes astype + astype back", best_time(lambda: xn.astype(ml_t).astype("float32"), args.repeat)),
            ("lowprec.quantize backend=compiled",
             best_time(lambda: lp.quantize(x, name, backend="compiled"), args.repeat)),
        ]
        print(f"\n== {name} ==")
        report(rows, args.n, "Melem/s", "torch native cast (x.to(float8))")
        d = dict(rows)
        print(f"lowprec compiled encode vs ml_dtypes: {d['ml_dtypes astype'] / d['lowprec.encode backend=compiled']:.2f}x "
              f"faster; vs torch cast: {d['lowprec.encode backend=compiled'] / d['torch native cast (x.to(float8))']:.2f}x "
              f"slower; quantize vs torch round trip: "
              f"{d['lowprec.quantize backend=compiled'] / d['torch cast + cast back']:.2f}x")


if __name__ == "__main__":
    main()
