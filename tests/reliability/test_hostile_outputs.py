"""Outputs never overwrite what is not ours (issue 19, class 1).

Every command that writes a user-named output checks it with :func:`model.api.check_output`
first: never a catalog's file or folder (of the catalog being exported or any other), never a
device, FIFO, socket, dangling link or folder where a file goes, and an existing file only where
the command says so. Each case: exit code 2, a message naming the path and the reason, the
catalog's rows and integrity unchanged, and no file created or changed anywhere around it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from app.services import exporting
from model.api import OutputError, check_output
from tests.app.conftest import write_photo
from tests.reliability.hostile import catalog_state, cli, saved_catalog, tree

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder holding two catalogs (``cat`` and ``other``) and the photos' folder."""
    root = tmp_path_factory.mktemp("hostile_out")
    saved_catalog(root / "cat", root / "field")
    saved_catalog(root / "other", root / "field2", n=2)
    return root


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


# name -> (make the target under the world folder and return the --out path, fragment of the message)
TARGETS = {
    "the catalog database": (lambda w: w / "cat" / "catalog.sqlite", "part of the catalog"),
    "the database through ./ and ../": (lambda w: w / "cat" / "." / ".." / "cat" / "catalog.sqlite", "catalog"),
    "the WAL file": (lambda w: w / "cat" / "catalog.sqlite-wal", "part of the catalog"),
    "the shared-memory file": (lambda w: w / "cat" / "catalog.sqlite-shm", "part of the catalog"),
    "the lock file": (lambda w: w / "cat" / "flukeid.lock", "(flukeid.lock)"),
    "a model manifest": (lambda w: w / "cat" / "models" / "m1" / "manifest.json", "(models)"),
    "a new file in models/": (lambda w: w / "cat" / "models" / "new.csv", "(models)"),
    "a thumbnail": (lambda w: next((w / "cat" / "thumbnails").iterdir()), "(thumbnails)"),
    "a copied photo": (lambda w: next((w / "cat" / "photos").rglob("*.jpg")), "(photos)"),
    "the catalog folder itself": (lambda w: w / "cat", "catalog folder"),
    "another catalog's database": (lambda w: w / "other" / "catalog.sqlite", "part of the catalog"),
    "a link to the database": (lambda w: _link(w / "link-db.csv", w / "cat" / "catalog.sqlite"), "leads to"),
    "a link to the catalog folder's lock": (lambda w: _link(w / "l2.csv", w / "other" / "flukeid.lock"), "leads to"),
    "a folder": (lambda w: w / "field", "is a folder"),
    "a character device": (lambda w: Path("/dev/null"), "character device"),
    "a FIFO": (lambda w: _fifo(w / "pipe.csv"), "FIFO"),
    "a link to a FIFO": (lambda w: _link(w / "pipelink.csv", _fifo(w / "pipe2")), "FIFO"),
    "a dangling link": (lambda w: _link(w / "dangling.csv", w / "nowhere"), "missing"),
    "a photo (not text)": (lambda w: write_photo(w / "keep.jpg", 1), "not a text"),
    "a file in a missing folder": (lambda w: w / "no" / "such" / "out.csv", "does not exist"),
    "a file inside a model bundle": (lambda w: _bundle_file(w), "model folder"),
}


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _bundle_file(w: Path) -> Path:
    b = w / "bundle"
    b.mkdir(exist_ok=True)
    (b / "manifest.json").write_text("{}")
    (b / "branch.onnx").write_bytes(b"x")
    return b / "manifest.json"


