"""Helpers for the hostile-input tests (tests/reliability/test_hostile_*.py): a catalog with saved
work, the CLI run in-process, and before/after pictures of the catalog and of the files around it."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from app.catalog import Catalog
from app.services import decisions as D
from app.services.importing import import_photos
from tests.app.conftest import FakeDetector, write_photo
from tests.reliability.conftest import snapshot

CATALOG_CHURN = {"catalog.sqlite-wal", "catalog.sqlite-shm", "flukeid.lock"}  # change on every open


def saved_catalog(folder: Path, photos_dir: Path, n: int = 4) -> Path:
    """A closed catalog with n photos (copied into it, so photos/ exists), boxes, two individuals,
    a decision and a fake model folder under models/."""
    cat = Catalog.create(folder)
    try:
        files = [write_photo(photos_dir / f"c{i}.jpg", 700 + i) for i in range(n)]
        ids = import_photos(cat, files, detector=FakeDetector(), copy=True).imported
        assert len(ids) == n
        D.new_individual(cat, ids[0], model_version="m")
        D.new_individual(cat, ids[1], model_version="m")
        bundle = cat.models_dir / "m1"
        bundle.mkdir()
        (bundle / "manifest.json").write_text('{"format_version": 1}')
        (bundle / "branch.onnx").write_bytes(b"onnx")
    finally:
        cat.close()
    return folder


def catalog_state(folder: Path) -> tuple[str, dict]:
    """(integrity_check, every saved row) of a catalog, opened read-only."""
    with Catalog.open(folder, mode="read") as cat:
        return cat.integrity_check(), snapshot(cat)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed) -> (kind, size, mtime_ns) for files, kind otherwise."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if Path(rel).name in CATALOG_CHURN:
                continue
            out[rel] = ("file", st.st_size, st.st_mtime_ns) if p.is_file() and not p.is_symlink() else (
                "link" if p.is_symlink() else "dir" if p.is_dir() else "other",)
    return out


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def cli(*args: str | Path) -> CliResult:
    """``flukeid ARGS`` in this process: exit code, stdout, stderr (a traceback would fail the test)."""
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            rc = int(exc.code or 0)
    return CliResult(rc, out.getvalue(), err.getvalue())
