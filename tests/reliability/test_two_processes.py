"""Two processes on one catalog: one writer at a time, readers see committed work, no corruption.

The refusal that names the holder's process, and the read-only fallback, are proved in
tests/app/test_crash_safety.py::test_second_process_is_refused_naming_the_first; here a read-only
second process follows the writer live, and two processes that both want to write take turns
through the write lock while recording decisions through the services.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import select
import signal
import sys
import time

import pytest

from app.catalog import Catalog, CatalogLockedError
from app.catalog.store import ReadOnlyError
from app.services import decisions as D
from app.services.importing import import_photos
from tests.app.conftest import FakeDetector, write_photo
from tests.reliability.conftest import snapshot

pytestmark = pytest.mark.skipif(sys.platform == "win32" or "fork" not in mp.get_all_start_methods(),
                                reason="needs fork")


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "cat"
    with Catalog.create(folder) as cat:
        import_photos(cat, [write_photo(tmp_path / "p" / f"t{i}.jpg", 3000 + i, size=(64, 48)) for i in range(12)],
                      detector=FakeDetector())
    return folder


def _writer_child(fd: int, folder: str, go: int) -> None:
    try:
        cat = Catalog.open(folder)
        os.write(fd, b"holding\n")
        for pid in [p.id for p in cat.photos()][:6]:
            os.read(go, 1)  # wait for the parent's go
            done = D.new_individual(cat, pid, model_version="m")
            os.write(fd, f"{done.action_id}\n".encode())
        time.sleep(30)
    finally:
        os._exit(0)



def test_read_only_second_process_follows_the_writer_and_cannot_write(folder):
    go_r, go_w = os.pipe()
    r, w = os.pipe()
    proc = mp.get_context("fork").Process(target=_writer_child, args=(w, str(folder), go_r), daemon=True)
    proc.start()
    os.close(w)
    try:
        assert os.read(r, 8) == b"holding\n"
        with pytest.raises(CatalogLockedError, match=f"process {proc.pid}"):
            Catalog.open(folder)
        with Catalog.open(folder, mode="auto") as ro:
            assert ro.readonly and f"process {proc.pid}" in ro.readonly_reason
            seen = []
            for _ in range(6):
                os.write(go_w, b"g")
                line = b""
                while not line.endswith(b"\n"):
                    select.select([r], [], [], 5)
                    line += os.read(r, 1)
                seen.append(int(line))
                # the reader sees every committed decision of the writer as soon as it returns
                assert {a.id for a in ro.actions()} >= set(seen)
            before = snapshot(ro)
            with pytest.raises(ReadOnlyError):
                D.new_individual(ro, ro.photos()[-1].id, model_version="m")
            with pytest.raises(ReadOnlyError):
                D.set_box(ro, ro.photos()[-1].id, (1, 1, 9, 9))
            assert snapshot(ro) == before
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        os.close(r)
        os.close(go_w)
        os.close(go_r)
    with Catalog.open(folder) as cat:
        assert cat.integrity_check() == "ok" and len(cat.individuals()) == 6


def _turn_taker(fd: int, folder: str, seed: int, turns: int) -> None:
    """Open for writing (waiting while the other process holds the lock), record a few decisions, close."""
    try:
        rng = random.Random(seed)
        refused = 0
        for _ in range(turns):
            while True:
                try:
                    cat = Catalog.open(folder)
                    break
                except CatalogLockedError as exc:
                    assert "process" in str(exc)
                    refused += 1
                    time.sleep(rng.uniform(0.001, 0.01))
            with cat:
                photos = [p.id for p in cat.photos()]
                for _ in range(rng.randint(1, 4)):
                    pid = rng.choice(photos)
                    inds = [i.id for i in cat.individuals()]
                    if inds and rng.random() < 0.6:
                        done = D.confirm(cat, pid, rng.choice(inds), rank=1, score=0.5, model_version="m")
                    elif rng.random() < 0.5:
                        done = D.new_individual(cat, pid, model_version="m")
                    else:
                        done = D.set_box(cat, pid, (1, 1, rng.uniform(10, 60), rng.uniform(10, 40)))
                    os.write(fd, f"{done.action_id}\n".encode())
        os.write(fd, f"refused {refused}\n".encode())
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        os.write(fd, f"error {type(exc).__name__}: {exc}\n".replace(" ", "_").encode())
    finally:
        os._exit(0)


def test_two_writers_take_turns_without_corruption(folder):
    ctx = mp.get_context("fork")
    r, w = os.pipe()
    procs = [ctx.Process(target=_turn_taker, args=(w, str(folder), s, 25), daemon=True) for s in (1, 2)]
    for p in procs:
        p.start()
    os.close(w)
    buf = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.1)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
    for p in procs:
        p.join(5)
        assert p.exitcode == 0
    os.close(r)
    lines = buf.decode().split()
    refusals = [int(lines[i + 1]) for i, x in enumerate(lines) if x == "refused"]
    acked = [int(x) for i, x in enumerate(lines) if x.isdigit() and (i == 0 or lines[i - 1] != "refused")]
    assert not [x for x in lines if x.startswith("error")], lines
    assert len(refusals) == 2, "a writer did not finish"
    with Catalog.open(folder) as cat:
        assert cat.integrity_check() == "ok"
        assert cat._query("PRAGMA foreign_key_check") == []
        actions = {a.id: a for a in cat.actions()}
        assert set(acked) == set(actions) and len(acked) == len(actions)  # all kept, none duplicated
        assert all(a.effects for a in actions.values())
    assert sum(refusals) >= 1, "the two writers never met at the lock (test did not test turn-taking)"
