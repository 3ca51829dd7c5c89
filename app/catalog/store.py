"""The Catalog store: one folder holding ``catalog.sqlite``, ``models/``, ``thumbnails/``, ``photos/``.

All writes go through :meth:`Catalog.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a
multi-row change is all-or-nothing, even when the process is killed. The database runs in WAL
mode with foreign keys on; durable transactions (decisions) use ``synchronous=FULL``.

Decision tables (actions, match_decisions, identifications, boxes) are append-only: the store
has no method that updates or deletes their rows. The "current" box or identification of a
photo is its latest row.

One :class:`Catalog` object may be used from several threads: a re-entrant lock serialises
access to its one connection.

Why this is one module although it is over 600 lines: it has one job, the catalog's storage
API over one SQLite connection. Every per-table method is a few lines of SQL that leans on the
same invariants: writes only inside :meth:`Catalog.transaction` (which refuses read-only mode,
checks the file is still the one opened, and turns database errors into messages naming the
file), reads through ``_query`` under the connection's lock, and no method that updates or
deletes a row of an append-only table. Split into mixin classes, the photos, decisions and
models methods would each reach into the host's private ``_conn``/``_query``/``_insert`` from
another file, and the SQL-safety checks (tests/reliability/test_safety.py) would lose the one
place they read. What is not storage lives elsewhere already: schema and migrations
(:mod:`app.catalog.schema`), record types (:mod:`app.catalog.records`), the write lock
(:mod:`app.catalog.lock`). Should it grow much further, the seam is opening, closing and
transactions (about 500 lines) here and the per-table accessors (photos and boxes;
individuals, identifications, decisions and actions; models and embeddings) as mixins.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import sqlite_utils

from app.catalog.lock import LockHolder, WriteLock, current_user
from app.catalog.records import (
    Action,
    BoxRecord,
    CalibrationRecord,
    Identification,
    Individual,
    LocalFeatureRecord,
    MatchDecision,
    ModelRecord,
    Photo,
)
from app.catalog.schema import SCHEMA_VERSION, migrate, read_version
from model.errors import FlukeidError  # errors only: importing model.api would load onnxruntime, cv2, faiss

DB_NAME = "catalog.sqlite"
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another program's lock on the database
CODE_PREFIX = "HW-"


class CatalogError(FlukeidError):
    """A catalog cannot be created, opened or changed (the message says which and why)."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's write lock."""

    def __init__(self, folder: Path, holder: LockHolder):
        self.holder = holder
        super().__init__(f"{folder}: catalog is open for writing by {holder.describe()}")


class CatalogTooNewError(CatalogError):
    """The catalog was saved by a newer flukeid (a schema this program does not know)."""


class ReadOnlyError(CatalogError):
    """A change was attempted on a catalog opened read-only."""


def now() -> str:
    """The current UTC time as ISO-8601 with microseconds (sortable text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _photo(row: sqlite3.Row) -> Photo:
    return Photo(
        id=row["id"], path=row["path"], sha256=row["sha256"], size=row["size"], width=row["width"],
        height=row["height"], taken_at=row["taken_at"], latitude=row["latitude"],
        longitude=row["longitude"], camera=row["camera"], orientation=row["orientation"],
        imported_at=row["imported_at"], copied=bool(row["copied"]),
    )


def _box(row: sqlite3.Row) -> BoxRecord:
    coords = (row["x0"], row["y0"], row["x1"], row["y1"])
    return BoxRecord(
        id=row["id"], photo_id=row["photo_id"],
        box=None if any(v is None for v in coords) else tuple(float(v) for v in coords),
        source=row["source"], confidence=row["confidence"], confirmed=bool(row["confirmed"]),
        junk=bool(row["junk"]), who=row["who"], created_at=row["created_at"], action_id=row["action_id"],
    )


def _individual(row: sqlite3.Row) -> Individual:
    return Individual(id=row["id"], code=row["code"], name=row["name"], notes=row["notes"],
                      created_at=row["created_at"], merged_into=row["merged_into"])


def _identification(row: sqlite3.Row) -> Identification:
    return Identification(id=row["id"], photo_id=row["photo_id"], individual_id=row["individual_id"],
                          how=row["how"], who=row["who"], at=row["at"],
                          model_version=row["model_version"], action_id=row["action_id"])


def _decision(row: sqlite3.Row) -> MatchDecision:
    return MatchDecision(
        id=row["id"], action_id=row["action_id"], query_photo_id=row["query_photo_id"],
        individual_id=row["individual_id"], rank=row["rank"], score=row["score"],
        decision=row["decision"], model_version=row["model_version"], who=row["who"], at=row["at"],
        reverses=row["reverses"],
    )


def _action(row: sqlite3.Row) -> Action:
    return Action(id=row["id"], kind=row["kind"], photo_id=row["photo_id"], who=row["who"], at=row["at"],
                  description=row["description"] or "", reverses=row["reverses"], redoes=row["redoes"],
                  effects=json.loads(row["effects"] or "[]"))


def database_failure(db_path: Path, exc: sqlite3.DatabaseError) -> CatalogError:
    """A CatalogError naming the database file and saying, in words, what a sqlite3 error means."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        why = (f"another program kept the catalog database locked for more than {BUSY_TIMEOUT_S:g} s ({text}); "
               "close it (or wait until it has finished) and try again")
    elif "readonly" in low or "read-only" in low:
        why = f"the catalog database cannot be written ({text}); check the permissions of the file and its folder"
    elif "full" in low:
        why = f"writing the catalog database failed: the disk is full ({text}); nothing of this change was saved"
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        why = f"the catalog database is damaged ({text}); restore catalog.sqlite from a backup"
    elif "disk i/o" in low or "unable to open" in low:
        why = f"the catalog database cannot be read or written ({text})"
    else:
        why = f"catalog database error ({text})"
    return CatalogError(f"{db_path}: {why}")


