"""What the studies share: synthetic input distributions, the cast-error table, and the study plumbing.

A study module (``accum_vs_k``, ``comm``) exposes ``run(store, out_dir, *, quick, seed, jobs, dask,
progress, **params) -> StudyOutput`` and ``main(argv)``; the plumbing here gives them one command
line (``study_parser``: ``--out --seed --jobs --dask --quick``), one store location under ``--out``
(``STORE_NAME``), one check of the study's own parameters (``resolve_params``) and of the output
directory (``prepare_out_dir``), both before any work.

Studies on a recorded training trace (``lowprec.training.traces``) open it with ``open_trace`` (every
file's size and SHA-256 checked, before any work) and key their points by the trace's *content*
(``TraceData.sha256``, see ``trace_sha256``), never by its path: a path differs between machines and
may later hold another trace. The path goes to the point function separately (``functools.partial``),
and the worker reopens it with ``load_checked_trace``, which refuses a trace whose content is not the
one the point was planned for.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, TypedDict

import pandas as pd
import torch

from ..formats import list_formats
from ..report import Figure, Table
from ..rounding import quantize
from ..training.traces import Trace, TraceError, load_trace
from .sweep import SweepResult

DEFAULT_OUT = Path("lowprec_runs")      # git-ignored; reports/ is tracked
STORE_NAME = "results.sqlite"


def student_t(shape: tuple[int, ...], g: torch.Generator, dof: float = 3.0) -> torch.Tensor:
    z = torch.randn(shape, generator=g)
    chi2 = torch.randn((*shape, int(dof)), generator=g).pow(2).sum(-1)
    return z / torch.sqrt(chi2 / dof)


DISTRIBUTIONS: dict[str, Callable[[tuple[int, ...], torch.Generator], torch.Tensor]] = {
    "normal": lambda s, g: torch.randn(s, generator=g),
    "uniform_pos": lambda s, g: torch.rand(s, generator=g),
    "half_normal": lambda s, g: torch.randn(s, generator=g).abs(),
    "student_t3": student_t,
}


def cast_error_table(n: int = 1 << 16, seed: int = 0) -> pd.DataFrame:
    """Relative RMS error ||q(x) - x|| / ||x|| of a plain cast (no scaling, saturating) of ``n`` samples of
    N(0, 1) and Student-t(3) (both from one seeded generator), per signed format and rounding (rne, rtz,
    stochastic). Long form: columns format, data, rounding, rel_rms_error."""
    g = torch.Generator().manual_seed(seed)
    data = {"normal": torch.randn(n, generator=g), "student_t3": student_t((n,), g)}
    rows = []
    for f in list_formats():
        if not f.signed:
            continue
        for dist, x in data.items():
            x64 = x.double()
            for rounding in ("rne", "rtz", "stochastic"):
                q = quantize(x, f, rounding, saturate=True, generator=g, out_dtype=torch.float64)
                rows.append({"format": f.name, "data": dist, "rounding": rounding,
                             "rel_rms_error": float((q - x64).norm() / x64.norm())})
    return pd.DataFrame(rows)


def trace_sha256(index: Mapping[str, Any]) -> str:
    """The content identity of a trace: SHA-256 of the canonical JSON of its format, version and, per
    file (in index order), the file name, step, byte count and SHA-256. ``load_trace`` checks every file
    against these, so equal identities mean the same tensors; the directory's path plays no part."""
    ident = {"format": index.get("format"), "version": index.get("version"),
             "files": [[f["file"], f["step"], f["bytes"], f["sha256"]] for f in index.get("files", [])]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def trace_label(index: Mapping[str, Any]) -> str:
    """What a figure says its data is: ``recorded BF16 training trace (step 150, run key 1a2b3c4d5e6f)``."""
    recipe = str(index.get("config", {}).get("recipe", "unknown-recipe")).upper()
    steps = [f["step"] for f in index.get("files", [])]
    run_key = str(index.get("run_key", "unknown"))[:12]
    return (f"recorded {recipe} training trace (step{'s' if len(steps) > 1 else ''} "
            f"{', '.join(map(str, steps))}, run key {run_key})")


@dataclass(frozen=True)
class TraceData:
    """A validated trace, its content identity (what points are keyed by) and its label."""

    trace: Trace
    path: Path                       # absolute; passed to the point function, never stored in a key
    sha256: str
    label: str

    @property
    def index(self) -> dict[str, Any]:
        return self.trace.index


def open_trace(path: Path | str) -> TraceData:
    """Open and validate the trace directory ``path`` (before any work): ``TraceError`` (a ValueError)
    for a path that is not a trace, a wrong format or version, a missing, truncated or edited file, or a
    trace with no recorded step."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TraceError(f"trace must be the path of a trace directory, got {path!r}")
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise TraceError(f"trace {path} is not a directory (a trace is the 'trace' directory of a training run, "
                         "holding index.json)")
    trace = load_trace(path)
    if not trace.index.get("files"):
        raise TraceError(f"trace {path} has no recorded step")
    return TraceData(trace, path, trace_sha256(trace.index), trace_label(trace.index))


@functools.lru_cache(maxsize=4)
def load_checked_trace(path: str, sha256: str) -> Trace:
    """The trace at ``path`` (validated), refused (``TraceError``) unless its content identity is
    ``sha256``: a worker must not compute a point from another trace than the one it was planned on.
    Cached per process by (path, identity); the planning process revalidates before every sweep."""
    trace = load_trace(path)
    if (got := trace_sha256(trace.index)) != sha256:
        raise TraceError(f"the trace at {path} has content {got[:12]}, but the point was planned for trace "
                         f"{sha256[:12]}: another trace lies at that path here")
    return trace


class StudyOutput(TypedDict):
    """What a study's ``run`` returns: its frames by name (also written as CSV), its figures and tables
    (captioned, with their data source, ready for ``lowprec.report``) and the sweep's counts."""

    frames: dict[str, pd.DataFrame]
    figures: list[Figure]
    tables: list[Table]
    sweep: SweepResult


def resolve_params(study: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``given``; ValueError naming any parameter the study does not have."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"study {study!r} has no parameter {', '.join(unknown)}; its parameters: "
                         f"{', '.join(defaults)}")
    return {**defaults, **given}


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed; ValueError if it cannot be written (before any work)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output directory {out_dir}: {exc}") from exc
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"the output directory {out_dir} is not a writable directory")
    return out_dir


