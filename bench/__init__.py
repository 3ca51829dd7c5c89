"""Benchmark scripts (``python -m bench.NAME``); each writes a fragment under docs/bench/.

Like the ``flukeid`` command (app.cli.configure_process), the benchmarks run with OpenMP threads
that wait passively, so torch's CPU timings are not dominated by spinning threads whenever
another process holds a core. Set here, before any benchmark imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
