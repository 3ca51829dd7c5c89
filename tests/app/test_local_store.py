"""The catalog's local-feature and calibration storage: schema 3 -> 4 migration, staleness, cascade."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from app.catalog import SCHEMA_VERSION, Catalog
from app.catalog.schema import MIGRATIONS


def _v3_catalog(folder) -> None:
    """A catalog exactly as schema 3 left it: one photo with a box, identified."""
    folder.mkdir()
    db = sqlite_utils.Database(folder / "catalog.sqlite")
    for n in (1, 2, 3):
        MIGRATIONS[n](db)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '3')")
    db.execute("INSERT INTO photos (id, path, sha256, size, imported_at) VALUES (1, '/a.jpg', 'aa', 1, 't')")
    db.execute("INSERT INTO boxes (photo_id, x0, y0, x1, y1, source, confirmed, created_at) "
               "VALUES (1, 1, 2, 30, 20, 'manual', 1, 't')")
    db.conn.commit()
    db.conn.close()


def test_schema_3_catalog_migrates_to_local_features(tmp_path):
    _v3_catalog(tmp_path / "old")
    assert SCHEMA_VERSION == 4
    with Catalog.open(tmp_path / "old") as cat:
        assert cat.schema_version == 4
        assert {"local_features", "calibrations"} <= set(cat._db.table_names())
        # the photo has never had features: it is missing, and storing them works
        assert cat.photos_missing_local_features(1) == [1]
        cat.put_local_features(1, feature_version=1, n=3, data=b"abc", box=(1, 2, 30, 20))
        assert cat.photos_missing_local_features(1) == []
        assert cat.current_box(1).box == (1.0, 2.0, 30.0, 20.0)  # old data kept
        assert cat.integrity_check() == "ok"


def test_missing_means_no_row_other_version_or_changed_box(catalog):
    a = catalog.add_photo(path="/a.jpg", sha256="a", size=1)
    b = catalog.add_photo(path="/b.jpg", sha256="b", size=1)
    c = catalog.add_photo(path="/c.jpg", sha256="c", size=1)
    junk = catalog.add_photo(path="/j.jpg", sha256="j", size=1)
    catalog.add_box(a, (0, 0, 10, 10), source="auto")
    catalog.add_box(junk, None, source="manual", junk=True)
    assert catalog.photos_missing_local_features(2) == [a, b, c]  # unusable photos are left out
    catalog.put_local_features(a, feature_version=2, n=1, data=b"x", box=(0, 0, 10, 10))
    catalog.put_local_features(b, feature_version=2, n=1, data=b"x", box=None)  # no box: the whole photo
    catalog.put_local_features(c, feature_version=1, n=1, data=b"x", box=None)
    assert catalog.photos_missing_local_features(2) == [c]  # an old feature version
    catalog.add_box(a, (0, 0, 10, 10), source="manual", confirmed=True)  # same box confirmed: still fresh
    assert catalog.photos_missing_local_features(2) == [c]
    catalog.add_box(a, (1, 0, 10, 10), source="manual")  # the box moved: stale
    assert catalog.photos_missing_local_features(2) == [a, c]
    catalog.add_box(b, (0, 0, 5, 5), source="manual")  # a box drawn where there was none: stale
    assert catalog.photos_missing_local_features(2) == [a, b, c]


def test_put_replaces_and_marker_changes(catalog):
    a = catalog.add_photo(path="/a.jpg", sha256="a", size=1)
    m0 = catalog.change_marker()
    catalog.put_local_features(a, feature_version=1, n=2, data=b"one", box=None)
    m1 = catalog.change_marker()
    assert m1 != m0
    stamp = catalog.local_feature_stamps()
    catalog.put_local_features(a, feature_version=1, n=5, data=b"two", box=(1, 1, 4, 4))
    m2 = catalog.change_marker()
    assert m2 != m1  # a recomputation (same count of rows) still tells caches
    assert catalog.local_feature_stamps()[a] > stamp[a]
    rec = catalog.local_features(a)
    assert (rec.n, rec.data, rec.box, rec.feature_version) == (5, b"two", (1.0, 1.0, 4.0, 4.0), 1)
    assert [r.photo_id for r in catalog.iter_local_features()] == [a]
    catalog.delete_local_features(a)
    assert catalog.local_features(a) is None and catalog.change_marker() != m2


def test_iter_local_features_in_batches(catalog):
    ids = [catalog.add_photo(path=f"/{i}.jpg", sha256=str(i), size=1) for i in range(7)]
    for i in ids:
        catalog.put_local_features(i, feature_version=1, n=i, data=bytes([i]), box=None)
    assert [r.photo_id for r in catalog.iter_local_features(batch=3)] == ids
    assert [r.n for r in catalog.iter_local_features([ids[5], ids[1], 999], batch=1)] == [ids[1], ids[5]]


def test_deleting_a_photo_deletes_its_features(catalog):
    a = catalog.add_photo(path="/a.jpg", sha256="a", size=1)
    catalog.put_local_features(a, feature_version=1, n=1, data=b"x", box=None)
    with catalog.transaction():
        catalog._conn.execute("DELETE FROM photos WHERE id = ?", [a])
    assert catalog._query("SELECT count(*) FROM local_features")[0][0] == 0


def test_features_need_an_existing_photo(catalog):
    with pytest.raises(sqlite3.IntegrityError):
        catalog.put_local_features(42, feature_version=1, n=1, data=b"x", box=None)


def test_calibrations_latest_of_a_kind_is_current(catalog):
    assert catalog.calibration("local") is None
    catalog.add_calibration("local", {"v": 1}, n_pairs=40, n_same=10, n_different=30, format_version=1,
                            source="default.json")
    catalog.add_calibration("fused:m1", {"v": 2}, n_pairs=50, n_same=20, n_different=30)
    catalog.add_calibration("local", {"v": 3}, n_pairs=60, n_same=25, n_different=35)
    cur = catalog.calibration("local")
    assert (cur.data, cur.n_pairs, cur.n_same, cur.source) == ({"v": 3}, 60, 25, "catalog")
    assert catalog.calibration("fused:m1").data == {"v": 2}
    assert [c.data["v"] for c in catalog.calibrations()] == [1, 2, 3]
