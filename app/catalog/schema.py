"""The catalog's schema, built with sqlite-utils, and its migrations.

A fresh catalog is made by running every migration from an empty database, so a new catalog
and a migrated old one always end with the same schema. Each migration runs inside the
caller's transaction (DDL is transactional in SQLite): a failed migration changes nothing.

History:
    1. photos, boxes, individuals, identifications, match_decisions, actions, models,
       embeddings, meta.
    2. boxes.junk (a photo marked unusable), photos.copied (photo stored inside the catalog),
       embeddings.dtype (float16 vectors), an index for "current box / identification".
    3. indexes for undo/redo look-ups (actions.reverses/redoes, match_decisions.reverses) and
       for loading one model version's embeddings, so large catalogs stay fast.
    4. local_features (each photo's keypoints and descriptors, with the feature version and the
       box they were computed on; deleted with their photo) and calibrations (fitted calibrators,
       append-only: the latest row of a kind is the current one).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

SCHEMA_VERSION = 4


def _create_v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["photos"].create(
        {
            "id": int, "path": str, "sha256": str, "size": int, "width": int, "height": int,
            "taken_at": str, "latitude": float, "longitude": float, "camera": str,
            "orientation": int, "imported_at": str,
        },
        pk="id", not_null={"path", "sha256", "size", "imported_at"},
    )
    db["photos"].create_index(["sha256"], unique=True)
    db["actions"].create(
        {
            "id": int, "kind": str, "photo_id": int, "who": str, "at": str, "description": str,
            "reverses": int, "redoes": int, "effects": str,
        },
        pk="id", not_null={"kind", "at"},
        foreign_keys=[("photo_id", "photos", "id"), ("reverses", "actions", "id"), ("redoes", "actions", "id")],
    )
    db["boxes"].create(
        {
            "id": int, "photo_id": int, "x0": float, "y0": float, "x1": float, "y1": float,
            "source": str, "confidence": float, "confirmed": int, "who": str, "created_at": str,
            "action_id": int,
        },
        pk="id", not_null={"photo_id", "source", "confirmed", "created_at"},
        foreign_keys=[("photo_id", "photos", "id"), ("action_id", "actions", "id")],
    )
    db["individuals"].create(
        {"id": int, "code": str, "name": str, "notes": str, "created_at": str, "merged_into": int},
        pk="id", not_null={"code", "created_at"},
        foreign_keys=[("merged_into", "individuals", "id")],
    )
    db["individuals"].create_index(["code"], unique=True)
    db["identifications"].create(
        {
            "id": int, "photo_id": int, "individual_id": int, "how": str, "who": str, "at": str,
            "model_version": str, "action_id": int,
        },
        pk="id", not_null={"photo_id", "how", "at"},
        foreign_keys=[("photo_id", "photos", "id"), ("individual_id", "individuals", "id"),
                      ("action_id", "actions", "id")],
    )
    db["match_decisions"].create(
        {
            "id": int, "action_id": int, "query_photo_id": int, "individual_id": int, "rank": int,
            "score": float, "decision": str, "model_version": str, "who": str, "at": str,
            "reverses": int,
        },
        pk="id", not_null={"query_photo_id", "decision", "at"},
        foreign_keys=[("query_photo_id", "photos", "id"), ("individual_id", "individuals", "id"),
                      ("action_id", "actions", "id"), ("reverses", "match_decisions", "id")],
    )
    db["match_decisions"].create_index(["query_photo_id"])
    db["models"].create(
        {"version": str, "path": str, "metrics": str, "created_at": str},
        pk="version", not_null={"path", "created_at"},
    )
    db["embeddings"].create(
        {"photo_id": int, "model_version": str, "dim": int, "vector": bytes},
        pk=("photo_id", "model_version"), not_null={"dim", "vector"},
        foreign_keys=[("photo_id", "photos", "id")],
    )
    db["meta"].insert({"key": "schema_version", "value": "1"}, replace=True)


def _migrate_1_to_2(db: sqlite_utils.Database) -> None:
    db["boxes"].add_column("junk", int, not_null_default=0)
    db["photos"].add_column("copied", int, not_null_default=0)
    db["embeddings"].add_column("dtype", str, not_null_default="float32")
    db["boxes"].create_index(["photo_id", "id"], if_not_exists=True)
    db["identifications"].create_index(["photo_id", "id"], if_not_exists=True)
    db["identifications"].create_index(["individual_id"], if_not_exists=True)


def _migrate_2_to_3(db: sqlite_utils.Database) -> None:
    db["actions"].create_index(["reverses"], if_not_exists=True)
    db["actions"].create_index(["redoes"], if_not_exists=True)
    db["actions"].create_index(["photo_id"], if_not_exists=True)
    db["match_decisions"].create_index(["reverses"], if_not_exists=True)
    db["embeddings"].create_index(["model_version", "photo_id"], if_not_exists=True)


def _migrate_3_to_4(db: sqlite_utils.Database) -> None:
    # Plain DDL: sqlite-utils cannot declare ON DELETE CASCADE. The AUTOINCREMENT id grows with
    # every write (a recomputed photo gets a new id), so max(id) tells caches that features changed.
    db.execute(
        "CREATE TABLE local_features ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " photo_id INTEGER NOT NULL UNIQUE REFERENCES photos(id) ON DELETE CASCADE,"
        " feature_version INTEGER NOT NULL,"
        " n INTEGER NOT NULL,"
        " data BLOB NOT NULL,"
        " x0 FLOAT, y0 FLOAT, x1 FLOAT, y1 FLOAT,"  # the box they were computed on (NULL: whole photo)
        " computed_at TEXT NOT NULL)")
    db["calibrations"].create(
        {"id": int, "kind": str, "created_at": str, "format_version": int, "n_pairs": int, "n_same": int,
         "n_different": int, "data": str, "source": str},
        pk="id", not_null={"kind", "created_at", "data"},
    )
    db["calibrations"].create_index(["kind", "id"], if_not_exists=True)


# MIGRATIONS[n] takes a catalog at schema n-1 to schema n (0 = empty database).
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _create_v1,
    2: _migrate_1_to_2,
    3: _migrate_2_to_3,
    4: _migrate_3_to_4,
}
assert max(MIGRATIONS) == SCHEMA_VERSION


def read_version(db: sqlite_utils.Database) -> int:
    """The schema version recorded in ``meta`` (0 for an empty database).

    Raises:
        ValueError: the recorded value is not a whole number of at least 1 ('abc', '3.0', '-5').
    """
    if "meta" not in db.table_names():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if not row:
        return 0
    text = str(row[0]).strip()
    if not text.isdecimal() or not text.isascii() or int(text) < 1:
        raise ValueError(f"schema_version {row[0]!r} is not a whole number of at least 1")
    return int(text)


def migrate(db: sqlite_utils.Database, current: int) -> None:
    """Apply migrations ``current+1 .. SCHEMA_VERSION`` (inside the caller's transaction)."""
    for n in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[n](db)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", [str(n)])