def _unwritable(folder: Path, db_path: Path) -> str | None:
    """Why this process cannot write the catalog (read-only file system, folder or database file), or None.

    WAL mode must create ``catalog.sqlite-wal`` and ``-shm`` beside the database, so an unwritable
    folder makes the catalog unwritable even when its files are writable.
    """
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the catalog is on a read-only file system"
    except (OSError, AttributeError):  # statvfs is POSIX-only
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the catalog folder is not writable (permission denied)"
    if db_path.exists() and not os.access(db_path, os.W_OK):
        return f"{DB_NAME} is read-only (file permissions)"
    return None
def _local_features(row: sqlite3.Row) -> LocalFeatureRecord:
    coords = (row["x0"], row["y0"], row["x1"], row["y1"])
    return LocalFeatureRecord(
        photo_id=row["photo_id"], feature_version=row["feature_version"], n=row["n"], data=bytes(row["data"]),
        box=None if any(v is None for v in coords) else tuple(float(v) for v in coords),
        computed_at=row["computed_at"])


def _calibration(row: sqlite3.Row) -> CalibrationRecord:
    return CalibrationRecord(
        id=row["id"], kind=row["kind"], created_at=row["created_at"], format_version=row["format_version"],
        n_pairs=row["n_pairs"] or 0, n_same=row["n_same"] or 0, n_different=row["n_different"] or 0,
        data=json.loads(row["data"]), source=row["source"])


