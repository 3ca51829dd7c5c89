"""The Catalog store: creation, locking, schema versions and migration, append-only tables."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.catalog import SCHEMA_VERSION, Catalog, CatalogError, CatalogLockedError, ReadOnlyError

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
  width INTEGER, height INTEGER, taken_at TEXT, latitude FLOAT, longitude FLOAT, camera TEXT,
  orientation INTEGER, imported_at TEXT NOT NULL);
CREATE UNIQUE INDEX idx_photos_sha256 ON photos (sha256);
CREATE TABLE actions (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, photo_id INTEGER REFERENCES photos(id),
  who TEXT, at TEXT NOT NULL, description TEXT, reverses INTEGER REFERENCES actions(id),
  redoes INTEGER REFERENCES actions(id), effects TEXT);
CREATE TABLE boxes (id INTEGER PRIMARY KEY, photo_id INTEGER NOT NULL REFERENCES photos(id), x0 FLOAT,
  y0 FLOAT, x1 FLOAT, y1 FLOAT, source TEXT NOT NULL, confidence FLOAT, confirmed INTEGER NOT NULL,
  who TEXT, created_at TEXT NOT NULL, action_id INTEGER REFERENCES actions(id));
CREATE TABLE individuals (id INTEGER PRIMARY KEY, code TEXT NOT NULL, name TEXT, notes TEXT,
  created_at TEXT NOT NULL, merged_into INTEGER REFERENCES individuals(id));
CREATE UNIQUE INDEX idx_individuals_code ON individuals (code);
CREATE TABLE identifications (id INTEGER PRIMARY KEY, photo_id INTEGER NOT NULL REFERENCES photos(id),
  individual_id INTEGER REFERENCES individuals(id), how TEXT NOT NULL, who TEXT, at TEXT NOT NULL,
  model_version TEXT, action_id INTEGER REFERENCES actions(id));
CREATE TABLE match_decisions (id INTEGER PRIMARY KEY, action_id INTEGER REFERENCES actions(id),
  query_photo_id INTEGER NOT NULL REFERENCES photos(id), individual_id INTEGER REFERENCES individuals(id),
  rank INTEGER, score FLOAT, decision TEXT NOT NULL, model_version TEXT, who TEXT, at TEXT NOT NULL,
  reverses INTEGER REFERENCES match_decisions(id));
CREATE TABLE models (version TEXT PRIMARY KEY, path TEXT NOT NULL, metrics TEXT, created_at TEXT NOT NULL);
CREATE TABLE embeddings (photo_id INTEGER NOT NULL REFERENCES photos(id), model_version TEXT NOT NULL,
  dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (photo_id, model_version));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO photos VALUES (1, '/old/a.jpg', 'aa', 10, 40, 30, '2019-07-01T10:00:00', -20.5, 57.1, 'Nikon', 1,
  '2020-01-01T00:00:00');
INSERT INTO boxes VALUES (1, 1, 1, 2, 30, 20, 'manual', NULL, 1, 'ann', '2020-01-01T00:00:01', NULL);
INSERT INTO individuals VALUES (1, 'HW-0001', 'Notch', NULL, '2020-01-01T00:00:00', NULL);
INSERT INTO identifications VALUES (1, 1, 1, 'imported', 'ann', '2020-01-01T00:00:02', NULL, NULL);
"""


def test_create_then_open_has_current_schema_and_pragmas(tmp_path):
    Catalog.create(tmp_path / "c").close()
    for sub in ("models", "thumbnails"):
        assert (tmp_path / "c" / sub).is_dir()
    with Catalog.open(tmp_path / "c") as cat:
        assert cat.schema_version == SCHEMA_VERSION
        assert cat._query("PRAGMA journal_mode")[0][0] == "wal"
        assert cat._query("PRAGMA foreign_keys")[0][0] == 1
        assert cat.integrity_check() == "ok"


def test_create_refuses_existing_and_open_refuses_non_catalog(tmp_path):
    Catalog.create(tmp_path / "c").close()
    with pytest.raises(CatalogError, match="already exists"):
        Catalog.create(tmp_path / "c")
    with pytest.raises(CatalogError, match="not a flukeid catalog"):
        Catalog.open(tmp_path / "nothing")


def test_v1_catalog_migrates_and_keeps_data(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / "catalog.sqlite")
    conn.executescript(V1_SCHEMA)
    conn.close()
    with Catalog.open(folder) as cat:
        assert cat.schema_version == SCHEMA_VERSION
        ph = cat.photo(1)
        assert (ph.path, ph.latitude, ph.copied) == ("/old/a.jpg", -20.5, False)
        box = cat.current_box(1)
        assert box.box == (1.0, 2.0, 30.0, 20.0) and box.confirmed and not box.junk
        assert cat.individual(cat.current_individual(1)).name == "Notch"
        cat.put_embedding(1, "v", np.ones(4, np.float16), dtype="float16")
        assert cat.embedding(1, "v").tolist() == [1.0] * 4
        assert cat.integrity_check() == "ok"


