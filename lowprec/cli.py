"""The ``lowprec`` command: ``lowprec lab`` runs every study and writes a report; ``lowprec report RUN``
re-renders one from the results store; ``lowprec backends`` says which backends run here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab.runner import LabParams, run_lab

    studies = {"training": {"steps": args.steps}} if args.steps is not None else {}
    run_lab(args.out, LabParams(full=args.full, seed=args.seed, jobs=args.jobs, dask=args.dask, studies=studies),
            run_id=args.run_id, progress=args.progress)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .lab.runner import rebuild_report

    rebuild_report(args.run, progress=args.progress)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    """Print one line per backend: its name, whether it runs here, and what it runs or why it cannot."""
    import warnings

    from .native import NativeBuildWarning, backends_report

    with warnings.catch_warnings():                 # the table prints each reason itself
        warnings.simplefilter("ignore", NativeBuildWarning)
        rows = backends_report()
    for r in rows:
        detail = r["detail"].replace("\n", "\n" + " " * 18)
        print(f"{r['backend']:<12} {'yes' if r['available'] else 'no':<4} {detail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lowprec", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    ap.add_argument("--version", action="version", version=f"lowprec {__version__}")
    lab = sub.add_parser("lab", help="run every study (quick by default) and write reports/<run-id>/report.html",
                         description=runner_doc())
    lab.add_argument("--full", action="store_true", help="the long versions (hours on 2 cores)")
    lab.add_argument("--out", type=Path, default=Path("reports"),
                     help="results store, training runs and <run-id>/ report directories (default: %(default)s)")
    lab.add_argument("--run-id", help="name of the report directory (default: timestamp-mode-seed)")
    lab.add_argument("--seed", type=int, default=0, help="seed of the training runs and synthetic data")
    lab.add_argument("--steps", type=int, help="training steps per recipe (quick: 150)")
    lab.add_argument("--jobs", type=int, default=1, help="worker processes per study (default: %(default)s)")
    lab.add_argument("--dask", metavar="ADDRESS", help="run study points on a Dask scheduler, or 'local'")
    lab.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    lab.set_defaults(func=cmd_lab)
    report = sub.add_parser("report", help="rebuild the report of an earlier lab run from the results store")
    report.add_argument("run", type=Path, help="the run directory, e.g. reports/20261124-101500-quick-seed0")
    report.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    report.set_defaults(func=cmd_report)
    backends = sub.add_parser("backends", help="say which backends (eager, compiled, native CPU/CUDA) run here, "
                                               "and why not (builds the native ones on first use)")
    backends.set_defaults(func=cmd_backends)
    args = ap.parse_args(argv)
    if args.cmd is None:
        args = ap.parse_args(["lab", *(argv or [])])
    try:
        return args.func(args)
    except (ValueError, TypeError, ConnectionError) as exc:     # bad input: the message, not a traceback
        print(f"lowprec {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


def runner_doc() -> str:
    from .lab import runner

    return runner.__doc__ or ""


if __name__ == "__main__":
    sys.exit(main())
