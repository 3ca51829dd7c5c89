"""A zoomable, pannable photo view with an optional overlay, and a box editor built on it."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
)

from app.services.viewdata import Box


class ImageView(QGraphicsView):
    """Shows one image fitted to the view; wheel zooms, drag pans, double-click refits.

    ``view_changed`` carries (zoom relative to fit, centre x, centre y as fractions of the
    image) so two views can be kept in step with :meth:`apply_view`.
    """

    view_changed = Signal(float, float, float)

    def __init__(self, parent=None, background: str = "#15191d"):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setBackgroundBrush(QColor(background))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.pixmap_item = QGraphicsPixmapItem()
        self.pixmap_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self.pixmap_item)
        self.overlay_item = QGraphicsPixmapItem()
        self.overlay_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.overlay_item.setZValue(1)
        self.overlay_item.setVisible(False)
        self.scene().addItem(self.overlay_item)
        self._zoom = 1.0  # relative to fit
        self._syncing = False
        self.horizontalScrollBar().valueChanged.connect(self._emit_view)
        self.verticalScrollBar().valueChanged.connect(self._emit_view)

    # -- content --------------------------------------------------------------------------
    def set_pixmap(self, pixmap: QPixmap | None) -> None:
        """Show this image (None clears) and fit it."""
        self.pixmap_item.setPixmap(pixmap if pixmap is not None else QPixmap())
        self.overlay_item.setPixmap(QPixmap())
        self.overlay_item.setVisible(False)
        rect = QRectF(self.pixmap_item.boundingRect())
        self.scene().setSceneRect(rect)
        self.fit()

    def image_rect(self) -> QRectF:
        return self.pixmap_item.boundingRect()

    def set_overlay(self, pixmap: QPixmap | None, opacity: float = 0.6) -> None:
        """Lay ``pixmap`` over the whole image (scaled to it)."""
        if pixmap is None or pixmap.isNull():
            self.overlay_item.setPixmap(QPixmap())
            return
        self.overlay_item.setPixmap(pixmap)
        rect = self.image_rect()
        if pixmap.width() and rect.width():
            self.overlay_item.setScale(rect.width() / pixmap.width())
        self.overlay_item.setOpacity(opacity)

    def has_overlay(self) -> bool:
        return not self.overlay_item.pixmap().isNull()

    def show_overlay(self, visible: bool) -> None:
        self.overlay_item.setVisible(visible)

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_item.setOpacity(opacity)

    # -- zoom and pan ---------------------------------------------------------------------
    def fit(self) -> None:
        """Fit the whole image in the view."""
        self.resetTransform()
        self._zoom = 1.0
        rect = self.image_rect()
        if not rect.isEmpty():
            self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self._emit_view()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        zoom, cx, cy = self.view_state()
        self.apply_view(zoom, cx, cy, emit=False)

    def wheelEvent(self, event) -> None:  # noqa: N802
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        new = min(max(self._zoom * factor, 1.0), 20.0)
        if new != self._zoom:
            self.scale(new / self._zoom, new / self._zoom)
            self._zoom = new
            self._emit_view()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        self.fit()

    def zoom_by(self, factor: float) -> None:
        """Zoom about the view's centre (keyboard + / -)."""
        zoom, cx, cy = self.view_state()
        self.apply_view(min(max(zoom * factor, 1.0), 20.0), cx, cy)

    def view_state(self) -> tuple[float, float, float]:
        """(zoom relative to fit, centre x, centre y as fractions of the image)."""
        rect = self.image_rect()
        if rect.isEmpty():
            return self._zoom, 0.5, 0.5
        c = self.mapToScene(self.viewport().rect().center())
        return self._zoom, (c.x() - rect.left()) / rect.width(), (c.y() - rect.top()) / rect.height()

    def apply_view(self, zoom: float, cx: float, cy: float, emit: bool = True) -> None:
        """Set zoom (relative to fit) and centre (fractions of the image)."""
        rect = self.image_rect()
        if rect.isEmpty():
            return
        self._syncing = not emit
        try:
            self.resetTransform()
            self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
            self.scale(zoom, zoom)
            self._zoom = zoom
            self.centerOn(QPointF(rect.left() + cx * rect.width(), rect.top() + cy * rect.height()))
        finally:
            self._syncing = False
        if emit:
            self._emit_view()

    def _emit_view(self, *_args) -> None:
        if not self._syncing:
            self.view_changed.emit(*self.view_state())


def link_views(a: ImageView, b: ImageView) -> None:
    """Keep two views at the same relative zoom and centre."""
    a.view_changed.connect(lambda z, x, y: b.apply_view(z, x, y, emit=False))
    b.view_changed.connect(lambda z, x, y: a.apply_view(z, x, y, emit=False))


