"""``flukeid self-test``: check that this installation can detect and match (exit 0 only if so)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("self-test", help="check the shipped models, detection, matching and the GUI toolkit")
    p.add_argument("--no-gui", action="store_true", help="skip the check that the main window can be built")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.services.selftest import run_self_test

    report = run_self_test()
    if not args.no_gui:
        try:
            from app.ui.selfcheck import gui_self_check

            ok, detail = gui_self_check()
        except Exception as exc:  # noqa: BLE001 - any failure to build Qt is the finding itself
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        report.add("main window built (Qt)", ok, detail)
    for line in report.lines():
        print(line)
    print("self-test passed" if report.ok else "self-test FAILED")
    return 0 if report.ok else 1
