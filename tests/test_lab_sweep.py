"""The sweep runner: resume from the store, a process pool, Dask on a LocalCluster, errors before work."""

import socket

import pytest

# Dask workers import this module to find `square`; lowprec (so torch) is imported inside the tests and
# fixtures, so that a worker starts in about a second instead of importing torch first.

POINTS = [{"x": x, "tag": "t"} for x in range(6)]


def square(cfg):
    return [{"y": cfg["x"] ** 2, "part": "sq"}, {"y": -cfg["x"], "part": "neg"}]


def fail_on_three(cfg):
    if cfg["x"] == 3:
        raise RuntimeError("boom")
    return square(cfg)


def _expected_rows(points):
    return [(p["x"], r["y"]) for p in points for r in square(p)]


def _rows(result):
    return list(zip(result.rows["x"], result.rows["y"]))


def run_sweep(*args, **kwargs):
    from lowprec.lab.sweep import run_sweep

    return run_sweep(*args, **kwargs)


@pytest.fixture
def store(tmp_path):
    from lowprec.lab.store import ResultStore

    with ResultStore(tmp_path / "store.sqlite") as s:
        yield s


def test_resume_computes_only_the_missing_points(store, capsys):
    half = run_sweep("sq", POINTS[:3], square, store)
    assert (half.computed, half.reused) == (3, 0)
    capsys.readouterr()
    full = run_sweep("sq", POINTS, square, store)
    assert (full.computed, full.reused) == (3, 3)
    assert "sq: reused 3 of 6 points" in capsys.readouterr().out
    assert _rows(full) == _expected_rows(POINTS)
    assert list(full.rows.columns) == ["tag", "x", "y", "part"]
    changed = run_sweep("sq", [{**p, "tag": "u"} for p in POINTS], square, store)
    assert changed.computed == 6                                          # a changed parameter recomputes


def test_process_pool(store):
    res = run_sweep("sq", POINTS, square, store, jobs=2)
    assert (res.computed, res.reused) == (6, 0) and _rows(res) == _expected_rows(POINTS)
    assert len(store.frame("sq")) == 12


def test_a_failing_point_is_named_and_the_points_before_it_are_kept(store):
    with pytest.raises(RuntimeError, match="boom") as err:
        run_sweep("f", POINTS, fail_on_three, store)
    assert "'x': 3" in "".join(err.value.__notes__)
    assert [store.get("f", p) is not None for p in POINTS] == [True, True, True, False, False, False]


def test_dask_on_a_local_cluster_the_test_starts(store):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = run_sweep("sq", POINTS, square, store, dask=cluster.scheduler_address)
        assert (res.computed, res.reused) == (6, 0) and _rows(res) == _expected_rows(POINTS)
        with pytest.raises(RuntimeError, match="boom") as err:
            run_sweep("f", POINTS, fail_on_three, store, dask=cluster.scheduler_address)
        assert "'x': 3" in "".join(err.value.__notes__) and store.get("f", POINTS[3]) is None
    again = run_sweep("sq", POINTS, square, store, dask="local")   # all reused: no cluster
    assert (again.computed, again.reused) == (0, 6)


def test_an_unreachable_scheduler_is_refused_before_any_work(store, monkeypatch):
    from lowprec.lab import sweep

    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as s:                                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(sweep.SchedulerUnreachable, match=address):
        run_sweep("sq", POINTS, square, store, dask=address)
    assert store.studies() == []


@pytest.mark.parametrize("kwargs,points,error,match", [
    ({"jobs": 0}, POINTS, ValueError, "jobs must be a positive int"),
    ({"dask": "localhost:8786"}, POINTS, ValueError, "scheduler address such as 'tcp://"),
    ({"jobs": 2, "fn": lambda cfg: []}, POINTS, TypeError, "picklable module-level function"),
    ({}, POINTS + POINTS[:1], ValueError, r"points\[6\] repeats"),
    ({}, [{"x": object()}], TypeError, r"config\['x'\]"),
])
def test_bad_input_is_refused_before_any_work(store, kwargs, points, error, match):
    kwargs = {"fn": square, **kwargs}
    with pytest.raises(error, match=match):
        run_sweep("sq", points, store=store, **kwargs)
    assert store.studies() == []
