"""The lab: studies as sweeps of independent points whose results live in a SQLite store.

``store`` (results keyed by each point's full configuration and the lab version), ``sweep`` (runs the
missing points in-process, on a process pool or on Dask, storing each as it finishes), the studies --
``training`` (FP8 vs BF16 training, which records the GEMM trace), ``replay`` (the trace's GEMMs through
scalings x accumulators), ``accum_vs_k``, ``comm`` -- each with ``run(store, out_dir, ...)`` and
``main(argv)`` for its script under ``studies/``, ``claims`` (the claims table from their results) and
``runner`` (``lowprec lab``: all of them and one report). Study scripts write under ``--out``, by default
``lowprec_runs/``; ``lowprec lab`` under ``reports/`` (both git-ignored).
"""
