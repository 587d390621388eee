"""Mutation testing for lowprec: a curated catalogue of realistic mutants plus an AST operator generator.

Usage (from the repository root)::

    python tools/mutate.py --smoke                       # CI: the catalogue's smoke mutants, each must die
    python tools/mutate.py --catalogue --jobs 2          # every catalogue mutant -> reports/mutation.md
    python tools/mutate.py --systematic rounding,scaling --budget 1800 --jobs 2
                                                         # AST operator mutants, a time-boxed sample

Why a runner of our own and not mutmut or cosmic-ray: the core includes C (``cuda_ext/lowprec_round.h``,
``cuda_ext/lowprec_accum.h``, ``cuda_ext/quant_cpu.c``), which Python mutation tools cannot mutate, and the
mistakes worth catching are in constants and defaults (a preset's group size, a recipe's scale op, a
rounding tie rule) that generic operator mutation mostly misses while drowning them in equivalent noise.
The catalogue (``tools/mutants.toml``) lists realistic single edits by exact snippet, each with the tests
that should kill it; ``--systematic`` adds the generic operator mutants for coverage statistics.

How a mutant runs
-----------------
* The working tree at the start of the run (tracked files and untracked, not ignored ones; never the
  ignored build outputs) is copied once to a scratch directory; ``/work/main`` is never edited.
* Each mutant gets its own hard-linked copy of that snapshot with one file rewritten: its ``original``
  snippet, which must occur exactly once, replaced by ``replacement``. A snippet found zero or several
  times is an ERROR of the catalogue ("does not apply"), reported and never counted as killed.
* Its tests run as ``python -m pytest -q -x <tests> [-k <k>]`` in that copy with ``PYTHONPATH`` pointing
  at it and a scratch ``LOWPREC_CACHE`` shared by the run (native builds are keyed on the source bytes,
  so a mutated C source is rebuilt and an unmutated one is built once).
* Outcome: ``killed`` (pytest exit status 1, 2 or 4 with a failing test or a collection error in its report:
  a test failed, or the mutant broke collection -- the baseline proved the selection itself valid; a
  non-zero status without either is an error, never a kill -- except a traceback at pytest's start-up
  (lowprec is a pytest plugin) while the unmutated snapshot still imports ``[settings] package``: the
  mutant broke the import, a kill),
  ``timeout`` (ran past ``--timeout``: counted as killed, listed apart), ``survived`` (exit status 0),
  ``error`` (does not apply, no test collected, pytest's own failure, or declared equivalent yet killed),
  ``equivalent`` (declared ``equivalent = "reason"`` and survived, as declared), ``not run`` (the
  ``--budget`` ran out first).
* Score = (killed + timeout) / (mutants run - equivalent); errors count against it.
* Before any mutant, the unmutated tests of every selection run once (the baseline: selections without
  ``k`` merged into one pytest run); a failing baseline aborts the run (exit status 3), since "killed"
  would mean nothing.

Exit status: 0 when every non-equivalent mutant run was killed and nothing is an error; 1 otherwise;
2 for bad arguments or a bad catalogue; 3 when the snapshot does not import ``[settings] package`` from
itself or the baseline fails.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import difflib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO / "tools" / "mutants.toml"
MUTANT_KEYS = {"id", "file", "original", "replacement", "why", "tests", "k", "equivalent", "smoke"}
REQUIRED_KEYS = {"id", "file", "original", "replacement", "why", "tests"}
KILLED, TIMEOUT, SURVIVED, ERROR, EQUIVALENT, NOT_RUN = "killed", "timeout", "survived", "error", "equivalent", \
    "not run"
STATUSES = (KILLED, TIMEOUT, SURVIVED, EQUIVALENT, ERROR, NOT_RUN)
T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One single edit of one file, and the tests that should notice it."""

    id: str
    file: str                      # relative to the repository root, POSIX separators
    original: str                  # must occur exactly once in the file
    replacement: str
    why: str
    tests: tuple[str, ...]         # pytest arguments: files or node ids
    k: str | None = None           # an optional pytest -k expression
    equivalent: str | None = None  # the reason, when the mutant cannot change behaviour
    smoke: bool = False

    @property
    def module(self) -> str:
        """The module a mutant counts under: ``rounding`` for lowprec/rounding.py, the file name for C."""
        p = Path(self.file)
        return p.stem if p.suffix == ".py" else p.name


