"""The results store: configuration keys, atomic points, several writer processes, version refusal."""

import math
import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest

import lowprec
from lowprec.lab.store import ResultStore, StoreError

CFG = {"K": 4096, "M": 16, "dist": "normal", "seed": 0, "scale": 0.1, "shape": (16, 16), "opts": {"b": True}}


def test_same_config_hits_and_any_changed_parameter_misses(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    assert store.get("accum", CFG) is None
    store.put("accum", CFG, [{"err": 0.5, "model": "hopper_fp8"}, {"err": float("nan"), "model": "exact"}])
    same = dict(reversed(list(CFG.items())), shape=[16, 16])          # key order, tuple vs list: same point
    rows = store.get("accum", same)
    assert rows[0] == {"err": 0.5, "model": "hopper_fp8"} and math.isnan(rows[1]["err"])
    for changed in ({"seed": 1}, {"K": 4096.0}, {"scale": 0.1 + 2**-56}, {"shape": (16, 17)},
                    {"opts": {"b": False}}, {"extra": None}):
        assert store.get("accum", {**CFG, **changed}) is None, changed
    assert store.get("other_study", CFG) is None
    assert ResultStore.key("accum", CFG) != ResultStore.key("accum", {**CFG, "seed": 1})


def test_key_includes_the_lab_version(tmp_path, monkeypatch):
    before = ResultStore.key("accum", CFG)
    monkeypatch.setattr("lowprec.lab.store.LAB_VERSION", "9.9.9")
    assert ResultStore.key("accum", CFG) != before


@pytest.mark.parametrize("config,field", [({"K": Path("x")}, r"config\['K'\]"),
                                          ({"grid": [1, {2}]}, r"config\['grid'\]\[1\]"),
                                          ({"d": {3: 1}}, r"config\['d'\]: keys must be str")])
def test_config_values_that_are_not_json_are_refused_by_name(config, field):
    with pytest.raises(TypeError, match=field):
        ResultStore.key("s", config)


def test_put_replaces_validates_rows_and_frame_joins_config(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.put("s", {"K": 1, "seed": 0}, [{"err": 1.0}])
    store.put("s", {"K": 1, "seed": 0}, [{"err": 2.0}, {"err": 3.0}])                    # replaces
    store.put("s", {"K": 2, "seed": 0}, [])                                             # a point with no rows
    store.put("t", {"x": "a"}, [{"y": None}])
    assert store.get("s", {"K": 2, "seed": 0}) == []
    df = store.frame("s")
    assert list(df.columns) == ["K", "seed", "err"] and df["err"].tolist() == [2.0, 3.0]
    assert store.studies() == ["s", "t"]
    with pytest.raises(ValueError, match="'K'.*also a config field"):
        store.put("s", {"K": 3}, [{"K": 3, "err": 0.0}])
    with pytest.raises(TypeError, match=r"rows\[0\]\['err'\] is a list"):
        store.put("s", {"K": 3}, [{"err": [1.0]}])
    with pytest.raises(ValueError, match="no study 'nope'.*s, t"):
        store.frame("nope")
    assert store.get("s", {"K": 3}) is None


def _write_points(path: str, worker: int, n: int, start) -> None:
    store = ResultStore(path)
    start.wait()
    for i in range(n):
        store.put("conc", {"worker": worker, "i": i}, [{"v": worker * 1000 + i}, {"v": -1}])
    store.close()


def test_concurrent_writer_processes_all_land(tmp_path):
    path, workers, n = str(tmp_path / "s.sqlite"), 3, 25
    ctx = mp.get_context("fork")       # the children use sqlite only (no torch threads); fork starts in ms
    start = ctx.Barrier(workers)       # all writers start together, so they contend for the lock
    procs = [ctx.Process(target=_write_points, args=(path, w, n, start)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    df = ResultStore(path).frame("conc")
    assert len(df) == workers * n * 2
    assert sorted(df.loc[df["v"] >= 0, "v"]) == sorted(w * 1000 + i for w in range(workers) for i in range(n))


class _DieMidway:
    """A connection whose executemany inserts half of its rows and then kills the process (no rollback)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def executemany(self, sql, params):
        params = list(params)
        for p in params[: len(params) // 2]:
            self._con.execute(sql, p)
        os._exit(3)


def _crash_mid_put(path: str, config: dict) -> None:
    store = ResultStore(path)
    store._con = _DieMidway(store._con)
    store.put("crash", config, [{"v": i} for i in range(10)])


@pytest.mark.parametrize("existing", [False, True])
def test_a_point_killed_mid_write_leaves_the_previous_state(tmp_path, existing):
    path, config = str(tmp_path / "s.sqlite"), {"p": 1}
    if existing:
        ResultStore(path).put("crash", config, [{"v": -1}])
    proc = mp.get_context("fork").Process(target=_crash_mid_put, args=(path, config))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert ResultStore(path).get("crash", config) == ([{"v": -1}] if existing else None)


def test_an_exception_mid_write_rolls_back(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")

    class Boom(Exception):
        pass

    def rows():
        yield from ({"v": i} for i in range(3))
        raise Boom

    store.put("s", {"p": 1}, [{"v": 0}])
    with pytest.raises(Boom):
        with store._transaction():
            store._con.execute("DELETE FROM rows")
            store._con.executemany("INSERT INTO rows VALUES ('k', ?, '{}')", ((r["v"],) for r in rows()))
    assert store.get("s", {"p": 1}) == [{"v": 0}]


def test_a_store_of_another_lab_version_is_refused_naming_both(tmp_path):
    path = tmp_path / "s.sqlite"
    ResultStore(path).put("s", {"p": 1}, [{"v": 0}])
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '0.0.1' WHERE name = 'lab_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=rf"lab version 0\.0\.1.*lab version {lowprec.__version__}"):
        ResultStore(path)


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not sqlite " * 100)
    with pytest.raises(StoreError, match="not a usable results store"):
        ResultStore(bad)
    with pytest.raises(StoreError, match="is a directory"):
        ResultStore(tmp_path)
