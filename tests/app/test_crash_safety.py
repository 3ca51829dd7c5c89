"""SIGKILL at random moments during import and during decisions: nothing acknowledged is lost.

A forked child imports photos or records decisions through the services and reports every
acknowledged result to the parent through a pipe; the parent kills it with SIGKILL after a
random delay, then checks the catalog: ``PRAGMA integrity_check`` is ok, every acknowledged
decision is there with its rows, and no photo is half-imported (each has its box and embedding).
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

from app.catalog import Catalog
from app.services import decisions as D
from app.services.importing import import_photos
from tests.app.conftest import FakeDetector, FakeEngine, write_photo

pytestmark = pytest.mark.skipif(sys.platform == "win32" or "fork" not in mp.get_all_start_methods(),
                                reason="needs fork and SIGKILL")

IMPORT_KILLS = 14
DECISION_KILLS = 16


def _run_and_kill(target, args, after_lines: int, jitter: float, limit: float = 10.0) -> list[str]:
    """Fork ``target(write_fd, *args)``; once it has written ``after_lines`` lines, wait ``jitter``
    seconds more and SIGKILL it (so the kill lands in the middle of real work). Returns the
    complete lines it wrote (its acknowledgements)."""
    r, w = os.pipe()
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=target, args=(w, *args), daemon=True)
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


def _import_child(fd: int, folder: str, photo_dir: str) -> None:
    try:
        cat = Catalog.open(folder)
        done = []

        def progress(fraction, message):
            os.write(fd, f"progress {len(done)}\n".encode())
            done.append(message)

        import_photos(cat, [photo_dir], detector=FakeDetector(), engine=FakeEngine(), progress=progress)
        os.write(fd, b"finished\n")
    finally:
        os._exit(0)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash_photos")
    for i in range(40):
        write_photo(d / f"p{i:02d}.jpg", 1000 + i, size=(64, 48))
    return d


def _check_consistent(folder) -> Catalog:
    cat = Catalog.open(folder)  # also proves the dead child's lock does not block
    assert cat.integrity_check() == "ok"
    assert cat._query("PRAGMA foreign_key_check") == []
    return cat


def test_sigkill_during_import(tmp_path, photo_dir):
    rng = random.Random(4)
    survived = 0
    for k in range(IMPORT_KILLS):
        folder = tmp_path / f"cat{k}"
        Catalog.create(folder).close()
        acked = _run_and_kill(_import_child, (str(folder), str(photo_dir)), rng.randint(1, 38),
                              rng.uniform(0, 0.01))
        assert "finished" not in acked
        cat = _check_consistent(folder)
        n = cat.photo_count()
        progress = [int(x.split()[1]) for x in acked if x.startswith("progress")]
        # progress(i) is called before photo i+1 is read: i photos were committed by then
        assert n >= (max(progress) if progress else 0)
        orphans = cat._query("SELECT count(*) FROM photos p WHERE NOT EXISTS "
                             "(SELECT 1 FROM boxes b WHERE b.photo_id = p.id)")[0][0]
        no_emb = cat._query("SELECT count(*) FROM photos p WHERE NOT EXISTS "
                            "(SELECT 1 FROM embeddings e WHERE e.photo_id = p.id)")[0][0]
        assert (orphans, no_emb) == (0, 0)
        # a later import completes the catalog
        rep = import_photos(cat, [photo_dir], detector=FakeDetector(), engine=FakeEngine())
        assert cat.photo_count() == 40 and len(rep.duplicates) == n
        cat.close()
        survived += 1
    assert survived == IMPORT_KILLS


def _decision_child(fd: int, folder: str, seed: int) -> None:
    try:
        rng = random.Random(seed)
        cat = Catalog.open(folder)
        photos = [p.id for p in cat.photos()]
        while True:
            pid = rng.choice(photos)
            inds = [i.id for i in cat.individuals()]
            r = rng.random()
            if r < 0.15 or not inds:
                done = D.new_individual(cat, pid, model_version="m")
            elif r < 0.45:
                done = D.confirm(cat, pid, rng.choice(inds), rank=1, score=rng.random(), model_version="m")
            elif r < 0.6:
                done = D.reject(cat, pid, rng.choice(inds), rank=2, score=rng.random(), model_version="m")
            elif r < 0.75:
                done = D.set_box(cat, pid, (1, 1, rng.uniform(10, 60), rng.uniform(10, 40)))
            elif r < 0.85:
                done = D.undo(cat)
            elif r < 0.93:
                done = D.redo(cat)
            else:
                done = D.skip(cat, pid)
            if done is not None:
                os.write(fd, f"{done.action_id} {done.decision_id or 0}\n".encode())
    finally:
        os._exit(0)


def test_sigkill_during_decisions(tmp_path, photo_dir):
    folder = tmp_path / "cat"
    with Catalog.create(folder) as cat:
        import_photos(cat, [photo_dir], detector=FakeDetector())
    rng = random.Random(7)
    all_acked: list[tuple[int, int]] = []
    for k in range(DECISION_KILLS):
        acked = _run_and_kill(_decision_child, (str(folder), 100 + k), rng.randint(1, 40), rng.uniform(0, 0.01))
        all_acked += [tuple(int(v) for v in line.split()) for line in acked]
        with _check_consistent(folder) as cat:
            actions = {a.id: a for a in cat.actions()}
            for action_id, decision_id in all_acked:
                assert action_id in actions, f"acknowledged action {action_id} lost"
                assert actions[action_id].effects, f"action {action_id} has no recorded effects"
                if decision_id:
                    assert cat.match_decision(decision_id).action_id == action_id
            # every action's effects are fully written (one transaction per decision)
            for a in actions.values():
                assert a.effects, f"action {a.id} is half-written"
    assert len(all_acked) >= DECISION_KILLS  # the children did real work between kills


EXPORT_KILLS = 6


def _export_child(fd: int, folder: str, out: str) -> None:
    try:
        from app.services import exporting

        cat = Catalog.open(folder, mode="read")
        while True:
            exporting.export_identifications(cat, out)
            os.write(fd, b"exported\n")
    finally:
        os._exit(0)


def test_sigkill_during_export_never_leaves_a_partial_file(tmp_path, photo_dir):
    folder = tmp_path / "cat"
    with Catalog.create(folder) as cat:
        import_photos(cat, [photo_dir], detector=FakeDetector())
    out = tmp_path / "out" / "ids.csv"
    out.parent.mkdir()
    rng = random.Random(11)
    for _ in range(EXPORT_KILLS):
        _run_and_kill(_export_child, (str(folder), str(out)), rng.randint(0, 3), rng.uniform(0, 0.02))
        if out.exists():
            lines = out.read_text().splitlines()
            assert len(lines) == 41 and lines[0].startswith("image,individual_id")


def _holder_child(fd: int, folder: str) -> None:
    try:
        Catalog.open(folder)
        os.write(fd, b"holding\n")
        time.sleep(30)
    finally:
        os._exit(0)


def test_second_process_is_refused_naming_the_first(tmp_path):
    from app.catalog import CatalogLockedError

    folder = tmp_path / "cat"
    Catalog.create(folder).close()
    r, w = os.pipe()
    proc = mp.get_context("fork").Process(target=_holder_child, args=(w, str(folder)), daemon=True)
    proc.start()
    os.close(w)
    assert os.read(r, 100) == b"holding\n"
    try:
        with pytest.raises(CatalogLockedError, match=f"process {proc.pid}"):
            Catalog.open(folder)
        with Catalog.open(folder, mode="auto") as ro:
            assert ro.readonly and str(proc.pid) in ro.readonly_reason
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        os.close(r)
    with Catalog.open(folder) as cat:  # the dead holder's lock is gone with it
        assert not cat.readonly
