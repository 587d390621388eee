"""The ``lowprec`` command: ``lowprec lab`` runs every study and writes a report; ``lowprec report RUN``
re-renders one from the results store; ``lowprec backends`` says which backends run here; ``lowprec models``
lists the accumulator presets with their parameters and sources; ``lowprec vectors generate|verify`` writes golden
test vectors of a preset and checks a design's results against them."""

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


def cmd_models(args: argparse.Namespace) -> int:
    """Print the accumulator presets: an aligned table of their parameters, each followed by its description
    (default); every field of one preset (``--name``); or every field as JSON (``--json``: a list of objects,
    or one object with ``--name``, as ``lowprec.lab.presets.model_parameters`` gives them)."""
    import json

    from .accum import get_accumulator, list_accumulators
    from .lab.presets import model_parameters, parameter_text

    models = [get_accumulator(args.name)] if args.name is not None else list_accumulators()
    if args.json:
        params = [model_parameters(m) for m in models]
        print(json.dumps(params[0] if args.name is not None else params, indent=2))
    elif args.name is not None:
        m = models[0]
        rows = {"name": m.name, **parameter_text(m), "description": m.description}
        width = max(map(len, rows))
        for key, value in rows.items():
            print(f"{key + ':':<{width + 1}} {value}")
    else:
        table = [{"name": m.name, **parameter_text(m)} for m in models]
        widths = {k: max(len(k), *(len(r[k]) for r in table)) for k in table[0]}
        print("  ".join(f"{k:<{w}}" for k, w in widths.items()).rstrip())
        for m, r in zip(models, table):
            print("  ".join(f"{r[k]:<{w}}" for k, w in widths.items()).rstrip())
            print(f"    {m.description}")
    return 0


def cmd_vectors(args: argparse.Namespace) -> int:
    """``generate``: write golden vectors of a preset; ``verify``: compare a design's results with them (exit code
    1 and one line per mismatch, with the first differing bit, when any case differs)."""
    from . import vectors

    if args.action == "generate":
        manifest = vectors.generate(args.model, args.cases, args.out, seed=args.seed)
        kinds = ", ".join(f"{k} {n}" for k, n in manifest["kinds"].items() if n)
        print(f"wrote {manifest['cases']} cases of {args.model} to {args.out} ({kinds}); sha256 {manifest['sha256']}")
        return 0
    report = vectors.verify(args.dir, args.results)
    for r in report:
        if r["got"] is None:
            print(f"case {r['id']} ({r['kind']}): no result")
        else:
            print(f"case {r['id']} ({r['kind']}): expected {r['expected']}, got {r['got']}, first differing bit "
                  f"{r['first_differing_bit']}; a = {' '.join(r['case']['a'])}; b = {' '.join(r['case']['b'])}; "
                  f"c = {r['case']['c']}")
    n = len(vectors.load(args.dir)[1])
    print(f"{n - len(report)} of {n} cases match" + ("" if report else ": every bit"))
    return 1 if report else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lowprec", description=plain(__doc__))
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
    models = sub.add_parser("models", help="list the accumulator presets (tensor and matrix cores): parameters and "
                                           "sources", description=plain(cmd_models.__doc__))
    models.add_argument("--name", help="one preset, every field")
    models.add_argument("--json", action="store_true", help="machine-readable: the fields of AccumulatorModel")
    models.set_defaults(func=cmd_models)
    vec = sub.add_parser("vectors", help="golden test vectors of an accumulator preset: generate, or verify a "
                                         "design's results against them", description=plain(cmd_vectors.__doc__))
    vsub = vec.add_subparsers(dest="action", required=True)
    gen = vsub.add_parser("generate", help="write cases.jsonl, manifest.json and README.md into a directory")
    gen.add_argument("--model", required=True, help="a preset name (lowprec models lists them)")
    gen.add_argument("--cases", type=int, default=1000, help="number of dot products (default: %(default)s)")
    gen.add_argument("--out", type=Path, required=True, help="the directory to write")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    ver = vsub.add_parser("verify", help="compare RESULTS (JSON lines {\"id\": N, \"out\": \"0x...\"}) with DIR")
    ver.add_argument("dir", type=Path, help="a directory written by `lowprec vectors generate`")
    ver.add_argument("results", type=Path, help="the design's results, one JSON line per case")
    vec.set_defaults(func=cmd_vectors)
    args = ap.parse_args(argv)
    if args.cmd is None:
        args = ap.parse_args(["lab", *(argv or [])])
    try:
        return args.func(args)
    except (ValueError, TypeError, ConnectionError, FileNotFoundError) as exc:   # bad input: the message
        print(f"lowprec {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


def plain(doc: str | None) -> str:
    """A docstring as --help shows it: without the reST code markup (double backquotes)."""
    return (doc or "").replace("``", "")


def runner_doc() -> str:
    from .lab import runner

    return plain(runner.__doc__)


if __name__ == "__main__":
    sys.exit(main())
