"""The lab's results store: every result row keyed by the full configuration of the point that made it.

Contract
--------
A *point* is one independent unit of a study, described by a configuration: a mapping of every
parameter that can change a number (sizes, seeds, formats, models, the hash of any input data).
``ResultStore.key(study, config)`` is the SHA-256 of the canonical JSON (sorted keys, no spaces, floats
written by ``repr`` so they round-trip exactly) of ``{"study", "config", "lab_version"}``; a point is
reused only when that key matches, so a changed parameter, or another lab version, recomputes.
``1`` and ``1.0`` are different values (and different keys). Config values may be str, int, float,
bool, None and lists / tuples / dicts (str keys) of these; anything else is a TypeError naming the field.

``put`` writes all rows of a point in one transaction (a crash mid-way leaves the previous state,
never half a point) and replaces what a point had before; ``get`` returns the rows or None. Rows are
dicts of JSON scalars (str, int, float incl. NaN/Inf, bool, None), stored as JSON text; a row field may
not repeat a config field of its point. ``frame(study)`` returns every row of a study with the point's
config fields as columns beside the row fields, unprefixed (``put`` refuses the clashes that would
make that ambiguous); config fields come first, in sorted order, then the row fields in the order the rows gave them.

The store records the lab version (``lowprec.__version__``) and its schema version in a ``meta``
table; opening a store written by another lab version raises StoreError naming both, before any work.

Why SQLite (stdlib ``sqlite3``) and not DuckDB: it is embedded and in the standard library (nothing to
install), transactional, and several writer processes may share one file: in WAL mode readers never
block and writers queue on a lock with a busy timeout. DuckDB allows one writing process per file,
which fits a multi-process or multi-machine-worker sweep worse. (The sweep runner writes from its
parent process anyway; the store stays correct if several sweeps share one file.) The file must be
on a local file system: WAL needs shared memory, so not NFS.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from .. import __version__ as LAB_VERSION

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 60.0
_SCALARS = (str, int, float, bool, type(None))


class StoreError(ValueError):
    """The file is not a store this lab version can use (another version, another schema, not SQLite)."""


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples become lists); TypeError naming ``where`` otherwise."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {type(k).__name__} {k!r}")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r}); a config holds only str, int, float, "
                    "bool, None and lists / tuples / dicts of these")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_point(study: str, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the point's key, its config as plain JSON types); ValueError / TypeError naming what is wrong."""
    if not isinstance(study, str) or not study:
        raise ValueError(f"study must be a non-empty str, got {study!r}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    cfg = _canonical(config, "config")
    key = hashlib.sha256(_dumps({"study": study, "config": cfg, "lab_version": LAB_VERSION}).encode()).hexdigest()
    return key, cfg


def _check_rows(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """Each row as JSON text; TypeError / ValueError naming the row and field that is not allowed."""
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of dicts, got {type(rows).__name__}")
    texts = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] is a {type(row).__name__}, not a dict")
        for k, v in row.items():
            if not isinstance(k, str):
                raise TypeError(f"rows[{i}]: field names must be str, got {k!r}")
            if not isinstance(v, _SCALARS):
                raise TypeError(f"rows[{i}][{k!r}] is a {type(v).__name__} ({v!r}); rows hold JSON scalars "
                                "(str, int, float, bool, None)")
            if k in config:
                raise ValueError(f"rows[{i}] has a field {k!r} that is also a config field of its point")
        texts.append(json.dumps(dict(row), separators=(",", ":"), ensure_ascii=False))  # field order kept
    return texts


def points_frame(points: Iterable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]) -> pd.DataFrame:
    """One DataFrame row per result row: the point's config fields (sorted) first, then the row fields."""
    records, cfg_cols, row_cols = [], {}, {}
    for config, rows in points:
        cfg_cols.update(dict.fromkeys(sorted(config)))
        for row in rows:
            row_cols.update(dict.fromkeys(row))
            records.append({**config, **row})
    return pd.DataFrame.from_records(records, columns=[*cfg_cols, *row_cols])


