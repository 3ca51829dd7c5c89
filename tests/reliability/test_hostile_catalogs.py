"""Read-only, locked, damaged and full catalogs give clear CLI messages (issue 19, class 6 and the
weak items on catalogs).

- A catalog that cannot be written (folder unwritable although its files are writable, a
  read-only catalog.sqlite, a read-only file system) opens read-only with the reason, which the
  CLI prints (Catalog.readonly / readonly_reason are what the status bar shows); write commands
  refuse with that reason. Real denials: as root the commands run as user nobody (setpriv), and
  the read-only file system is a tmpfs remounted read-only; both skip where not possible.
- Another program holding SQLite's write lock, random bytes over a table's page, a bad
  schema_version and a disk that fills up give a CatalogError naming catalog.sqlite
  (store.database_failure), never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from app.catalog import Catalog, CatalogError
from app.catalog import store as store_mod
from app.services import decisions as D
from tests.app.conftest import write_photo
from tests.reliability.hostile import catalog_state, cli, saved_catalog, tree

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _raw_rows(db: Path) -> dict:
    """Every row of the saved-work tables, read with plain sqlite3 in read-only mode (no flukeid code)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()  # noqa: S608
                for t in ("photos", "boxes", "individuals", "identifications", "actions", "meta")}
    finally:
        conn.close()


# --------------------------------------------------------------------- 6. read-only catalogs
@pytest.fixture
def shared_dir():
    """A temporary folder every user can enter (pytest's own is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="flukeid-ro-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


def _as_other_user(*args) -> subprocess.CompletedProcess:
    """``flukeid ARGS`` as an unprivileged user: nobody when we are root, else ourselves."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if IS_ROOT else []
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp", "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([*prefix, sys.executable, "-m", "app", *map(str, args)], capture_output=True,
                          text=True, timeout=90, env=env, cwd="/")


def _need_other_user() -> None:
    if IS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot run as an unprivileged user")
        probe = _as_other_user("--version")
        if probe.returncode != 0:
            pytest.skip(f"user nobody cannot run this Python ({probe.stderr.strip()[-200:]})")


@pytest.mark.parametrize("how", ["folder", "database file"])
def test_unwritable_catalog_opens_read_only_and_the_cli_says_so(shared_dir, how):
    _need_other_user()
    cat = saved_catalog(shared_dir / "cat", shared_dir / "field")
    out_dir = shared_dir / "out"
    out_dir.mkdir()
    out_dir.chmod(0o777)
    for p in cat.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    if how == "folder":  # the case: the files inside stay writable, the folder does not
        cat.chmod(0o555)
        reason = "the catalog folder is not writable"
    else:
        cat.chmod(0o777)
        (cat / "catalog.sqlite").chmod(0o444)
        reason = "catalog.sqlite is read-only"
    before = _raw_rows(cat / "catalog.sqlite")
    names = tree(cat)

    r = _as_other_user("stats", cat)
    assert r.returncode == 0 and reason in r.stdout and "photos" in r.stdout, (r.stdout, r.stderr)
    r = _as_other_user("export", cat, "--format", "identifications", "--out", out_dir / "ids.csv")
    assert r.returncode == 0, r.stderr
    assert f"note: catalog {cat} is open read-only ({reason}" in r.stderr
    assert (out_dir / "ids.csv").read_text().count("\n") == 5
    r = _as_other_user("import", cat, shared_dir / "field", "--no-detect", "--no-embed")
    assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _raw_rows(cat / "catalog.sqlite") == before
    assert tree(cat) == names


@contextlib.contextmanager
def _tmpfs(size: str):
    """A tmpfs of ``size`` mounted on a fresh folder (skips the test where mounting is not allowed)."""
    mnt = Path(tempfile.mkdtemp(prefix="flukeid-tmpfs-"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "flukeid-test", str(mnt)],
                         capture_output=True, text=True) if IS_ROOT and shutil.which("mount") else None
    if res is None or res.returncode != 0:
        mnt.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        mnt.rmdir()


def test_catalog_on_a_read_only_file_system(tmp_path):
    with _tmpfs("16m") as mnt:
        cat = saved_catalog(mnt / "cat", tmp_path / "field")
        before = _raw_rows(cat / "catalog.sqlite")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        r = cli("stats", cat)
        assert r.rc == 0 and "read-only file system" in r.out, (r.out, r.err)
        r = cli("export", cat, "--format", "kaggle", "--out", tmp_path / "k.csv")
        assert r.rc == 0 and "open read-only (the catalog is on a read-only file system)" in r.err
        r = cli("import", cat, tmp_path / "field", "--no-detect", "--no-embed")
        assert r.rc == 2 and "read-only file system" in r.err and "Traceback" not in r.err
        with Catalog.open(cat, mode="auto") as c:
            assert c.readonly and "read-only file system" in c.readonly_reason
            assert c.integrity_check() == "ok"
        assert _raw_rows(cat / "catalog.sqlite") == before