@dataclasses.dataclass
class Result:
    mutant: Mutant
    status: str
    seconds: float = 0.0
    detail: str = ""               # the first failing test, or why it is an error
    line: int | None = None        # line of the edit in the file at the time of the run


@dataclasses.dataclass(frozen=True)
class Settings:
    """The catalogue's ``[settings]`` and ``[systematic]`` tables."""

    package: str | None                                 # imported once to check PYTHONPATH reaches the copy
    module_files: dict[str, str]                        # systematic: module name -> file
    module_tests: dict[str, tuple[str, ...]]            # systematic: module name -> test files


class CatalogueError(ValueError):
    """The catalogue file is malformed (unknown keys, missing fields, duplicate ids, wrong types)."""


# ---- the catalogue ------------------------------------------------------------------------------------
def _str_list(v: object, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
        raise CatalogueError(f"{where} must be a non-empty list of strings, got {v!r}")
    return tuple(v)


def load_catalogue(path: Path) -> tuple[list[Mutant], Settings]:
    """The mutants and settings of a catalogue file (TOML: ``[settings]``, ``[systematic]``, ``[[mutant]]``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CatalogueError(f"cannot read the catalogue {path}: {e}") from e
    unknown = set(data) - {"settings", "systematic", "mutant"}
    if unknown:
        raise CatalogueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    mutants: list[Mutant] = []
    seen: set[str] = set()
    for i, m in enumerate(data.get("mutant", [])):
        where = f"{path}: mutant #{i + 1} ({m.get('id', '?')})"
        if missing := REQUIRED_KEYS - set(m):
            raise CatalogueError(f"{where} lacks {sorted(missing)}")
        if extra := set(m) - MUTANT_KEYS:
            raise CatalogueError(f"{where} has unknown keys {sorted(extra)}")
        for key in ("id", "file", "original", "why"):
            if not isinstance(m[key], str) or not m[key]:
                raise CatalogueError(f"{where}: {key} must be a non-empty string")
        if not isinstance(m["replacement"], str) or m["replacement"] == m["original"]:
            raise CatalogueError(f"{where}: replacement must be a string that differs from original")
        if m["id"] in seen:
            raise CatalogueError(f"{where}: duplicate id {m['id']!r}")
        seen.add(m["id"])
        for key, typ in (("k", str), ("equivalent", str), ("smoke", bool)):
            if key in m and not isinstance(m[key], typ):
                raise CatalogueError(f"{where}: {key} must be a {typ.__name__}")
        mutants.append(Mutant(m["id"], m["file"], m["original"], m["replacement"], m["why"],
                              _str_list(m["tests"], f"{where}: tests"), m.get("k"), m.get("equivalent"),
                              m.get("smoke", False)))
    settings = data.get("settings", {})
    systematic = data.get("systematic", {})
    files = systematic.get("files", {})
    tests = {name: _str_list(v, f"{path}: systematic.tests.{name}") for name, v in systematic.get("tests", {}).items()}
    if set(files) != set(tests):
        raise CatalogueError(f"{path}: systematic.files and systematic.tests name different modules: "
                             f"{sorted(set(files) ^ set(tests))}")
    return mutants, Settings(settings.get("package"), dict(files), tests)


# ---- the systematic (AST) generator ---------------------------------------------------------------------
_COMPARE_FLIPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">")}
_BINOP_FLIPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+")}
_BOOL_FLIPS = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


class _Offsets:
    """Byte offsets of (line, UTF-8 column) positions, as ``ast`` reports them."""

    def __init__(self, source: bytes) -> None:
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def __call__(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col


def _skipped_subtrees(tree: ast.AST) -> set[int]:
    """ids of nodes whose subtrees are not mutated: annotations, f-strings, raise/assert statements and
    docstrings (none of them computes a result)."""
    skip: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.Assert, ast.JoinedStr)):
            skip.append(node)
        elif isinstance(node, ast.AnnAssign):
            skip.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            skip.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            skip.append(node.returns)
    return {id(n) for s in skip for n in ast.walk(s)}


def _operator_edit(source: bytes, start: int, end: int, old: str) -> tuple[int, int] | None:
    """The byte span of the single operator ``old`` in source[start:end] (the text between two operands:
    spaces, brackets, the operator), or None when it is not found there exactly once as a token."""
    gap = source[start:end].decode("utf-8")
    pattern = rf"\b{old}\b" if old.isalpha() else rf"(?<![<>=!+\-*/]){re.escape(old)}(?![<>=*/])"
    hits = list(re.finditer(pattern, gap))
    if len(hits) != 1 or "#" in gap:
        return None
    s = start + len(gap[:hits[0].start()].encode("utf-8"))
    return s, s + len(old.encode("utf-8"))


def systematic_mutants(root: Path, module: str, file: str, tests: tuple[str, ...]) -> list[Mutant]:
    """Operator mutants of one Python file: comparison boundaries (< <=, > >=), + <-> -, integer constants
    +-1, and <-> or, True <-> False. Each is a single edit, written as an exact snippet (the edited text with
    enough of its line around it to occur once) so that it runs through the same machinery as the catalogue."""
    source = (root / file).read_bytes()
    tree = ast.parse(source)
    skip = _skipped_subtrees(tree)
    at = _Offsets(source)
    edits: list[tuple[int, int, int, str, str]] = []       # (start, end, line, new text, label)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if type(op) in _COMPARE_FLIPS:
                    old, new = _COMPARE_FLIPS[type(op)]
                    e = _operator_edit(source, at(left.end_lineno, left.end_col_offset),
                                       at(right.lineno, right.col_offset), old)
                    if e:
                        edits.append((*e, right.lineno, new, f"{old} -> {new}"))
                left = right
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_FLIPS:
            old, new = _BINOP_FLIPS[type(node.op)]
            e = _operator_edit(source, at(node.left.end_lineno, node.left.end_col_offset),
                               at(node.right.lineno, node.right.col_offset), old)
            if e:
                edits.append((*e, node.right.lineno, new, f"{old} -> {new}"))
        elif isinstance(node, ast.BoolOp):
            old, new = _BOOL_FLIPS[type(node.op)]
            for a, b in zip(node.values, node.values[1:]):
                e = _operator_edit(source, at(a.end_lineno, a.end_col_offset), at(b.lineno, b.col_offset), old)
                if e:
                    edits.append((*e, b.lineno, new, f"{old} -> {new}"))
        elif isinstance(node, ast.Constant) and node.lineno == node.end_lineno:
            start, end = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            text = source[start:end].decode("utf-8")
            if isinstance(node.value, bool):
                edits.append((start, end, node.lineno, str(not node.value), f"{text} -> {not node.value}"))
            elif isinstance(node.value, int) and re.fullmatch(r"\d+", text):
                for delta in (1, -1):
                    edits.append((start, end, node.lineno, str(node.value + delta),
                                  f"{text} -> {node.value + delta}"))
    text = source.decode("utf-8")
    out: list[Mutant] = []
    for start, end, line, new, label in sorted(edits):
        s_chr, e_chr = len(source[:start].decode("utf-8")), len(source[:end].decode("utf-8"))
        original, replacement = _unique_snippet(text, s_chr, e_chr, new)
        if original is None:
            continue
        out.append(Mutant(f"{module}:{line}:{s_chr - text.rfind(chr(10), 0, s_chr)}:{label}", file, original,
                          replacement, f"systematic operator mutant ({label})", tests))
    return out


def _unique_snippet(text: str, start: int, end: int, new: str) -> tuple[str | None, str]:
    """The shortest (original, replacement) pair around text[start:end] -> new, widened within its line by
    8, 16, 32, 64 characters each side and then to the whole line, whose original occurs exactly once in
    ``text``; (None, "") when even the whole line occurs more than once."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    for width in (8, 16, 32, 64, 10_000):
        lo, hi = max(line_start, start - width), min(line_end, end + width)
        original = text[lo:hi]
        if text.count(original) == 1:
            return original, text[lo:start] + new + text[end:hi]
    return None, ""


# ---- snapshot and running -------------------------------------------------------------------------------
def snapshot_files(root: Path) -> list[str]:
    """The files of the working tree a run copies: git's tracked and untracked-but-not-ignored files (those
    that exist now), or, outside a git checkout, every file not under a dot-directory or __pycache__."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode("utf-8")
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(root).as_posix() for p in root.rglob("*")
                 if p.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                            for part in p.relative_to(root).parts)]
    return sorted({n for n in names if (root / n).is_file()})


def take_snapshot(root: Path, dest: Path) -> None:
    for name in snapshot_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def apply_mutant(base: Path, mutant: Mutant) -> tuple[str, int] | str:
    """(mutated text of the file, line of the edit), or why the mutant does not apply."""
    path = base / mutant.file
    if not path.is_file():
        return f"does not apply: {mutant.file} does not exist"
    text = path.read_text(encoding="utf-8")
    n = text.count(mutant.original)
    if n != 1:
        return f"does not apply: the original snippet occurs {n} times in {mutant.file} (must be exactly once)"
    pos = text.index(mutant.original)
    return text.replace(mutant.original, mutant.replacement, 1), text.count("\n", 0, pos) + 1


class Runner:
    """Runs mutants against one snapshot of the working tree."""

    def __init__(self, root: Path, work: Path, timeout: float, jobs: int, package: str | None = None,
                 python: str = sys.executable) -> None:
        self.root, self.work, self.timeout, self.jobs, self.python = root, work, timeout, jobs, python
        self.package = package
        self.base = work / "base"
        self.cache = work / "lowprec_cache"
        self._counter = 0
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        take_snapshot(root, self.base)
        self.cache.mkdir()

    def env(self, tree: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        env["LOWPREC_CACHE"] = str(self.cache)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
        return env

    def _new_tree(self) -> Path:
        with self._lock:
            self._counter += 1
            tree = self.work / f"m{self._counter:05d}"
        shutil.copytree(self.base, tree, copy_function=_link_or_copy)
        return tree

    def run_pytest(self, tree: Path, tests: Sequence[str], k: str | None, timeout: float) -> tuple[int | None, str]:
        """(pytest's exit status, or None on timeout; its output) for ``tests`` in ``tree``."""
        cmd = [self.python, "-m", "pytest", "-q", "-x", "--no-header", "-p", "no:cacheprovider", *tests]
        if k:
            cmd += ["-k", k]
        p = subprocess.Popen(cmd, cwd=tree, env=self.env(tree), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self._procs.add(p)
        try:
            out, _ = p.communicate(timeout=timeout)
            return p.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)          # the process group this run started, nothing else
            out, _ = p.communicate()
            return None, out.decode("utf-8", "replace")
        finally:
            with self._lock:
                self._procs.discard(p)

    def stop(self) -> None:
        """Kill the process groups of pytest runs still going (on an interrupt)."""
        with self._lock:
            for p in self._procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def check_import(self, package: str) -> str | None:
        """None when ``package`` imports from the snapshot under the run's environment, else why not."""
        code = f"import {package}, pathlib; print(pathlib.Path({package}.__file__).resolve())"
        p = subprocess.run([self.python, "-c", code], cwd=self.base, env=self.env(self.base), capture_output=True,
                           text=True, timeout=max(self.timeout, 120))
        if p.returncode:
            return f"`import {package}` fails in the snapshot: {p.stderr.strip()[-2000:]}"
        where = Path(p.stdout.strip())
        if self.base.resolve() not in where.parents:
            return f"`import {package}` in the snapshot loads {where}, not the snapshot's copy: check PYTHONPATH"
        return None

    def baseline(self, selections: Iterable[tuple[tuple[str, ...], str | None]]) -> list[str]:
        """Run each distinct selection unmutated (node ids without -k merged into one run); the failures."""
        plain: list[str] = []
        keyed: list[tuple[tuple[str, ...], str]] = []
        for tests, k in dict.fromkeys(selections):
            if k:
                keyed.append((tests, k))
            else:
                plain.extend(t for t in tests if t not in plain)
        files = {t for t in plain if "::" not in t}
        plain = [t for t in plain if t in files or t.split("::")[0] not in files]
        runs: list[tuple[tuple[str, ...], str | None]] = ([(tuple(plain), None)] if plain else []) + list(keyed)
        failures: list[str] = []

        def one(sel: tuple[tuple[str, ...], str | None]) -> None:
            tree = self._new_tree()
            try:
                rc, out = self.run_pytest(tree, sel[0], sel[1], self.timeout * 4)
            finally:
                shutil.rmtree(tree, ignore_errors=True)
            if rc != 0:
                what = "timed out" if rc is None else f"exit status {rc}"
                failures.append(f"baseline `pytest {' '.join(sel[0])}{' -k ' + repr(sel[1]) if sel[1] else ''}` "
                                f"{what}:\n{_tail(out)}")

        self._map(one, runs)
        return failures

    def run_mutant(self, mutant: Mutant) -> Result:
        applied = apply_mutant(self.base, mutant)
        if isinstance(applied, str):
            return Result(mutant, ERROR, 0.0, applied)
        text, line = applied
        t0 = time.monotonic()
        tree = self._new_tree()
        try:
            target = tree / mutant.file
            target.unlink()                           # a hard link: replace it, never write through it
            target.write_text(text, encoding="utf-8")
            rc, out = self.run_pytest(tree, mutant.tests, mutant.k, self.timeout)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        seconds = time.monotonic() - t0
        failure = _reported_failure(out)
        if rc is None:
            status, detail = TIMEOUT, f"ran past {self.timeout:g} s"
        elif rc in (1, 2, 4) and failure:  # 4: the mutant broke the import of a selected node (the baseline found it)
            status, detail = KILLED, failure
        elif rc and self._mutant_broke_import(out):
            status, detail = KILLED, "pytest could not start, the package does not import: " + _tail(out, 1)
        elif rc == 0:
            status, detail = SURVIVED, ""
        elif rc == 5:
            status, detail = ERROR, "no test collected: the mutant's test selection is wrong"
        else:
            status, detail = ERROR, f"pytest exit status {rc} with no test failure reported:\n{_tail(out)}"
        if mutant.equivalent is not None:
            if status == SURVIVED:
                status, detail = EQUIVALENT, mutant.equivalent
            elif status in (KILLED, TIMEOUT):
                status, detail = ERROR, f"declared equivalent, but {status}: {detail}"
        return Result(mutant, status, seconds, detail, line)

    def _mutant_broke_import(self, out: str) -> bool:
        """True when pytest died on a traceback at start-up (lowprec is a pytest plugin: pytest imports it first)
        while the unmutated snapshot still imports: the mutant broke the import, not the environment."""
        return (self.package is not None and "Traceback (most recent call last)" in out
                and self.check_import(self.package) is None)

    def run_all(self, mutants: Sequence[Mutant], budget: float | None, progress: bool = True) -> list[Result]:
        """Every mutant, ``jobs`` at a time; once ``budget`` seconds have passed, the rest are not run."""
        deadline = None if budget is None else time.monotonic() + budget
        done = [0]

        def one(m: Mutant) -> Result:
            if deadline is not None and time.monotonic() >= deadline:
                return Result(m, NOT_RUN, 0.0, "the --budget ran out first")
            r = self.run_mutant(m)
            with self._lock:
                done[0] += 1
                if progress:
                    print(f"[{done[0]}/{len(mutants)}] {r.status:<10} {r.seconds:6.1f}s  {m.id}"
                          + (f"  ({r.detail.splitlines()[0][:100]})" if r.detail and r.status != KILLED else ""),
                          file=sys.stderr, flush=True)
            return r

        return self._map(one, mutants)

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items``, ``jobs`` at a time; on an interrupt, the pytest runs still going are killed
        and the items not started are dropped before it propagates."""
        pool = ThreadPoolExecutor(self.jobs)
        try:
            return list(pool.map(fn, items))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self.stop()
            raise
        finally:
            pool.shutdown()


def _tail(out: str, n: int = 25) -> str:
    return "\n".join(out.strip().splitlines()[-n:])


def _reported_failure(out: str) -> str | None:
    """The first failing test pytest's summary names, "collection failed: ..." when the mutant broke collection,
    or None when the output shows neither (then pytest itself did not run as it should: an error, not a kill)."""
    if m := re.search(r"^FAILED (\S+)", out, re.M):
        return m.group(1)
    if re.search(r"^ERROR(?: |: )", out, re.M):
        m = re.search(r"^E +(.+)$", out, re.M)
        return "collection failed: " + (m.group(1).strip() if m else _tail(out, 1))
    return None


# ---- reports -----------------------------------------------------------------------------------------
def summarise(results: Sequence[Result]) -> dict[str, dict[str, float]]:
    """Per module (and ``all``): counts by status, and the score (killed + timeout) / (run - equivalent)."""
    table: dict[str, dict[str, float]] = {}
    for key in sorted({r.mutant.module for r in results}) + ["all"]:
        rs = [r for r in results if key == "all" or r.mutant.module == key]
        row: dict[str, float] = {s: sum(r.status == s for r in rs) for s in STATUSES}
        scored = len(rs) - row[NOT_RUN] - row[EQUIVALENT]
        row["scored"] = scored
        row["score"] = (row[KILLED] + row[TIMEOUT]) / scored if scored else float("nan")
        table[key] = row
    return table


def _diff(base: Path, r: Result) -> str:
    applied = apply_mutant(base, r.mutant)
    if isinstance(applied, str):
        return f"({applied})"
    before = (base / r.mutant.file).read_text(encoding="utf-8").splitlines()
    after = applied[0].splitlines()
    return "\n".join(difflib.unified_diff(before, after, f"a/{r.mutant.file}", f"b/{r.mutant.file}", n=1,
                                          lineterm=""))


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def write_reports(out: Path, results: Sequence[Result], base: Path, header: dict[str, str]) -> None:
    """``out`` (Markdown) and, beside it, the same results as ``.json`` and ``.csv``."""
    table = summarise(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Mutation testing report", "",
             "Written by `tools/mutate.py` (see CONTRIBUTING.md): each mutant is one edit applied to a scratch "
             "copy of the working tree, its tests run there. Score = (killed + timeout) / "
             "(mutants run - equivalent); errors (a mutant that does not apply, a wrong test selection) count "
             "against it.", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    a = table["all"]
    lines += ["", f"**Score: {a[KILLED] + a[TIMEOUT]:.0f} / {a['scored']:.0f} = {100 * a['score']:.1f}%** "
              f"(killed {a[KILLED]:.0f}, timeout {a[TIMEOUT]:.0f}, survived {a[SURVIVED]:.0f}, "
              f"equivalent {a[EQUIVALENT]:.0f}, errors {a[ERROR]:.0f}, not run {a[NOT_RUN]:.0f})", "",
              "| module | killed | timeout | survived | equivalent | errors | not run | score |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in table.items():
        score = "n/a" if row["scored"] == 0 else f"{100 * row['score']:.1f}%"
        lines.append(f"| {'**all**' if key == 'all' else key} | " + " | ".join(
            f"{row[s]:.0f}" for s in (KILLED, TIMEOUT, SURVIVED, EQUIVALENT, ERROR, NOT_RUN)) + f" | {score} |")
    for status, title in ((SURVIVED, "Survivors"), (ERROR, "Errors"), (EQUIVALENT, "Equivalent mutants")):
        rs = [r for r in results if r.status == status]
        lines += ["", f"## {title} ({len(rs)})", ""]
        if not rs:
            lines.append("None.")
        for r in rs:
            lines += [f"### `{r.mutant.id}` ({r.mutant.file}{':' + str(r.line) if r.line else ''})", "",
                      f"{r.mutant.why}", ""]
            if r.detail:
                lines += ["Reason: " + r.detail if status == EQUIVALENT else "Detail:", ""]
                if status != EQUIVALENT:
                    lines += ["```", r.detail, "```", ""]
            lines += [f"Tests: `{' '.join(r.mutant.tests)}`" + (f" `-k {r.mutant.k!r}`" if r.mutant.k else ""), "",
                      "```diff", _diff(base, r), "```"]
    lines += ["", f"## Every mutant ({len(results)})", "", "| id | module | status | seconds | killed by / detail |",
              "|---|---|---|---:|---|"]
    for r in results:
        detail = r.detail.splitlines()[0] if r.detail else ""
        lines.append(f"| `{_md_cell(r.mutant.id)}` | {r.mutant.module} | {r.status} | {r.seconds:.1f} | "
                     f"{_md_cell(detail[:160])} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [{"id": r.mutant.id, "file": r.mutant.file, "line": r.line, "module": r.mutant.module, "status": r.status,
             "seconds": round(r.seconds, 2), "detail": r.detail, "why": r.mutant.why, "tests": list(r.mutant.tests),
             "k": r.mutant.k, "smoke": r.mutant.smoke} for r in results]
    out.with_suffix(".json").write_text(json.dumps({"header": header, "summary": table, "mutants": rows}, indent=1,
                                                   default=str) + "\n", encoding="utf-8")
    with out.with_suffix(".csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["id", "module", "file", "line", "status", "seconds", "detail"], extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "detail": (row["detail"] or "").splitlines()[0] if row["detail"] else ""})


# ---- command line --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="only the catalogue's smoke mutants (CI)")
    p.add_argument("--catalogue", action="store_true", help="every catalogue mutant (the default mode)")
    p.add_argument("--systematic", metavar="MODULES",
                   help="AST operator mutants of these modules (comma-separated names of [systematic], or 'all')")
    p.add_argument("--ids", metavar="ID", nargs="+", help="only the catalogue mutants with these ids")
    p.add_argument("--budget", type=float, metavar="S", help="total seconds; mutants not started by then are not run")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S", help="seconds per mutant (default 180)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="mutants run in parallel (default 1)")
    p.add_argument("--seed", type=int, default=0, help="order of the systematic sample (default 0)")
    p.add_argument("--out", type=Path, metavar="FILE.md",
                   help="the report (default: reports/mutation.md for --catalogue, reports/mutation.systematic.md "
                        "for --systematic, none for --smoke); .json and .csv are written beside it")
    p.add_argument("--catalogue-file", type=Path, default=DEFAULT_CATALOGUE, metavar="TOML",
                   help="the catalogue (default tools/mutants.toml)")
    p.add_argument("--root", type=Path, default=REPO, help="the repository to mutate (default: this one)")
    p.add_argument("--list", action="store_true", help="list the selected mutants and exit")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated baseline run")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (printed)")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0 or (args.budget is not None and args.budget <= 0):
        p.error("--jobs, --timeout and --budget must be positive")
    if args.smoke and (args.catalogue or args.systematic):
        p.error("--smoke runs its fixed list alone")
    return args


def select(args: argparse.Namespace, catalogue: list[Mutant], settings: Settings) -> list[Mutant]:
    root = args.root.resolve()
    if args.smoke:
        chosen = [m for m in catalogue if m.smoke]
    elif args.catalogue or not args.systematic:
        chosen = list(catalogue)
    else:
        chosen = []
    if args.ids:
        unknown = set(args.ids) - {m.id for m in catalogue}
        if unknown:
            raise CatalogueError(f"unknown mutant ids {sorted(unknown)}")
        chosen = [m for m in chosen if m.id in set(args.ids)]
    if args.systematic:
        names = list(settings.module_files) if args.systematic == "all" else args.systematic.split(",")
        unknown = set(names) - set(settings.module_files)
        if unknown:
            raise CatalogueError(f"--systematic: unknown modules {sorted(unknown)}; "
                                 f"known: {sorted(settings.module_files)}")
        generated = [m for name in names
                     for m in systematic_mutants(root, name, settings.module_files[name], settings.module_tests[name])]
        random.Random(args.seed).shuffle(generated)   # a --budget sample spreads over modules and lines
        chosen += generated
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        catalogue, settings = load_catalogue(args.catalogue_file)
        mutants = select(args, catalogue, settings)
    except CatalogueError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    if not mutants:
        print("mutate: no mutant selected", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.id}\t{m.file}\t{' '.join(m.tests)}" + (f" -k {m.k!r}" if m.k else ""))
        return 0
    out = args.out
    if out is None and not args.smoke:
        out = args.root / "reports" / ("mutation.md" if not args.systematic or args.catalogue else
                                       "mutation.systematic.md")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lowprec-mutate-"))
    runner = Runner(args.root.resolve(), work, args.timeout, args.jobs, settings.package)
    try:
        if settings.package and (why := runner.check_import(settings.package)):
            print(f"mutate: {why}", file=sys.stderr)
            return 3
        if not args.no_baseline:
            print(f"mutate: baseline of {len({(m.tests, m.k) for m in mutants})} test selections ...", file=sys.stderr)
            failures = runner.baseline([(m.tests, m.k) for m in mutants])
            if failures:
                print("mutate: the unmutated tests fail, so no mutant can be judged:\n" + "\n\n".join(failures),
                      file=sys.stderr)
                return 3
        print(f"mutate: {len(mutants)} mutants, {args.jobs} at a time, timeout {args.timeout:g} s"
              + (f", budget {args.budget:g} s" if args.budget else ""), file=sys.stderr)
        results = runner.run_all(mutants, args.budget)
        wall = time.monotonic() - t0
        table = summarise(results)
        a = table["all"]
        header = {"command": "python tools/mutate.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                  "revision": _revision(args.root),
                  "machine": f"{os.cpu_count()} CPUs, {args.jobs} job(s), OMP_NUM_THREADS="
                             f"{runner.env(runner.base)['OMP_NUM_THREADS']} per job",
                  "wall time": f"{wall:.0f} s (baseline included); mutants: "
                               f"{sum(r.seconds for r in results):.0f} s of test time"}
        if out is not None:
            write_reports(out, results, runner.base, header)
        for key, row in table.items():
            print(f"{key:>20}: {row[KILLED] + row[TIMEOUT]:.0f}/{row['scored']:.0f} killed"
                  + ("" if row["scored"] == 0 else f" ({100 * row['score']:.1f}%)")
                  + "".join(f", {row[s]:.0f} {s}" for s in (SURVIVED, EQUIVALENT, ERROR, NOT_RUN) if row[s]))
        for r in results:
            if r.status in (SURVIVED, ERROR):
                print(f"{r.status.upper()}: {r.mutant.id} ({r.mutant.file})"
                      + (f": {r.detail.splitlines()[0]}" if r.detail else ""))
        print(f"mutate: {wall:.0f} s" + (f"; report {out}" if out is not None else ""))
        return 0 if a[SURVIVED] == 0 and a[ERROR] == 0 else 1
    finally:
        if args.keep:
            print(f"mutate: scratch directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _revision(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff-index", "--quiet", "HEAD", "--"], capture_output=True,
                               env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + (" plus uncommitted changes (the working tree was mutated as it stood)" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
