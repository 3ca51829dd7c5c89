"""Match review, the heart of the app: the query photo, its five candidates, and the decision.

Keys: 1-5 confirm that candidate · R reject the shown candidate · N new individual · S skip ·
H heatmap overlay · E evidence lines · Up/Down choose the shown candidate · Esc query alone.

Over 600 lines, one job: painting one match task (query, candidate cards, banner, heatmaps and
evidence) and turning keys into decisions; what to show and what a decision does are
:mod:`app.services.review`'s and :mod:`app.ui.review_controller`'s.
"""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.services.viewdata import CandidateCard, MatchTask
from app.ui.compare_view import CompareView, EvidenceLine
from app.ui.images import ImageCache, numpy_to_qimage, placeholder_pixmap, read_crop
from app.ui.notification import plain

CARD_THUMB = 92
CLOSE_CALL = 0.05  # top two scores closer than this: the banner asks for a careful comparison


def crop_key(path: str, box) -> str:
    return f"crop:{path}:{tuple(round(v) for v in box) if box else None}"


def score_colour(score: float, threshold: float | None, best_match: float | None = None) -> str:
    """Calibrated (``best_match`` given): green from the 'best match' threshold, lime from half of it,
    grey below; the new-individual threshold plays no part (on a real catalog it was 0.3%, and "<1%"
    came out lime beside a best match at 46%). Uncalibrated: green far above the bundle's threshold,
    lime from it, grey below; a threshold of 0 is a switched-off suggestion, not a bar every score
    clears."""
    t = threshold if threshold else None
    if best_match is not None:
        strong, weak = best_match, best_match / 2
    else:
        weak = t if t is not None else 0.5
        strong = max(weak, 0.5) + (1 - max(weak, 0.5)) / 2
    if score >= strong:
        return "#3fae6a"
    if score >= weak:
        return "#a6c84c"
    return "#8a939c"


class CandidateCardWidget(QFrame):
    """One candidate: its key, best photo, name, photo count, last sighting and a large score."""

    clicked = Signal(int)

    def __init__(self, rank: int, parent=None):
        super().__init__(parent)
        self.rank = rank
        self.setObjectName("card")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.key = QLabel(str(rank + 1))
        self.key.setObjectName("cardKey")
        self.key.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.key.setFixedSize(26, 26)
        self.thumb = QLabel()
        self.thumb.setFixedSize(CARD_THUMB, CARD_THUMB * 2 // 3)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumb.setObjectName("cardThumb")
        self.name = QLabel()
        self.name.setObjectName("cardName")
        self.name.setTextFormat(Qt.TextFormat.PlainText)  # a code is shown as written, never as markup
        self.details = QLabel()
        self.details.setObjectName("cardDetails")
        for label in (self.name, self.details):  # a long name or date gives way, never the score
            label.setMinimumWidth(1)
        self.score = QLabel()
        self.score.setObjectName("cardScore")
        self.score.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(6)
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 10, 6)
        grid.setHorizontalSpacing(10)
        grid.addWidget(self.key, 0, 0, 2, 1, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.thumb, 0, 1, 3, 1)
        grid.addWidget(self.name, 0, 2)
        grid.addWidget(self.score, 0, 3, 2, 1)
        grid.addWidget(self.details, 1, 2)
        grid.addWidget(self.bar, 2, 2, 1, 2)
        grid.setColumnStretch(2, 1)
        self.candidate: CandidateCard | None = None
        self._details = ""
        self.set_state(False, False)

    def set_candidate(self, c: CandidateCard | None, threshold: float | None,
                      best_match: float | None = None) -> None:
        self.candidate = c
        self.setVisible(c is not None)
        if c is None:
            return
        self.name.setText(c.label)
        last = f"<br>last seen {html.escape(str(c.last_seen))}" if c.last_seen else ""
        marks = "" if c.inliers is None else (" · verified" if c.inliers else " · unverified")
        self._details = f"{c.photo_count} photo{'s' if c.photo_count != 1 else ''}{marks}{last}"
        self.details.setText(self._details)
        plain = bool(c.score_text) and c.probability is None  # uncalibrated: a rank and a plain score
        value = c.probability if c.probability is not None else c.score
        colour = "#8a939c" if plain else score_colour(value, threshold, best_match)
        text = c.score_short or c.score_text or f"{c.score:.0%}"
        self.score.setText(f"<span style='color:{colour}'>{html.escape(text)}</span>")  # '<1%' is text
        self.score.setToolTip(f"{c.score_text}: a plain score that ranks the candidates, not a probability "
                              "(no calibration yet: flukeid calibrate). ✓ verified marks (candidates with "
                              "them rank first); a bare number: descriptor votes, or the fused score when a "
                              "model takes part" if plain else
                              "Calibrated probability that this is the same individual")
        self.bar.setVisible(not plain)
        self.bar.setValue(int(round(max(0.0, min(1.0, value)) * 1000)))
        self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; border-radius: 3px; }}")
        self.thumb.setPixmap(QPixmap())
        self.thumb.setText("…")

    def set_thumb(self, pm: QPixmap) -> None:
        self.thumb.setPixmap(pm.scaled(self.thumb.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation))

    def set_state(self, selected: bool, rejected: bool) -> None:
        self.setProperty("selected", selected)
        self.setProperty("rejected", rejected)
        self.style().unpolish(self)
        self.style().polish(self)
        if self.candidate is not None:
            self.details.setText("rejected for this photo" if rejected else self._details)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.clicked.emit(self.rank)