# ------------------------------------------------------------- 8. locked, damaged, bad versions
def test_another_program_holding_the_write_lock_gets_a_clear_message(tmp_path, monkeypatch):
    cat = saved_catalog(tmp_path / "cat", tmp_path / "field")
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.3)
    other = sqlite3.connect(cat / "catalog.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. a DB browser with an unsaved edit
    try:
        r = cli("import", cat, *[write_photo(tmp_path / "new" / f"n{i}.jpg", 50 + i) for i in range(2)],
                "--no-detect", "--no-embed")
        assert r.rc == 2 and "Traceback" not in r.err
        assert "catalog.sqlite: another program kept the catalog database locked for more than 0.3 s" in r.err
        with Catalog.open(cat) as c:
            with pytest.raises(CatalogError, match="another program kept the catalog database locked"):
                D.new_individual(c, c.photos()[3].id, model_version="m")
    finally:
        other.execute("ROLLBACK")
        other.close()
    r = cli("import", cat, tmp_path / "new", "--no-detect", "--no-embed")  # once released, it works
    assert r.rc == 0 and "2 photos imported" in r.out


def _table_root_page(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("table", ["photos", "individuals", "meta", "boxes", "identifications"])
def test_random_bytes_over_a_table_give_a_clear_message_from_every_command(tmp_path, table):
    cat = saved_catalog(tmp_path / "cat", tmp_path / "field")
    db = cat / "catalog.sqlite"
    page = _table_root_page(db, table)
    data = bytearray(db.read_bytes())
    data[(page - 1) * 4096:page * 4096] = np.random.default_rng(page).integers(0, 256, 4096, np.uint8).tobytes()
    db.write_bytes(bytes(data))
    photo = write_photo(tmp_path / "q.jpg", 9)
    failed = 0
    for args in (["stats", cat], ["export", cat, "--format", "identifications", "--out", tmp_path / "o.csv"],
                 ["export", cat, "--format", "sightings", "--out", tmp_path / "s.csv"],
                 ["match", cat, photo], ["import", cat, photo, "--no-detect", "--no-embed"]):
        r = cli(*args)
        assert "Traceback" not in r.err and r.rc in (0, 1, 2), (args, r.err)
        if r.rc == 2 and "catalog.sqlite" in r.err:
            failed += 1
            assert "damaged" in r.err or "no active model" in r.err or "not a database" in r.err, (args, r.err)
    assert failed >= 1  # the damage is reported, naming the file, by the commands that read that table


@pytest.mark.parametrize("value,fragment", [
    ("abc", "schema_version 'abc' is not a whole number"),
    ("3.0", "schema_version '3.0' is not a whole number"),
    ("-5", "schema_version '-5' is not a whole number"),
    ("0", "schema_version '0' is not a whole number"),
    ("", "schema_version '' is not a whole number"),
    ("٣", "is not a whole number"),  # an Arabic-Indic digit: isdecimal, not ASCII
    ("1", "cannot upgrade the catalog from schema 1 to"),  # 1, but with the newer tables and columns
])
def test_bad_schema_version_gives_a_clear_message_and_changes_nothing(tmp_path, value, fragment):
    cat = saved_catalog(tmp_path / "cat", tmp_path / "field")
    conn = sqlite3.connect(cat / "catalog.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [value])
    conn.commit()
    conn.close()
    before = _raw_rows(cat / "catalog.sqlite")
    for args in (["stats", cat], ["import", cat, tmp_path / "field", "--no-detect", "--no-embed"],
                 ["export", cat, "--format", "kaggle", "--out", tmp_path / "k.csv"]):
        r = cli(*args)
        assert r.rc == 2 and fragment in r.err and "catalog.sqlite" in r.err and "Traceback" not in r.err, \
            (args, r.err)
    assert _raw_rows(cat / "catalog.sqlite") == before


# ---------------------------------------------------------------------------------- disk full
def test_disk_full_during_import_copy_and_export(tmp_path):
    with _tmpfs("1m") as mnt:
        cat = saved_catalog(mnt / "cat", tmp_path / "field", n=2)
        big = [tmp_path / "big" / f"b{i}.png" for i in range(6)]
        for i, p in enumerate(big):  # ~200 KB each of noise: five of them fill the 1 MB disk
            p.parent.mkdir(exist_ok=True)
            from PIL import Image

            Image.fromarray(np.random.default_rng(i).integers(0, 255, (260, 260, 3), dtype=np.uint8)).save(p)
        integrity, rows = catalog_state(cat)
        old = mnt / "old.csv"
        old.write_text("image,individual_id\nx.jpg,A\n" * 50)
        r = cli("import", cat, tmp_path / "big", "--copy", "--no-detect", "--no-embed")
        assert r.rc == 2 and "Traceback" not in r.err, r.err
        assert ("writing into the catalog failed (No space left on device)" in r.err
                or "the disk is full" in r.err), r.err
        assert "cannot read" not in r.err
        with Catalog.open(cat, mode="auto") as c:
            assert c.integrity_check() == "ok"
            imported = len(list(c.iter_photos())) - len(rows["photos"])
            for ph in c.iter_photos():  # every photo the catalog lists has its complete copy
                if ph.copied:
                    assert c.resolve_path(ph).stat().st_size == ph.size
        assert 0 <= imported < len(big)
        assert f"{imported} photo" in r.err  # says how far it got
        # an export onto the full disk: says writing failed, keeps the old file
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
            while True:  # fill what the failed copy freed
                f.write(b"\0" * 4096)
                f.flush()
        keep = old.read_bytes()
        r = cli("export", cat, "--format", "identifications", "--out", old)
        assert r.rc == 2 and "Traceback" not in r.err, r.err
        assert "writing the export failed (No space left on device)" in r.err, r.err
        assert old.read_bytes() == keep
        assert sorted(p.name for p in mnt.iterdir()) == ["cat", "filler", "old.csv"]  # no temporary file left
