"""Entry point of the packaged program: ``flukeid`` with no arguments opens the GUI.

``flukeid --self-test`` (or ``flukeid self-test``, as from source) checks the shipped models on a
synthetic photo and the GUI toolkit, and exits 0 or 1.
"""

import sys

from app.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv:
        argv = ["gui"]
    raise SystemExit(main(argv))
