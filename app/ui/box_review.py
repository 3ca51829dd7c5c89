"""Box review: check the detector's box on each photo; Enter accepts, S skips, J marks no fluke."""

from __future__ import annotations

import html

from PySide6.QtCore import QStringListModel, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.services.decisions import detector_sure
from app.services.importing import BOX_CHECK_BELOW
from app.services.viewdata import PhotoCard
from app.ui.image_view import BoxEditor
from app.ui.images import ImageCache, QImageReader, placeholder_pixmap, read_qimage

FULL_SIDE = 2048  # photos are shown at most this large (boxes are scaled back to photo pixels)


def _key(path: str) -> str:
    return f"full:{path}"


class BoxReviewView(QWidget):
    """The queue of photos whose box is unchecked, one photo with its editable box.

    Signals:
        box_accepted(int, object): photo id and box (photo pixels) — Enter.
        box_skipped(int): S.
        junk_marked(int): J, the photo shows no fluke.
        sure_boxes_accepted(list): the photo ids whose detector box is at least ``sure`` confident,
            to accept at once (one undoable action).
    """

    box_accepted = Signal(int, object)
    box_skipped = Signal(int)
    junk_marked = Signal(int)
    sure_boxes_accepted = Signal(list)

    def __init__(self, cache: ImageCache, parent=None, sure: float = BOX_CHECK_BELOW):
        super().__init__(parent)
        self._cache = cache
        self.sure = sure  # detector confidence from which a box may be accepted with the others at once
        self._queue: list[PhotoCard] = []
        self._index = 0
        self._updating = False
        self._scale = 1.0  # displayed pixels per photo pixel
        self._photo_size: tuple[int, int] | None = None
        self.queue_model = QStringListModel(self)
        self.queue_list = QListView()
        self.queue_list.setModel(self.queue_model)
        self.queue_list.setUniformItemSizes(True)
        self.queue_list.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.queue_list.setMaximumWidth(260)
        self.queue_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.queue_list.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._on_row(cur.row()))
        self.editor = BoxEditor()
        self.title = QLabel()
        self.title.setObjectName("viewTitle")
        self.hint = QLabel("Drag a corner to adjust, drag inside to move, drag outside to draw a new box.  "
                           "<b>Enter</b> accept · <b>S</b> skip · <b>J</b> no fluke · <b>R</b> reset")
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        self.accept_btn = QPushButton("Accept box  (Enter)")
        self.accept_btn.setObjectName("primary")
        self.skip_btn = QPushButton("Skip  (S)")
        self.junk_btn = QPushButton("No fluke  (J)")
        self.reset_btn = QPushButton("Reset  (R)")
        for b in (self.accept_btn, self.skip_btn, self.junk_btn, self.reset_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.accept_btn.clicked.connect(self.accept_current)
        self.skip_btn.clicked.connect(self.skip_current)
        self.junk_btn.clicked.connect(self.junk_current)
        self.reset_btn.clicked.connect(self._show_box)
        self.empty = QLabel("No boxes to check. Import photos, or look at Match review.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setObjectName("emptyMessage")
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.junk_btn)
        buttons.addWidget(self.skip_btn)
        buttons.addWidget(self.accept_btn)
        centre = QWidget()
        cl = QVBoxLayout(centre)
        cl.addWidget(self.title)
        cl.addWidget(self.editor, 1)
        cl.addWidget(self.empty, 1)
        cl.addWidget(self.hint)
        cl.addLayout(buttons)
        split = QSplitter()
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("Queue"))
        ll.addWidget(self.queue_list)
        self.accept_sure_btn = QPushButton()
        self.accept_sure_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.accept_sure_btn.setToolTip(
            f"Accept as they are, in one step, the boxes the detector is at least {sure:.0%} sure of; the "
            "others stay here to check. One Undo (Ctrl+Z) takes them all back.")
        self.accept_sure_btn.clicked.connect(self.accept_sure)
        ll.addWidget(self.accept_sure_btn)
        split.addWidget(left)
        split.addWidget(centre)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(split)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        for key, slot in (("Return", self.accept_current), ("Enter", self.accept_current),
                          ("S", self.skip_current), ("J", self.junk_current), ("R", self._show_box)):
            sc = QShortcut(QKeySequence(key), self, slot)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)  # only while this view is the visible tab
        cache.image_ready.connect(self._on_image)
        self._refresh()

    # -- queue ----------------------------------------------------------------------------
    def set_queue(self, photos: list[PhotoCard]) -> None:
        """Photos whose box needs checking, in review order; keeps the current one if still queued."""
        current = self.current()
        self._queue = list(photos)
        self._index = 0
        if current is not None:
            for i, p in enumerate(self._queue):
                if p.photo_id == current.photo_id:
                    self._index = i
        self._refresh()

    def show_photo(self, photo_id: int) -> bool:
        """Bring this photo of the queue up (False when it is not queued)."""
        for i, p in enumerate(self._queue):
            if p.photo_id == photo_id:
                self._index = i
                self._refresh()
                return True
        return False

    def current(self) -> PhotoCard | None:
        return self._queue[self._index] if 0 <= self._index < len(self._queue) else None

    def sure_photo_ids(self) -> list[int]:
        """The queued photos whose box the detector drew at least ``sure`` confident (labelled boxes
        the detector disagreed with are never among them)."""
        return [p.photo_id for p in self._queue
                if p.box is not None and detector_sure(p.box_source, p.box_confidence, self.sure)]

    def accept_sure(self) -> None:
        ids = self.sure_photo_ids()
        if ids:
            self.sure_boxes_accepted.emit(ids)

    def _refresh(self) -> None:
        n_sure = len(self.sure_photo_ids())
        self.accept_sure_btn.setVisible(n_sure > 0)
        self.accept_sure_btn.setText(f"Accept the {n_sure} sure box{'es' if n_sure != 1 else ''} (≥{self.sure:.0%})")
        self._updating = True
        try:
            self.queue_model.setStringList([p.file_name for p in self._queue])
            if self._queue:
                self.queue_list.setCurrentIndex(self.queue_model.index(self._index))
        finally:
            self._updating = False
        self._show_current()

    def _on_row(self, row: int) -> None:
        if not self._updating and 0 <= row < len(self._queue):
            self._index = row
            self._show_current()

    def _show_current(self) -> None:
        p = self.current()
        has = p is not None
        self.editor.setVisible(has)
        self.empty.setVisible(not has)
        for b in (self.accept_btn, self.skip_btn, self.junk_btn, self.reset_btn):
            b.setEnabled(has)
        if not has:
            self.title.setText("Box review")
            self.editor.set_pixmap(None)
            return
        if p.box_source == "imported":
            conf = " · labelled box the detector disagrees with"
        elif p.box_confidence is not None:
            conf = f" · detector confidence {p.box_confidence:.0%}"
        else:
            conf = ""
        who = f" · {p.individual}" if p.individual else ""
        self.title.setText(f"<b>{html.escape(p.file_name)}</b>  ({self._index + 1} of {len(self._queue)})"
                           f"{html.escape(who)}{conf}")
        if self._cache.failed(_key(p.path)):
            self.editor.set_pixmap(placeholder_pixmap(480, f"photo not found:\n{p.path}"))
            self.editor.set_box(None)
            return
        pm = self._cache.get(_key(p.path), lambda path=p.path: read_qimage(path, FULL_SIDE))
        self._set_photo(pm)
        nxt = self._queue[self._index + 1] if self._index + 1 < len(self._queue) else None
        if nxt is not None:  # prefetch, so the next photo comes up at once
            self._cache.get(_key(nxt.path), lambda path=nxt.path: read_qimage(path, FULL_SIDE))

    def _set_photo(self, pm) -> None:
        p = self.current()
        self.editor.set_pixmap(pm)
        if pm is None or p is None:
            self.editor.set_box(None)
            return

        self._scale = 1.0
        if p.path and pm is not None:
            reader = QImageReader(p.path)
            reader.setAutoTransform(True)
            img_size = reader.size()
            if img_size.isValid():
                long_src = max(img_size.width(), img_size.height())
                self._scale = max(pm.width(), pm.height()) / long_src if long_src else 1.0
        self._show_box()

    def _show_box(self) -> None:
        p = self.current()
        if p is None:
            return
        if p.box is None:
            r = self.editor.image_rect()
            self.editor.set_box((r.width() * 0.1, r.height() * 0.1, r.width() * 0.9, r.height() * 0.9)
                                if not r.isEmpty() else None)
        else:
            s = self._scale
            self.editor.set_box(tuple(v * s for v in p.box))

    def _on_image(self, key: str) -> None:
        p = self.current()
        if p is not None and key == _key(p.path):
            self._show_current()

    # -- decisions ------------------------------------------------------------------------
    def current_box(self):
        """The edited box in photo pixels (None before the photo is shown)."""
        b = self.editor.box()
        if b is None or self.editor.image_rect().isEmpty():
            p = self.current()  # the photo is still loading: the stored box is what the user sees
            return p.box if p is not None else None
        s = self._scale or 1.0
        return tuple(round(v / s, 1) for v in b)

    def _advance(self) -> None:
        del self._queue[self._index]
        if self._index >= len(self._queue):
            self._index = max(0, len(self._queue) - 1)
        self._refresh()

    def accept_current(self) -> None:
        p = self.current()
        box = self.current_box()
        if p is None or box is None:
            return
        self._advance()
        self.box_accepted.emit(p.photo_id, box)

    def skip_current(self) -> None:
        p = self.current()
        if p is None:
            return
        if len(self._queue) > 1:  # the next photo; after the last, the first again
            self._index = (self._index + 1) % len(self._queue)
            self._refresh()
        self.box_skipped.emit(p.photo_id)

    def junk_current(self) -> None:
        p = self.current()
        if p is None:
            return
        self._advance()
        self.junk_marked.emit(p.photo_id)
