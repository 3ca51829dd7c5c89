"""Side-by-side compare of a query and a candidate: synchronized zoom and pan, evidence lines."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from app.services.viewdata import EvidenceLine  # noqa: F401 - re-exported for the views
from app.ui.image_view import ImageView, link_views


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
            c.setTextFormat(Qt.TextFormat.PlainText)  # file names and codes, shown as written
            c.setObjectName("caption")
            c.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.lines: list[EvidenceLine] = []
        self.lines_visible = True
        self.panes = []
        for cap, view in ((self.left_caption, self.left), (self.right_caption, self.right)):
            pane = QWidget()
            col = QVBoxLayout(pane)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(2)
            col.addWidget(cap)
            col.addWidget(view, 1)
            self.panes.append(pane)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(6)
        self.stacked = None
        self._arrange(False)
        self.overlay = _LinesOverlay(self)
        for v in (self.left, self.right):
            v.view_changed.connect(lambda *_: self.overlay.update())

    def _arrange(self, stacked: bool) -> None:
        """Side by side, or one above the other (wide fluke crops use the width better stacked)."""
        if stacked == self.stacked:
            return
        self.stacked = stacked
        for pane in self.panes:
            self.grid.removeWidget(pane)
        self.grid.addWidget(self.panes[0], 0, 0)
        self.grid.addWidget(self.panes[1], 1 if stacked else 0, 0 if stacked else 1)
        for i in range(2):
            self.grid.setRowStretch(i, 1 if stacked or i == 0 else 0)
            self.grid.setColumnStretch(i, 1 if not stacked or i == 0 else 0)

    def _fit_orientation(self) -> None:
        rects = [v.image_rect() for v in (self.left, self.right) if v.isVisible() and not v.image_rect().isEmpty()]
        if len(rects) < 2 or self.height() <= 0:
            self._arrange(False)
            return
        aspect = max(r.width() / r.height() for r in rects)
        # the scale each image gets in either arrangement; pick the larger
        w, h = self.width(), self.height()
        side = min((w / 2) / aspect, h)
        stack = min(w / aspect, h / 2)
        self._arrange(stack > side * 1.1)

    def refit(self) -> None:
        """Choose the arrangement for the images shown and fit both."""
        self._fit_orientation()
        self.left.fit()
        self.right.fit()
        self.overlay.update()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit_orientation()
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
