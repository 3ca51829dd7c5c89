"""A scripted review session that ends with Ctrl+Q, for checking that quitting never crashes.

Run as ``python -m tests.ui.review_session CATALOG --rounds 20``: each round puts CATALOG's
database back as it was at the start (so every round has photos to review), opens a main window
on it, goes to the match review, presses review keys (skip, confirm, reject, new individual,
undo, redo), sometimes waits for the jobs and sometimes not, then quits with Ctrl+Q. The last
round quits from inside ``app.exec()``, the way the desktop program does. The process prints one
line per round and exits 0; any crash shows as another exit code and "Fatal Python error" on
stderr (tests/ui/test_quit_clean.py checks both, offscreen and under Xvfb when it is installed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtTest import QTest

from app.ui.app import application, pump, wait_idle
from app.ui.main_window import MainWindow

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier
KEYS = {  # name: (key, modifiers)
    "skip": (Qt.Key.Key_S, Qt.KeyboardModifier.NoModifier),
    "confirm": (Qt.Key.Key_1, Qt.KeyboardModifier.NoModifier),
    "reject": (Qt.Key.Key_R, Qt.KeyboardModifier.NoModifier),
    "new": (Qt.Key.Key_N, Qt.KeyboardModifier.NoModifier),
    "heatmap": (Qt.Key.Key_H, Qt.KeyboardModifier.NoModifier),
    "next": (Qt.Key.Key_Down, Qt.KeyboardModifier.NoModifier),
    "undo": (Qt.Key.Key_Z, CTRL),
    "redo": (Qt.Key.Key_Z, CTRL | SHIFT),
}
QUIT = (Qt.Key.Key_Q, CTRL)


def _press(window: MainWindow, name: str) -> None:
    key, mods = KEYS[name]
    QTest.keyClick(window, key, mods)


def open_window(catalog: str, settings: QSettings) -> MainWindow:
    window = MainWindow(settings, confirm_dialogs=False)
    window.resize(1200, 780)
    window.show()
    window.activateWindow()
    window.open_catalog(catalog)
    if not pump(60, lambda: window.session is not None and window.snapshot is not None
                and window.session.engine is not None):
        raise SystemExit(f"{catalog}: the catalog or its model did not load within 60 s")
    window.show_view("match")
    pump(30, lambda: window.match_review.task is not None)
    return window


def review(window: MainWindow, rng: random.Random, actions: int, settle: bool) -> list[str]:
    """Press ``actions`` random review keys; wait for the jobs only when ``settle``."""
    done = []
    for _ in range(actions):
        name = rng.choice(list(KEYS))
        _press(window, name)
        done.append(name)
        pump(rng.choice((0.0, 0.02, 0.1)))
    if settle:
        wait_idle(window, 60)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ui.review_session")
    parser.add_argument("catalog")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    app = application()
    settings = QSettings(str(Path(tempfile.mkdtemp(prefix="flukeid-session-")) / "settings.ini"),
                         QSettings.Format.IniFormat)
    rng = random.Random(args.seed)
    database = Path(args.catalog) / "catalog.sqlite"
    pristine = Path(settings.fileName()).with_name("catalog.sqlite")
    shutil.copy2(database, pristine)
    for n in range(args.rounds):
        t0 = time.monotonic()
        for leftover in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
            (database.parent / leftover).unlink(missing_ok=True)
        shutil.copy2(pristine, database)
        window = open_window(args.catalog, settings)
        done = review(window, rng, args.actions, settle=n % 2 == 1)
        last = n == args.rounds - 1
        if last:  # the desktop program's way out: Ctrl+Q while app.exec() runs
            QTimer.singleShot(0, lambda w=window: QTest.keyClick(w, *QUIT))
            rc = app.exec()
            if rc != 0:
                print(f"app.exec() returned {rc}", file=sys.stderr)
                return rc
        else:
            QTest.keyClick(window, *QUIT)
            if not pump(30, lambda w=window: not w.isVisible()):
                print(f"round {n + 1}: Ctrl+Q did not close the window", file=sys.stderr)
                return 3
        window.deleteLater()
        pump(0.05)
        print(f"round {n + 1}: {' '.join(done)} -> quit ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