def study_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every study script has; the study adds its own parameters."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"output directory: CSV, PNG and the results store {STORE_NAME} (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default: %(default)s)")
    ap.add_argument("--dask", metavar="ADDRESS", default=None,
                    help="run the points on a Dask scheduler (tcp://host:port) or on a LocalCluster of --jobs "
                         "workers ('local')")
    ap.add_argument("--quick", action="store_true", help="the small version of the study")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return ap


def run_from_args(run: Callable[..., StudyOutput], args: argparse.Namespace, params: Sequence[str]) -> StudyOutput:
    """Call a study's ``run`` with ``study_parser``'s options and those of ``params`` that were given, on the
    store under ``--out``."""
    from .store import ResultStore

    given = {k: getattr(args, k) for k in params if getattr(args, k) is not None}
    out = prepare_out_dir(args.out)
    with ResultStore(out / STORE_NAME) as store:
        return run(store, out, quick=args.quick, seed=args.seed, jobs=args.jobs, dask=args.dask,
                   progress=args.progress, **given)


def run_script(main: Callable[[], None]) -> None:
    """Run a study script's ``main``: bad input (ValueError, TypeError, ConnectionError) is one line on
    stderr and exit status 2, not a traceback."""
    import sys

    try:
        main()
    except (ValueError, TypeError, ConnectionError) as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def definition_id(*definitions: Any) -> str:
    """A short content identity of the definitions behind a point's names (presets, recipes: frozen
    dataclasses whose repr lists every field), so that a point whose preset was redefined is recomputed."""
    return hashlib.sha256(repr(definitions).encode()).hexdigest()[:16]
