"""Each photo's local features (keypoints + RootSIFT descriptors): computed, stored, read back, repaired.

The catalog stores, per photo, the bytes of :class:`model.api.LocalFeatures` with the feature
version and the box they were computed on, so features are recomputed when the program's feature
version changes or when the photo's current box moves. Positions are stored in the photo's own
pixels (EXIF-oriented, full size): the catalog's boxes, the evidence drawing and the spatial
verification all use those.

Photos are decoded at most ``MODEL_SIDE`` pixels on their longer side (as for detection and
embedding; the crop is described at about 512 pixels anyway), then the positions are scaled back.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.catalog import Catalog, CatalogError
from app.services.jobs import ProgressFn, StopFn, each_photo
from model.api import DataError, ImageError, load_image

MODEL_SIDE = 1024  # same decoding as app.services.importing


def _axes(scale: float | Sequence[float]) -> tuple[float, float]:
    """(x, y) factors: one number for both axes, or a pair (a reduced panorama keeps at least 2 rows)."""
    if np.isscalar(scale):
        return float(scale), float(scale)
    return float(scale[0]), float(scale[1])


def to_photo_pixels(feats, scale: float | Sequence[float]):
    """Features extracted on an image ``scale`` times smaller than the photo, in the photo's pixels."""
    sx, sy = _axes(scale)
    if abs(sx - 1.0) < 1e-9 and abs(sy - 1.0) < 1e-9:
        return feats
    b = feats.box
    return dataclasses.replace(
        feats, xy=(feats.xy * np.array([sx, sy], np.float32)).astype(np.float32),
        scale=(feats.scale.astype(np.float32) * np.float32((sx * sy) ** 0.5)).astype(np.float16),
        box=(float(b[0]) * sx, float(b[1]) * sy, float(b[2]) * sx, float(b[3]) * sy))


def extract_on_decoded(image: np.ndarray, box: Sequence[float] | None, scale: float | Sequence[float]):
    """Local features of a decoded photo.

    Args:
        image: the photo decoded ``scale`` times smaller than its full size (RGB uint8).
        box: the fluke box in the FULL photo's pixels (None: the whole photo).
        scale: full photo pixels per decoded pixel (one number, or per axis ``(x, y)``).

    Returns:
        :class:`model.api.LocalFeatures` with positions in the full photo's pixels.
    """
    from model.api import extract_local_features

    sx, sy = _axes(scale)
    small = None if box is None else (float(box[0]) / sx, float(box[1]) / sy, float(box[2]) / sx, float(box[3]) / sy)
    return to_photo_pixels(extract_local_features(image, small), scale)


def _decoded(catalog: Catalog, photo_id: int) -> tuple[np.ndarray, tuple[float, float], tuple | None]:
    """(decoded photo, (x, y) scale to photo pixels, current box in photo pixels or None)."""
    ph = catalog.photo(photo_id)
    image = load_image(catalog.resolve_path(ph), max_side=MODEL_SIDE)
    scale = ((ph.width or image.shape[1]) / image.shape[1], (ph.height or image.shape[0]) / image.shape[0])
    cur = catalog.current_box(photo_id)
    return image, scale, (cur.box if cur is not None else None)


def compute_photo_features(catalog: Catalog, photo_id: int, *, store: bool = True):
    """Extract a catalog photo's local features from its current box (and store them when writable).

    Raises:
        ImageError: the photo's file cannot be read.
    """
    from model.api import FEATURE_VERSION

    image, scale, box = _decoded(catalog, photo_id)
    feats = extract_on_decoded(image, box, scale)
    if store and not catalog.readonly:
        catalog.put_local_features(photo_id, feature_version=FEATURE_VERSION, n=len(feats),
                                   data=feats.to_bytes(), box=box)
    return feats


