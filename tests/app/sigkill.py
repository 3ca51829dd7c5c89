"""Kill a forked child in the middle of real work, then check the catalog it left behind.

Shared by the crash-safety tests (tests/app/test_crash_safety.py, tests/reliability/test_crash_more.py).
A child is a function ``target(write_fd, *args)`` that writes one line to ``write_fd`` after each
call it has finished (its acknowledgements); it never returns into pytest (see :func:`run_and_kill`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from app.catalog import Catalog
from app.services.importing import import_photos
from tests.app.conftest import FakeDetector

needs_fork_and_sigkill = pytest.mark.skipif(sys.platform == "win32" or "fork" not in mp.get_all_start_methods(),
                                            reason="needs fork and SIGKILL")


def _child_main(target, fd: int, args: tuple) -> None:
    # the forked child leaves through os._exit whatever happens, so it never runs pytest's own code
    try:
        target(fd, *args)
    finally:
        os._exit(0)


def run_and_kill(target, args, after_lines: int, jitter: float, limit: float = 10.0) -> list[str]:
    """Fork ``target(write_fd, *args)``; once it has written ``after_lines`` lines, wait ``jitter``
    seconds more and SIGKILL it (so the kill lands in the middle of real work). Returns the
    complete lines it wrote (its acknowledgements)."""
    r, w = os.pipe()
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_child_main, args=(target, w, tuple(args)), daemon=True)
    proc.start()
    os.close(w)
    buf = b""
    deadline = time.monotonic() + limit
    while buf.count(b"\n") < after_lines and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.05)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break  # the child finished before the kill
            buf += chunk
    time.sleep(jitter)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    # whatever was written before the kill is still in the pipe
    while True:
        ready, _, _ = select.select([r], [], [], 0)
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    # only complete lines count (a line is written after the call returned)
    return [ln for ln in buf.decode().split("\n")[:-1] if ln]


def check_consistent(folder) -> Catalog:
    """Open the catalog a killed child left (also proves the dead child's lock does not block) and
    check that SQLite finds it intact; the caller closes it."""
    cat = Catalog.open(folder)
    assert cat.integrity_check() == "ok"
    assert cat._query("PRAGMA foreign_key_check") == []
    return cat


def catalog_with_photos(folder: Path, photo_dir: Path) -> None:
    """Create a catalog at ``folder`` holding the photos of ``photo_dir`` (boxed by the fake detector)."""
    with Catalog.create(folder) as cat:
        import_photos(cat, [photo_dir], detector=FakeDetector())


def export_until_killed(fd: int, folder: str, fmt: str, out: str) -> None:
    """Child: export the catalog in ``fmt`` to ``out`` over and over, acknowledging each export."""
    from app.services import exporting

    cat = Catalog.open(folder, mode="read")
    while True:
        exporting.export(cat, fmt, out)
        os.write(fd, b"exported\n")