def _is_empty_database(path: Path) -> bool:
    """True for a database file with no tables (a creation interrupted before its first commit)."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _ImmutableConnection(sqlite3.Connection):
    """A connection opened with ``immutable=1`` (marked so the read-only reason can say so)."""

    flukeid_immutable = True


class Catalog:
    """An open catalog folder. Use :meth:`create` or :meth:`open`; close it (or use ``with``)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, lock: WriteLock | None,
                 readonly_reason: str | None):
        self.root = Path(root)
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        self._lock = lock
        self._mutex = threading.RLock()
        self._depth = 0
        self._sync = "FULL"
        self.readonly_reason = readonly_reason
        self._db_id = _file_id(self.db_path)  # checked at every write: the file must still be this one

    # ---------------------------------------------------------------- opening and closing
    @classmethod
    def create(cls, folder: str | Path) -> Catalog:
        """Make a new, empty catalog in ``folder`` (created if needed; must not hold one already).

        Raises:
            CatalogError: the folder already holds a catalog, or cannot be written.
        """
        folder = Path(folder)
        if (folder / DB_NAME).exists() and not _is_empty_database(folder / DB_NAME):
            raise CatalogError(f"{folder}: a catalog already exists here")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"{folder}: cannot create the catalog folder ({exc.strerror or exc})") from None
        return cls.open(folder, mode="write", create=True)

    @classmethod
    def open(cls, folder: str | Path, *, mode: str = "write", create: bool = False) -> Catalog:
        """Open the catalog in ``folder``.

        Args:
            folder: the catalog folder (holding ``catalog.sqlite``).
            mode: ``"write"`` (refuse if another process holds the write lock), ``"auto"`` (open
                read-only in that case; see :attr:`readonly_reason`) or ``"read"``.
            create: make the database if it is missing (used by :meth:`create`).

        Raises:
            CatalogLockedError: mode ``"write"`` and another process has the catalog open for writing.
            CatalogError: not a catalog, a damaged database, or a newer schema than this program knows.
        """
        if mode not in ("write", "auto", "read"):
            raise ValueError(f"mode must be write, auto or read, not {mode!r}")
        folder = Path(folder)
        db_path = folder / DB_NAME
        if not create and not db_path.is_file():
            raise CatalogError(f"{folder}: not a flukeid catalog (no {DB_NAME})")
        lock: WriteLock | None = None
        readonly_reason: str | None = "opened read-only" if mode == "read" else None
        if mode != "read" and not create:
            readonly_reason = _unwritable(folder, db_path)
            if readonly_reason is not None and mode == "write":
                raise CatalogError(f"{folder}: {readonly_reason}")
        if readonly_reason is None:
            lock = WriteLock(folder)
            try:
                holder = lock.acquire()
            except OSError as exc:
                holder, lock = None, None
                readonly_reason = f"the catalog folder is not writable ({exc.strerror or exc})"
                if mode == "write":
                    raise CatalogError(f"{folder}: {readonly_reason}") from None
            if holder is not None:
                err = CatalogLockedError(folder, holder)
                if mode == "write":
                    raise err
                lock, readonly_reason = None, f"open for writing by {holder.describe()}"
        try:
            try:
                conn = cls._connect(db_path, readonly=readonly_reason is not None)
            except CatalogError as exc:
                # writing refused in a way the checks above cannot see (e.g. a network file system)
                if mode != "auto" or readonly_reason is not None or "readonly" not in str(exc):
                    raise
                if lock is not None:
                    lock.release()
                    lock = None
                readonly_reason = f"the catalog cannot be written ({str(exc).rpartition('(')[2].rstrip(')')})"
                conn = cls._connect(db_path, readonly=True)
            if readonly_reason is not None and getattr(conn, "flukeid_immutable", False):
                wal = db_path.with_name(DB_NAME + "-wal")
                if wal.is_file() and wal.stat().st_size:
                    readonly_reason += "; changes still in catalog.sqlite-wal are not shown"
            cat = cls(folder, conn, lock, readonly_reason)
            cat._prepare(create)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cat

    @staticmethod
    def _connect(db_path: Path, *, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                uri = "file:" + quote(str(db_path.absolute()))
                conn = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                       check_same_thread=False)
                try:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:
                    # a WAL database in a folder we cannot write (no -shm file can be made):
                    # read it as an immutable file (nobody can be writing to it from here)
                    conn.close()
                    conn = _ImmutableConnection(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                                                timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            else:
                conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
            return conn
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{db_path}: cannot open the catalog database ({exc})") from None

    def _prepare(self, create: bool) -> None:
        try:
            version = read_version(self._db)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise database_failure(self.db_path, exc) from None
        except ValueError as exc:  # a schema_version that is not a whole number >= 1
            self._conn.close()
            raise CatalogError(f"{self.db_path}: {exc}; the catalog's meta table is damaged") from None
        if version > SCHEMA_VERSION:
            self._conn.close()
            raise CatalogTooNewError(
                f"{self.db_path}: catalog created by a newer flukeid (schema {version} > {SCHEMA_VERSION}); "
                "update flukeid to open it")
        if version == 0 and not create:
            self._conn.close()
            raise CatalogError(f"{self.db_path}: not a flukeid catalog (no schema version)")
        if version < SCHEMA_VERSION:
            if self.readonly:
                self._conn.close()
                raise CatalogError(
                    f"{self.db_path}: catalog needs upgrading (schema {version} -> {SCHEMA_VERSION}) "
                    f"but is read-only ({self.readonly_reason})")
            try:
                with self.transaction():
                    migrate(self._db, version)
            except (CatalogError, sqlite3.DatabaseError) as exc:
                self._conn.close()
                raise CatalogError(f"{self.db_path}: cannot upgrade the catalog from schema {version} to "
                                   f"{SCHEMA_VERSION} ({exc}); nothing was changed. Its schema_version may "
                                   "not match its tables") from None
        for sub in ("models", "thumbnails"):
            if not self.readonly:
                try:
                    (self.root / sub).mkdir(exist_ok=True)
                except OSError as exc:
                    self._conn.close()
                    what = "is not a folder" if (self.root / sub).exists() else "cannot be created"
                    raise CatalogError(f"{self.root / sub}: {what} ({exc.strerror or exc}); the catalog keeps "
                                       f"its {sub} there: move that file away and open the catalog again") from None

    def close(self) -> None:
        """Close the database and drop the write lock (safe to call twice)."""
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None  # type: ignore[assignment]
                    if self._lock is not None:
                        self._lock.release()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (every read or write then raises CatalogError)."""
        return self._conn is None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- locations
    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def thumbnails_dir(self) -> Path:
        return self.root / "thumbnails"

    @property
    def photos_dir(self) -> Path:
        """Where photos copied into the catalog go (``photos/<sha[:2]>/<sha><ext>``)."""
        return self.root / "photos"

    @property
    def readonly(self) -> bool:
        return self.readonly_reason is not None

    @property
    def schema_version(self) -> int:
        with self._mutex:
            return read_version(self._db)

    def thumbnail_path(self, sha256: str) -> Path:
        """The thumbnail file of a photo (may not exist)."""
        return self.thumbnails_dir / f"{sha256}.jpg"

    def resolve_path(self, photo: Photo) -> Path:
        """The photo's file on disk (copied photos are relative to the catalog)."""
        p = Path(photo.path)
        return p if p.is_absolute() else self.root / p

    # ---------------------------------------------------------------- transactions and queries
    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing change: ``BEGIN IMMEDIATE`` .. ``COMMIT`` (rolled back on any error).

        Nested calls join the outer transaction. ``durable=False`` uses ``synchronous=NORMAL``
        (still crash-safe in WAL mode; the last commits may be lost on power failure only).

        Raises:
            ReadOnlyError: the catalog was opened read-only.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self.root}: catalog is read-only ({self.readonly_reason})")
        with self._mutex:
            if self._conn is None:
                raise CatalogError(f"{self.root}: catalog is closed")
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            want = "FULL" if durable else "NORMAL"
            self._check_still_here()
            try:
                if want != self._sync:
                    self._conn.execute(f"PRAGMA synchronous = {want}")
                    self._sync = want
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise database_failure(self.db_path, exc) from exc
            self._depth = 1
            try:
                yield self._conn
                self._check_still_here()  # never commit into a deleted or replaced file
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        pass  # the error below says what failed; SQLite rolls back on its own
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
                    raise database_failure(self.db_path, exc) from exc
                raise
            finally:
                self._depth = 0

    def _check_still_here(self) -> None:
        """Refuse to write when the database file was deleted, moved or replaced since it was opened.

        SQLite keeps writing to a deleted file's open descriptor, so without this a catalog folder
        deleted during an import would have every later photo "imported" into nothing.

        Raises:
            CatalogError: naming the database file.
        """
        now_id = _file_id(self.db_path)
        if self._db_id is None:
            self._db_id = now_id
        if now_id is None:
            raise CatalogError(f"{self.db_path}: the catalog database was deleted or moved while open; "
                               "nothing more is written (the change in progress was not saved)")
        if now_id != self._db_id:
            raise CatalogError(f"{self.db_path}: the catalog database was replaced by another file while open; "
                               "nothing more is written (the change in progress was not saved)")

    def _query(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._mutex:
            if self._conn is None:
                raise CatalogError(f"{self.root}: catalog is closed")
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                raise database_failure(self.db_path, exc) from exc

    def _one(self, sql: str, params: Sequence = ()) -> sqlite3.Row | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _insert(self, table: str, values: dict) -> int:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.transaction():
            cur = self._conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})",  # noqa: S608
                                     list(values.values()))
            return int(cur.lastrowid)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` ("ok" when the database is sound)."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", [key])
        return row[0] if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    # ---------------------------------------------------------------- photos
    def add_photo(self, *, path: str, sha256: str, size: int, width: int | None = None,
                  height: int | None = None, taken_at: str | None = None, latitude: float | None = None,
                  longitude: float | None = None, camera: str | None = None,
                  orientation: int | None = None, copied: bool = False,
                  imported_at: str | None = None) -> int:
        """Insert a photo row; returns its id. Raises sqlite3.IntegrityError on a duplicate hash."""
        return self._insert("photos", dict(
            path=path, sha256=sha256, size=size, width=width, height=height, taken_at=taken_at,
            latitude=latitude, longitude=longitude, camera=camera, orientation=orientation,
            copied=int(copied), imported_at=imported_at or now()))

    def photo(self, photo_id: int) -> Photo:
        """The photo with this id. Raises CatalogError if there is none."""
        row = self._one("SELECT * FROM photos WHERE id = ?", [photo_id])
        if row is None:
            raise CatalogError(f"{self.root}: no photo with id {photo_id}")
        return _photo(row)

    def photo_by_sha(self, sha256: str) -> Photo | None:
        row = self._one("SELECT * FROM photos WHERE sha256 = ?", [sha256])
        return _photo(row) if row else None

    def photo_by_name(self, name: str) -> list[Photo]:
        """Photos whose file name (last path part) is ``name``."""
        rows = self._query("SELECT * FROM photos WHERE path = ? OR path LIKE ? ESCAPE '\\' ORDER BY id",
                           [name, "%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")])
        return [_photo(r) for r in rows if Path(r["path"]).name == name]

    def photos(self, *, limit: int | None = None, offset: int = 0) -> list[Photo]:
        """Photos in import order (optionally one page of them)."""
        sql = "SELECT * FROM photos ORDER BY id"
        params: list = []
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params = [limit, offset]
        return [_photo(r) for r in self._query(sql, params)]

    def iter_photos(self, batch: int = 500) -> Iterator[Photo]:
        """All photos, fetched ``batch`` rows at a time (never all in memory)."""
        last = 0
        while True:
            rows = self._query("SELECT * FROM photos WHERE id > ? ORDER BY id LIMIT ?", [last, batch])
            if not rows:
                return
            for r in rows:
                yield _photo(r)
            last = rows[-1]["id"]

    def photo_count(self) -> int:
        return int(self._query("SELECT count(*) FROM photos")[0][0])

    def set_photo_path(self, photo_id: int, path: str) -> None:
        """Point a photo at a new file (relinking a moved folder); the hash must still match."""
        with self.transaction():
            self._conn.execute("UPDATE photos SET path = ? WHERE id = ?", [path, photo_id])

    # ---------------------------------------------------------------- boxes (append-only)
    def add_box(self, photo_id: int, box: Sequence[float] | None, *, source: str,
                confidence: float | None = None, confirmed: bool = False, junk: bool = False,
                who: str | None = None, action_id: int | None = None) -> int:
        """Append a box version for a photo (``box`` None records "no box"); returns its row id."""
        x0 = y0 = x1 = y1 = None
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
        return self._insert("boxes", dict(
            photo_id=photo_id, x0=x0, y0=y0, x1=x1, y1=y1, source=source, confidence=confidence,
            confirmed=int(confirmed), junk=int(junk), who=who, created_at=now(), action_id=action_id))

    def box_row(self, box_id: int) -> BoxRecord:
        row = self._one("SELECT * FROM boxes WHERE id = ?", [box_id])
        if row is None:
            raise CatalogError(f"{self.root}: no box row {box_id}")
        return _box(row)

    def current_box(self, photo_id: int) -> BoxRecord | None:
        """The photo's current box version (its latest row), or None if it never had one."""
        row = self._one("SELECT * FROM boxes WHERE photo_id = ? ORDER BY id DESC LIMIT 1", [photo_id])
        return _box(row) if row else None

    def junk_photo_ids(self) -> set[int]:
        """Photos whose current box version marks them unusable."""
        rows = self._query("SELECT b.photo_id FROM boxes b JOIN (SELECT photo_id, max(id) AS id FROM boxes "
                           "GROUP BY photo_id) last ON b.id = last.id WHERE b.junk = 1")
        return {r[0] for r in rows}

    def change_marker(self) -> tuple:
        """A cheap value that changes whenever identifications, boxes, embeddings or local features change
        (for caches)."""
        row = self._one("SELECT (SELECT max(id) FROM identifications), (SELECT max(id) FROM boxes), "
                        "(SELECT count(*) FROM embeddings), (SELECT max(id) FROM actions), "
                        "(SELECT max(id) FROM local_features), (SELECT count(*) FROM local_features)")
        return tuple(row) if row else ()

    def box_history(self, photo_id: int) -> list[BoxRecord]:
        """Every box version of the photo, oldest first."""
        return [_box(r) for r in self._query("SELECT * FROM boxes WHERE photo_id = ? ORDER BY id", [photo_id])]

    # ---------------------------------------------------------------- individuals
    def add_individual(self, code: str, *, name: str | None = None, notes: str | None = None) -> int:
        """Create an individual; returns its id. Raises CatalogError if the code is taken."""
        code = code.strip()
        if not code:
            raise CatalogError(f"{self.root}: an individual needs a non-empty code")
        with self.transaction():
            if self._one("SELECT 1 FROM individuals WHERE code = ?", [code]):
                raise CatalogError(f"{self.root}: individual code {code!r} is already used")
            return self._insert("individuals", dict(code=code, name=name, notes=notes, created_at=now()))

    def individual(self, individual_id: int) -> Individual:
        row = self._one("SELECT * FROM individuals WHERE id = ?", [individual_id])
        if row is None:
            raise CatalogError(f"{self.root}: no individual with id {individual_id}")
        return _individual(row)

    def individual_by_code(self, code: str) -> Individual | None:
        row = self._one("SELECT * FROM individuals WHERE code = ?", [code])
        return _individual(row) if row else None

    def individuals(self, *, include_merged: bool = False) -> list[Individual]:
        """All individuals by code (merged-away ones only when asked)."""
        where = "" if include_merged else "WHERE merged_into IS NULL"
        return [_individual(r) for r in self._query(f"SELECT * FROM individuals {where} ORDER BY code")]  # noqa: S608

    def update_individual(self, individual_id: int, **fields) -> None:
        """Change code, name, notes or merged_into of an individual (not a decision table)."""
        allowed = {"code", "name", "notes", "merged_into"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction():
            if "code" in fields:
                other = self._one("SELECT id FROM individuals WHERE code = ? AND id != ?",
                                  [fields["code"], individual_id])
                if other:
                    raise CatalogError(f"{self.root}: individual code {fields['code']!r} is already used")
            self._conn.execute(f"UPDATE individuals SET {sets} WHERE id = ?",  # noqa: S608
                               [*fields.values(), individual_id])

    def next_code(self, prefix: str = CODE_PREFIX, width: int = 4) -> str:
        """The next free code like ``HW-0001`` (one more than the highest numbered code)."""
        rows = self._query("SELECT code FROM individuals WHERE code LIKE ?", [prefix + "%"])
        top = 0
        for (code,) in rows:
            tail = code[len(prefix):]
            if tail.isdigit():
                top = max(top, int(tail))
        return f"{prefix}{top + 1:0{width}d}"

    # ---------------------------------------------------------------- identifications (append-only)
    def add_identification(self, photo_id: int, individual_id: int | None, *, how: str,
                           who: str | None = None, model_version: str | None = None,
                           action_id: int | None = None) -> int:
        """Append an identification row (``individual_id`` None: back to unidentified)."""
        return self._insert("identifications", dict(
            photo_id=photo_id, individual_id=individual_id, how=how, who=who, at=now(),
            model_version=model_version, action_id=action_id))

    def current_identification(self, photo_id: int) -> Identification | None:
        """The photo's latest identification row (None: never identified)."""
        row = self._one("SELECT * FROM identifications WHERE photo_id = ? ORDER BY id DESC LIMIT 1", [photo_id])
        return _identification(row) if row else None

    def current_individual(self, photo_id: int) -> int | None:
        """Id of the individual the photo currently belongs to, or None."""
        ident = self.current_identification(photo_id)
        return ident.individual_id if ident else None

    def identification_history(self, photo_id: int) -> list[Identification]:
        return [_identification(r) for r in
                self._query("SELECT * FROM identifications WHERE photo_id = ? ORDER BY id", [photo_id])]

    _CURRENT_IDS = (
        "SELECT i.* FROM identifications i JOIN "
        "(SELECT photo_id, max(id) AS id FROM identifications GROUP BY photo_id) last ON i.id = last.id"
    )

    def current_identifications(self) -> list[Identification]:
        """The current identification of every photo that has one (including unidentified rows)."""
        return [_identification(r) for r in self._query(self._CURRENT_IDS + " ORDER BY i.photo_id")]

    def photos_of(self, individual_id: int) -> list[int]:
        """Ids of the photos currently identified as this individual."""
        rows = self._query(f"SELECT photo_id FROM ({self._CURRENT_IDS}) WHERE individual_id = ? "  # noqa: S608
                           "ORDER BY photo_id", [individual_id])
        return [r[0] for r in rows]

    def unidentified_photo_ids(self) -> list[int]:
        """Photos with no current individual (never identified, or set back), excluding junk ones."""
        rows = self._query(
            f"SELECT p.id FROM photos p LEFT JOIN ({self._CURRENT_IDS}) c ON c.photo_id = p.id "  # noqa: S608
            "WHERE c.individual_id IS NULL AND coalesce((SELECT junk FROM boxes b WHERE b.photo_id = p.id "
            "ORDER BY b.id DESC LIMIT 1), 0) = 0 ORDER BY p.id")
        return [r[0] for r in rows]

    # ---------------------------------------------------------------- match decisions (append-only)
    def add_match_decision(self, query_photo_id: int, individual_id: int | None, *, decision: str,
                           rank: int | None = None, score: float | None = None,
                           model_version: str | None = None, who: str | None = None,
                           action_id: int | None = None, reverses: int | None = None) -> int:
        """Append a match decision row; returns its id."""
        return self._insert("match_decisions", dict(
            action_id=action_id, query_photo_id=query_photo_id, individual_id=individual_id, rank=rank,
            score=None if score is None else float(score), decision=decision, model_version=model_version,
            who=who, at=now(), reverses=reverses))

    def match_decision(self, decision_id: int) -> MatchDecision:
        row = self._one("SELECT * FROM match_decisions WHERE id = ?", [decision_id])
        if row is None:
            raise CatalogError(f"{self.root}: no match decision {decision_id}")
        return _decision(row)

    def match_decisions(self, query_photo_id: int | None = None, *, effective_only: bool = False
                        ) -> list[MatchDecision]:
        """Decision rows (of one query photo, or all), oldest first.

        ``effective_only`` drops undo rows and the rows they reverse.
        """
        sql = "SELECT * FROM match_decisions m"
        where, params = [], []
        if query_photo_id is not None:
            where.append("m.query_photo_id = ?")
            params.append(query_photo_id)
        if effective_only:
            where.append("m.decision != 'undo' AND NOT EXISTS "
                         "(SELECT 1 FROM match_decisions u WHERE u.reverses = m.id)")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_decision(r) for r in self._query(sql + " ORDER BY m.id", params)]

    # ---------------------------------------------------------------- actions (audit log)
    def add_action(self, kind: str, *, photo_id: int | None = None, who: str | None = None,
                   description: str = "", reverses: int | None = None, redoes: int | None = None,
                   effects: list | None = None) -> int:
        """Append an audit-log entry; returns its id."""
        return self._insert("actions", dict(
            kind=kind, photo_id=photo_id, who=who, at=now(), description=description, reverses=reverses,
            redoes=redoes, effects=json.dumps(effects or [])))

    def set_action_effects(self, action_id: int, effects: list) -> None:
        """Record what an action changed (written once, in the action's own transaction)."""
        with self.transaction():
            self._conn.execute("UPDATE actions SET effects = ? WHERE id = ? AND effects = '[]'",
                               [json.dumps(effects), action_id])

    def action(self, action_id: int) -> Action:
        row = self._one("SELECT * FROM actions WHERE id = ?", [action_id])
        if row is None:
            raise CatalogError(f"{self.root}: no action {action_id}")
        return _action(row)

    def actions(self, *, photo_id: int | None = None, limit: int | None = None) -> list[Action]:
        """Audit-log entries, newest first (of one photo when given)."""
        sql, params = "SELECT * FROM actions", []
        if photo_id is not None:
            sql += " WHERE photo_id = ?"
            params.append(photo_id)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_action(r) for r in self._query(sql, params)]

    def undo_target(self, kinds: Sequence[str]) -> Action | None:
        """The latest action of ``kinds`` (or a redo) not yet undone: what undo reverses next."""
        marks = ", ".join("?" for _ in kinds)
        row = self._one(
            f"SELECT * FROM actions a WHERE (a.kind IN ({marks}) OR a.kind = 'redo') "  # noqa: S608
            "AND NOT EXISTS (SELECT 1 FROM actions u WHERE u.kind = 'undo' AND u.reverses = a.id) "
            "ORDER BY a.id DESC LIMIT 1", list(kinds))
        return _action(row) if row else None

    def redo_target(self, kinds: Sequence[str]) -> Action | None:
        """The latest undo not yet redone and not followed by a fresh action: what redo re-applies."""
        marks = ", ".join("?" for _ in kinds)
        fresh = self._one(f"SELECT max(id) FROM actions WHERE kind IN ({marks})", list(kinds))  # noqa: S608
        last_fresh = fresh[0] or 0 if fresh else 0
        row = self._one(
            "SELECT * FROM actions u WHERE u.kind = 'undo' AND u.id > ? "
            "AND NOT EXISTS (SELECT 1 FROM actions r WHERE r.kind = 'redo' AND r.redoes = u.id) "
            "ORDER BY u.id DESC LIMIT 1", [last_fresh])
        return _action(row) if row else None

    # ---------------------------------------------------------------- models
    def add_model(self, version: str, path: str | Path, *, metrics: dict | None = None,
                  activate: bool = False) -> None:
        """Register a model bundle (path absolute, or relative to the catalog) and maybe activate it."""
        p = Path(path)
        try:
            p = p.resolve().relative_to(self.root.resolve())
        except ValueError:
            p = p.resolve()
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO models (version, path, metrics, created_at) VALUES (?, ?, ?, ?)",
                [version, str(p), json.dumps(metrics or {}), now()])
            if activate:
                self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('active_model', ?)",
                                   [version])

    def set_active_model(self, version: str | None) -> None:
        """Make a registered model the active one (None: no active model)."""
        with self.transaction():
            if version is not None and not self._one("SELECT 1 FROM models WHERE version = ?", [version]):
                raise CatalogError(f"{self.root}: no model {version!r} in this catalog")
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('active_model', ?)",
                               [version])

    def models(self) -> list[ModelRecord]:
        active = self.get_meta("active_model")
        return [ModelRecord(version=r["version"], path=r["path"], metrics=json.loads(r["metrics"] or "{}"),
                            created_at=r["created_at"], active=r["version"] == active)
                for r in self._query("SELECT * FROM models ORDER BY created_at, version")]

    def active_model(self) -> ModelRecord | None:
        """The active model, or None."""
        active = self.get_meta("active_model")
        return next((m for m in self.models() if m.version == active), None)

    def model_path(self, model: ModelRecord) -> Path:
        p = Path(model.path)
        return p if p.is_absolute() else self.root / p

    # ---------------------------------------------------------------- embeddings
    def put_embedding(self, photo_id: int, model_version: str, vector: np.ndarray, *,
                      dtype: str = "float32") -> None:
        """Store (or replace) a photo's embedding under a model version (float32 or float16)."""
        v = np.asarray(vector, dtype=np.dtype(dtype)).reshape(-1)
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO embeddings (photo_id, model_version, dim, vector, dtype) "
                "VALUES (?, ?, ?, ?, ?)", [photo_id, model_version, int(v.size), v.tobytes(), dtype])

    def embedding(self, photo_id: int, model_version: str) -> np.ndarray | None:
        row = self._one("SELECT dim, vector, dtype FROM embeddings WHERE photo_id = ? AND model_version = ?",
                        [photo_id, model_version])
        if row is None:
            return None
        return np.frombuffer(row["vector"], dtype=np.dtype(row["dtype"]))[: row["dim"]].astype(np.float32)

    def embeddings(self, model_version: str, photo_ids: Sequence[int] | None = None
                   ) -> tuple[list[int], np.ndarray]:
        """(photo ids, float32 matrix [N, D]) of the stored embeddings of a model version."""
        rows = self._query("SELECT photo_id, dim, vector, dtype FROM embeddings WHERE model_version = ? "
                           "ORDER BY photo_id", [model_version])
        if photo_ids is not None:
            wanted = set(photo_ids)
            rows = [r for r in rows if r["photo_id"] in wanted]
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        mat = np.stack([np.frombuffer(r["vector"], dtype=np.dtype(r["dtype"]))[: r["dim"]] for r in rows])
        return [r["photo_id"] for r in rows], mat.astype(np.float32)

    def photos_missing_embedding(self, model_version: str) -> list[int]:
        """Ids of photos with no embedding under this model version."""
        rows = self._query("SELECT id FROM photos p WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                           "WHERE e.photo_id = p.id AND e.model_version = ?) ORDER BY id", [model_version])
        return [r[0] for r in rows]

    # ---------------------------------------------------------------- local features, calibrations
    _CURRENT_BOXES = (
        "SELECT b.* FROM boxes b JOIN (SELECT photo_id, max(id) AS id FROM boxes GROUP BY photo_id) last "
        "ON b.id = last.id"
    )

    def put_local_features(self, photo_id: int, *, feature_version: int, n: int, data: bytes,
                           box: Sequence[float] | None) -> None:
        """Store (or replace) a photo's local features and the box they were computed on."""
        x0 = y0 = x1 = y1 = None
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
        with self.transaction(durable=False):
            self._conn.execute(
                "INSERT OR REPLACE INTO local_features (photo_id, feature_version, n, data, x0, y0, x1, y1, "
                "computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [photo_id, int(feature_version), int(n), sqlite3.Binary(data), x0, y0, x1, y1, now()])

    def local_features(self, photo_id: int) -> LocalFeatureRecord | None:
        """A photo's stored local features (None: never computed)."""
        row = self._one("SELECT * FROM local_features WHERE photo_id = ?", [photo_id])
        return _local_features(row) if row else None

    def iter_local_features(self, photo_ids: Sequence[int] | None = None, *, batch: int = 256
                            ) -> Iterator[LocalFeatureRecord]:
        """Stored local features (of ``photo_ids``, or all), by photo id, ``batch`` rows at a time."""
        if photo_ids is None:
            last = 0
            while True:
                rows = self._query("SELECT * FROM local_features WHERE photo_id > ? ORDER BY photo_id LIMIT ?",
                                   [last, batch])
                if not rows:
                    return
                yield from (_local_features(r) for r in rows)
                last = rows[-1]["photo_id"]
        ids = sorted(set(int(p) for p in photo_ids))
        for i in range(0, len(ids), batch):
            chunk = ids[i:i + batch]
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(f"SELECT * FROM local_features WHERE photo_id IN ({marks}) "  # noqa: S608
                               "ORDER BY photo_id", chunk)
            yield from (_local_features(r) for r in rows)

    def local_feature_stamps(self) -> dict[int, int]:
        """{photo id: row id} of the stored local features (a new row id each time a photo's change)."""
        return {r[0]: r[1] for r in self._query("SELECT photo_id, id FROM local_features")}

    def photos_missing_local_features(self, feature_version: int) -> list[int]:
        """Usable photos whose local features must be (re)computed.

        Missing: no stored features, features of another ``feature_version``, or features computed
        on a box that is no longer the photo's current box. Photos marked unusable are left out.
        """
        rows = self._query(
            f"SELECT p.id FROM photos p LEFT JOIN ({self._CURRENT_BOXES}) cb ON cb.photo_id = p.id "  # noqa: S608
            "LEFT JOIN local_features f ON f.photo_id = p.id WHERE coalesce(cb.junk, 0) = 0 AND "
            "(f.photo_id IS NULL OR f.feature_version != ? OR NOT (f.x0 IS cb.x0 AND f.y0 IS cb.y0 "
            "AND f.x1 IS cb.x1 AND f.y1 IS cb.y1)) ORDER BY p.id", [int(feature_version)])
        return [r[0] for r in rows]

    def delete_local_features(self, photo_id: int) -> None:
        """Forget a photo's local features (damaged ones, before they are recomputed)."""
        with self.transaction(durable=False):
            self._conn.execute("DELETE FROM local_features WHERE photo_id = ?", [photo_id])

    def add_calibration(self, kind: str, data: dict, *, n_pairs: int, n_same: int, n_different: int,
                        format_version: int | None = None, source: str = "catalog") -> int:
        """Append a fitted calibrator of ``kind`` (it becomes the current one); returns its id."""
        return self._insert("calibrations", dict(
            kind=kind, created_at=now(), format_version=format_version, n_pairs=int(n_pairs),
            n_same=int(n_same), n_different=int(n_different), data=json.dumps(data), source=source))

    def calibration(self, kind: str) -> CalibrationRecord | None:
        """The current (latest) calibration of ``kind``, or None."""
        row = self._one("SELECT * FROM calibrations WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind])
        return _calibration(row) if row else None

    def calibrations(self) -> list[CalibrationRecord]:
        """Every stored calibration, oldest first."""
        return [_calibration(r) for r in self._query("SELECT * FROM calibrations ORDER BY id")]

    # ---------------------------------------------------------------- summary
    def stats(self) -> dict:
        """Counts: photos, individuals, identified, unidentified (no-fluke photos apart), decisions, boxes, models."""
        q = lambda sql: int(self._query(sql)[0][0])  # noqa: E731
        identified = q(f"SELECT count(*) FROM ({self._CURRENT_IDS}) WHERE individual_id IS NOT NULL")  # noqa: S608
        photos = q("SELECT count(*) FROM photos")
        active = self.active_model()
        return {
            "photos": photos,
            "individuals": q("SELECT count(*) FROM individuals WHERE merged_into IS NULL"),
            "identified_photos": identified,
            # the photos still waiting for an identification: a photo marked "no fluke" is not one
            "unidentified_photos": len(self.unidentified_photo_ids()),
            "no_fluke_photos": len(self.junk_photo_ids()),
            "photos_with_box": q("SELECT count(DISTINCT photo_id) FROM boxes WHERE x0 IS NOT NULL"),
            "match_decisions": q("SELECT count(*) FROM match_decisions WHERE decision != 'undo'"),
            "actions": q("SELECT count(*) FROM actions"),
            "models": q("SELECT count(*) FROM models"),
            "active_model": active.version if active else None,
            "embeddings": q("SELECT count(*) FROM embeddings"),
            "photos_with_local_features": q("SELECT count(*) FROM local_features"),
            "schema_version": self.schema_version,
        }

    @property
    def user(self) -> str:
        """The login name recorded as ``who`` when a caller gives none."""
        return current_user()