def decode_record(catalog: Catalog, record, notes: list[str] | None = None, *, repair: bool = True):
    """The :class:`model.api.LocalFeatures` of a stored record; damaged ones are recomputed.

    A record that does not decode (corrupt bytes, another feature version) is reported in
    ``notes`` ("photo 12 (a.jpg): stored local features were damaged (...): recomputed") and
    recomputed from the photo when ``repair`` (None when it cannot be: the photo's file is missing).
    """
    from model.api import LocalFeatures

    try:
        return LocalFeatures.from_bytes(record.data)
    except DataError as exc:
        name = _name(catalog, record.photo_id)
        if not repair:
            _note(notes, f"photo {record.photo_id} ({name}): stored local features unusable ({exc})")
            return None
        try:
            feats = compute_photo_features(catalog, record.photo_id)
        except ImageError as img:
            _note(notes, f"photo {record.photo_id} ({name}): stored local features unusable ({exc}) and the "
                         f"photo cannot be read to recompute them ({img.problem})")
            return None
        _note(notes, f"photo {record.photo_id} ({name}): stored local features were damaged ({exc}): recomputed")
        return feats


def photo_features(catalog: Catalog, photo_id: int, notes: list[str] | None = None):
    """A catalog photo's local features: the stored ones when fresh, else computed now (and stored).

    Raises:
        ImageError: they must be computed and the photo's file cannot be read.
    """
    from model.api import FEATURE_VERSION

    rec = catalog.local_features(photo_id)
    cur = catalog.current_box(photo_id)
    box = cur.box if cur is not None else None
    if rec is not None and rec.feature_version == FEATURE_VERSION and rec.box == box:
        feats = decode_record(catalog, rec, notes)
        if feats is not None:
            return feats
    return compute_photo_features(catalog, photo_id)


def _name(catalog: Catalog, photo_id: int) -> str:
    try:
        return catalog.photo(photo_id).path.replace("\\", "/").rsplit("/", 1)[-1]
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


@dataclass
class FeaturesReport:
    """What :func:`compute_missing_local_features` did.

    Attributes:
        computed: photo ids whose features were computed and stored.
        errors: (file, problem) for photos whose file could not be read.
        total: how many photos needed features when the job started.
        seconds: wall time.
    """

    computed: list[int] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"local features computed for {len(self.computed)} of {self.total} photos"
        if self.errors:
            text += f" ({len(self.errors)} unreadable)"
        return text


def compute_missing_local_features(catalog: Catalog, *, progress: ProgressFn | None = None,
                                   should_stop: StopFn | None = None) -> FeaturesReport:
    """Compute the local features of every usable photo that has none, stale ones, or ones of an old box.

    Resumable: each photo is stored as soon as it is computed, so a stopped job continues where
    it stopped the next time. Photos whose file cannot be read are listed and skipped.

    Args:
        catalog: an open, writable catalog.
        progress: ``progress(fraction, message)``.
        should_stop: polled before each photo.

    Returns:
        The report (computed photo ids, unreadable files).

    Raises:
        Interrupted: ``should_stop()`` returned True (the features stored so far stay).
        ReadOnlyError: the catalog is read-only and some photos need features.
    """
    from model.api import FEATURE_VERSION

    todo = catalog.photos_missing_local_features(FEATURE_VERSION)
    report = FeaturesReport(total=len(todo))
    t0 = time.perf_counter()
    if todo and catalog.readonly:
        from app.catalog import ReadOnlyError

        raise ReadOnlyError(f"{catalog.root}: {len(todo)} photos need local features but the catalog is "
                            f"read-only ({catalog.readonly_reason})")
    try:
        for pid in each_photo(todo, "local features", progress=progress, should_stop=should_stop, report=report):
            try:
                compute_photo_features(catalog, pid)
            except ImageError as exc:
                report.errors.append((exc.path, exc.problem))
                continue
            except (CatalogError, sqlite3.DatabaseError):
                raise  # the catalog itself is failing: stop
            except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the rest
                report.errors.append((_name(catalog, pid), f"local features failed ({type(exc).__name__}: {exc})"))
                continue
            report.computed.append(pid)
        if progress is not None:
            progress(1.0, report.summary())
    finally:
        report.seconds = time.perf_counter() - t0
    return report