class MatchReviewView(QWidget):
    """The query crop, heatmap toggle, five candidate cards, compare and decision keys.

    Signals:
        confirmed(int, object, int): query photo id, CandidateCard, rank (0-based).
        rejected(int, object, int): the shown candidate is not this whale.
        new_individual(int): the photo shows an individual not in the catalog.
        skipped(int): decide later.
        heatmap_requested(int, str, object): photo id, path, box — the window answers with
            :meth:`set_heatmap`.
        evidence_requested(int, object): query photo id and candidate — answered with
            :meth:`set_evidence`.
    """

    confirmed = Signal(int, object, int)
    rejected = Signal(int, object, int)
    new_individual = Signal(int)
    skipped = Signal(int)
    heatmap_requested = Signal(int, str, object)
    evidence_requested = Signal(int, object)

    def __init__(self, cache: ImageCache, parent=None):
        super().__init__(parent)
        self._cache = cache
        self.task: MatchTask | None = None
        self.selected = -1
        self.rejected_ranks: set[int] = set()
        self._heatmaps: dict[int, QPixmap] = {}
        self._evidence: dict[int, list[EvidenceLine] | None] = {}

        self.title = QLabel()
        self.title.setObjectName("viewTitle")
        self.remaining = QLabel()
        self.remaining.setObjectName("hint")
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.compare = CompareView()
        self.heatmap_box = QCheckBox("Heatmap (H)")
        self.heatmap_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.heatmap_box.setToolTip("What the network looked at: green = strong, varied features; "
                                    "magenta = where feature maxima fall; white = both")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setFixedWidth(120)
        self.opacity.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity.setToolTip("Heatmap opacity")
        self.lines_box = QCheckBox("Evidence lines (E)")
        self.lines_box.setChecked(True)
        self.lines_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.lines_box.setToolTip("Lines join verified correspondences: marks found at the same place on both "
                                  "flukes under one pose, strongest first")
        self.evidence_status = QLabel()
        self.evidence_status.setObjectName("hint")
        self.heat_status = QLabel()
        self.heat_status.setObjectName("hint")
        self._agreement = False  # the heatmap shows local-feature agreement (no model) instead of Figure 5
        self.legend = QLabel(self.HEATMAP_LEGEND)
        self.legend.setObjectName("hint")
        self.legend.setVisible(False)
        for label in (self.legend, self.heat_status, self.title, self.remaining):
            label.setMinimumWidth(1)  # may shrink below its text: a long line never widens the window
        self.cards = [CandidateCardWidget(i) for i in range(5)]
        self.no_candidates = QLabel("No individuals in the catalog yet:\nthis photo starts a new one (N).")
        self.no_candidates.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_candidates.setObjectName("hint")
        self.new_btn = QPushButton("New individual  (N)")
        self.reject_btn = QPushButton("Not this one  (R)")
        self.skip_btn = QPushButton("Skip  (S)")
        self.confirm_btn = QPushButton("Confirm  (1)")
        self._empty_text = self.EMPTY
        self.pending: str | None = None  # what is being waited for, while the next task is computed
        self.empty = QLabel(self.EMPTY)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setObjectName("emptyMessage")

        for b in (self.new_btn, self.reject_btn, self.skip_btn, self.confirm_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setMinimumHeight(34)
        self.confirm_btn.clicked.connect(lambda: self.confirm(self.selected))
        self.reject_btn.clicked.connect(self.reject_shown)
        self.new_btn.clicked.connect(self.declare_new)
        self.skip_btn.clicked.connect(self.skip)
        self.heatmap_box.toggled.connect(self._on_heatmap_toggled)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.lines_box.toggled.connect(self.compare.show_lines)
        for card in self.cards:
            card.clicked.connect(self.select)

        tools = QHBoxLayout()
        tools.addWidget(self.heatmap_box)
        tools.addWidget(self.opacity)
        tools.addSpacing(16)
        tools.addWidget(self.lines_box)
        tools.addWidget(self.evidence_status)
        tools.addSpacing(16)
        tools.addWidget(self.legend)
        tools.addSpacing(16)
        tools.addWidget(self.heat_status, 1)
        left = QVBoxLayout()
        left.addWidget(self.compare, 1)
        left.addLayout(tools)
        cards_col = QVBoxLayout()
        cards_col.setSpacing(6)
        head = QLabel("Most likely individuals")
        head.setObjectName("sectionTitle")
        cards_col.addWidget(head)
        for card in self.cards:
            cards_col.addWidget(card)
        cards_col.addWidget(self.no_candidates)
        cards_col.addStretch(1)
        keys = QLabel("<b>1–5</b> confirm · <b>R</b> not this one · <b>N</b> new · <b>S</b> skip<br>"
                      "<b>↑/↓</b> compare another · <b>H</b> heatmap · <b>E</b> lines · wheel zoom")
        keys.setObjectName("hint")
        cards_col.addWidget(keys)
        side = QWidget()
        side.setLayout(cards_col)
        side.setFixedWidth(430)  # a card fits a two-word name beside ">99%"
        body = QHBoxLayout()
        body.addLayout(left, 1)
        body.addWidget(side)
        decisions = QHBoxLayout()
        decisions.addWidget(self.skip_btn)
        decisions.addStretch(1)
        decisions.addWidget(self.new_btn)
        decisions.addWidget(self.reject_btn)
        decisions.addWidget(self.confirm_btn)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.remaining)
        self.content = QWidget()
        cl = QVBoxLayout(self.content)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addLayout(header)
        cl.addWidget(self.banner)
        cl.addLayout(body, 1)
        cl.addLayout(decisions)
        lay = QVBoxLayout(self)
        lay.addWidget(self.content, 1)
        lay.addWidget(self.empty, 1)

        shortcuts = [(str(i + 1), (lambda i=i: self.confirm(i))) for i in range(5)]
        shortcuts += [("R", self.reject_shown), ("N", self.declare_new), ("S", self.skip),
                      ("H", self.heatmap_box.toggle), ("E", self.lines_box.toggle),
                      ("Up", lambda: self._step(-1)), ("Down", lambda: self._step(1)),
                      ("Escape", lambda: self.select(-1)), ("+", lambda: self.compare.left.zoom_by(1.25)),
                      ("=", lambda: self.compare.left.zoom_by(1.25)), ("-", lambda: self.compare.left.zoom_by(0.8))]
        for key, slot in shortcuts:
            sc = QShortcut(QKeySequence(key), self, slot)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)  # only while this view is the visible tab
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        cache.image_ready.connect(self._on_image)
        self.set_task(None)

    # -- content --------------------------------------------------------------------------
    EMPTY = "Every photo is identified.\nImport new photos from the File menu."
    HEATMAP_TIP = ("What the network looked at: green = strong, varied features; magenta = where feature "
                   "maxima fall; white = both")
    HEATMAP_LEGEND = ("<span style='color:#4cd964'>■</span> strong, varied features &nbsp; "
                      "<span style='color:#e040fb'>■</span> feature maxima &nbsp; "
                      "<span style='color:#ffffff'>■</span> both")
    AGREEMENT_TIP = ("Where the two photos agree: a glow around each verified correspondence (marks found at "
                     "the same place on both flukes under one pose). With a model, the network's own heatmap")
    AGREEMENT_LEGEND = "<span style='color:#ffc400'>■</span> where the two photos agree (verified marks)"

    PENDING = "Finding the most likely individuals for the next photo…"

    def set_empty_message(self, text: str | None) -> None:
        """What the view says when there is no photo to show (None: the default)."""
        self._empty_text = text or self.EMPTY
        if self.pending is None:
            self.empty.setText(self._empty_text)

    def set_pending(self, text: str | None = PENDING) -> None:
        """Say that the next photo's candidates are being found (None: no longer): never "every photo is
        identified" while photos are left. Showing a task ends it."""
        if text is not None:
            self.set_task(None)  # the previous photo, its heatmaps and evidence go
        self.pending = text
        self.empty.setText(text if text is not None else self._empty_text)

    def set_task(self, task: MatchTask | None) -> None:
        """Show a query and its candidates (None: nothing left to identify)."""
        if self.pending is not None:
            self.set_pending(None)
        self.task = task
        self.rejected_ranks = set() if task is None else self._ranks_of(task.rejected)
        self._heatmaps = {}
        self._evidence = {}
        self.content.setVisible(task is not None)
        self.empty.setVisible(task is None)
        if task is None:
            return
        p = task.photo
        date = f" · {p.date}" if p.date else ""
        self.title.setText(f"<b>{html.escape(p.file_name)}</b>{html.escape(date)}")
        self.set_remaining(task.remaining)
        for card, c in zip(self.cards, task.candidates[:5] + [None] * (5 - len(task.candidates[:5]))):
            card.set_candidate(c, task.threshold, task.best_match_threshold if task.calibrated else None)
            if c is not None:
                pm = self._cache.get(crop_key(c.photo_path, c.photo_box),
                                     lambda c=c: read_crop(c.photo_path, c.photo_box, 600))
                if pm is not None:
                    card.set_thumb(pm)
        self.no_candidates.setVisible(not task.candidates)
        self._update_banner()
        # with a model, the paper's feature-map heatmap; without one, where the two photos agree
        self._agreement = task.model_version is None and bool(task.verdict)
        self.heatmap_box.setToolTip(self.AGREEMENT_TIP if self._agreement else self.HEATMAP_TIP)
        self.legend.setText(self.AGREEMENT_LEGEND if self._agreement else self.HEATMAP_LEGEND)
        self.compare.left_caption.setText(f"This photo — {p.file_name}")
        self.compare.left.set_pixmap(self._crop(p.path, p.box))
        self.heat_status.setText("")
        self.select(0 if task.candidates else -1)
        if self.heatmap_box.isChecked():
            self._request_heatmaps()

    def set_remaining(self, n: int) -> None:
        """How many photos are left to identify (the window keeps it current after every action)."""
        if self.task is not None:
            self.task.remaining = n
        self.remaining.setText(f"{n} unidentified photo{'s' if n != 1 else ''} left" if n else "")

    def _ranks_of(self, individual_ids: set[int]) -> set[int]:
        t = self.task
        return set() if t is None else {r for r, c in enumerate(t.candidates[:5]) if c.individual_id in individual_ids}

    def set_rejected(self, photo_id: int, individual_ids: set[int]) -> None:
        """The individuals the catalog holds as rejected for this photo (after a decision, undo or redo)."""
        t = self.task
        if t is None or t.photo.photo_id != photo_id:
            return
        t.rejected = set(individual_ids)
        ranks = self._ranks_of(t.rejected)
        if ranks == self.rejected_ranks:
            return
        self.rejected_ranks = ranks
        self._update_banner()
        self.select(self.selected)

    def _crop(self, path: str, box) -> QPixmap | None:
        key = crop_key(path, box)
        if self._cache.failed(key):
            return placeholder_pixmap(360, f"photo not found:\n{path}")
        return self._cache.get(key, lambda: read_crop(path, box))

    @staticmethod
    def _verdict_for(t: MatchTask, left: list) -> str:
        """The verdict for the first candidate not rejected (the task's own when that is the top one).

        Below the top, only what calibration or verification supports is claimed: a calibrated
        probability against the thresholds, no verified marks, else a plain ranking.
        """
        if not left or not t.verdict:
            return ""
        c = left[0]
        if c is t.candidates[0]:
            return t.verdict
        if t.calibrated and c.probability is not None:
            if t.best_match_threshold is not None and c.probability >= t.best_match_threshold:
                return "best_match"
            return "new" if t.threshold is not None and c.probability < t.threshold else "unsure"
        return "unverified" if c.inliers == 0 else "ranking"

    def _honest_banner(self, t: MatchTask, c: list, verdict: str) -> tuple[str, str]:
        """Banner text and kind from the verdict on ``c[0]``: a claim only where calibration supports it."""
        key = t.candidates.index(c[0]) + 1
        label, score = html.escape(c[0].label), html.escape(c[0].score_text)  # "<1%" is text, not markup
        if verdict == "best_match":
            return (f"<b>Best match: {label}</b> at {score} (calibrated; 'best match' from "
                    f"{t.best_match_threshold:.0%}). Check the marks side by side, then press <b>{key}</b> to "
                    "confirm.", "match")
        if verdict == "new":
            return (f"<b>Probably a new individual:</b> the best candidate, {label}, is at {score} "
                    f"(under {t.threshold:.0%}). Compare, then press <b>N</b> if none matches.", "new")
        if verdict == "unsure" and c[0].inliers == 0:
            # nothing verified: on real flukes the right whale then rarely sits in the five at all
            return (f"<b>No candidate shares verified marks with this photo.</b> {label} ranks first at {score}. "
                    "It may be a new individual, or a view too different to match: compare, and press "
                    "<b>N</b> if none matches.", "close")
        if verdict == "unsure":
            return (f"<b>No confident match.</b> {label} ranks first at {score}, below the "
                    f"{t.best_match_threshold:.0%} needed to call it a match. Compare the candidates.", "close")
        if verdict == "unverified":
            return ("<b>No candidate shares verified marks with this photo.</b> The ranking rests on scattered "
                    "descriptor votes only: compare, and press <b>N</b> if none matches.", "new")
        return ("<b>Ranked candidates</b> (no calibration yet: the scores rank, they are not probabilities). "
                "Compare the verified marks side by side before confirming with <b>1</b>–<b>5</b>.", "close")

    def _update_banner(self) -> None:
        t = self.task
        if t is None:
            return
        # rejected candidates are out of the running: the banner speaks of the others only
        left = [c for r, c in enumerate(t.candidates[:5]) if r not in self.rejected_ranks]
        verdict = self._verdict_for(t, left)
        # without a verdict (an embedding-only task) the score is compared with the bundle's threshold
        below = not verdict and t.threshold is not None and bool(left) and left[0].score < t.threshold
        suggest_new = t.suggest_new or below
        primary_new = suggest_new or not left or verdict in ("new", "unverified")
        if not t.candidates:
            text = "No individuals to compare with yet. Press <b>N</b> to start a new individual."
            kind = "new"
        elif not left:
            text = "Every candidate rejected: press <b>N</b> for a new individual, or <b>S</b> to skip."
            kind = "new"
        elif verdict:
            text, kind = self._honest_banner(t, left, verdict)
        elif suggest_new:
            thr = f" (threshold {t.threshold:.0%})" if t.threshold is not None else ""
            text = (f"<b>Likely a new individual:</b> no candidate scores above the new-individual "
                    f"threshold{thr}. Compare carefully, then press <b>N</b> if none matches.")
            kind = "new"
        elif len(left) > 1 and left[0].score - left[1].score < CLOSE_CALL:
            a, b = left[0], left[1]
            text = (f"<b>Close call:</b> {html.escape(a.label)} ({a.score:.0%}) and {html.escape(b.label)} "
                    f"({b.score:.0%}) score alike. "
                    "Compare them with <b>↑/↓</b> before confirming; press <b>N</b> if neither matches.")
            kind = "close"
        else:
            best = left[0]
            key = t.candidates.index(best) + 1
            text = (f"<b>Best match: {html.escape(best.label)}</b> at {best.score:.0%}. "
                    f"Check the trailing edge and markings side by side, then press <b>{key}</b> to confirm.")
            kind = "match"
        self.banner.setText(text)
        self.banner.setProperty("kind", kind)
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        # the highlighted button is the banner's advice; "no confident match" advises neither
        self.new_btn.setObjectName("primary" if primary_new else "")
        self.confirm_btn.setObjectName("" if primary_new or verdict == "unsure" else "primary")
        for b in (self.new_btn, self.confirm_btn):
            b.style().unpolish(b)
            b.style().polish(b)

    def select(self, rank: int) -> None:
        """Show candidate ``rank`` beside the query (-1 hides the compare side)."""
        t = self.task
        if t is None:
            return
        if rank >= len(t.candidates):
            return
        self.selected = rank
        for card in self.cards:
            card.set_state(card.rank == rank, card.rank in self.rejected_ranks)
        show = rank >= 0
        self.compare.right.setVisible(show)
        self.compare.right_caption.setVisible(show)
        self.confirm_btn.setEnabled(show)
        self.reject_btn.setEnabled(show and rank not in self.rejected_ranks)
        self.confirm_btn.setText(f"Confirm {t.candidates[rank].label}  ({rank + 1})" if show else "Confirm")
        if not show:
            self.compare.set_lines([])
            self.compare.refit()
            return
        c = t.candidates[rank]
        self.compare.right_caption.setText(f"{c.label} — {c.score_text or format(c.score, '.0%')}")
        self.compare.right.set_pixmap(self._crop(c.photo_path, c.photo_box))
        self.compare.refit()
        if c.evidence is not None and rank not in self._evidence:
            self._evidence[rank] = list(c.evidence)  # verified correspondences came with the match
        self.compare.set_lines(self._evidence.get(rank) or [])
        self._show_evidence_status(rank)
        self._apply_heatmaps()
        if rank not in self._evidence:
            self._evidence[rank] = None  # pending
            self.evidence_requested.emit(t.photo.photo_id, c)

    def _step(self, delta: int) -> None:
        t = self.task
        if t and t.candidates:
            self.select((max(self.selected, 0) + delta) % min(5, len(t.candidates)))

    def _on_image(self, key: str) -> None:
        t = self.task
        if t is None:
            return
        if key == crop_key(t.photo.path, t.photo.box):
            self.compare.left.set_pixmap(self._crop(t.photo.path, t.photo.box))
            self.compare.refit()
            self._apply_heatmaps()
        for card in self.cards:
            c = card.candidate
            if c is not None and key == crop_key(c.photo_path, c.photo_box):
                pm = self._crop(c.photo_path, c.photo_box)
                if pm is not None:
                    card.set_thumb(pm)
                    if card.rank == self.selected:
                        self.compare.right.set_pixmap(pm)
                        self.compare.refit()
                        self._apply_heatmaps()

    # -- heatmaps and evidence ------------------------------------------------------------
    def _on_heatmap_toggled(self, on: bool) -> None:
        self.legend.setVisible(on)
        if on:
            self._request_heatmaps()
        self._apply_heatmaps()

    def _request_heatmaps(self) -> None:
        t = self.task
        if t is None or self._agreement:  # the agreement map is drawn here from the evidence, not requested
            return
        wanted = [(t.photo.photo_id, t.photo.path, t.photo.box)]
        if 0 <= self.selected < len(t.candidates):
            c = t.candidates[self.selected]
            wanted.append((c.photo_id, c.photo_path, c.photo_box))
        for pid, path, box in wanted:
            if pid not in self._heatmaps:
                self._heatmaps[pid] = QPixmap()
                self.heat_status.setText("computing heatmap…")
                self.heatmap_requested.emit(pid, path, box)

    def set_heatmap(self, photo_id: int, image: QImage) -> None:
        """The Figure-5 overlay for a photo's crop (same framing as the crop shown)."""
        self._heatmaps[photo_id] = QPixmap.fromImage(image)
        self.heat_status.setText("")
        self._apply_heatmaps()

    def _apply_heatmaps(self) -> None:
        t = self.task
        if t is None:
            return
        on = self.heatmap_box.isChecked()
        if on:
            self._request_heatmaps()
        op = self.opacity.value() / 100
        if self._agreement:
            overlays = self._agreement_overlays() if on else (None, None)
            for view, pm in zip((self.compare.left, self.compare.right), overlays):
                view.set_overlay(pm, op)
                view.show_overlay(on and view.has_overlay())
            return
        pairs = [(self.compare.left, t.photo.photo_id)]
        if 0 <= self.selected < len(t.candidates):
            pairs.append((self.compare.right, t.candidates[self.selected].photo_id))
        for view, pid in pairs:
            pm = self._heatmaps.get(pid)
            view.set_overlay(pm if pm is not None and not pm.isNull() else None, op)
            view.show_overlay(on and view.has_overlay())

    def _agreement_overlays(self) -> tuple[QPixmap | None, QPixmap | None]:
        """The query's and the selected candidate's agreement overlays, from the pair's evidence lines."""
        from model.api import agreement_overlay

        lines = self._evidence.get(self.selected) if self.selected >= 0 else None
        if not lines:
            return None, None
        weights = np.array([ln.weight for ln in lines])
        out = []
        for view, pts in ((self.compare.left, [(ln.ax, ln.ay) for ln in lines]),
                          (self.compare.right, [(ln.bx, ln.by) for ln in lines])):
            rect = view.image_rect()
            if rect.isEmpty():
                out.append(None)
                continue
            w = 320  # the view scales the overlay onto the crop: a glow needs no more pixels
            h = max(1, round(w * rect.height() / rect.width()))
            out.append(QPixmap.fromImage(numpy_to_qimage(agreement_overlay(np.array(pts), weights, (h, w)))))
        return out[0], out[1]

    def _on_opacity(self, value: int) -> None:
        self.compare.left.set_overlay_opacity(value / 100)
        self.compare.right.set_overlay_opacity(value / 100)

    def set_evidence(self, query_photo_id: int, candidate_photo_id: int, lines: list[EvidenceLine]) -> None:
        """Evidence lines for the query and one candidate (fractions of each crop)."""
        t = self.task
        if t is None or t.photo.photo_id != query_photo_id:
            return
        for rank, c in enumerate(t.candidates):
            if c.photo_id == candidate_photo_id:
                self._evidence[rank] = list(lines)
                if rank == self.selected:
                    self.compare.set_lines(lines)
                    self._show_evidence_status(rank)
                    if self._agreement:
                        self._apply_heatmaps()

    def _show_evidence_status(self, rank: int) -> None:
        """Say so when the pair has no verified correspondence, instead of drawing nothing silently."""
        lines = self._evidence.get(rank)
        self.evidence_status.setText("no verified correspondence" if lines is not None and not lines else "")

    def evidence_ready(self, rank: int) -> bool:
        """True once the evidence lines for candidate ``rank`` have arrived."""
        return self._evidence.get(rank) is not None

    def heatmap_failed(self, photo_id: int, message: str) -> None:
        self.heat_status.setText(f"heatmap unavailable: {plain(message)}")

    # -- decisions ------------------------------------------------------------------------
    def confirm(self, rank: int) -> None:
        t = self.task
        if t is None or not 0 <= rank < len(t.candidates):
            return
        self.confirmed.emit(t.photo.photo_id, t.candidates[rank], rank)

    def reject_shown(self) -> None:
        t = self.task
        r = self.selected
        if t is None or not 0 <= r < len(t.candidates) or r in self.rejected_ranks:
            return
        # shown at once; the window then puts the catalog's own state back (set_rejected)
        self.rejected_ranks.add(r)
        self.rejected.emit(t.photo.photo_id, t.candidates[r], r)
        self._update_banner()
        left = [i for i in range(len(t.candidates[:5])) if i not in self.rejected_ranks]
        self.select(min((i for i in left if i > r), default=left[0]) if left else r)

    def declare_new(self) -> None:
        if self.task is not None:
            self.new_individual.emit(self.task.photo.photo_id)

    def skip(self) -> None:
        if self.task is not None:
            self.skipped.emit(self.task.photo.photo_id)
