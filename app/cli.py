"""``flukeid`` command line: discovers the sub-commands in :mod:`app.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import app.commands
from app import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flukeid",
        description="Identify individual humpback whales from photos of their tail flukes.",
    )
    parser.add_argument("--version", action="version", version=f"flukeid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(app.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"app.commands.{info.name}")
        module.register(sub)
    return parser


def configure_process() -> None:
    """Process-wide settings that must precede importing torch (no effect once it is imported).

    OpenMP threads wait passively instead of spinning. torch's CPU kernels (GNU OpenMP) spin
    between parallel regions by default; when another process holds one of the cores (the GUI,
    an import, a second job), every small operation then waits for a descheduled thread: measured
    on the 2-core VM with one busy neighbour, a small CNN's forward pass took 1,490 ms with
    spinning threads and 63 ms with passive ones, and the training tests ran 4.3x faster
    (131 s -> 30 s). A user's own OMP_WAIT_POLICY is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    configure_process()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from model.api import FlukeidError

    try:
        return int(args.func(args) or 0)
    except FlukeidError as exc:
        print(f"flukeid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flukeid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
