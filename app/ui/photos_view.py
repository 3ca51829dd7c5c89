"""Photos view: a lazy thumbnail grid with status badges and filters."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from app.services.viewdata import STATUS_COLOURS, STATUS_LABELS, PhotoCard
from app.ui.images import ImageCache, placeholder_pixmap, read_qimage

THUMB = 176  # longer side of a thumbnail
THUMB_H = 124  # height of the thumbnail area (most fluke photos are landscape)
CELL = QSize(THUMB + 16, THUMB_H + 48)
PHOTO_ROLE = Qt.ItemDataRole.UserRole + 1


class PhotoListModel(QAbstractListModel):
    """The photos shown in the grid; thumbnails come from an :class:`ImageCache` lazily."""

    def __init__(self, cache: ImageCache, parent=None):
        super().__init__(parent)
        self._photos: list[PhotoCard] = []
        self._row_of: dict[str, int] = {}
        self._cache = cache
        cache.image_ready.connect(self._on_image)

    def set_photos(self, photos: list[PhotoCard]) -> None:
        """Replace the shown photos."""
        self.beginResetModel()
        self._photos = list(photos)
        self._row_of = {p.path: i for i, p in enumerate(self._photos)}
        self.endResetModel()

    def photo(self, row: int) -> PhotoCard:
        return self._photos[row]

    @staticmethod
    def _key(p: PhotoCard) -> str:
        return f"thumb:{p.path}"

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._photos)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        p = self._photos[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return p.file_name
        if role == Qt.ItemDataRole.ToolTipRole:
            parts = [p.path, STATUS_LABELS.get(p.status, p.status)]
            if p.individual:
                parts.append(f"Individual: {p.individual}")
            if p.date:
                parts.append(f"Date: {p.date}")
            return "\n".join(parts)
        if role == Qt.ItemDataRole.DecorationRole:
            key = self._key(p)
            return self._cache.get(key, lambda path=p.thumb or p.path: read_qimage(path, THUMB))
        if role == PHOTO_ROLE:
            return p
        return None

    def _on_image(self, key: str) -> None:
        row = self._row_of.get(key[6:]) if key.startswith("thumb:") else None
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def is_failed(self, p: PhotoCard) -> bool:
        return self._cache.failed(self._key(p))


class PhotoDelegate(QStyledItemDelegate):
    """Paints a thumbnail, its status badge and the file name / date."""

    def __init__(self, model: PhotoListModel, parent=None):
        super().__init__(parent)
        self._model = model
        self._loading = placeholder_pixmap(THUMB_H, "loading…")
        self._missing = placeholder_pixmap(THUMB_H, "photo not found")

    def sizeHint(self, option, index) -> QSize:  # noqa: N802
        return CELL

    def paint(self, painter: QPainter, option, index: QModelIndex) -> None:
        p: PhotoCard = index.data(PHOTO_ROLE)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = option.rect.adjusted(4, 4, -4, -4)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.setPen(QPen(QColor("#4a90d9") if selected else QColor("#3a4048"), 2 if selected else 1))
        painter.setBrush(QColor("#1f242a"))
        painter.drawRoundedRect(r, 6, 6)
        pm = index.data(Qt.ItemDataRole.DecorationRole)
        if pm is None:
            pm = self._missing if (p.missing or self._model.is_failed(p)) else self._loading
        area = QRect(r.left() + 4, r.top() + 4, r.width() - 8, THUMB_H)
        scaled = pm.scaled(area.size(), Qt.AspectRatioMode.KeepAspectRatio,
                           Qt.TransformationMode.SmoothTransformation)
        x = area.left() + (area.width() - scaled.width()) // 2
        y = area.top() + (area.height() - scaled.height()) // 2
        painter.drawPixmap(x, y, scaled)
        # badge
        text = p.individual if p.status == "identified" and p.individual else STATUS_LABELS.get(p.status, p.status)
        font = QFont(option.font)
        font.setPointSizeF(max(7.5, font.pointSizeF() - 1))
        font.setBold(True)
        painter.setFont(font)
        fm = painter.fontMetrics()
        bw = min(fm.horizontalAdvance(text) + 14, area.width() - 8)
        badge = QRect(area.left() + 4, area.top() + 4, bw, fm.height() + 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(STATUS_COLOURS.get(p.status, "#666")))
        painter.drawRoundedRect(badge, 8, 8)
        painter.setPen(QColor("white"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, fm.elidedText(text, Qt.TextElideMode.ElideRight, bw - 8))
        # caption
        font.setBold(False)
        painter.setFont(font)
        painter.setPen(QColor("#d5dbe1"))
        cap = QRect(r.left() + 6, area.bottom() + 4, r.width() - 12, r.bottom() - area.bottom() - 6)
        caption = p.file_name + (f"\n{p.date}" if p.date else "")
        painter.drawText(cap, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                         "\n".join(painter.fontMetrics().elidedText(s, Qt.TextElideMode.ElideMiddle, cap.width())
                                   for s in caption.split("\n")))
        painter.restore()


class PhotosView(QWidget):
    """Thumbnail grid of the catalog with filters by status, individual and date.

    Signals:
        photo_activated(int): a photo was double-clicked / Enter pressed (its id).
    """

    photo_activated = Signal(int)

    def __init__(self, cache: ImageCache, parent=None):
        super().__init__(parent)
        self._all: list[PhotoCard] = []
        self.model = PhotoListModel(cache, self)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All photos", None)
        for key, label in STATUS_LABELS.items():
            self.status_filter.addItem(label, key)
        self.individual_filter = QComboBox()
        self.individual_filter.setMinimumWidth(160)
        self.date_filter = QLineEdit()
        self.date_filter.setPlaceholderText("Date (e.g. 2024-07)")
        self.date_filter.setClearButtonEnabled(True)
        self.count_label = QLabel()
        bar = QHBoxLayout()
        for w in (QLabel("Show:"), self.status_filter, QLabel("Individual:"), self.individual_filter,
                  QLabel("Date:"), self.date_filter):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.count_label)
        self.list = QListView()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setGridSize(CELL)
        self.list.setSpacing(0)
        self.list.setLayoutMode(QListView.LayoutMode.Batched)
        self.list.setBatchSize(200)
        self.list.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.list.setModel(self.model)
        self.list.setItemDelegate(PhotoDelegate(self.model, self.list))
        self.list.activated.connect(lambda idx: self.photo_activated.emit(self.model.photo(idx.row()).photo_id))
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.list, 1)
        self.status_filter.currentIndexChanged.connect(self._apply)
        self.individual_filter.currentIndexChanged.connect(self._apply)
        self.date_filter.textChanged.connect(self._apply)

    def set_photos(self, photos: list[PhotoCard]) -> None:
        """Show these photos, work first (boxes to check, then unidentified); filters stay as set."""
        rank = {"box": 0, "unidentified": 1, "identified": 2, "junk": 3}
        self._all = sorted(photos, key=lambda p: rank.get(p.status, 4))
        current = self.individual_filter.currentData()
        names = sorted({(p.individual_id, p.individual) for p in photos if p.individual_id is not None},
                       key=lambda t: t[1] or "")
        self.individual_filter.blockSignals(True)
        self.individual_filter.clear()
        self.individual_filter.addItem("Any", None)
        for iid, label in names:
            self.individual_filter.addItem(label or str(iid), iid)
        i = self.individual_filter.findData(current)
        self.individual_filter.setCurrentIndex(max(i, 0))
        self.individual_filter.blockSignals(False)
        self._apply()

    def filtered(self) -> list[PhotoCard]:
        """The photos that pass the current filters."""
        status = self.status_filter.currentData()
        ind = self.individual_filter.currentData()
        date = self.date_filter.text().strip()
        return [p for p in self._all
                if (status is None or p.status == status)
                and (ind is None or p.individual_id == ind)
                and (not date or (p.date or "").startswith(date))]

    def _apply(self) -> None:
        shown = self.filtered()
        self.model.set_photos(shown)
        self.count_label.setText(f"{len(shown):,} of {len(self._all):,} photos")

    def selected_ids(self) -> list[int]:
        """Ids of the selected photos."""
        return [self.model.photo(i.row()).photo_id for i in self.list.selectionModel().selectedIndexes()]
