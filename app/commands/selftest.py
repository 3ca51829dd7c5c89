"""``flukeid self-test`` (also ``flukeid --self-test``): check that this installation can detect and match.

Exit 0 only if every check passed. The GUI check builds the main window in a child process, so a
Qt platform plugin that cannot start (no display, a broken X connection: Qt aborts the process)
becomes one clear FAILED line instead of killing the self-test; with no display at all the window
is built offscreen, which checks the same toolkit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

GUI_MARK = "GUI-CHECK"
GUI_TIMEOUT_S = 180


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("self-test", help="check the shipped models, detection, matching and the GUI toolkit",
                       description="Check the shipped models, detection, matching and the GUI toolkit "
                                   "(exit 0 only if all pass). Needs no display: without one the main "
                                   "window is built offscreen.")
    p.add_argument("--no-gui", action="store_true", help="skip the check that the main window can be built")
    p.add_argument("--gui-check-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gui_check_only:
        return _gui_check_child()
    from app.services.selftest import run_self_test

    report = run_self_test()
    if not args.no_gui:
        report.add("main window built (Qt)", *gui_check())
    for line in report.lines():
        print(line)
    print("self-test passed" if report.ok else "self-test FAILED")
    return 0 if report.ok else 1


def _self_command() -> list[str]:
    """How to run this program again: the desktop build's executable, or this Python on ``app``."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "app"]


def gui_check() -> tuple[bool, str]:
    """Build the main window in a child process; (ok, detail) whatever happens to the child."""
    cmd = [*_self_command(), "self-test", "--gui-check-only"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=GUI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"building the main window took more than {GUI_TIMEOUT_S} s"
    except OSError as exc:
        return False, f"could not start {cmd[0]}: {exc}"
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(GUI_MARK + " "):
            status, _, detail = line[len(GUI_MARK) + 1:].partition(" ")
            return status == "ok", detail
    why = f"killed by signal {-out.returncode}" if out.returncode < 0 else f"exit code {out.returncode}"
    lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
    # Qt's own lines ("qt.qpa.xcb: could not connect to display", "... platform plugin "x"") name the cause
    said = [ln for ln in lines if ln.startswith("qt.qpa")][:1] or lines[-2:]
    hint = ""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        hint = (". The display named in DISPLAY/WAYLAND_DISPLAY cannot be used; to check without one, "
                "run with QT_QPA_PLATFORM=offscreen")
    said_text = " / ".join(ln.rstrip(".") for ln in dict.fromkeys(said)) or "no message"
    return False, f"Qt could not start ({why}): {said_text}{hint}"


def _gui_check_child() -> int:
    from app.ui.app import display_problem

    headless = display_problem() is not None
    if headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    try:
        from app.ui.selfcheck import gui_self_check

        ok, detail = gui_self_check()
    except Exception as exc:  # noqa: BLE001 - any failure to build Qt is the finding itself
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    if headless:
        detail += " (no display: built offscreen)"
    print(f"{GUI_MARK} {'ok' if ok else 'failed'} {detail}", flush=True)
    return 0 if ok else 1
