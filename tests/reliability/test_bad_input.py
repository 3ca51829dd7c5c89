"""Bad input through every reader: a clear message naming the file, the rest continues, saved work unchanged.

Already covered elsewhere (not repeated here): odd photo formats and a decompression bomb through
the import (tests/app/test_bad_photos.py), a symlinked folder loop (tests/app/test_importing.py),
bad label rows by line and a 40k-row streamed CSV (tests/model/test_records.py), damaged/missing/
newer bundles (tests/model/test_inference.py), newer schema and non-SQLite catalog files
(tests/app/test_catalog_store.py), QSettings with wrong types (tests/ui/test_robustness.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.catalog import Catalog, CatalogError
from app.services import decisions as D
from app.services import exporting
from app.services.importing import import_labelled, import_photos
from model.api import (
    FORMULA_PREFIXES,
    BundleError,
    DataError,
    Engine,
    ImageError,
    load_image,
    open_labels,
    read_labels,
    verify_bundle,
)
from tests.app.conftest import FakeDetector, write_photo
from tests.model.test_records import streaming_peak
from tests.reliability.conftest import snapshot

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------ photos
def _bomb(p: Path) -> None:
    Image.new("L", (10, 10)).save(p)
    data = bytearray(p.read_bytes())  # declare 40000 x 40000 pixels in the PNG header
    data[16:24] = struct.pack(">II", 40000, 40000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    p.write_bytes(bytes(data))


def _truncated(p: Path) -> None:
    write_photo(p, 5, size=(320, 240))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _rgb(seed: int, shape=(40, 60, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


# name -> (writer, expected: None when the photo must load, else a fragment of the message)
BAD_PHOTOS = {
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty"),
    "truncated.jpg": (_truncated, "truncated"),
    "text.jpg": (lambda p: p.write_text("this is a field note, not a photo\n" * 20), "not a recognised image"),
    "bomb.png": (_bomb, "decompression bomb"),
}
GOOD_PHOTOS = {
    "sixteen.png": lambda p: Image.fromarray(
        np.random.default_rng(1).integers(0, 65535, (40, 60), dtype=np.uint16)).save(p),
    "cmyk.jpg": lambda p: Image.fromarray(_rgb(2)).convert("CMYK").save(p),
    "palette.png": lambda p: Image.fromarray(_rgb(3)).convert("P").save(p),
    "alpha.png": lambda p: Image.fromarray(_rgb(4, (40, 60, 4)), "RGBA").save(p),
    "palette transparent.png": lambda p: Image.fromarray(_rgb(5)).convert("P").save(p, transparency=0),
    "rotated.jpg": lambda p: write_photo(p, 6, size=(60, 40), exif={0x0112: 6}),  # 90 degrees
    "name with spaces ÿ 鯨.jpg": lambda p: write_photo(p, 7),
}


@pytest.mark.parametrize("name", sorted(BAD_PHOTOS))
def test_load_image_refuses_bad_photo_naming_file_and_problem(tmp_path, name):
    writer, expected = BAD_PHOTOS[name]
    p = tmp_path / name
    writer(p)
    with pytest.raises(ImageError) as info:
        load_image(p)
    msg = str(info.value)
    assert name in msg and expected in msg, msg


@pytest.mark.parametrize("name", sorted(GOOD_PHOTOS))
def test_load_image_reads_odd_but_valid_photos(tmp_path, name):
    p = tmp_path / name
    GOOD_PHOTOS[name](p)
    arr = load_image(p)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    if name == "rotated.jpg":  # stored 60x40 with orientation 6: shown 40 wide, 60 high
        assert arr.shape[:2] == (60, 40)
    else:
        assert arr.shape[:2] == (40, 60) or name.startswith("name with")


def test_load_image_permission_denied(tmp_path, monkeypatch):
    """Root reads any file, so the denial is simulated at open(); the real chmod case runs as non-root."""
    p = write_photo(tmp_path / "secret.jpg", 2)
    if not IS_ROOT and sys.platform != "win32":
        p.chmod(0)
    else:
        real_open = Image.open

        def denied(fp, *a, **kw):
            if str(fp) == str(p):
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *a, **kw)

        monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError, match=r"secret\.jpg.*permission denied"):
        load_image(p)


@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root can search a directory without x permission")
def test_folder_without_search_permission_is_reported(catalog, tmp_path):
    d = tmp_path / "locked"
    write_photo(d / "a.jpg", 1)
    d.chmod(0o600)
    try:
        rep = import_photos(catalog, [d])
    finally:
        d.chmod(0o755)
    assert catalog.photo_count() == 0 and rep.error_count >= 1


def test_import_of_a_mixed_folder_reports_each_bad_file_and_keeps_saved_work(catalog, tmp_path):
    # saved work first: two photos, one identified, one box edited
    saved = [write_photo(tmp_path / "before" / f"s{i}.jpg", 100 + i) for i in range(2)]
    ids = import_photos(catalog, saved, detector=FakeDetector()).imported
    D.new_individual(catalog, ids[0], model_version="m")
    D.set_box(catalog, ids[1], (2, 2, 40, 30))
    before = snapshot(catalog)

    d = tmp_path / "field"
    d.mkdir()
    for name, (writer, _) in BAD_PHOTOS.items():
        writer(d / name)
    for name, writer in GOOD_PHOTOS.items():
        writer(d / name)
    shutil.copy(saved[0], d / "copy of saved.jpg")  # a duplicate of saved work
    os.symlink(d / "self.jpg", d / "self.jpg")  # a file symlink loop (ELOOP)
    os.symlink(d, d / "loop")  # a folder loop
    rep = import_photos(catalog, [d], detector=FakeDetector())

    assert len(rep.imported) == len(GOOD_PHOTOS), rep.errors
    failed = {Path(f).name: m for f, m in rep.errors}
    for name, (_, expected) in BAD_PHOTOS.items():
        assert name in failed and expected in failed[name], (name, failed.get(name))
    assert [Path(f).name for f, _ in rep.duplicates] == ["copy of saved.jpg"]
    assert not any(Path(f).name == "self.jpg" for f in map(str, catalog_paths(catalog)))
    after = snapshot(catalog)
    for table, rows in before.items():  # every saved row is still there, unchanged
        assert after[table][: len(rows)] == rows, table
    assert catalog.integrity_check() == "ok"


def catalog_paths(cat: Catalog) -> list[str]:
    return [p.path for p in cat.photos()]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns, then load_image decides
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=4096), prefix=st.sampled_from(
    [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"GIF89a"]))
def test_random_bytes_as_a_photo_load_or_raise_image_error(tmp_path, data, prefix):
    p = tmp_path / "random.jpg"
    p.write_bytes(prefix + data)
    try:
        arr = load_image(p)
    except ImageError as exc:
        assert "random.jpg" in str(exc)
    else:
        assert arr.dtype == np.uint8 and arr.ndim == 3


# --------------------------------------------------------------------------------------------- CSVs
BAD_CSVS = {
    "missing_columns.csv": (b"photo,whale\na.jpg,W1\n", "column"),
    "latin1.csv": ("image,individual_id\nbaleine_é.jpg,W1\n".encode("latin-1"), "UTF-8"),
    "utf16.csv": ("image,individual_id\na.jpg,W1\n".encode("utf-16"), "UTF-8"),
    "empty.csv": (b"", "empty"),
}


@pytest.mark.parametrize("name", sorted(BAD_CSVS))
def test_bad_csv_is_refused_by_the_reader_and_the_import_naming_the_file(tmp_path, catalog, name):
    content, expected = BAD_CSVS[name]
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        list(open_labels(p))
    assert name in str(info.value)
    with pytest.raises(DataError) as info:
        read_labels(p, tmp_path, check_images=False)
    assert name in str(info.value)
    before = snapshot(catalog)
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        import_labelled(catalog, p, tmp_path)
    assert snapshot(catalog) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048), header=st.sampled_from([b"", b"image,individual_id\n", b"Image,Id\n",
                                                               b"image,individual_id,x0,y0,x1,y1\n"]))
def test_random_csv_bytes_give_rows_or_data_error(tmp_path, body, header):
    p = tmp_path / "random.csv"
    p.write_bytes(header + body)
    try:
        rows = list(open_labels(p))
    except DataError as exc:
        assert "random.csv" in str(exc)
    else:
        assert all(r.path.name for r in rows)
    try:
        read_labels(p, tmp_path, check_images=False)
    except DataError as exc:
        assert "random.csv" in str(exc)


@pytest.mark.slow
def test_million_row_csv_streams_in_bounded_time_and_memory(tmp_path):
    p = tmp_path / "million.csv"
    n = 1_000_000
    with open(p, "w") as f:
        f.write("image,individual_id\n")
        f.writelines(f"img_{i}.jpg,W{i % 5000}\n" for i in range(n))
    # CPU time of this thread, not wall time: a busy shared machine (CI next to other jobs) slowed
    # the wall clock past a 120 s bound once, though the reader itself takes about 9 s of CPU
    t0 = time.thread_time()
    assert sum(1 for _ in open_labels(p)) == n
    assert time.thread_time() - t0 < 60
    # memory: tracemalloc slows reading ~10x, so measure the peak over the first 100,000 rows
    count, peak = streaming_peak(p, 100_000)
    assert count == 100_000
    assert peak < 3_000_000, f"peak {peak:,} bytes: rows are not streamed"


FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_every_export_escapes_formula_like_cells(catalog, tmp_path):
    d = tmp_path / "in"
    dated = {0x8769: {36867: "2020:01:01 10:00:00"}}  # the sightings table lists dated photos only
    paths = [write_photo(d / f"{f.strip()[:1] or 'x'}{i}=1+1.jpg", 300 + i, exif=dated) for i, f in enumerate(FORMULAS)]
    paths.append(write_photo(d / "=cmd.jpg", 400))
    ids = import_photos(catalog, paths, detector=FakeDetector()).imported
    for pid, code in zip(ids, FORMULAS):
        D.new_individual(catalog, pid, code=code, who="=evil()", model_version="+m")
    for fmt in exporting.FORMATS:
        out = tmp_path / f"{fmt}.csv"
        exporting.export(catalog, fmt, out)
        with open(out, newline="", encoding="utf-8") as f:
            cells = [c for row in csv.reader(f) for c in row]
        risky = [c for c in cells if c.startswith(FORMULA_PREFIXES) and not _is_number(c)]
        assert not risky, (fmt, risky)
        codes = {c.lstrip("'") for c in cells}
        assert {"=HYPERLINK(\"http://x\")", "@SUM(A1)"} <= codes, fmt  # the data survives, escaped


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------ bundles
def _rewrite_manifest(bundle: Path, change) -> None:
    from model.api import finalize_bundle, staging_dir

    m = json.loads((bundle / "manifest.json").read_text())
    change(m)
    tmp = bundle.parent / (bundle.name + "-old")
    bundle.rename(tmp)
    stage = staging_dir(bundle)
    for name in m["files"]:
        shutil.copy2(tmp / name, stage / name)
    for k in ("files", "format_version", "version", "created"):
        m.pop(k, None)
    finalize_bundle(stage, bundle, m)
    shutil.rmtree(tmp)


def test_manifest_input_size_that_disagrees_with_the_onnx_is_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    _rewrite_manifest(bad, lambda m: m["preprocessing"].update(input_height=96, input_width=96))
    verify_bundle(bad)  # checksums are fine: only the content disagrees
    with pytest.raises(BundleError, match=r"branch\.onnx.*input"):
        Engine.load(bad, device="cpu")


@pytest.mark.parametrize("damage", ["missing_branch", "flipped_byte", "newer_format", "manifest_garbage"])
def test_damaged_bundle_never_replaces_the_active_model(catalog, tiny_bundle, damage):
    from app.services.retraining import activate

    good = catalog.models_dir / "good"
    shutil.copytree(tiny_bundle, good)
    catalog.add_model("good", good, activate=True)
    bad = catalog.models_dir / "bad"
    shutil.copytree(tiny_bundle, bad)
    if damage == "missing_branch":
        (bad / "branch.onnx").unlink()
    elif damage == "flipped_byte":
        data = bytearray((bad / "head.onnx").read_bytes())
        data[len(data) // 2] ^= 0x01
        (bad / "head.onnx").write_bytes(bytes(data))
    elif damage == "newer_format":
        m = json.loads((bad / "manifest.json").read_text())
        m["format_version"] = 999
        (bad / "manifest.json").write_text(json.dumps(m))
    else:
        (bad / "manifest.json").write_bytes(b"\x00\xff not json")
    catalog.add_model("bad", bad)
    before = snapshot(catalog)
    with pytest.raises(BundleError) as info:
        activate(catalog, "bad")
    assert str(bad) in str(info.value)
    assert catalog.active_model().version == "good"
    assert snapshot(catalog) == before


# ----------------------------------------------------------------------------------------- catalogs
def _saved_catalog(folder: Path, photos_dir: Path) -> Catalog:
    cat = Catalog.create(folder)
    ids = import_photos(cat, [write_photo(photos_dir / f"c{i}.jpg", 500 + i) for i in range(3)],
                        detector=FakeDetector()).imported
    D.new_individual(cat, ids[0], model_version="m")
    return cat


def test_newer_schema_leaves_the_file_byte_for_byte_unchanged(tmp_path):
    from app.catalog.schema import SCHEMA_VERSION

    _saved_catalog(tmp_path / "c", tmp_path / "p").close()
    db = tmp_path / "c" / "catalog.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    data = db.read_bytes()
    for mode in ("write", "auto", "read"):
        with pytest.raises(CatalogError, match=r"catalog\.sqlite.*newer flukeid"):
            Catalog.open(tmp_path / "c", mode=mode)
    assert db.read_bytes() == data


@pytest.mark.parametrize("where", ["header", "middle"])
def test_random_bytes_over_the_database_are_refused_or_caught(tmp_path, where):
    """Random bytes over the header: refused at open. Over a data page: integrity_check reports it."""
    cat = _saved_catalog(tmp_path / "c", tmp_path / "p")
    for _ in range(5):
        cat.add_photo(path=f"/x/{_}.jpg", sha256=f"pad{_}" * 8, size=1)
    cat._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cat.close()
    db = tmp_path / "c" / "catalog.sqlite"
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(0)
    start = 0 if where == "header" else 4096 * 2
    data[start:start + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    try:
        opened = Catalog.open(tmp_path / "c")
    except CatalogError as exc:
        assert "catalog.sqlite" in str(exc)
        assert db.read_bytes() == bytes(data)  # refusing does not touch the file
        return
    try:
        assert where == "middle"
        assert opened.integrity_check() != "ok"
    finally:
        opened.close()


def test_unwritable_catalog_folder_opens_read_only_with_the_reason(tmp_path, monkeypatch):
    """Root writes anywhere, so the folder's refusal is simulated at the lock file (the first write)."""
    from app.catalog import lock as lock_mod
    from app.catalog.store import ReadOnlyError

    cat = _saved_catalog(tmp_path / "c", tmp_path / "p")
    before = snapshot(cat)
    cat.close()

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(lock_mod.WriteLock, "acquire", refuse)
    with pytest.raises(CatalogError, match=r"not writable.*Permission denied"):
        Catalog.open(tmp_path / "c", mode="write")
    with Catalog.open(tmp_path / "c", mode="auto") as ro:
        assert ro.readonly and "not writable" in ro.readonly_reason
        assert snapshot(ro) == before
        with pytest.raises(ReadOnlyError):
            D.new_individual(ro, ro.photos()[1].id, model_version="m")
    monkeypatch.undo()
    with Catalog.open(tmp_path / "c") as cat:
        assert snapshot(cat) == before
