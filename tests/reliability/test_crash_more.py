"""SIGKILL during box edits, model installation + activation, and every export format.

Together with tests/app/test_crash_safety.py (14 kills mid-import, 16 mid-decisions, 6 mid-export)
these make the kill points counted in docs/RELIABILITY.md. The child process acknowledges each
finished call on a pipe; the parent kills it at a random moment and then checks: the catalog
passes ``PRAGMA integrity_check``, every acknowledged edit is present, the active model is always
a complete verified bundle with every photo embedded, and an export file under its final name is
always complete.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil

import pytest

from app.catalog import Catalog
from app.services import decisions as D
from app.services.importing import import_photos
from model.api import verify_bundle
from tests.app.conftest import FakeDetector, write_photo
from tests.app.sigkill import (
    catalog_with_photos,
    check_consistent,
    export_until_killed,
    needs_fork_and_sigkill,
    run_and_kill,
)

pytestmark = needs_fork_and_sigkill

BOX_KILLS = 10
ACTIVATION_KILLS = 10
EXPORT_KILLS = 9  # three per format
NEW_KILL_POINTS = BOX_KILLS + ACTIVATION_KILLS + EXPORT_KILLS


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash_more_photos")
    for i in range(30):
        write_photo(d / f"q{i:02d}.jpg", 2000 + i, size=(64, 48))
    return d


# ---------------------------------------------------------------------------------------- box edits
def _box_child(fd: int, folder: str, seed: int) -> None:
    rng = random.Random(seed)
    cat = Catalog.open(folder)
    photos = [p.id for p in cat.photos()]
    while True:
        pid = rng.choice(photos)
        r = rng.random()
        if r < 0.7:
            box = (round(rng.uniform(0, 10), 3), round(rng.uniform(0, 10), 3),
                   round(rng.uniform(20, 60), 3), round(rng.uniform(15, 45), 3))
            done = D.set_box(cat, pid, box)
        elif r < 0.85:
            box, done = None, D.confirm_box(cat, pid)
        else:
            box, done = None, D.mark_junk(cat, pid, rng.random() < 0.5)
        os.write(fd, (json.dumps([done.action_id, pid, box]) + "\n").encode())


def test_sigkill_during_box_edits(tmp_path, photo_dir):
    folder = tmp_path / "cat"
    catalog_with_photos(folder, photo_dir)
    rng = random.Random(21)
    acked: list[tuple[int, int, list | None]] = []
    for k in range(BOX_KILLS):
        acked += [tuple(json.loads(line)) for line in
                  run_and_kill(_box_child, (str(folder), 300 + k), rng.randint(1, 30), rng.uniform(0, 0.01))]
        with check_consistent(folder) as cat:
            actions = {a.id: a for a in cat.actions()}
            last_box: dict[int, tuple[int, list]] = {}
            for action_id, pid, box in acked:
                assert action_id in actions and actions[action_id].effects, f"box edit {action_id} lost"
                if box is not None:
                    last_box[pid] = (action_id, box)
            for pid, (action_id, box) in last_box.items():
                history = [tuple(b.box) for b in cat.box_history(pid) if b.box is not None]
                assert tuple(box) in history, f"photo {pid}: acknowledged box {box} missing"
                later = [a for a in actions.values() if a.photo_id == pid and a.id > action_id
                         and a.kind == "set_box"]
                if not later:  # nothing newer was drawn: the acknowledged box is the current one
                    assert tuple(cat.current_box(pid).box) == tuple(box)
    assert len(acked) >= BOX_KILLS


# -------------------------------------------------------------------------- model install/activation
def _activation_child(fd: int, folder: str, source: str, version: str) -> None:
    from app.services.retraining import activate
    from model.api import finalize_bundle, read_manifest, staging_dir

    cat = Catalog.open(folder)
    final = cat.models_dir / version
    stage = staging_dir(final)
    manifest = read_manifest(source)
    for name in manifest["files"]:
        shutil.copy2(os.path.join(source, name), stage / name)
        os.write(fd, f"copied {name}\n".encode())
    manifest = {k: v for k, v in manifest.items() if k not in ("files", "format_version", "created")}
    manifest["version"] = version
    finalize_bundle(stage, final, manifest)
    cat.add_model(version, final)
    os.write(fd, f"installed {version}\n".encode())
    activate(cat, version, progress=lambda f, m: os.write(fd, f"progress {f:.3f}\n".encode()))
    os.write(fd, f"active {version}\n".encode())


def test_sigkill_during_model_install_and_activation(tmp_path, photo_dir, tiny_bundle):
    from app.services.retraining import activate

    folder = tmp_path / "cat"
    with Catalog.create(folder) as cat:
        import_photos(cat, [photo_dir], detector=FakeDetector())
        shutil.copytree(tiny_bundle, cat.models_dir / "v0")
        cat.add_model("v0", cat.models_dir / "v0")
        activate(cat, "v0")
    rng = random.Random(5)
    last_active = "v0"
    stages = {"copying": 0, "activating": 0, "done": 0}
    for k in range(1, ACTIVATION_KILLS + 1):
        version = f"v{k}"
        # the first kills land before the install is acknowledged (at once, or right after the first
        # file is copied); the rest at random moments through install and activation
        acks, delay = (k - 1, 0.0) if k <= 2 else (rng.randint(0, 8), rng.uniform(0, 0.05))
        acked = run_and_kill(_activation_child, (str(folder), str(tiny_bundle), version), acks, delay, limit=30)
        stages["done" if f"active {version}" in acked else
               "activating" if f"installed {version}" in acked else "copying"] += 1
        with check_consistent(folder) as cat:
            active = cat.active_model()
            if f"active {version}" in acked:
                assert active.version == version
            else:
                assert active.version in (last_active, version)
            last_active = active.version
            # the active model is complete, verified, and every photo has its embedding
            verify_bundle(cat.model_path(active))
            assert cat.photos_missing_embedding(active.version) == []
            assert cat.photo_count() == 30
            # every registered model is a complete bundle; only hidden staging folders may be partial
            for m in cat.models():
                verify_bundle(cat.model_path(m))
            for d in cat.models_dir.iterdir():
                if not d.name.startswith("."):
                    verify_bundle(d)
            if f"installed {version}" in acked:
                assert version in {m.version for m in cat.models()}
            # a later activation of the same version completes (the user can retry)
            if version in {m.version for m in cat.models()} and active.version != version:
                activate(cat, version)
                assert cat.active_model().version == version
                last_active = version
    assert last_active == f"v{ACTIVATION_KILLS}"
    print("activation kills by stage:", stages)
    assert stages["copying"] >= 1 and stages["activating"] >= 1, stages  # kills landed mid-way


# ------------------------------------------------------------------------------------------- exports
def test_sigkill_during_every_export_format(tmp_path, photo_dir):
    from app.services import exporting

    folder = tmp_path / "cat"
    with Catalog.create(folder) as cat:
        ids = import_photos(cat, [photo_dir], detector=FakeDetector()).imported
        for i, pid in enumerate(ids[:12]):
            if i % 3 == 0:
                ind = D.new_individual(cat, pid, model_version="m").individual_id
            else:
                D.confirm(cat, pid, ind, rank=1, score=0.9, model_version="m")
        reference = {}
        for fmt in exporting.FORMATS:
            exporting.export(cat, fmt, tmp_path / f"ref-{fmt}.csv")
            reference[fmt] = (tmp_path / f"ref-{fmt}.csv").read_bytes()
    rng = random.Random(17)
    kills = 0
    for fmt in exporting.FORMATS:
        out = tmp_path / "out" / f"{fmt}.csv"
        out.parent.mkdir(exist_ok=True)
        out.write_text("previous export\n")  # an older file under the final name
        for _ in range(EXPORT_KILLS // len(exporting.FORMATS)):
            run_and_kill(export_until_killed, (str(folder), fmt, str(out)), rng.randint(0, 2), rng.uniform(0, 0.02))
            kills += 1
            data = out.read_bytes()
            assert data in (b"previous export\n", reference[fmt]), f"{fmt}: partial file under the final name"
            with open(out, newline="") as f:
                list(csv.reader(f))  # parses
        # leftovers only ever carry the temporary ".name.*.part" names
        assert all(p.name == out.name or (p.name.startswith(f".{out.name}.") and p.name.endswith(".part"))
                   for p in out.parent.iterdir() if fmt in p.name)
    assert kills == EXPORT_KILLS
