"""The lab's main job: every study on the embedded default data, one results store, one report.

``run_lab`` runs, in order: study 1 (FP8 vs BF16 training on the standard-library corpus, which records
the GEMM trace), study 2 (GEMM replay of that trace), study 3 (accumulation error vs K on synthetic and
trace operands), study 4 (communication formats on the recorded dispatch/combine activations), the
format and cast-error tables, and study 5 (the claims table, built from the others' stored results).
Every point is keyed in ``<out>/results.sqlite`` by its whole configuration, so a second run with the
same parameters reuses everything and a changed parameter recomputes only what it changes.

Output: ``<out>/<run-id>/`` with ``report.md``, a self-contained ``report.html`` (claims table first), the
figures (PNG), every table as CSV and ``run.json`` (the parameters; ``rebuild_report`` re-renders the
report from the store with them, computing only what the store lacks).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import __version__
from ..formats import list_formats
from ..report import Section, Table, write_report
from . import accum_vs_k, claims, comm, replay, training
from .common import STORE_NAME, StudyOutput, cast_error_table, prepare_out_dir
from .store import ResultStore


@dataclass(frozen=True)
class LabParams:
    full: bool = False
    seed: int = 0
    jobs: int = 1
    dask: str | None = None
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-study parameter overrides

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be a positive int, got {self.jobs!r}")
        address = isinstance(self.dask, str) and (self.dask == "local" or "://" in self.dask)
        if self.dask is not None and not address:
            raise ValueError(f"dask must be 'local' or a scheduler address such as 'tcp://host:8786', "
                             f"got {self.dask!r}")
        unknown = set(self.studies) - {"training", "replay", "accum", "comm"}
        if unknown:
            raise ValueError(f"unknown studies {sorted(unknown)}; known: training, replay, accum, comm")


def format_table() -> pd.DataFrame:
    """One row per registered format with its defining fields and derived range."""
    rows = [{"format": f.name, "bits": f.bits, "e": f.ebits, "m": f.mbits, "bias": f.bias, "specials": f.special,
             "max": f.max, "min_normal": f.min_normal, "min_subnormal": f.min_subnormal,
             "aliases": ", ".join(f.aliases[:3])} for f in list_formats()]
    return pd.DataFrame(rows)


def default_run_id(params: LabParams) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + ("-full" if params.full else "-quick") + f"-seed{params.seed}"


def _section(title: str, text: str, out: StudyOutput) -> Section:
    return Section(title, text, (*out["figures"], *out["tables"]))


def run_lab(out: Path, params: LabParams, *, run_id: str | None = None, progress: bool = True) -> Path:
    """Run (or reuse) every study and write the report; returns the run directory."""
    out = prepare_out_dir(out)
    run_id = run_id or default_run_id(params)
    if "/" in run_id or run_id in ("", ".", ".."):
        raise ValueError(f"run id {run_id!r} must be a plain directory name")
    run_dir = prepare_out_dir(out / run_id)
    started = time.perf_counter()
    common: dict[str, Any] = {"quick": not params.full, "seed": params.seed, "jobs": params.jobs, "dask": params.dask,
              "progress": progress}
    kw = params.studies
    with ResultStore(out / STORE_NAME) as store:
        print("== study 1: FP8 vs BF16 training on the Python standard library ==", flush=True)
        tr = training.run(store, run_dir, runs_dir=out / "train_runs", **common, **kw.get("training", {}))
        trace = training.trace_dir(tr["frames"]["training_summary"])
        if trace is None:
            raise ValueError(f"the stored BF16 training run's trace is not in {out / 'train_runs'} (moved or "
                             f"deleted?): remove {out / STORE_NAME} to retrain, or use another --out")
        print(f"== study 2: replay of the {trace.parent.name} GEMM trace ==", flush=True)
        rp = replay.run(store, run_dir, trace=trace, **common, **kw.get("replay", {}))
        print("== study 3: accumulation error vs K ==", flush=True)
        ac = accum_vs_k.run(store, run_dir, trace=trace, **common, **kw.get("accum", {}))
        print("== study 4: communication formats on the recorded dispatch / combine activations ==", flush=True)
        cm = comm.run(store, run_dir, trace=trace, **common, **kw.get("comm", {}))
    formats, casts = format_table(), cast_error_table(seed=params.seed)
    frames = {**tr["frames"], **rp["frames"], **ac["frames"], **cm["frames"], "cast_errors": casts}
    table = claims.claims_table(frames)
    for name, df in (("claims", table), ("formats", formats), ("cast_errors", casts)):
        df.to_csv(run_dir / f"{name}.csv", index=False)
    summary = tr["frames"]["training_summary"]
    sections = [
        Section("Claims of the paper beside the lab's measurements",
                "Each claim of the DeepSeek-V3 papers the lab can test, the number measured in this run and a verdict "
                "by rules fixed in lowprec/lab/claims.py before the data is seen. The training claim is for models "
                f"~10^4 times larger trained ~10^6 times longer than this run's {int(summary['tokens'].iloc[0]):,} "
                "tokens: read its verdict as what this small model shows, not as a test of the paper's runs.",
                (Table(table, "The claims table (generated from the results store)",
                       f"studies 1-4 of this run, store {STORE_NAME}"),)),
        _section("1. FP8 vs BF16 training", training.__doc__.split("\n\n")[1], tr),
        _section("2. GEMM replay of a BF16 training trace", replay.__doc__.split("\n\n")[1], rp),
        _section("3. Accumulation error vs K", accum_vs_k.__doc__.split("\n\n")[0], ac),
        _section("4. Communication formats", comm.__doc__.split("\n\n")[0], cm),
        Section("Formats and plain casts", "The registered formats and the error of a plain (unscaled) cast.",
                (Table(formats, "Registered element formats", "lowprec.formats registry"),
                 Table(casts.pivot_table(index="format", columns=["data", "rounding"], values="rel_rms_error",
                                         sort=False).reset_index(),
                       "Relative RMS error of a plain cast (no scaling) of 65,536 samples",
                       f"lowprec.lab.common.cast_error_table, seed {params.seed}"))),
    ]
    meta = {"run id": run_id, "lab version": __version__, "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "mode": "full" if params.full else "quick",
            "seed": str(params.seed), "command": " ".join(["lowprec", *sys.argv[1:]]),
            "store": str((out / STORE_NAME).resolve()),
            "wall time": f"{time.perf_counter() - started:.0f} s"}
    (run_dir / "run.json").write_text(json.dumps({"params": asdict(params), "run_id": run_id}, indent=1))
    md, html = write_report(run_dir, f"lowprec lab report {run_id}", sections, meta)
    print(table.to_string(index=False, max_colwidth=70))
    print(f"\nreport: {md}\n        {html}")
    return run_dir


def rebuild_report(run_dir: Path, *, progress: bool = True) -> Path:
    """Re-render the report of an earlier run, in place, with its parameters: every point in the store is
    reused (the command says how many); what the store lacks is computed again."""
    run_dir = Path(run_dir)
    spec = run_dir / "run.json"
    if not spec.is_file():
        raise ValueError(f"{run_dir} is not a lab run directory (no run.json)")
    saved = json.loads(spec.read_text())
    return run_lab(run_dir.parent, LabParams(**saved["params"]), run_id=run_dir.name, progress=progress)