class BoxEditor(ImageView):
    """An :class:`ImageView` with one editable box: drag a corner or an edge, drag inside to
    move, drag outside to draw a new box. ``box_changed`` carries the box in image pixels."""

    box_changed = Signal(object)
    HANDLE = 9  # pixels on screen

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.rect_item = QGraphicsRectItem()
        pen = QPen(QColor("#ffcc33"), 2)
        pen.setCosmetic(True)
        self.rect_item.setPen(pen)
        self.rect_item.setBrush(QBrush(QColor(255, 204, 51, 30)))
        self.rect_item.setZValue(2)
        self.rect_item.setVisible(False)
        self.scene().addItem(self.rect_item)
        self._handles: list[QGraphicsRectItem] = []
        for _ in range(4):
            h = QGraphicsRectItem()
            hp = QPen(QColor("#15191d"), 1)
            hp.setCosmetic(True)
            h.setPen(hp)
            h.setBrush(QColor("#ffcc33"))
            h.setZValue(3)
            h.setFlag(QGraphicsRectItem.GraphicsItemFlag.ItemIgnoresTransformations)
            h.setRect(-self.HANDLE / 2, -self.HANDLE / 2, self.HANDLE, self.HANDLE)
            h.setVisible(False)
            self.scene().addItem(h)
            self._handles.append(h)
        self._drag: tuple[str, QPointF, QRectF] | None = None
        self.setMouseTracking(True)

    def set_box(self, box: Box | None) -> None:
        """Show this box (image pixels); None hides it."""
        if box is None:
            self.rect_item.setVisible(False)
            for h in self._handles:
                h.setVisible(False)
            return
        self._set_rect(QRectF(QPointF(box[0], box[1]), QPointF(box[2], box[3])).normalized())

    def box(self) -> Box | None:
        """The current box in image pixels, or None."""
        if not self.rect_item.isVisible():
            return None
        r = self.rect_item.rect()
        return (r.left(), r.top(), r.right(), r.bottom())

    def _set_rect(self, r: QRectF) -> None:
        r = r.normalized().intersected(self.image_rect())
        self.rect_item.setRect(r)
        self.rect_item.setVisible(True)
        for h, p in zip(self._handles, (r.topLeft(), r.topRight(), r.bottomRight(), r.bottomLeft())):
            h.setPos(p)
            h.setVisible(True)

    def _hit(self, pos) -> str:
        if not self.rect_item.isVisible():
            return "new"
        r = self.rect_item.rect()
        corners = {"tl": r.topLeft(), "tr": r.topRight(), "br": r.bottomRight(), "bl": r.bottomLeft()}
        for name, c in corners.items():
            v = self.mapFromScene(c)
            if abs(v.x() - pos.x()) <= self.HANDLE and abs(v.y() - pos.y()) <= self.HANDLE:
                return name
        if r.contains(self.mapToScene(pos)):
            return "move"
        return "new"

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton or self.image_rect().isEmpty():
            return super().mousePressEvent(event)
        kind = self._hit(event.position().toPoint())
        start = self.mapToScene(event.position().toPoint())
        self._drag = (kind, start, QRectF(self.rect_item.rect()))
        if kind == "new":
            self._set_rect(QRectF(start, start))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position().toPoint()
        if self._drag is None:
            kind = self._hit(pos)
            cursor = {"tl": Qt.CursorShape.SizeFDiagCursor, "br": Qt.CursorShape.SizeFDiagCursor,
                      "tr": Qt.CursorShape.SizeBDiagCursor, "bl": Qt.CursorShape.SizeBDiagCursor,
                      "move": Qt.CursorShape.SizeAllCursor}.get(kind, Qt.CursorShape.CrossCursor)
            self.viewport().setCursor(cursor)
            return
        kind, start, r0 = self._drag
        p = self.mapToScene(pos)
        r = QRectF(r0)
        if kind == "new":
            r = QRectF(start, p)
        elif kind == "move":
            r.translate(p - start)
        elif kind == "tl":
            r.setTopLeft(p)
        elif kind == "tr":
            r.setTopRight(p)
        elif kind == "br":
            r.setBottomRight(p)
        elif kind == "bl":
            r.setBottomLeft(p)
        self._set_rect(r)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag is None:
            return super().mouseReleaseEvent(event)
        self._drag = None
        r = self.rect_item.rect()
        if r.width() < 4 or r.height() < 4:
            return
        self.box_changed.emit(self.box())

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        event.ignore()