def test_newer_schema_is_refused_with_clear_message(tmp_path):
    Catalog.create(tmp_path / "c").close()
    conn = sqlite3.connect(tmp_path / "c" / "catalog.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 5)])
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError, match=rf"newer flukeid \(schema {SCHEMA_VERSION + 5} > {SCHEMA_VERSION}\)"):
        Catalog.open(tmp_path / "c")


def test_damaged_database_is_refused(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "catalog.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CatalogError, match="catalog.sqlite"):
        Catalog.open(folder)


def test_second_writer_refused_or_read_only_naming_the_holder(tmp_path):
    first = Catalog.create(tmp_path / "c")
    first.add_photo(path="/a.jpg", sha256="x", size=1)
    with pytest.raises(CatalogLockedError, match=r"process \d+"):
        Catalog.open(tmp_path / "c", mode="write")
    ro = Catalog.open(tmp_path / "c", mode="auto")
    assert ro.readonly and "process" in ro.readonly_reason
    assert ro.photo_count() == 1
    with pytest.raises(ReadOnlyError):
        ro.add_photo(path="/b.jpg", sha256="y", size=1)
    ro.close()
    first.close()
    with Catalog.open(tmp_path / "c", mode="write") as again:  # lock released on close
        assert not again.readonly


def test_transaction_is_all_or_nothing(catalog):
    with pytest.raises(RuntimeError):
        with catalog.transaction():
            catalog.add_photo(path="/a.jpg", sha256="a", size=1)
            raise RuntimeError("boom")
    assert catalog.photo_count() == 0


def test_boxes_are_versions_latest_is_current(catalog):
    pid = catalog.add_photo(path="/a.jpg", sha256="a", size=1)
    catalog.add_box(pid, (0, 0, 10, 10), source="auto", confidence=0.8)
    catalog.add_box(pid, (1, 1, 9, 9), source="manual", confirmed=True)
    assert catalog.current_box(pid).box == (1, 1, 9, 9)
    assert [b.source for b in catalog.box_history(pid)] == ["auto", "manual"]


def test_stats_count_no_fluke_photos_apart_from_the_unidentified(catalog):
    a, b, c = (catalog.add_photo(path=f"/{n}.jpg", sha256=n, size=1) for n in "abc")
    ind = catalog.add_individual("HW-0001")
    catalog.add_identification(a, ind, how="manual")
    catalog.add_box(b, None, source="manual", junk=True)  # marked "no fluke"
    st = catalog.stats()
    assert (st["photos"], st["identified_photos"], st["unidentified_photos"], st["no_fluke_photos"]) == (3, 1, 1, 1)
    catalog.add_box(b, (0, 0, 5, 5), source="manual", confirmed=True)  # the mark undone: a fluke again
    st = catalog.stats()
    assert (st["unidentified_photos"], st["no_fluke_photos"]) == (2, 0)
    assert c in catalog.unidentified_photo_ids()


def test_next_code_and_unique_codes(catalog):
    assert catalog.next_code() == "HW-0001"
    catalog.add_individual("HW-0041")
    catalog.add_individual("Notch")
    assert catalog.next_code() == "HW-0042"
    with pytest.raises(CatalogError, match="already used"):
        catalog.add_individual("Notch")


def test_models_registry_and_active_pointer(catalog, tmp_path):
    catalog.add_model("v1", catalog.models_dir / "v1", metrics={"top1": 0.5}, activate=True)
    catalog.add_model("v2", tmp_path / "elsewhere")
    assert catalog.active_model().version == "v1"
    assert catalog.models()[0].path == "models/v1"
    catalog.set_active_model("v2")
    assert catalog.active_model().version == "v2"
    with pytest.raises(CatalogError, match="no model"):
        catalog.set_active_model("v9")
    assert catalog.active_model().version == "v2"


def test_embeddings_roundtrip_and_missing(catalog):
    a = catalog.add_photo(path="/a.jpg", sha256="a", size=1)
    b = catalog.add_photo(path="/b.jpg", sha256="b", size=1)
    catalog.put_embedding(a, "m", np.arange(5, dtype=np.float32))
    ids, mat = catalog.embeddings("m")
    assert ids == [a] and mat.shape == (1, 5) and mat[0, 4] == 4
    assert catalog.photos_missing_embedding("m") == [b]


def test_read_mode_with_odd_folder_name(tmp_path):
    folder = tmp_path / "lab #1 % survey?"
    with Catalog.create(folder) as cat:
        cat.add_photo(path="/a.jpg", sha256="a", size=1)
    with Catalog.open(folder, mode="read") as ro:
        assert ro.readonly and ro.photo_count() == 1
        with pytest.raises(ReadOnlyError, match="read-only"):
            ro.set_meta("x", "y")


def test_catalog_usable_from_several_threads(catalog):
    import threading

    errors = []

    def work(k):
        try:
            for i in range(20):
                catalog.add_photo(path=f"/t{k}/{i}.jpg", sha256=f"{k}-{i}", size=1)
                catalog.photo_count()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and catalog.photo_count() == 80


def test_create_over_an_interrupted_creation(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    sqlite3.connect(folder / "catalog.sqlite").close()  # empty file: creation killed before commit
    with Catalog.create(folder) as cat:
        assert cat.schema_version == SCHEMA_VERSION
