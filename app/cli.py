"""``flukeid`` command line: discovers the sub-commands in :mod:`app.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sqlite3
import sys

import app.commands
from app import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flukeid",
        description="Identify individual humpback whales from photos of their tail flukes.",
    )
    parser.add_argument("--version", action="version", version=f"flukeid {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="same as the self-test command (the spelling the desktop build documents)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(app.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"app.commands.{info.name}")
        module.register(sub)
    return parser


def configure_process() -> None:
    """Process-wide settings that must precede importing torch (no effect once it is imported).

    OpenMP threads wait passively instead of spinning. Measured on the 2-core VM while two other
    (niced, single-threaded) torch trainings ran: a small CNN's forward pass took 1,490 ms with
    torch's default GNU OpenMP waiting and 63 ms with passive waiting, and the training tests ran
    in 131 s instead of 30 s; on the idle machine the training tests take the same time either
    way (25-27 s). bench/bench_train_throughput.py compares the policies next to busy processes
    (docs/bench/train_throughput.md): always-spinning threads lose 2-25x there, passive ones
    stay near the default. A user's own OMP_WAIT_POLICY is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def interruptible() -> None:
    """Let Ctrl+C / SIGINT raise KeyboardInterrupt in this process whatever it inherited.

    A process started in the background by a shell without job control (``flukeid gui &`` from a
    script, some desktop launchers) inherits SIGINT *ignored*, and Python keeps it ignored; the
    app's training processes would then not save their checkpoint when Retrain's Cancel sends
    SIGINT (they were killed by the SIGTERM that follows). Long jobs call this first.
    """
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    configure_process()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--self-test"]:  # `flukeid --self-test [--no-gui]` is `flukeid self-test [--no-gui]`
        argv = ["self-test", *argv[1:]]
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
    except sqlite3.DatabaseError as exc:  # the catalog store names the file; this is the last net
        where = getattr(args, "catalog", None)
        print(f"flukeid: error: {where + ': ' if where else ''}catalog database error ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flukeid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
