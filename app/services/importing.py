"""Importing photos (and labelled catalogs) into a catalog: a Qt-free long job.

Each photo is hashed, checked (decoded), measured (EXIF date, GPS, camera, orientation),
thumbnailed, optionally copied into the catalog, detected (box) and embedded, and then written
in ONE transaction: photo row + box row + embedding (+ identification for labelled imports).
A crash or a cancel therefore never leaves a half-imported photo. Photos are processed one at a
time, so memory does not grow with the number of photos.

Detector and engine are optional: without them a photo gets no box / no embedding, which
:func:`detect_missing` and :func:`embed_missing` fill in later.

Over 600 lines, one job: bringing photos into the catalog (finding, reading, checking, boxing,
describing, committing, relinking). EXIF reading is in :mod:`app.services.photo_metadata`.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.catalog import Catalog, CatalogError, ReadOnlyError
from app.services.jobs import ProgressFn, StopFn, each_photo
from app.services.photo_metadata import read_metadata
from model.api import (
    MAX_LABELS_BYTES,
    MAX_PHOTO_BYTES,
    DataError,
    FlukeidError,
    ImageError,
    InputError,
    Interrupted,
    LabelledPhoto,
    box_problem,
    check_input,
    copy_pipe_bounded,
    count_lines,
    load_image,
    open_input,
    open_labels,
    sha256_bounded,
)

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
HEIC_EXTENSIONS = {".heic", ".heif"}
MODEL_SIDE = 1024  # photos are decoded at most this large for detection and embedding
THUMB_SIDE = 256
MAX_LISTED_ERRORS = 10_000  # a report lists this many failed files by name, then only counts them
PIPE_IDLE_S = 10.0  # a labels pipe (or FIFO) silent this long is an error, not a hang
# Box review, whatever the way in. A detector box under this confidence is checked by a person even
# on a photo already identified (a labelled import). On 400 photos of ../shared/data
# humpback_kaggle2019_v2 the shipped detector put 3.0% of its boxes under 0.8, and 42% of those
# missed the labelled box (IoU < 0.5) against 1.5% of the others.
BOX_CHECK_BELOW = 0.8
# A labelled box the detector's box overlaps by less than this is kept but left unconfirmed: one of
# the two is wrong, a person looks (a scanned print with a caption, a distant fluke).
LABEL_AGREE_IOU = 0.5


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        imported: ids of the photos added.
        duplicates: (file, id of the photo already in the catalog with the same content).
        errors: (file, problem) for each file that could not be imported (the first
            MAX_LISTED_ERRORS; ``errors_not_listed`` counts the rest).
        skipped: files in scanned folders that are not photos (by extension).
        identified: photos given an individual from a labels file.
        cancelled: True when the job was stopped before the end.
        seconds: wall time.
    """

    imported: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    identified: int = 0
    errors_not_listed: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    feature_errors: list[tuple[str, str]] = field(default_factory=list)  # imported, but no local features
    absolute_refused: int = 0  # labels rows refused only for naming a photo by absolute path

    def add_error(self, path: str, problem: str) -> None:
        """Record a file that could not be imported (the first MAX_LISTED_ERRORS are kept by name)."""
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append((str(path), problem))
        else:
            self.errors_not_listed += 1

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.errors_not_listed

    def summary(self) -> str:
        """One line for the user."""
        parts = [f"{len(self.imported)} photo{'s' if len(self.imported) != 1 else ''} imported"]
        if self.identified:
            parts.append(f"{self.identified} identified")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate{'s' if len(self.duplicates) != 1 else ''} skipped")
        if self.error_count:
            parts.append(f"{self.error_count} error{'s' if self.error_count != 1 else ''}")
        if self.feature_errors:
            parts.append(f"{len(self.feature_errors)} without local features")
        if self.skipped:
            parts.append(f"{self.skipped} non-photo file{'s' if self.skipped != 1 else ''} ignored")
        if self.cancelled:
            parts.append("cancelled")
        return ", ".join(parts)


