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
import signal
import time

import pytest

from app.catalog import Catalog
from app.services import decisions as D
from app.services.importing import import_photos
from tests.app.conftest import FakeDetector, FakeEngine, write_photo
from tests.app.sigkill import (
    catalog_with_photos,
    check_consistent,
    export_until_killed,
    needs_fork_and_sigkill,
    run_and_kill,
)

pytestmark = needs_fork_and_sigkill

IMPORT_KILLS = 14
DECISION_KILLS = 16


def _import_child(fd: int, folder: str, photo_dir: str) -> None:
    cat = Catalog.open(folder)
    done = []

    def progress(fraction, message):
        os.write(fd, f"progress {len(done)}\n".encode())
        done.append(message)

    import_photos(cat, [photo_dir], detector=FakeDetector(), engine=FakeEngine(), progress=progress)
    os.write(fd, b"finished\n")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash_photos")
    for i in range(40):
        write_photo(d / f"p{i:02d}.jpg", 1000 + i, size=(64, 48))
    return d


def test_sigkill_during_import(tmp_path, photo_dir):
    rng = random.Random(4)
    survived = 0
    for k in range(IMPORT_KILLS):
        folder = tmp_path / f"cat{k}"
        Catalog.create(folder).close()
        acked = run_and_kill(_import_child, (str(folder), str(photo_dir)), rng.randint(1, 38),
                             rng.uniform(0, 0.01))
        assert "finished" not in acked
        cat = check_consistent(folder)
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


def test_sigkill_during_decisions(tmp_path, photo_dir):
    folder = tmp_path / "cat"
    catalog_with_photos(folder, photo_dir)
    rng = random.Random(7)
    all_acked: list[tuple[int, int]] = []
    for k in range(DECISION_KILLS):
        acked = run_and_kill(_decision_child, (str(folder), 100 + k), rng.randint(1, 40), rng.uniform(0, 0.01))
        all_acked += [tuple(int(v) for v in line.split()) for line in acked]
        with check_consistent(folder) as cat:
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


def test_sigkill_during_export_never_leaves_a_partial_file(tmp_path, photo_dir):
    folder = tmp_path / "cat"
    catalog_with_photos(folder, photo_dir)
    out = tmp_path / "out" / "ids.csv"
    out.parent.mkdir()
    rng = random.Random(11)
    for _ in range(EXPORT_KILLS):
        run_and_kill(export_until_killed, (str(folder), "identifications", str(out)), rng.randint(0, 3),
                     rng.uniform(0, 0.02))
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
