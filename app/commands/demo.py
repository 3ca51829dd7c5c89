"""``flukeid demo``: build (once) a demo catalog of synthetic flukes and open the app on it."""

from __future__ import annotations

import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="try flukeid on a demo catalog of synthetic flukes",
        description="Create (the first time) a demo catalog of about 30 synthetic whales imported with "
                    "the shipped demo model, then open the app on the match review.")
    p.add_argument("--catalog", help="where to keep the demo catalog (default: the user data folder)")
    p.add_argument("--screenshot", metavar="DIR",
                   help="render each main view to DIR/<view>.png and exit (no window is shown)")
    p.add_argument("--individuals", type=int, default=30, help="synthetic whales in a new demo catalog")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from app.paths import demo_catalog_dir
    from app.services.demo import create_demo_catalog, is_demo_ready

    folder = Path(args.catalog) if args.catalog else demo_catalog_dir()
    if not is_demo_ready(folder):
        print(f"Building the demo catalog in {folder} (once; about a minute)…", file=sys.stderr)

        shown = [-1]

        def progress(fraction: float, message: str) -> None:
            pct = int(fraction * 100)
            if sys.stderr.isatty():
                print(f"\r  {fraction:4.0%}  {message[:60]:<60}", end="", file=sys.stderr, flush=True)
            elif pct >= shown[0] + 10:
                shown[0] = pct
                print(f"  {pct:3d}%  {message}", file=sys.stderr, flush=True)

        create_demo_catalog(folder, individuals=args.individuals, progress=progress)
        print(file=sys.stderr)
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from app.ui.app import take_screenshots

        for path in take_screenshots(str(folder), args.screenshot):
            print(path)
        return 0
    from app.ui.app import run_gui

    return run_gui(str(folder), view="match")
