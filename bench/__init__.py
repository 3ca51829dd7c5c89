"""Benchmark scripts (``python -m bench.NAME``); each writes a fragment under docs/bench/.

The right-whale and Table 1 rows are data (bench/experiments.toml) run by ``python -m bench.experiments``.
Importing this package changes nothing: each script's ``main()`` calls bench.common.configure_process
before torch loads.
"""