def _heic_available() -> bool:
    try:
        import pillow_heif  # noqa: PLC0415
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def supported_extensions() -> set[str]:
    """File extensions imported from folders (HEIC only when pillow-heif is installed)."""
    return PHOTO_EXTENSIONS | (HEIC_EXTENSIONS if _heic_available() else set())


def find_photos(paths: Iterable[str | Path], report: ImportReport | None = None, *,
                exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Files to import: given files as they are, folders searched recursively for photos.

    Symbolic links to folders are followed once (a link loop is not followed again). Folders in
    ``exclude`` (the catalog's own folder) are not searched. Missing paths are recorded in
    ``report.errors``; non-photo files in folders counted in ``report.skipped``.
    """
    report = report if report is not None else ImportReport()
    exts = supported_extensions()
    out: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    for ex in exclude:
        try:
            st = os.stat(ex)
            seen_dirs.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    seen_files: set[Path] = set()

    def add(p: Path) -> None:
        key = p.absolute()
        if key not in seen_files:
            seen_files.add(key)
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            def walk_error(e: OSError) -> None:
                report.add_error(str(e.filename), f"cannot read folder ({e.strerror})")

            for dirpath, dirnames, filenames in os.walk(p, followlinks=True, onerror=walk_error):
                try:
                    st = os.stat(dirpath)
                except OSError:
                    dirnames[:] = []
                    continue
                if (st.st_dev, st.st_ino) in seen_dirs:
                    dirnames[:] = []
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                dirnames.sort()
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    fp = Path(dirpath) / name
                    if fp.suffix.lower() in exts:
                        add(fp)
                    else:
                        report.skipped += 1
        elif p.exists():
            add(p)
        else:
            report.add_error(str(p), "file not found")
    return out


def sha256_of(path: Path) -> str:
    """SHA-256 of a photo file: a regular file (links followed) of at most MAX_PHOTO_BYTES, read in chunks.

    Raises:
        InputError: a FIFO, device, folder or socket (never opened in a way that blocks), or too large.
    """
    return sha256_bounded(path, max_bytes=MAX_PHOTO_BYTES, what="photo")[0]


def write_thumbnail(image: np.ndarray, dest: Path, side: int = THUMB_SIDE) -> None:
    """Save a small JPEG of an RGB photo array (temporary name, then rename)."""
    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s < 1.0:  # OpenCV's area resize: several times faster than Pillow's thumbnail here
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    im = Image.fromarray(image)
    dest.parent.mkdir(exist_ok=True)  # never its parents: a deleted catalog folder is not recreated
    fd, tmp = tempfile.mkstemp(prefix=".thumb.", suffix=".jpg", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, "JPEG", quality=80)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _writing_into(catalog: Catalog, dest: Path) -> Iterator[None]:
    """Turn a failed write into the catalog folder (disk full, folder gone, thumbnails/ replaced by a
    file) into a CatalogError that stops the import, saying it was the writing that failed."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        if not catalog.root.is_dir():
            raise CatalogError(f"{catalog.root}: the catalog folder was deleted or moved during the import "
                               f"({why}); the import stops") from None
        for folder in (catalog.thumbnails_dir, catalog.photos_dir):
            if dest.is_relative_to(folder) and folder.exists() and not folder.is_dir():
                raise CatalogError(f"{folder}: is not a folder (the catalog's {folder.name} folder was replaced "
                                   "by a file); the import stops") from None
        raise CatalogError(f"{dest}: writing into the catalog failed ({why}); the import stops, "
                           "the photos imported before it are kept") from None


def _copy_into(catalog: Catalog, src: Path, sha: str) -> str:
    """Copy a photo into ``photos/<sha[:2]>/`` (temporary name, fsync, rename).

    Raises:
        InputError: the source cannot be read (a per-photo problem).
        CatalogError: writing into the catalog failed (disk full, folder gone): the import stops.
    """
    rel = Path("photos") / sha[:2] / f"{sha}{src.suffix.lower()}"
    dest = catalog.root / rel
    if dest.exists():
        return rel.as_posix()
    with open_input(src, what="photo", max_bytes=MAX_PHOTO_BYTES) as fsrc:
        with _writing_into(catalog, dest):
            catalog.photos_dir.mkdir(exist_ok=True)  # never the catalog folder itself
            dest.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".copy.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fdst:
                while True:
                    try:
                        block = fsrc.read(1 << 20)
                    except OSError as exc:
                        raise InputError(src, f"cannot read ({exc.strerror or exc})") from None
                    if not block:
                        break
                    with _writing_into(catalog, dest):
                        fdst.write(block)
                with _writing_into(catalog, dest):
                    fdst.flush()
                    os.fsync(fdst.fileno())
            with _writing_into(catalog, dest):
                os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return rel.as_posix()


def box_source(detection) -> str:
    """The catalog's box source for a detector result ("model" -> "auto")."""
    src = getattr(detection, "source", "model")
    return {"model": "auto"}.get(src, src)


def box_needs_check(box, identified: bool) -> bool:
    """Whether a photo's current box (a catalog Box record, or None) goes to the box review.

    An unidentified photo's box waits until confirmed; an identified photo's only when it is an
    unconfirmed box the detector was unsure of (or a labelled box the detector disagreed with).
    """
    if box is None:
        return not identified
    if box.confirmed or box.junk:
        return False
    return not identified or box.confidence is None or box.confidence < BOX_CHECK_BELOW



def _scale_box(box: Sequence[float], s: tuple[float, float]) -> tuple[float, float, float, float]:
    """A box scaled by (x factor, y factor): per axis, since a reduced panorama keeps at least 2 rows."""
    sx, sy = s
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


@dataclass
class _Prepared:
    sha: str
    size: int
    meta: dict
    path: str
    copied: bool
    box: tuple | None = None
    confidence: float | None = None
    source: str | None = None
    embedding: np.ndarray | None = None
    label_agrees: bool = True  # the detector's box matches the labelled one (or was not asked)
    local: object = None  # model.api.LocalFeatures, positions in photo pixels
    local_error: str | None = None


def _extract_local(prep: _Prepared, image: np.ndarray, scale: tuple[float, float]) -> None:
    """Local features from the decoded image and the box just decided; a failure is kept, not raised."""
    from app.services.local_features import extract_on_decoded

    try:
        prep.local = extract_on_decoded(image, prep.box, scale)
    except Exception as exc:  # noqa: BLE001 - the photo is still imported; features are computed later
        prep.local_error = f"local features not computed ({type(exc).__name__}: {exc})"


def _prepare(catalog: Catalog, path: Path, sha: str, *, detector, engine, copy: bool,
             label_box: tuple | None) -> _Prepared:
    size = path.stat().st_size
    image = load_image(path, max_side=MODEL_SIDE)  # validates: raises ImageError naming the file
    try:
        meta = read_metadata(path)
    except (OSError, ValueError, SyntaxError):
        meta = {"width": image.shape[1], "height": image.shape[0], "orientation": None, "taken_at": None,
                "latitude": None, "longitude": None, "camera": None}
    full_w = meta["width"] or image.shape[1]
    full_h = meta["height"] or image.shape[0]
    scale = (full_w / image.shape[1], full_h / image.shape[0])  # model image pixels -> photo pixels
    if label_box is not None and (problem := box_problem(label_box, full_w, full_h)):
        raise DataError(problem)
    with _writing_into(catalog, catalog.thumbnail_path(sha)):
        write_thumbnail(image, catalog.thumbnail_path(sha))
    prep = _Prepared(sha=sha, size=size, meta=meta, path=str(path.absolute()), copied=False)
    if label_box is not None:
        prep.box, prep.source, prep.confidence = tuple(label_box), "imported", None
        if detector is not None:  # a second opinion: a disagreement goes to the box review
            from model.api import box_iou

            det = detector.detect(image)
            prep.label_agrees = det is not None and \
                box_iou(_scale_box(det.box, scale), prep.box) >= LABEL_AGREE_IOU
    elif detector is not None:
        det = detector.detect(image)
        prep.box = _scale_box(det.box, scale) if det is not None else None
        prep.confidence = float(det.confidence) if det is not None else 0.0
        prep.source = box_source(det) if det is not None else "none"
    _extract_local(prep, image, scale)
    if engine is not None:
        small_box = _scale_box(prep.box, (1.0 / scale[0], 1.0 / scale[1])) if prep.box is not None else None
        prep.embedding = np.asarray(engine.embed([image], [small_box]))[0]
    if copy:
        prep.path, prep.copied = _copy_into(catalog, path, sha), True
    return prep


def _commit(catalog: Catalog, prep: _Prepared, *, engine, detector_used: bool, label: LabelledPhoto | None,
            who: str, report: ImportReport) -> int:
    """Write photo + box + embedding (+ identification) in one transaction; returns the photo id."""
    with catalog.transaction(durable=False):
        pid = catalog.add_photo(path=prep.path, sha256=prep.sha, size=prep.size, copied=prep.copied, **prep.meta)
        if prep.source is not None or detector_used:
            catalog.add_box(pid, prep.box, source=prep.source or "none", confidence=prep.confidence,
                            confirmed=prep.source == "imported" and prep.label_agrees, who=who)
        if prep.embedding is not None:
            catalog.put_embedding(pid, engine.version, prep.embedding)
        if prep.local is not None:
            from model.api import FEATURE_VERSION

            catalog.put_local_features(pid, feature_version=FEATURE_VERSION, n=len(prep.local),
                                       data=prep.local.to_bytes(), box=prep.box)
        if label is not None and label.individual is not None:
            _identify_imported(catalog, pid, label.individual, who)
            report.identified += 1
    return pid


def _identify_imported(catalog: Catalog, photo_id: int, code: str, who: str) -> None:
    ind = catalog.individual_by_code(code)
    ind_id = ind.id if ind else catalog.add_individual(code)
    catalog.add_identification(photo_id, ind_id, how="imported", who=who)


def _label_conflict(catalog: Catalog, individual_id: int | None, code: str) -> str | None:
    """The code a photo is identified as when it is not ``code`` (merges followed); else None."""
    if individual_id is None:
        return None

    def root(ind):
        seen = set()
        while ind.merged_into is not None and ind.id not in seen:
            seen.add(ind.id)
            ind = catalog.individual(ind.merged_into)
        return ind

    current = root(catalog.individual(individual_id))
    wanted = catalog.individual_by_code(code)
    return None if wanted is not None and root(wanted).id == current.id else current.code


def _run(catalog: Catalog, items: Iterator[tuple[Path, LabelledPhoto | None]], total: int | None, report: ImportReport, *,
         detector, engine, copy: bool, progress: ProgressFn | None, should_stop: StopFn | None,
         who: str | None, source: str | None = None) -> ImportReport:
    if catalog.readonly:
        raise ReadOnlyError(f"{catalog.root}: cannot import into a read-only catalog ({catalog.readonly_reason})")
    who = who or catalog.user
    t0 = time.perf_counter()
    seen: dict[str, int] = {}
    done = 0
    try:
        for path, label in items:
            if should_stop is not None and should_stop():
                report.cancelled = True
                err = Interrupted(f"import stopped after {done} of {total or '?'} files ({report.summary()})")
                err.report = report  # type: ignore[attr-defined]
                raise err
            done += 1
            if progress is not None:
                progress((done - 1) / total if total else 0.0, f"{done}/{total or '?'}: {path.name}")
            # a labels row is named by its line, so the user can find and mend it
            where = str(path) if label is None or label.line is None else f"{source} line {label.line} ({path})"
            try:
                sha = sha256_of(path)
                existing = seen.get(sha) or (p.id if (p := catalog.photo_by_sha(sha)) else None)
                if existing is not None:
                    report.duplicates.append((where, existing))
                    if label is not None and label.individual is not None:
                        current = catalog.current_identification(existing)
                        if current is None:
                            with catalog.transaction(durable=False):
                                _identify_imported(catalog, existing, label.individual, who)
                            report.identified += 1
                        elif (code := _label_conflict(catalog, current.individual_id, label.individual)) is not None:
                            report.add_error(where, f"same photo as photo {existing}, which is identified as "
                                                    f"{code!r}: this row's {label.individual!r} is not applied")
                    continue
                if path.suffix.lower() in HEIC_EXTENSIONS and not _heic_available():
                    report.add_error(where, "HEIC photos need pillow-heif (pip install pillow-heif)")
                    continue
                prep = _prepare(catalog, path, sha, detector=detector, engine=engine, copy=copy,
                                label_box=label.box if label is not None else None)
                pid = _commit(catalog, prep, engine=engine, detector_used=detector is not None, label=label,
                              who=who, report=report)
                seen[sha] = pid
                report.imported.append(pid)
                if prep.local_error:
                    report.feature_errors.append((str(path), prep.local_error))
            except (ImageError, InputError) as exc:
                report.add_error(where, exc.problem)
            except PermissionError:
                report.add_error(where, "permission denied")
            except FileNotFoundError:
                report.add_error(where, f"file not found in {path.parent.absolute()}")
            except IsADirectoryError:
                report.add_error(where, "is a folder, not a photo")
            except sqlite3.IntegrityError as exc:
                report.add_error(where, f"not added ({exc})")
            except CatalogError as exc:
                if type(exc) is CatalogError:  # say how far the import got (it stops here)
                    err = CatalogError(f"{exc} ({report.summary()} before it)")
                    err.report = report  # type: ignore[attr-defined]
                    raise err from None
                raise
            except FlukeidError as exc:
                report.add_error(where, str(exc))
            except OSError as exc:
                report.add_error(where, f"cannot read ({exc.strerror or exc})")
            except sqlite3.DatabaseError:
                raise  # the catalog itself is failing (disk full, damaged): stop, nothing half-written
            except Exception as exc:  # noqa: BLE001 - one odd photo (e.g. a detector failure) must not stop the rest
                report.add_error(where, f"unexpected error ({type(exc).__name__}: {exc})")
        if progress is not None:
            progress(1.0, report.summary())
    finally:
        report.seconds = time.perf_counter() - t0
    return report


def import_photos(catalog: Catalog, paths: Iterable[str | Path], *, detector=None, engine=None,
                  copy: bool = False, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  who: str | None = None) -> ImportReport:
    """Import photos (files, or folders searched recursively) into the catalog.

    Args:
        catalog: an open, writable catalog.
        paths: files and/or folders.
        detector: anything with ``detect(rgb) -> Detection(box, confidence, source)`` (box in the
            pixels of the image it is given), or None to import without boxes.
        engine: anything with ``embed(images, boxes) -> [N, D]`` and ``version``, or None to import
            without embeddings.
        copy: also copy each photo into the catalog's ``photos/`` folder.
        progress: ``progress(fraction, message)``.
        should_stop: polled before each photo; when it returns True the import stops.
        who: recorded as the importer (default: the login name).

    Returns:
        The report (imported ids, duplicates, per-file errors).

    Raises:
        Interrupted: ``should_stop`` returned True; the photos already imported stay (complete),
            and ``exc.report`` holds the partial report.
        CatalogError: the catalog itself cannot be written (read-only, closed).
    """
    report = ImportReport()
    files = find_photos(paths, report, exclude=[catalog.root])
    return _run(catalog, ((f, None) for f in files), len(files), report, detector=detector, engine=engine,
                copy=copy, progress=progress, should_stop=should_stop, who=who)


@contextmanager
def readable_labels(labels_csv: str | Path) -> Iterator[Path]:
    """A labels file as a regular file of bounded size, to hand to the CSV reader.

    A regular file (links followed) is checked against MAX_LABELS_BYTES and used as it is. A pipe
    (``--labels <(...)``) or FIFO is copied into a temporary file, bounded and never blocking (no
    data for 10 s is an error). Anything else (device such as /dev/zero, folder, socket) is
    refused. The CLI calls this before it takes the catalog's write lock, so nothing waits on a
    read while holding it.

    Raises:
        InputError: naming the file: missing, not a regular file or pipe, too large, or silent.
    """
    import stat as stat_mod

    path = Path(labels_csv)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if not stat_mod.S_ISFIFO(mode):
        check_input(path, what="labels file", max_bytes=MAX_LABELS_BYTES)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="flukeid-labels-") as tmp:
        copy = Path(tmp) / (path.name or "labels.csv")
        with open(copy, "wb") as out:
            copy_pipe_bounded(path, out, max_bytes=MAX_LABELS_BYTES, what="labels file", idle_s=PIPE_IDLE_S)
        yield copy


def _named_as(exc: DataError, shown: Path, real: Path) -> DataError:
    """The reader's error about a staged copy, naming the file the user gave."""
    if shown == real:
        return exc
    return DataError(str(exc).replace(str(shown), str(real)))


def import_labelled(catalog: Catalog, labels_csv: str | Path, images_dir: str | Path | None = None, *,
                    detector=None, engine=None, copy: bool = False, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None, who: str | None = None,
                    allow_absolute: bool = False, shown_as: str | Path | None = None) -> ImportReport:
    """Import a labelled catalog: our labels.csv or Kaggle's train.csv (``new_whale`` = unidentified).

    Each row's photo is imported like :func:`import_photos` and, in the same transaction, given
    its individual (created by code when new) with ``how="imported"``. Boxes in the CSV are kept
    as confirmed boxes (source ``imported``) unless the detector, when given, disagrees (then they
    wait in the box review); otherwise the detector draws one, which the box review shows when
    its confidence is low (:func:`box_needs_check`).
    A photo already in the catalog (same content) is reported as a duplicate and given the
    label only if it has no identification yet; when it is identified as another individual
    the row is reported as an error (a conflicting label) and the photo left as it is.

    Every bad row (see :mod:`model.data.records` for the rules) and every photo that cannot be
    imported is reported in ``errors`` as ``"<labels file> line N (<image>)"`` and a problem; the
    other rows import. Nothing is held in memory per row: a million-row file or a pipe works.

    Args:
        labels_csv: the CSV file (a regular file, or a pipe such as ``<(cat labels.csv)``; see
            :func:`readable_labels`).
        images_dir: the folder image names are relative to (default: ``images/``, ``train_images/``
            or, for train.csv, ``train/`` beside the CSV when they hold the first photo, else the
            CSV's own folder; required for a pipe).
        allow_absolute: accept rows naming a photo by absolute path. Without it such rows, and
            rows whose name climbs out of ``images_dir`` with ``..``, are reported and skipped
            (the labels reader's ``confine``, :func:`model.api.resolve_inside`).
        shown_as: the name to give the labels file in messages when ``labels_csv`` is a copy
            staged by the caller with :func:`readable_labels` (e.g. of a pipe).

    Raises:
        DataError: the CSV cannot be read as a whole (missing, not UTF-8, no header, required
            columns absent), before anything is imported.
        InputError: the CSV is not a regular file or pipe, or is too large.
        Interrupted: stopped by ``should_stop`` (``exc.report`` holds the partial report).
    """
    shown = Path(shown_as) if shown_as is not None else Path(labels_csv)
    with readable_labels(labels_csv) as readable:
        if (readable != Path(labels_csv) or shown != Path(labels_csv)) and images_dir is None:
            raise DataError(f"{shown}: labels read from a pipe need the images folder (--images)")
        try:  # reads the header now: a bad file fails before any import
            rows = open_labels(readable, images_dir, confine=True, allow_absolute=allow_absolute)
        except DataError as exc:
            raise _named_as(exc, readable, shown) from None
        report = ImportReport()
        passed = 0

        def report_bad_rows() -> None:
            nonlocal passed
            for issue in rows.issues[passed:]:
                report.add_error(f"{shown} line {issue.line} ({issue.image or 'no image'})", issue.problem)
            report.errors_not_listed += rows.issue_count - max(passed, len(rows.issues))
            passed = rows.issue_count
            report.absolute_refused = rows.absolute_refused

        def items() -> Iterator[tuple[Path, LabelledPhoto]]:
            with rows:
                for row in rows:
                    report_bad_rows()
                    yield row.path, row
            report_bad_rows()

        return _run(catalog, items(), count_lines(readable), report, detector=detector, engine=engine,
                    copy=copy, progress=progress, should_stop=should_stop, who=who, source=str(shown))


def _photo_image(catalog: Catalog, photo_id: int) -> tuple[np.ndarray, tuple[float, float]]:
    ph = catalog.photo(photo_id)
    image = load_image(catalog.resolve_path(ph), max_side=MODEL_SIDE)
    full_w = ph.width or image.shape[1]
    full_h = ph.height or image.shape[0]
    return image, (full_w / image.shape[1], full_h / image.shape[0])


def embed_missing(catalog: Catalog, engine, progress: ProgressFn | None = None,
                  should_stop: StopFn | None = None) -> dict:
    """Embed every photo with no embedding under ``engine.version``; see :func:`app.services.matching.embed_missing`."""
    from app.services.matching import embed_missing as _embed

    return _embed(catalog, engine, progress=progress, should_stop=should_stop)


def detect_missing(catalog: Catalog, detector, progress: ProgressFn | None = None,
                   should_stop: StopFn | None = None, who: str | None = None) -> ImportReport:
    """Run the detector on every photo that has no box row yet (boxes are appended, never replaced)."""
    report = ImportReport()
    who = who or catalog.user
    todo = [p.id for p in catalog.iter_photos() if catalog.current_box(p.id) is None]
    t0 = time.perf_counter()
    try:
        for pid in each_photo(todo, "detection", progress=progress, should_stop=should_stop, report=report,
                              step="detecting {i}/{n}"):
            try:
                image, scale = _photo_image(catalog, pid)
            except ImageError as exc:
                report.add_error(exc.path, exc.problem)
                continue
            det = detector.detect(image)
            with catalog.transaction(durable=False):
                if catalog.current_box(pid) is None:
                    catalog.add_box(pid, _scale_box(det.box, scale) if det is not None else None,
                                    source=box_source(det) if det is not None else "none",
                                    confidence=float(det.confidence) if det is not None else 0.0, who=who)
            report.imported.append(pid)
    except Interrupted:
        report.cancelled = True
        raise
    report.seconds = time.perf_counter() - t0
    return report


def ensure_thumbnail(catalog: Catalog, photo_id: int) -> Path:
    """The photo's thumbnail file, written now if it is missing (e.g. a catalog copied without them).

    Raises:
        ImageError: the photo's file cannot be read.
    """
    ph = catalog.photo(photo_id)
    dest = catalog.thumbnail_path(ph.sha256)
    if not dest.is_file():
        write_thumbnail(load_image(catalog.resolve_path(ph), max_side=2 * THUMB_SIDE), dest)
    return dest


def relink(catalog: Catalog, new_root: str | Path, progress: ProgressFn | None = None,
           should_stop: StopFn | None = None) -> dict[int, str]:
    """Find photos whose file moved: search ``new_root`` for files with a missing photo's SHA-256.

    Only photos whose recorded file is missing (and not copied into the catalog) are relinked;
    a candidate file is hashed only when its size matches. Returns {photo id: new path}.
    """
    missing: dict[int, list] = {}
    for ph in catalog.iter_photos():
        if not ph.copied and not Path(ph.path).exists():
            missing.setdefault(ph.size, []).append(ph)
    found: dict[int, str] = {}
    if not missing:
        return found
    files = find_photos([new_root])
    for i, f in enumerate(files):
        if should_stop is not None and should_stop():
            raise Interrupted(f"relink stopped after {i} of {len(files)} files")
        if progress is not None:
            progress(i / max(len(files), 1), f"checking {f.name}")
        try:
            size = f.stat().st_size
            if size not in missing:
                continue
            sha = sha256_of(f)
        except (OSError, InputError):  # gone, unreadable, or not a regular file (FIFO, device)
            continue
        for ph in missing[size]:
            if ph.sha256 == sha and ph.id not in found:
                found[ph.id] = str(f.absolute())
    with catalog.transaction():
        for pid, path in found.items():
            catalog.set_photo_path(pid, path)
    return found