@pytest.mark.parametrize("fmt", ["identifications", "kaggle", "sightings"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_export_refuses_what_is_not_ours_and_changes_nothing(world, name, fmt, tmp_path):
    make, fragment = TARGETS[name]
    # a fresh copy of the world for each case (links and FIFOs are made per case)
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    out = make(w)
    integrity, rows = catalog_state(w / "cat")
    before = tree(w)
    r = cli("export", w / "cat", "--format", fmt, "--out", out)
    assert r.rc == 2, (r.out, r.err)
    assert "Traceback" not in r.err
    assert str(out) in r.err and fragment in r.err, r.err
    assert "wrote" not in r.out
    assert tree(w) == before  # nothing created, replaced or left behind (no temporary file either)
    assert integrity == "ok" and catalog_state(w / "cat") == (integrity, rows)
    if out == Path("/dev/null"):
        assert Path("/dev/null").is_char_device()


def test_export_replaces_an_earlier_csv_and_writes_a_new_file_inside_the_catalog_folder(world, tmp_path):
    """What stays allowed: replacing an earlier export, and a new file beside the catalog's own files."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    old = w / "ids.csv"
    old.write_text("image,individual_id\nold.jpg,HW-9\n")
    assert cli("export", w / "cat", "--format", "identifications", "--out", old).rc == 0
    assert "old.jpg" not in old.read_text() and old.read_text().count("\n") == 5
    inside = w / "cat" / "ids-inside.csv"
    assert cli("export", w / "cat", "--format", "kaggle", "--out", inside).rc == 0
    assert inside.read_text().startswith("Image,Id")
    assert catalog_state(w / "cat")[0] == "ok"


def test_disk_full_during_export_says_writing_failed_and_keeps_the_old_file(world, tmp_path, monkeypatch):
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    old = w / "ids.csv"
    old.write_text("image,individual_id\nold.jpg,HW-9\n")
    data = old.read_bytes()
    before = tree(w)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    r = cli("export", w / "cat", "--format", "identifications", "--out", old)
    monkeypatch.undo()
    assert r.rc == 2 and "Traceback" not in r.err
    assert "writing the export failed (No space left on device)" in r.err and "previous file is kept" in r.err
    assert old.read_bytes() == data
    assert tree(w) == before  # the temporary file is gone


def test_the_guard_itself_on_folder_outputs(world, tmp_path):
    """Folder outputs (bundles, runs, data sets): never a catalog, never a file, existing only if allowed."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    for bad in (w / "cat", w / "cat" / "models" / "m2", w / "cat" / "thumbnails", w / "cat" / "photos" / "x",
                w / "other"):
        with pytest.raises(OutputError, match="catalog"):
            check_output(bad, folder=True, replace=True)
    with pytest.raises(OutputError, match="not a folder"):
        check_output(write_photo(w / "p.jpg", 2), folder=True)
    with pytest.raises(OutputError, match="already exists"):
        check_output(w / "field", folder=True)
    assert check_output(w / "fresh" / "deep", folder=True) == w / "fresh" / "deep"
    assert check_output(w / "field", folder=True, replace=True) == w / "field"


def test_every_output_command_refuses_a_catalog_before_doing_any_work(world, tmp_path):
    """export-model, train-detector, synth and train (`export RUN` is gone: export-model is the command): refused by name, before any training or writing."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    integrity, rows = catalog_state(w / "cat")
    before = tree(w)
    labels = w / "field" / "labels.csv"
    labels.write_text("image,individual_id\nc0.jpg,A\nc1.jpg,A\nc2.jpg,B\nc3.jpg,B\n")
    before = tree(w)
    cases = [
        (["export-model", w / "norun", "--out", w / "cat" / "models" / "new"], "(models)"),
        (["train-detector", "--out", w / "cat", "--synthetic", "0"], "catalog folder"),
        (["train-detector", "--out", w / "field", "--synthetic", "0"], "not a detector folder"),
        (["synth", "--individuals", "1", "--out", w / "cat" / "photos"], "(photos)"),
        (["synth", "--individuals", "1", "--out", w / "other"], "catalog folder"),
        (["train", "--data", labels, "--out", w / "cat" / "thumbnails", "--epochs", "1"], "(thumbnails)"),
        (["train", "--data", labels, "--out", w / "cat", "--epochs", "1"], "catalog folder"),
    ]
    for args, fragment in cases:
        r = cli(*args)
        assert r.rc == 2, (args, r.out, r.err)
        assert fragment in r.err and "Traceback" not in r.err, (args, r.err)
        assert tree(w) == before, args
    assert catalog_state(w / "cat") == (integrity, rows)


def test_train_and_detector_outputs_keep_their_own_replace_rules(tmp_path):
    """train --out: an empty folder or an earlier run; train-detector: only an earlier detector folder."""
    from model.api import load_train_config, train_siamese

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("my notes")
    with pytest.raises(OutputError, match="not a training run folder"):
        train_siamese(load_train_config("tiny"), [], busy)
    assert (busy / "notes.txt").read_text() == "my notes" and len(list(busy.iterdir())) == 1
    det = tmp_path / "det"
    det.mkdir()
    (det / "manifest.json").write_text('{"kind": "fluke-detector"}')
    from model.training.detector import check_detector_output

    assert check_detector_output(det) == det
    (det / "manifest.json").write_text('{"kind": "something else"}')
    with pytest.raises(OutputError, match="not a detector folder"):
        check_detector_output(det)


def test_gui_export_goes_through_the_same_guard(world, tmp_path):
    """The GUI calls exporting.export: the same refusal, as an OutputError naming the file."""
    from app.catalog import Catalog

    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    with Catalog.open(w / "cat", mode="auto") as cat:
        for fmt in exporting.FORMATS:
            with pytest.raises(OutputError, match=r"catalog\.sqlite.*part of the catalog"):
                exporting.export(cat, fmt, cat.db_path)
        assert cat.integrity_check() == "ok"
