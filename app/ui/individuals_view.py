"""Individuals view: the catalog's whales, their photos, rename, notes and merge."""

from __future__ import annotations

import html

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.services.viewdata import IndividualRow, PhotoCard
from app.ui.dialogs import MergeDialog, confirm_merge
from app.ui.images import ImageCache
from app.ui.photos_view import CELL, PhotoDelegate, PhotoListModel

COLUMNS = ["Individual", "Name", "Photos", "First seen", "Last seen"]


ID_ROLE = Qt.ItemDataRole.UserRole + 1

CODE_COLUMN_MIN, CODE_COLUMN_MAX = 96, 280  # the individual code column's width bounds (px)


class IndividualsModel(QAbstractTableModel):
    """The individuals as a table; sorting and searching are done on the Python list (fast)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.all: list[IndividualRow] = []
        self.rows: list[IndividualRow] = []
        self.needle = ""
        self._sort = (0, Qt.SortOrder.AscendingOrder)

    def set_rows(self, rows: list[IndividualRow]) -> None:
        self.beginResetModel()
        self.all = list(rows)
        self._arrange()
        self.endResetModel()

    def set_needle(self, text: str) -> None:
        self.beginResetModel()
        self.needle = text.strip().lower()
        self._arrange()
        self.endResetModel()

    def _arrange(self) -> None:
        n = self.needle
        rows = [r for r in self.all if not n or n in r.code.lower() or n in r.name.lower()]
        col, order = self._sort
        key = [lambda r: r.code, lambda r: r.name.lower(), lambda r: r.photo_count,
               lambda r: r.first_seen or "", lambda r: r.last_seen or ""][col]
        rows.sort(key=key, reverse=order == Qt.SortOrder.DescendingOrder)
        self.rows = rows

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._arrange()
        self.layoutChanged.emit()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (r.code, r.name, str(r.photo_count), r.first_seen or "", r.last_seen or "")[col]
        if role == ID_ROLE:
            return r.individual_id
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and r.notes:
            return r.notes
        return None


class IndividualsView(QWidget):
    """List of individuals (sortable), the chosen one's photos, its name and notes, merge.

    Signals:
        rename_requested(int, str), notes_changed(int, str), merge_requested(int, int) (source
        into target, after the user confirmed), photo_activated(int).
    """

    rename_requested = Signal(int, str)
    notes_changed = Signal(int, str)
    merge_requested = Signal(int, int)
    photo_activated = Signal(int)

    def __init__(self, cache: ImageCache, parent=None):
        super().__init__(parent)
        self._rows: list[IndividualRow] = []
        self._by_id: dict[int, IndividualRow] = {}
        self._photos_of: dict[int, list[PhotoCard]] = {}
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find individual…")
        self.search.setClearButtonEnabled(True)
        self.table_model = IndividualsModel(self)
        self.search.textChanged.connect(self.table_model.set_needle)
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        header = self.table.horizontalHeader()
        for col, width in enumerate((CODE_COLUMN_MIN, 120, 64, 96, 96)):
            header.resizeSection(col, width)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(self._on_selected)
        self.heading = QLabel()
        self.heading.setObjectName("viewTitle")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. Salt, Pepper… (optional)")
        self.rename_btn = QPushButton("Rename")
        self.rename_btn.clicked.connect(self._rename)
        self.name_edit.returnPressed.connect(self._rename)
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("Notes: scars, entanglement, calf, where first seen…")
        self.notes.setMaximumHeight(90)
        self.save_notes_btn = QPushButton("Save notes")
        self.save_notes_btn.clicked.connect(self._save_notes)
        self.merge_btn = QPushButton("Merge into…")
        self.merge_btn.clicked.connect(self._merge)
        self.model = PhotoListModel(cache, self)
        self.photos = QListView()
        self.photos.setViewMode(QListView.ViewMode.IconMode)
        self.photos.setResizeMode(QListView.ResizeMode.Adjust)
        self.photos.setMovement(QListView.Movement.Static)
        self.photos.setUniformItemSizes(True)
        self.photos.setGridSize(CELL)
        self.photos.setModel(self.model)
        self.photos.setItemDelegate(PhotoDelegate(self.model, self.photos))
        self.photos.activated.connect(lambda i: self.photo_activated.emit(self.model.photo(i.row()).photo_id))

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.search)
        ll.addWidget(self.table)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.heading)
        form = QFormLayout()
        name_row = QHBoxLayout()
        name_row.addWidget(self.name_edit, 1)
        name_row.addWidget(self.rename_btn)
        form.addRow("Name", name_row)
        notes_row = QHBoxLayout()
        notes_row.addWidget(self.notes, 1)
        nb = QVBoxLayout()
        nb.addWidget(self.save_notes_btn)
        nb.addWidget(self.merge_btn)
        nb.addStretch(1)
        notes_row.addLayout(nb)
        form.addRow("Notes", notes_row)
        rl.addLayout(form)
        rl.addWidget(self.photos, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([520, 700])
        lay = QVBoxLayout(self)
        lay.addWidget(split)
        self._set_enabled(False)

    def set_individuals(self, rows: list[IndividualRow], photos: list[PhotoCard]) -> None:
        """Show these individuals; ``photos`` are all identified photos (grouped by individual)."""
        current = self.current_id()
        self._rows = list(rows)
        self._by_id = {r.individual_id: r for r in self._rows}
        self._photos_of: dict[int, list[PhotoCard]] = {}
        for p in photos:
            if p.individual_id is not None:
                self._photos_of.setdefault(p.individual_id, []).append(p)
        for group in self._photos_of.values():
            group.sort(key=lambda p: p.date or "")  # sightings in order
        self.table_model.set_rows(self._rows)
        self._fit_code_column()
        if current is not None and current in self._by_id:
            self.select(current)
        else:
            self._on_selected()

    def _fit_code_column(self) -> None:
        """The code column as wide as the longest code (within 96-280 px): real codes such as
        'hwk:w_0369a5c' were cut to 'hwk:w_036…' beside an empty, stretched name column."""
        fm = self.table.fontMetrics()
        widest = max((fm.horizontalAdvance(r.code) for r in self._rows[:5000]), default=0)
        self.table.horizontalHeader().resizeSection(0, min(max(widest + 32, CODE_COLUMN_MIN), CODE_COLUMN_MAX))

    def row(self, individual_id: int | None) -> IndividualRow | None:
        return self._by_id.get(individual_id) if individual_id is not None else None

    def current_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ID_ROLE) if rows else None

    def select(self, individual_id: int) -> None:
        """Select an individual in the list."""
        for i in range(self.table_model.rowCount()):
            idx = self.table_model.index(i, 0)
            if idx.data(ID_ROLE) == individual_id:
                self.table.selectRow(i)
                self.table.scrollTo(idx)
                return

    def _set_enabled(self, on: bool) -> None:
        for w in (self.name_edit, self.rename_btn, self.notes, self.save_notes_btn, self.merge_btn):
            w.setEnabled(on)

    def _on_selected(self) -> None:
        r = self.row(self.current_id())
        self._set_enabled(r is not None)
        if r is None:
            self.heading.setText("Choose an individual")
            self.name_edit.clear()
            self.notes.clear()
            self.model.set_photos([])
            return
        span = f" · seen {r.first_seen} – {r.last_seen}" if r.first_seen else ""
        self.heading.setText(f"<b>{html.escape(r.label)}</b> · {r.photo_count} photos{html.escape(span)}")
        self.name_edit.setText(r.name)
        self.notes.setPlainText(r.notes)
        self.model.set_photos(self._photos_of.get(r.individual_id, []))

    def _rename(self) -> None:
        iid = self.current_id()
        if iid is not None:
            self.rename_requested.emit(iid, self.name_edit.text().strip())

    def _save_notes(self) -> None:
        iid = self.current_id()
        if iid is not None:
            self.notes_changed.emit(iid, self.notes.toPlainText())

    def _merge(self) -> None:
        source = self.row(self.current_id())
        if source is None:
            return
        others = [r for r in self._rows if r.individual_id != source.individual_id]
        if not others:
            return
        dlg = MergeDialog(source, others, self)
        if not dlg.exec():
            return
        target = self.row(dlg.target_id())
        if target is not None and confirm_merge(self, source, target):
            self.merge_requested.emit(source.individual_id, target.individual_id)