class ResultStore:
    """A SQLite file of result rows keyed by (study, config, lab version); see the module docstring."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; the store is a file (e.g. {self.path / 'results.sqlite'})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the results store {self.path}: {exc}") from exc
        try:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                self._con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._con.execute("CREATE TABLE IF NOT EXISTS points (key TEXT PRIMARY KEY, study TEXT NOT NULL, "
                                  "config TEXT NOT NULL)")
                self._con.execute("CREATE INDEX IF NOT EXISTS points_study ON points (study)")
                self._con.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT NOT NULL, idx INTEGER NOT NULL, "
                                  "data TEXT NOT NULL, PRIMARY KEY (key, idx))")
                self._con.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                      [("lab_version", LAB_VERSION), ("schema_version", SCHEMA_VERSION)])
                meta = dict(self._con.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            self._con.close()
            raise StoreError(f"{self.path} is not a usable results store: {exc}") from exc
        for name, label, mine in (("lab_version", "lowprec lab version", LAB_VERSION),
                                  ("schema_version", "store schema version", SCHEMA_VERSION)):
            if meta.get(name) != mine:
                self._con.close()
                raise StoreError(f"{self.path} was written by {label} {meta.get(name)}; this is {label} {mine}: "
                                 "its results could be stale. Use another store file (or delete this one)")

    # -- keys ------------------------------------------------------------------------------------
    @staticmethod
    def key(study: str, config: Mapping[str, Any]) -> str:
        """SHA-256 (hex) of the canonical JSON of the study, its config and the lab version."""
        return canonical_point(study, config)[0]

    # -- reads and writes ------------------------------------------------------------------------
    def get(self, study: str, config: Mapping[str, Any]) -> list[dict] | None:
        """The rows stored for this point (possibly []), or None when the point was never stored."""
        key = self.key(study, config)
        with self._transaction(write=False):
            if self._con.execute("SELECT 1 FROM points WHERE key = ?", (key,)).fetchone() is None:
                return None
            texts = self._con.execute("SELECT data FROM rows WHERE key = ? ORDER BY idx", (key,)).fetchall()
        return [json.loads(t) for (t,) in texts]

    def put(self, study: str, config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """Store all ``rows`` of the point in one transaction, replacing what the point had."""
        key, cfg = canonical_point(study, config)
        texts = _check_rows(rows, cfg)
        with self._transaction():
            self._con.execute("DELETE FROM rows WHERE key = ?", (key,))
            self._con.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?)", (key, study, _dumps(cfg)))
            self._con.executemany("INSERT INTO rows VALUES (?, ?, ?)", [(key, i, t) for i, t in enumerate(texts)])

    def frame(self, study: str) -> pd.DataFrame:
        """Every row of ``study`` (points in the order first stored), config fields as columns beside the
        row fields (see ``points_frame``). ValueError naming the stored studies if there is none."""
        with self._transaction(write=False):
            points = self._con.execute("SELECT key, config FROM points WHERE study = ? ORDER BY rowid",
                                       (study,)).fetchall()
            data = self._con.execute("SELECT r.key, r.data FROM rows r JOIN points p ON p.key = r.key "
                                     "WHERE p.study = ? ORDER BY r.key, r.idx", (study,)).fetchall()
        if not points:
            raise ValueError(f"no study {study!r} in {self.path}; it holds: {', '.join(self.studies()) or 'nothing'}")
        rows: dict[str, list[dict]] = {key: [] for key, _ in points}
        for key, text in data:
            rows[key].append(json.loads(text))
        return points_frame((json.loads(cfg), rows[key]) for key, cfg in points)

    def studies(self) -> list[str]:
        """The studies with at least one stored point, sorted."""
        return [s for (s,) in self._con.execute("SELECT DISTINCT study FROM points ORDER BY study")]

    # -- plumbing --------------------------------------------------------------------------------
    def _transaction(self, write: bool = True) -> _Transaction:
        return _Transaction(self._con, write)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"


class _Transaction:
    """BEGIN IMMEDIATE (take the write lock up front: no deadlock on upgrade) or BEGIN; COMMIT on success,
    ROLLBACK on any exception (an unclean process exit leaves the journal, which SQLite rolls back)."""

    def __init__(self, con: sqlite3.Connection, write: bool) -> None:
        self.con, self.write = con, write

    def __enter__(self) -> None:
        self.con.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")

