"""LogFMT-8 encode/decode throughput of the DEFAULT calls beside the E4M3 1x128 ``quantize_tensor`` (default) of
the same tensor, one run, with the issue's targets (encode <= 2x, decode <= 1x that quantize_tensor) and whether
they are met. Median of ``--repeat`` interleaved rounds after a warm-up round; the eager codec (one run) for
context.

Usage: python benchmarks/bench_logfmt.py [--rows 8192] [--cols 8192] [--threads 2] [--repeat 5]
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
from lowprec import logfmt  # noqa: E402

BASE = "E4M3 1x128 quantize_tensor, default"
ENC = "LogFMT-8 encode (1x128), default"
DEC = "LogFMT-8 decode, default"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.cols, generator=torch.Generator().manual_seed(0))
    enc = logfmt.encode(x, 8)
    head = logfmt.encode(x[:8], 8, backend="eager")          # the default call's bits: those of the eager codec
    assert torch.equal(enc.codes[:8], head.codes) and torch.equal(enc.min[:8], head.min)
    assert torch.equal(logfmt.decode(enc)[:8], logfmt.decode(head, backend="eager"))
    print(f"{args.rows} x {args.cols} float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeat} interleaved rounds")
    q = lp.quantize_tensor(x, "deepseek_v3")
    rows = median_times({BASE: lambda: lp.quantize_tensor(x, "deepseek_v3"),
                         "E4M3 1x128 dequantize": q.dequantize,
                         ENC: lambda: logfmt.encode(x, 8),
                         DEC: lambda: logfmt.decode(enc)}, args.repeat)
    small = x[: max(1, args.rows // 16)]                     # eager: a sixteenth of the rows, scaled up
    small_enc = logfmt.encode(small, 8)
    for label, fn in (("LogFMT-8 encode, eager (1 run, scaled)", lambda: logfmt.encode(small, 8, backend="eager")),
                      ("LogFMT-8 decode, eager (1 run, scaled)", lambda: logfmt.decode(small_enc, backend="eager"))):
        t0 = time.perf_counter()
        fn()
        rows.append((label, (time.perf_counter() - t0) * args.rows / small.shape[0]))
    report(rows, x.numel(), "Melem/s", BASE)
    d = dict(rows)
    for name, target in ((ENC, 2.0), (DEC, 1.0)):
        ratio = d[name] / d[BASE]
        print(f"{name}: {ratio:.2f}x the E4M3 1x128 quantize_tensor (target <= {target}x: "
              f"{'met' if ratio <= target else 'NOT met'})")


if __name__ == "__main__":
    main()
