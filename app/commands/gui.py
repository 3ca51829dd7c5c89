"""``flukeid gui [CATALOG]``: the desktop application."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="open the desktop application",
                              description="Open the desktop application (on CATALOG, or the last catalog used).")
    p.add_argument("catalog", nargs="?", help="catalog folder to open")
    p.add_argument("--view", choices=["photos", "boxes", "match", "individuals"], help="view to show first")
    p.add_argument("--exit-after-show", action="store_true", help=argparse.SUPPRESS)  # start-up timing
    p.set_defaults(func=_run)


def _run(args) -> int:
    from app.ui.app import run_gui

    return run_gui(args.catalog, view=args.view, exit_after_show=args.exit_after_show)
