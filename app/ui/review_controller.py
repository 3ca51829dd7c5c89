"""Routes the review views' signals (box review, match review, individuals) to decisions and jobs.

The window owns the views, the job runners and the undo stack; this object, built by the window,
connects the three review views to them: each decision becomes a :class:`DecisionCommand` on the
window's undo stack, and matching runs on the window's ``light`` runner. Which photo the match review
shows next is asked of the Qt-free :class:`~app.services.review.ReviewQueue` (tested without Qt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from app.services.review import ReviewQueue
from app.services.viewdata import CandidateCard, EvidenceLine, MatchTask
from app.ui.images import numpy_to_qimage
from app.ui.notification import plain
from app.ui.undo import DecisionCommand

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow


class ReviewController(QObject):
    """The window's review logic on the Qt side: signals in, decisions and match jobs out."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.w = window
        self.view = window.match_review
        self.queue = ReviewQueue()  # which photo the match review shows next (Qt-free)
        self._pending_id: int | None = None  # the photo whose match is being computed for the view
        window.box_review.box_accepted.connect(self._on_box_accepted)
        window.box_review.junk_marked.connect(self._on_junk)
        window.box_review.sure_boxes_accepted.connect(self._on_sure_boxes)
        self.view.confirmed.connect(self._on_confirm)
        self.view.rejected.connect(self._on_reject)
        self.view.new_individual.connect(self._on_new_individual)
        self.view.skipped.connect(self._on_skip)
        self.view.heatmap_requested.connect(self._on_heatmap_requested)
        self.view.evidence_requested.connect(self._on_evidence_requested)
        window.individuals_view.rename_requested.connect(self._on_rename)
        window.individuals_view.notes_changed.connect(self._on_notes)
        window.individuals_view.merge_requested.connect(self._on_merge)

    # ---------------------------------------------------------------- box review
    def _on_box_accepted(self, photo_id: int, box) -> None:
        from app.services import decisions

        p = self.w.snapshot.photo(photo_id) if self.w.snapshot else None
        same = p is not None and p.box is not None and all(abs(a - b) <= 1.0 for a, b in zip(p.box, box))
        if same:
            cmd = DecisionCommand("Accept box", lambda cat: decisions.confirm_box(cat, photo_id), self.w.write)
        else:
            cmd = DecisionCommand("Redraw box", lambda cat: decisions.set_box(cat, photo_id, box), self.w.write)
        self.w.push(cmd)

    def _on_sure_boxes(self, photo_ids: list[int]) -> None:
        from app.services import decisions

        sure, n = self.w.box_review.sure, len(photo_ids)
        self.w.push(DecisionCommand(f"Accept {n} sure box{'es' if n != 1 else ''}",
                                    lambda cat: decisions.confirm_sure_boxes(cat, photo_ids, sure), self.w.write))

    def _on_junk(self, photo_id: int) -> None:
        from app.services import decisions

        self.w.push(DecisionCommand("Mark as no fluke", lambda cat: decisions.mark_junk(cat, photo_id),
                                     self.w.write))

    # ---------------------------------------------------------------- match review
    def refill(self) -> None:
        snap = self.w.snapshot
        if snap is None:
            return
        ids = self.queue.refill(snap.unidentified_ids)
        current = self.view.task
        if current is not None and current.photo.photo_id not in ids:
            self.view.set_task(None)
        self.view.set_remaining(len(ids))
        waiting = self._pending_id is not None and self._pending_id in ids  # its match is on the way
        if self.view.task is None and not waiting and self.w.tabs.currentWidget() is self.view:
            self.show_next()
        elif self.queue.prefetched is None:
            self._prefetch()

    def _shown_id(self) -> int | None:
        task = self.view.task
        return task.photo.photo_id if task is not None else None

    def show_next(self) -> None:
        pid = self.queue.next_id(self._shown_id())
        if pid is None:
            self._pending_id = None
            self.view.set_task(None)
            return
        pre = self.queue.take_prefetched(pid)
        if pre is not None:
            self._pending_id = None
            self.view.set_task(pre)
            self.w.match_shown.emit(pre)
            self._sync_rejections(pid)  # read before the latest decisions were written, maybe
            self._prefetch()
            return
        self.show_match(pid)

    def show_match(self, photo_id: int) -> None:
        session = self.w.session
        if session is None:  # local features match with no model
            return
        remaining = len(self.queue)
        if self.view.task is None or self.view.task.photo.photo_id != photo_id:
            self.view.set_pending()  # not "every photo is identified" while its candidates are found
        self._pending_id = photo_id

        def done(task: MatchTask) -> None:
            if session is not self.w.session or self._pending_id != photo_id:
                return  # another catalog, or another photo was asked for since
            self._pending_id = None
            task.remaining = remaining
            self.view.set_task(task)
            self.w.match_shown.emit(task)
            self._prefetch()

        def failed(exc) -> None:
            # e.g. its file is missing: leave it aside for now (the error is shown) and go on
            if self._pending_id == photo_id:
                self._pending_id = None
                self.view.set_pending(None)
            if session is self.w.session and photo_id in self.queue:
                self.queue.decided(photo_id)
                current = self.view.task
                if current is None or current.photo.photo_id == photo_id:
                    self.show_next()

        self.w.light.submit("Matching the photo", lambda p, s: session.match(photo_id), on_result=done,
                            on_error=failed)

    def _sync_rejections(self, photo_id: int) -> None:
        """Put the shown photo's rejected candidates as the catalog holds them now."""
        session = self.w.session
        if session is None:
            return

        def done(rejected: set[int]) -> None:
            if session is self.w.session and not self.w.writer.unsettled:
                self.view.set_rejected(photo_id, rejected)

        self.w.light.submit("Reading the photo's decisions", lambda p, s: session.rejected_individuals(photo_id),
                            on_result=done, report_errors=False)

    def _prefetch(self) -> None:
        session = self.w.session
        if session is None:
            return
        pid = self.queue.to_prefetch(self._shown_id())
        if pid is None:
            return

        def done(task: MatchTask) -> None:
            if session is self.w.session:
                self.queue.prefetched = task

        self.w.light.submit("Matching the next photo", lambda p, s: session.match(pid), on_result=done,
                            report_errors=False)

    def _bring_back(self, photo_id: int) -> None:
        """An undone decision: show its photo again in the match review."""
        self.queue.bring_back(photo_id)
        if self.w.tabs.currentWidget() is self.view:
            self.show_match(photo_id)

    def _after_decision(self, photo_id: int) -> None:
        self.queue.invalidate()  # its candidates may now be out of date
        self.queue.decided(photo_id)
        self.show_next()

    def _on_confirm(self, photo_id: int, cand: CandidateCard, rank: int) -> None:
        from app.services import decisions

        version = self.w.session.model_version if self.w.session else None
        if not self.w.push(DecisionCommand(
                f"Confirm {cand.label}",
                lambda cat: decisions.confirm(cat, photo_id, cand.individual_id, rank=rank + 1, score=cand.score,
                                              model_version=version),
                self.w.write, on_undone=lambda: self._bring_back(photo_id))):
            return
        self._after_decision(photo_id)

    def _on_reject(self, photo_id: int, cand: CandidateCard, rank: int) -> None:
        from app.services import decisions

        version = self.w.session.model_version if self.w.session else None
        self.w.push(DecisionCommand(
            f"Reject {cand.label}",
            lambda cat: decisions.reject(cat, photo_id, cand.individual_id, rank=rank + 1, score=cand.score,
                                         model_version=version),
            self.w.write))

    def _on_new_individual(self, photo_id: int) -> None:
        from app.services import decisions

        version = self.w.session.model_version if self.w.session else None
        if not self.w.push(DecisionCommand(
                "New individual",
                lambda cat: decisions.new_individual(cat, photo_id, model_version=version), self.w.write,
                on_undone=lambda: self._bring_back(photo_id))):
            return
        self._after_decision(photo_id)

    def _on_skip(self, photo_id: int) -> None:
        from app.services import decisions

        version = self.w.session.model_version if self.w.session else None
        if not self.w.push(DecisionCommand(
                "Skip photo", lambda cat: decisions.skip(cat, photo_id, model_version=version), self.w.write)):
            return
        self.queue.skip(photo_id)
        self.show_next()

    def _on_heatmap_requested(self, photo_id: int, path: str, box) -> None:
        session = self.w.session
        if session is None or session.engine is None:
            self.view.heatmap_failed(photo_id, "no model loaded")
            return

        def done(rgba) -> None:
            self.view.set_heatmap(photo_id, numpy_to_qimage(rgba))

        self.w.light.submit("Heatmap", lambda p, s: session.heatmap(path, box), on_result=done,
                            on_error=lambda exc: self.view.heatmap_failed(photo_id, plain(exc)),
                            report_errors=False)

    def _on_evidence_requested(self, query_id: int, cand: CandidateCard) -> None:
        session = self.w.session
        task = self.view.task
        if cand.evidence is not None:  # verified correspondences came with the match
            self.view.set_evidence(query_id, cand.photo_id, cand.evidence)
            return
        if session is None or session.engine is None or task is None:
            return
        q = task.photo

        def done(lines: list[EvidenceLine]) -> None:
            self.view.set_evidence(query_id, cand.photo_id, lines)

        self.w.light.submit("Pair evidence",
                            lambda p, s: session.evidence(q.path, q.box, cand.photo_path, cand.photo_box),
                            on_result=done, report_errors=False)

    # ---------------------------------------------------------------- individuals
    def _on_rename(self, individual_id: int, name: str) -> None:
        from app.services import decisions

        self.w.push(DecisionCommand(
            "Rename individual", lambda cat: decisions.rename_individual(cat, individual_id, name=name), self.w.write))

    def _on_notes(self, individual_id: int, notes: str) -> None:
        from app.services import decisions

        self.w.push(DecisionCommand(
            "Edit notes", lambda cat: decisions.rename_individual(cat, individual_id, notes=notes), self.w.write))

    def _on_merge(self, source_id: int, target_id: int) -> None:
        from app.services import decisions

        self.w.push(DecisionCommand(
            "Merge individuals", lambda cat: decisions.merge_individuals(cat, target_id, source_id), self.w.write))

