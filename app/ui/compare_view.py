"""Side-by-side compare of a query and a candidate: synchronized zoom and pan, evidence lines."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.ui.image_view import ImageView, link_views
from app.ui.viewdata import EvidenceLine  # noqa: F401 - re-exported for the views


class _LinesOverlay(QWidget):
    """Transparent widget over both views that draws the lines joining matched marks."""

    def __init__(self, owner: CompareView):
        super().__init__(owner)
        self.owner = owner
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)

    def _map(self, view: ImageView, fx: float, fy: float) -> QPoint:
        r = view.image_rect()
        p = view.mapFromScene(QPointF(r.left() + fx * r.width(), r.top() + fy * r.height()))
        return view.viewport().mapTo(self.owner, p)

    def paintEvent(self, event) -> None:  # noqa: N802
        o = self.owner
        if not o.lines_visible or not o.lines:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        wmax = max((ln.weight for ln in o.lines), default=1.0) or 1.0
        for i, ln in enumerate(o.lines):
            a = self._map(o.left, ln.ax, ln.ay)
            b = self._map(o.right, ln.bx, ln.by)
            hue = (40 + i * 47) % 360
            colour = QColor.fromHsv(hue, 200, 255, int(120 + 135 * ln.weight / wmax))
            p.setPen(QPen(colour, 1.5 + 2.0 * ln.weight / wmax))
            p.drawLine(a, b)
            p.setBrush(colour)
            for pt in (a, b):
                p.drawEllipse(pt, 5, 5)
        p.end()


class CompareView(QWidget):
    """Query crop (left) and candidate crop (right) with linked zoom/pan and evidence lines."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.left = ImageView()
        self.right = ImageView()
        link_views(self.left, self.right)
        self.left_caption = QLabel("Query")
        self.right_caption = QLabel("Candidate")
        for c in (self.left_caption, self.right_caption):
            c.setObjectName("caption")
            c.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.lines: list[EvidenceLine] = []
        self.lines_visible = True
        row = QHBoxLayout()
        for cap, view in ((self.left_caption, self.left), (self.right_caption, self.right)):
            col = QVBoxLayout()
            col.setSpacing(2)
            col.addWidget(cap)
            col.addWidget(view, 1)
            row.addLayout(col, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        self.overlay = _LinesOverlay(self)
        for v in (self.left, self.right):
            v.view_changed.connect(lambda *_: self.overlay.update())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.overlay.setGeometry(self.rect())
        self.overlay.raise_()

    def set_lines(self, lines: list[EvidenceLine]) -> None:
        """Show these evidence lines (empty clears them)."""
        self.lines = list(lines)
        self.overlay.raise_()
        self.overlay.update()

    def show_lines(self, visible: bool) -> None:
        self.lines_visible = visible
        self.overlay.update()
