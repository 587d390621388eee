"""The sweep runner: a study is a grid of independent points; run the ones the store lacks, store each at once.

``run_sweep(study, points, fn, store)`` looks every point up in the store (``ResultStore.get``), prints
``"<desc>: reused N of M points"``, and computes the rest with ``fn(config) -> rows``:

* ``jobs == 1`` and no ``dask``: in this process, one point after another;
* ``jobs > 1``: in a ``concurrent.futures.ProcessPoolExecutor`` of ``jobs`` processes started with the
  ``spawn`` method (no fork of a process that holds torch / OpenMP threads); each worker gets
  ``cpu_count // jobs`` torch threads so the pool does not oversubscribe the machine;
* ``dask="tcp://host:port"`` (any ``scheme://`` address): on that Dask ``distributed`` scheduler's
  workers (``jobs`` is not used: the cluster has its workers). The address is checked first, with a
  ``CONNECT_TIMEOUT_S`` connect timeout; an unreachable one raises ``SchedulerUnreachable`` (a
  ConnectionError naming it) before any work. The workers must be able to import ``fn``'s module;
* ``dask="local"``: on a ``LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True)`` started
  when there is something to compute and closed afterwards.

``fn`` gets the point's config as plain JSON types (tuples become lists) and returns its rows (a list of
dicts of JSON scalars, see ``lowprec.lab.store``). For the parallel paths it must be a picklable
module-level function (checked before any work: TypeError saying so). Each point's rows are ``put``
into the store by this (the parent) process as soon as the point finishes, so a killed sweep loses at
most the points in flight, and a re-run computes only what is missing. If a point raises, the points
not yet started are cancelled, those already running are still stored as they finish, and the error is
re-raised with a note naming the failed point.

Bad input (a non-positive ``jobs``, a ``dask`` value that is neither ``"local"`` nor an address, a point
that is not a valid config, two equal points) is a ValueError / TypeError before any work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as pool_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm import tqdm

from .store import ResultStore, canonical_point, points_frame

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 5
PointFn = Callable[[Mapping[str, Any]], list[dict]]


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address given, within ``CONNECT_TIMEOUT_S``."""


@dataclass(frozen=True)
class SweepResult:
    """How many points were computed and reused, and the rows of every point (``points_frame`` layout,
    in the order of the points given)."""

    computed: int
    reused: int
    rows: pd.DataFrame


def run_sweep(study: str, points: Sequence[Mapping[str, Any]], fn: PointFn, store: ResultStore, *,
              jobs: int = 1, dask: str | None = None, progress: bool = True, desc: str | None = None) -> SweepResult:
    """Compute the points of ``study`` missing from ``store`` with ``fn``, storing each as it finishes."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if dask is not None and (not isinstance(dask, str) or (dask != "local" and "://" not in dask)):
        raise ValueError(f"dask must be 'local' or a scheduler address such as 'tcp://host:8786', got {dask!r}")
    if not callable(fn):
        raise TypeError(f"fn must be a function of a point's config, got {type(fn).__name__}")
    configs: dict[str, dict[str, Any]] = {}
    for i, point in enumerate(points):
        key, cfg = canonical_point(study, point)
        if key in configs:
            raise ValueError(f"points[{i}] repeats an earlier point: {cfg}")
        configs[key] = cfg
    if jobs > 1 or dask is not None:
        _check_picklable(fn)

    with ExitStack() as stack:
        client = stack.enter_context(_connect(dask)) if dask not in (None, "local") else None
        todo = [cfg for cfg in configs.values() if store.get(study, cfg) is None]
        label = desc or study
        print(f"{label}: reused {len(configs) - len(todo)} of {len(configs)} points"
              + (f"; computing {len(todo)}" if todo else ""), flush=True)
        bar = stack.enter_context(tqdm(total=len(todo), desc=label, unit="point", disable=not progress or not todo))

        def record(cfg: dict[str, Any], rows: list[dict]) -> None:
            store.put(study, cfg, rows)
            bar.update()

        if todo and dask == "local":
            client = stack.enter_context(_local_cluster(jobs))
        if todo and client is not None:
            from distributed import as_completed as dask_completed

            dask_futures = {client.submit(fn, cfg, pure=False): cfg for cfg in todo}
            _drain(dask_futures, dask_completed(dask_futures), record)
        elif todo and jobs > 1:
            workers = min(jobs, len(todo))
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                initargs=(max(1, (os.cpu_count() or 1) // workers),)))
            futures = {pool.submit(fn, cfg): cfg for cfg in todo}
            _drain(futures, pool_completed(futures), record)
        else:
            for cfg in todo:
                try:
                    record(cfg, fn(cfg))
                except Exception as exc:
                    exc.add_note(f"sweep {study!r}: point {cfg} failed; the points before it are stored")
                    raise
    frame = points_frame((cfg, store.get(study, cfg) or []) for cfg in configs.values())
    return SweepResult(computed=len(todo), reused=len(configs) - len(todo), rows=frame)


def _check_picklable(fn: PointFn) -> None:
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"fn must be a picklable module-level function to run on several processes or on Dask; "
                        f"{getattr(fn, '__qualname__', fn)!r} is not ({exc})") from exc


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _drain(futures: dict[Any, dict[str, Any]], finished: Iterable[Any],
           record: Callable[[dict[str, Any], list[dict]], None]) -> None:
    """Record each point as its future finishes. After the first failure, cancel the points not yet
    started, keep recording those that still finish, and then raise the failure naming its point."""
    failure: BaseException | None = None
    try:
        for fut in finished:
            cfg = futures[fut]
            if fut.cancelled():
                continue
            try:
                record(cfg, fut.result())
            except Exception as exc:
                if failure is None:
                    exc.add_note(f"sweep point {cfg} failed; the points that finished are stored")
                    failure = exc
                    _cancel_pending(futures)
    finally:
        _cancel_pending(futures)         # also on KeyboardInterrupt: queued points do not start
    if failure is not None:
        raise failure


def _cancel_pending(futures: Iterable[Any]) -> None:
    for fut in futures:
        if not fut.done():
            fut.cancel()


@contextmanager
def _connect(address: str) -> Iterator[Client]:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # OSError on timeout; garbage from a non-Dask server can raise anything
        raise SchedulerUnreachable(f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s: "
                                   f"{type(exc).__name__}: {exc}") from exc
    with client:
        yield client


@contextmanager
def _local_cluster(workers: int) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        with Client(cluster) as client:
            yield client
