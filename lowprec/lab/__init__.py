"""The lab: studies as sweeps of independent points whose results live in a SQLite store.

``store`` (results keyed by each point's full configuration and the lab version), ``sweep`` (runs the
missing points in-process, on a process pool or on Dask, storing each as it finishes), and the studies
``accum_vs_k`` and ``comm``, each with ``run(store, out_dir, ...)`` for ``lowprec lab`` and ``main(argv)``
for its script under ``studies/``. Outputs (CSV exports, PNG, the store) go under ``--out``, by default
``lowprec_runs/`` (git-ignored).
"""
