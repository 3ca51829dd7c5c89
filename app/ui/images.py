"""Photo pixels for the views: decoding off the GUI thread, numpy <-> QImage, a thumbnail cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QImageReader, QPainter, QPixmap

from app.services.viewdata import CROP_MARGIN, crop_rect
from app.ui.workers import lower_thread_priority


def read_qimage(path: str, max_side: int | None = None) -> QImage:
    """Decode a photo (EXIF orientation applied) as a QImage; safe in any thread.

    Args:
        path: the photo file.
        max_side: scale it down (during decoding where the format allows) to at most this.

    Returns:
        The image, or a null QImage if it cannot be read.
    """
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    if max_side:
        size = reader.size()
        if size.isValid() and max(size.width(), size.height()) > max_side:
            size.scale(QSize(max_side, max_side), Qt.AspectRatioMode.KeepAspectRatio)
            # orientation may swap the sides; scaling is applied before the transform
            reader.setScaledSize(size)
    image = reader.read()
    return image


def numpy_to_qimage(array: np.ndarray) -> QImage:
    """uint8 [H, W] gray, [H, W, 3] RGB or [H, W, 4] RGBA to a QImage that owns its pixels."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    h, w = a.shape[:2]
    if a.ndim == 2:
        fmt, stride = QImage.Format.Format_Grayscale8, w
    elif a.shape[2] == 3:
        fmt, stride = QImage.Format.Format_RGB888, 3 * w
    else:
        fmt, stride = QImage.Format.Format_RGBA8888, 4 * w
    return QImage(a.data, w, h, stride, fmt).copy()


def placeholder_pixmap(size: int, text: str = "") -> QPixmap:
    """A grey square shown while a thumbnail loads (or when the photo is missing)."""
    pm = QPixmap(size, size)
    pm.fill(QColor("#2b3138"))
    if text:
        p = QPainter(pm)
        p.setPen(QColor("#aab4be"))
        p.drawText(pm.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
        p.end()
    return pm


class _LoadSignals(QObject):
    loaded = Signal(str, QImage)


class _LoadTask(QRunnable):
    def __init__(self, key: str, loader: Callable[[], QImage], signals: _LoadSignals):
        super().__init__()
        self.key, self.loader, self.signals = key, loader, signals

    def run(self) -> None:
        lower_thread_priority()
        try:
            image = self.loader()
        except Exception:  # noqa: BLE001 - a bad photo shows as a placeholder
            image = QImage()
        finally:
            self.loader = None  # the pool may keep the wrapper after the run (see workers._Runnable)
        self.signals.loaded.emit(self.key, image)


class ImageCache(QObject):
    """Loads images in a background pool, keeps the most recent ones, says when one arrives.

    ``get(key)`` returns the cached QPixmap or None and schedules the load once.
    """

    image_ready = Signal(str)

    def __init__(self, parent: QObject | None = None, capacity: int = 2000, threads: int = 2):
        super().__init__(parent)
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._pending: set[str] = set()
        self._failed: set[str] = set()
        self._capacity = capacity
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._signals = _LoadSignals()
        self._signals.loaded.connect(self._on_loaded)

    def get(self, key: str, loader: Callable[[], QImage]) -> QPixmap | None:
        """The pixmap for ``key`` if loaded; otherwise start ``loader`` in the pool and return None."""
        pm = self._cache.get(key)
        if pm is not None:
            self._cache.move_to_end(key)
            return pm
        if key not in self._pending and key not in self._failed:
            self._pending.add(key)
            self.pool.start(_LoadTask(key, loader, self._signals))
        return None

    def failed(self, key: str) -> bool:
        """True when loading ``key`` failed (missing or unreadable photo)."""
        return key in self._failed

    def clear(self) -> None:
        """Forget every cached image (a new catalog was opened)."""
        self._cache.clear()
        self._failed.clear()

    def _on_loaded(self, key: str, image: QImage) -> None:
        self._pending.discard(key)
        if image.isNull():
            self._failed.add(key)
        else:
            self._cache[key] = QPixmap.fromImage(image)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        self.image_ready.emit(key)

    def wait(self, msecs: int = 10000) -> bool:
        """Block until every pending load is done (tests and shutdown)."""
        return self.pool.waitForDone(msecs)


def crop_box(image: QImage, box, source_long_side: int | None, margin: float = CROP_MARGIN) -> QImage:
    """The box (photo pixels, plus a margin) cut out of ``image``, which may be a scaled-down decode.

    Args:
        image: the decoded photo (possibly scaled down).
        box: (x0, y0, x1, y1) in the original photo's pixels, or None for the whole photo.
        source_long_side: the original photo's longer side (to scale the box); None = same size.
        margin: fraction of the box's size added on each side.
    """
    if image.isNull() or box is None:
        return image
    s = max(image.width(), image.height()) / source_long_side if source_long_side else 1.0
    x0, y0, x1, y1 = crop_rect(tuple(v * s for v in box), image.width(), image.height(), margin)
    return image.copy(x0, y0, x1 - x0, y1 - y0)


def read_crop(path: str, box, max_side: int = 1600, margin: float = CROP_MARGIN) -> QImage:
    """Decode a photo and cut out its box (thread-safe; the view's loader)."""
    reader = QImageReader(path)
    size = reader.size()
    long_side = max(size.width(), size.height()) if size.isValid() else None
    image = read_qimage(path, max_side)
    return crop_box(image, box, long_side, margin)
