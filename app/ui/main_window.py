"""The main window: composes the views, the status bar and the job runners, and routes signals.

All catalog work runs through :class:`~app.ui.workers.JobRunner`: reads and slow jobs (import,
matching, heatmaps, export) on a pool, decisions on a single writer thread so the history keeps
the order of the undo stack. The GUI thread only paints and reacts.

What lives elsewhere: the review views' decisions and match jobs in :mod:`app.ui.review_controller`
(which asks the Qt-free :class:`app.services.review.ReviewQueue` what to show next; matching and
candidate cards are :class:`app.services.review.Session`'s), menus and help in :mod:`app.ui.menus`.
What stays: the jobs' life with the catalog (open, refresh, close, the undo stack's writes), because
each of them starts, feeds or stops every view at once.

Over 600 lines, one job: the window's life (open, jobs, close) and the routing between its views;
the lines are the open/close/export/import handlers, each a few lines around a JobRunner job.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.services import review as sessions
from app.services.snapshot import Snapshot, status_line
from app.ui.box_review import BoxReviewView
from app.ui.dialogs import ExportDialog, ask_labelled_catalog, ask_relink, open_error_text
from app.ui.images import ImageCache
from app.ui.individuals_view import IndividualsView
from app.ui.match_review import MatchReviewView
from app.ui.menus import build_menus, fill_recent, recent_catalogs, remember_catalog
from app.ui.notification import NotificationBar, plain
from app.ui.photos_view import PhotosView
from app.ui.qtcompat import guard_refcounts
from app.ui.review_controller import ReviewController
from app.ui.undo import DecisionCommand
from app.ui.workers import JobRunner

ORG, APP = "flukeid", "flukeid"
MAX_RECENT = 8
VIEWS = ("photos", "boxes", "match", "individuals")


class MainWindow(QMainWindow):
    """flukeid's window.

    Args:
        settings: where window state and recent catalogs are kept (tests pass a temp file).
        confirm_dialogs: show modal confirmations (tests turn them off).
    """

    catalog_opened = Signal(str)
    snapshot_applied = Signal()
    match_shown = Signal(object)
    decision_written = Signal(str)

    def __init__(self, settings: QSettings | None = None, parent=None, *, confirm_dialogs: bool = True):
        guard_refcounts()  # whoever made the QApplication (tests, embedding): see app.ui.qtcompat
        super().__init__(parent)
        self.settings = settings or QSettings(ORG, APP)
        self.confirm_dialogs = confirm_dialogs
        self.session: sessions.Session | None = None
        self.snapshot: Snapshot | None = None
        # every slot of a job is dropped once its session's catalog is closed (see closeEvent)
        alive = lambda: self.session is None or not self.session.catalog.closed  # noqa: E731
        self.jobs = JobRunner(self, max_threads=2, alive=alive)
        self.writer = JobRunner(self, max_threads=1, alive=alive)
        self.light = JobRunner(self, max_threads=1, alive=alive)  # heatmaps and evidence: never starved
        self.cache = ImageCache(self)
        self.undo_stack = QUndoStack(self)
        self._relink_asked = False
        self._refresh_pending = False
        self._stale: set[str] = set()
        self._job = None
        self.setWindowTitle("flukeid")
        self.resize(1400, 900)
        self._build_views()
        self._build_status()
        build_menus(self, VIEWS)  # the menus, toolbar and their actions (app.ui.menus)
        self._fill_recent()
        for runner in (self.jobs, self.writer, self.light):
            runner.job_failed.connect(self._on_job_failed)
        self._restore_state()
        self._update_actions()

    # ================================================================ construction
    def _build_views(self) -> None:
        self.photos_view = PhotosView(self.cache)
        self.box_review = BoxReviewView(self.cache)
        self.match_review = MatchReviewView(self.cache)
        self.individuals_view = IndividualsView(self.cache)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.photos_view, "Photos")
        self.tabs.addTab(self.box_review, "Box review")
        self.tabs.addTab(self.match_review, "Match review")
        self.tabs.addTab(self.individuals_view, "Individuals")
        self.tabs.currentChanged.connect(self._on_tab)
        self.notification = NotificationBar()
        self._hide_timer = QTimer(self)
        self._hide_timer.setSingleShot(True)
        self._hide_timer.timeout.connect(self.notification.hide)
        self.welcome = QLabel(
            "<h2>flukeid</h2><p>Identify humpback whales from photos of their tail flukes.</p>"
            "<p><b>File ▸ New catalog…</b> to start, <b>File ▸ Open catalog…</b> to continue, "
            "or run <code>flukeid demo</code> to try it on synthetic flukes.</p>")
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome.setObjectName("hint")
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 0)
        lay.addWidget(self.notification)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.welcome, 1)
        self.setCentralWidget(central)
        self.tabs.setVisible(False)

        self.photos_view.photo_activated.connect(self._open_photo)
        self.individuals_view.photo_activated.connect(self._open_photo)
        self.review = ReviewController(self)  # the review views' decisions and the match queue

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.counts_label = QLabel("No catalog")
        self.model_label = QLabel("")
        self.device_label = QLabel("")
        self.job_label = QLabel("")
        self.job_progress = QProgressBar()
        self.job_progress.setRange(0, 1000)
        self.job_progress.setFixedWidth(180)
        self.job_progress.setFixedHeight(14)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_job)
        for w in (self.job_label, self.job_progress, self.cancel_btn):
            w.setVisible(False)
        self.counts_label.setMinimumWidth(1)  # may shrink below its text
        sb.addWidget(self.counts_label, 1)
        sb.addPermanentWidget(self.job_label)
        sb.addPermanentWidget(self.job_progress)
        sb.addPermanentWidget(self.cancel_btn)
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.device_label)

    # ================================================================ settings
    def _restore_state(self) -> None:
        geo = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        try:
            if geo is not None:
                self.restoreGeometry(geo)
            if state is not None:
                self.restoreState(state)
        except TypeError:  # garbage in the settings file: ignore it
            pass

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.sync()
        # no job outlives the catalog: reads are cancelled, a decision being written is let finish,
        # and whatever they signal after this is dropped
        for runner in (self.jobs, self.light):
            runner.cancel_all()
        self.writer.shutdown(30000, cancel=False)
        for runner in (self.jobs, self.light):
            runner.shutdown(30000)
        self.cache.wait(5000)
        if self.session is not None:
            self.session.close()
        super().closeEvent(event)

    def recent_catalogs(self) -> list[str]:
        return recent_catalogs(self.settings)

    def _remember(self, path: str) -> None:
        remember_catalog(self.settings, path, MAX_RECENT)
        self._fill_recent()

    def _fill_recent(self) -> None:
        fill_recent(self.recent_menu, self.recent_catalogs(), self.open_catalog)

    # ================================================================ jobs and messages
    def notify(self, text: str, kind: str = "info", action=None, *, stay: bool = False) -> None:
        """Show a message in the notification bar (errors, and ``stay``, stay until closed)."""
        self.notification.show_message(text, kind, action)
        self._hide_timer.stop()
        if kind == "info" and action is None and not stay:
            self._hide_timer.start(8000)

    def _on_job_failed(self, name: str, exc: BaseException) -> None:
        self.notify(f"<b>{plain(name)} failed:</b> {plain(exc)}", "error")

    def run_job(self, name: str, fn, on_result=None, *, cancellable: bool = True, on_error=None):
        """Run a slow job with the status-bar progress and cancel button."""
        def progress(f: float, msg: str) -> None:
            self.job_label.setText(msg or name)
            self.job_progress.setValue(int(max(0.0, min(1.0, f)) * 1000))

        def finished() -> None:
            if self._job is job:
                self._job = None
                for w in (self.job_label, self.job_progress, self.cancel_btn):
                    w.setVisible(False)

        job = self.jobs.submit(name, fn, on_result=on_result, on_progress=progress, on_error=on_error,
                               on_cancelled=lambda: (self.notify(f"{plain(name)} cancelled.", "info"), self.refresh()),
                               on_finished=finished)
        self._job = job
        self.job_label.setText(name + "…")
        self.job_progress.setValue(0)
        self.job_label.setVisible(True)
        self.job_progress.setVisible(True)
        self.cancel_btn.setVisible(cancellable)
        return job

    def cancel_job(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.job_label.setText("cancelling…")

    def push(self, command: DecisionCommand) -> bool:
        """Record a decision through the undo stack, unless the catalog is read-only (then say so)."""
        s = self.session
        if s is None:
            return False
        if s.catalog.readonly:
            self.notify(f"<b>Not recorded:</b> this catalog is open read-only ({plain(s.catalog.readonly_reason)}).",
                        "warning")
            self.refresh()  # put back what the view took away optimistically
            return False
        self.undo_stack.push(command)
        return True

    def write(self, label: str, fn: Callable, after: Callable[[], None] | None = None) -> None:
        """Record a change through the services, in order, off the GUI thread; then ``after()``."""
        session = self.session
        if session is None:
            return

        def done(result) -> None:
            self.decision_written.emit(label)
            self.refresh()
            if after is not None and session is self.session:
                after()

        def failed(exc) -> None:
            # the stack no longer mirrors the catalog's history: start afresh
            self.undo_stack.clear()
            self.refresh()

        self.writer.submit(label, lambda progress, should_stop: fn(session.catalog), on_result=done,
                           on_error=failed)

    # ================================================================ catalogs
    def new_catalog_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new catalog (empty)")
        if folder:
            self.open_catalog(folder, create=True)

    def open_catalog_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open catalog folder")
        if folder:
            self.open_catalog(folder)

    def open_catalog(self, path: str | Path, *, create: bool = False) -> None:
        """Open (or create) a catalog in the background; problems are shown, never raised."""
        path = str(path)

        def opened(session: sessions.Session) -> None:
            if self.session is not None:
                self.session.close()
            self.session = session
            self.undo_stack.clear()
            self.cache.clear()
            self.review.queue.reset()
            self._relink_asked = False
            self.match_review.set_task(None)
            self.setWindowTitle(f"flukeid — {Path(path).name}")
            self.tabs.setVisible(True)
            self.welcome.setVisible(False)
            self._remember(path)
            if session.catalog.readonly:
                self.notify(f"Opened read-only: {plain(session.catalog.readonly_reason)}. You can look, not change.",
                            "warning")
            if session.new_catalog is not None and session.new_catalog.model:
                self.notify(f"New catalog, with the program's default model {html.escape(session.new_catalog.model)}.")
            self._update_status()
            self._update_actions()
            self.catalog_opened.emit(path)
            self.refresh()
            self._load_engine()
            self.compute_local_features()

        def failed(exc) -> None:
            self._show_open_error(path, exc)

        self.jobs.submit("Opening the catalog", lambda p, s: sessions.Session.open(path, create=create),
                         on_result=opened, on_error=failed, report_errors=False,
                         alive=lambda: True)  # needs no open catalog (shutdown() still stops it)

    def _show_open_error(self, path: str, exc: BaseException) -> None:
        text = plain(exc)
        title, hint = open_error_text(exc)
        self.notify(f"<b>{title}.</b> {text}", "error",
                    ("Open another…", self.open_catalog_dialog))
        if self.confirm_dialogs:
            QMessageBox.warning(self, title, f"{exc}\n\n{hint}")  # plain text: the message as written

    def _load_engine(self) -> None:
        session = self.session
        if session is None:
            return

        def loaded(engine) -> None:
            self._update_status()
            if engine is None:
                new = session.new_catalog  # a new catalog whose default model could not be installed says why
                if new is not None and new.problem:
                    self.notify(f"{html.escape(new.problem)}. Matching works without a model (local features); "
                                "a model can be added in Model ▸ Model versions ▸ Add model…", "warning")
            # matching needs no model: local features (verified marks) rank the candidates; a model
            # adds its opinion (fused) and the heatmap
            self.match_review.set_empty_message(None)
            self.review.refill()

        self.jobs.submit("Loading the model", lambda p, s: session.load_engine(), on_result=loaded)

    def compute_local_features(self) -> None:
        """Describe the photos that have no (or stale) local features, in the background with progress."""
        session = self.session
        if session is None or session.catalog.readonly:
            return

        def done(report) -> None:
            if session is not self.session:
                return
            if report.errors:
                self.notify(f"Local features: {len(report.errors)} photo{'s' if len(report.errors) != 1 else ''} "
                            f"could not be read (e.g. {plain(report.errors[0][0])}).", "warning")
            if report.computed:
                self.review.queue.invalidate()  # the gallery grew: candidates may change
                self.refresh()

        self.run_job("Describing photos (local features)", session.compute_local_features, done)

    def calibrate(self) -> None:
        """Fit the match confidence on the catalog's own identifications (a background job), then
        show the current photo's candidates again with calibrated percentages."""
        session = self.session
        if session is None or session.catalog.readonly:
            return

        def done(result) -> None:
            if session is not self.session:
                return
            text = plain(result.summary())
            # the result of a job that runs for a minute: it stays until closed, not 8 s
            self.notify(text[:1].upper() + text[1:] + ".", "info", stay=True)
            self.review.queue.invalidate()
            task = self.match_review.task
            if task is not None:
                self._show_match(task.photo.photo_id)

        self.run_job("Calibrating match confidence", session.calibrate, done)

    def refresh(self) -> None:
        """Re-read the catalog in the background and update every view."""
        session = self.session
        if session is None:
            return
        if self._refresh_pending:
            self._refresh_again = True
            return
        self._refresh_pending = True
        self._refresh_again = False
        task = self.match_review.task
        shown = task.photo.photo_id if task is not None else None

        def read(progress, should_stop):
            snap = session.snapshot(progress, should_stop)
            return snap, shown, (session.rejected_individuals(shown) if shown is not None else set())

        def done(out) -> None:
            snap, photo_id, rejected = out
            self._refresh_pending = False
            if session is self.session:
                self._apply_snapshot(snap)
                # the match review's rejections as the catalog holds them (after R, undo, redo), unless
                # a write is still on its way (its own refresh brings its result)
                if photo_id is not None and not self.writer.unsettled:
                    self.match_review.set_rejected(photo_id, rejected)
            if self._refresh_again:
                self.refresh()

        def failed(exc) -> None:
            self._refresh_pending = False

        self.jobs.submit("Reading the catalog", read, on_result=done, on_error=failed)

    def _apply_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap
        # only the view on screen is filled now; the others when they are shown (10,000 photos)
        self._stale = {"photos", "boxes", "individuals"}
        self._fill_view(self.tabs.currentWidget())
        self._update_status()
        self.review.refill()
        if snap.missing and not self._relink_asked:
            self._relink_asked = True
            n = len(snap.missing)
            self.notify(f"<b>{n} of {len(snap.photos)} photos were not found</b> where they were imported "
                        f"from (e.g. {plain(str(snap.missing[0].path))}). If you moved the folder, relink them.",
                        "warning", ("Relink…", self.relink_dialog))
        self.snapshot_applied.emit()

    def _fill_view(self, widget) -> None:
        snap = self.snapshot
        if snap is None:
            return
        if widget is self.photos_view and "photos" in self._stale:
            self._stale.discard("photos")
            self.photos_view.set_photos(snap.photos)
        elif widget is self.box_review and "boxes" in self._stale:
            self._stale.discard("boxes")
            self.box_review.set_queue(snap.box_queue)
        elif widget is self.individuals_view and "individuals" in self._stale:
            self._stale.discard("individuals")
            self.individuals_view.set_individuals(snap.individuals,
                                                  [p for p in snap.photos if p.individual_id is not None])

    def _update_status(self) -> None:
        s = self.session
        if s is None:
            self.counts_label.setText("No catalog")
            return
        # every count comes from the snapshot the views show, so they always agree with each other
        c = self.snapshot.counts() if self.snapshot else {}
        boxes, todo = c.get("boxes", 0), c.get("to_identify", 0)
        self.counts_label.setText(status_line(Path(s.catalog.root).name, c))
        # without a model the catalog still matches (local features): the bar says so, not just "none"
        self.model_label.setText(f"Model: {s.model_version}" if s.model_version else "Model: none (local features match)")
        self.device_label.setText(f"Inference: {s.device or '—'}")
        self.tabs.setTabText(1, f"Box review ({boxes})" if boxes else "Box review")
        self.tabs.setTabText(2, f"Match review ({todo})" if todo else "Match review")

    def _update_actions(self) -> None:
        has = self.session is not None
        writable = has and not self.session.catalog.readonly
        for a in (self.import_act, self.import_labelled_act, self.relink_act):
            a.setEnabled(writable)
        for a in (self.export_act, self.refresh_act, self.versions_act, *self.view_acts):
            a.setEnabled(has)
        self.calibrate_act.setEnabled(writable)
        self.retrain_act.setEnabled(writable and _retrain_available())
        if not self.retrain_act.isEnabled():
            self.retrain_act.setToolTip("coming" if not _retrain_available() else "open a catalog first")

    def show_view(self, name: str) -> None:
        """Switch to a view: photos, boxes, match or individuals."""
        self.tabs.setCurrentIndex(VIEWS.index(name))

    def _on_tab(self, index: int) -> None:
        widget = self.tabs.widget(index)
        self._fill_view(widget)
        widget.setFocus()
        if widget is self.match_review and self.match_review.task is None:
            self.review.show_next()

    def _open_photo(self, photo_id: int) -> None:
        snap = self.snapshot
        p = snap.photo(photo_id) if snap else None
        if p is None:
            return
        if p.status == "box":
            self.show_view("boxes")
            self.box_review.show_photo(photo_id)
        elif p.status == "unidentified":
            self.show_view("match")
            self._show_match(photo_id)
        elif p.individual_id is not None:
            self.show_view("individuals")
            self.individuals_view.select(p.individual_id)

    # ================================================================ import / export / relink
    def import_photos_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder of photos (sub-folders too)")
        if folder:
            self.import_photos([folder])

    def import_photos(self, paths: list[str]) -> None:
        """Import photos (files or folders) in the background, with progress and cancel."""
        session = self.session
        if session is None:
            return

        def done(report) -> None:
            self.notify(sessions.describe_import(report), "warning" if sessions.import_had_errors(report) else "info")
            self.refresh()

        self.run_job("Importing photos", lambda p, s: session.import_photos(paths, p, s), done,
                     on_error=lambda exc: self.refresh())

    def import_labelled_dialog(self) -> None:
        chosen = ask_labelled_catalog(self)
        if chosen:
            self.import_labelled(*chosen)

    def import_labelled(self, csv: str, images_dir: str, allow_absolute: bool = False) -> None:
        """Import a labels file; rows naming photos by absolute path are refused unless ``allow_absolute``.

        When some were refused, the notification offers to import them too (the CLI's
        ``--allow-absolute-paths``): the user sees the paths first and decides.
        """
        session = self.session
        if session is None:
            return

        def done(report) -> None:
            action = None
            if report.absolute_refused and not allow_absolute:
                n = report.absolute_refused
                action = (f"Import the {n} absolute path{'s' if n != 1 else ''} too",
                          lambda: self.import_labelled(csv, images_dir, allow_absolute=True))
            kind = "warning" if sessions.import_had_errors(report) else "info"
            self.notify(html.escape(sessions.describe_import(report)), kind, action)
            self.refresh()

        self.run_job("Importing a labelled catalog",
                     lambda p, s: session.import_labelled(csv, images_dir, p, s, allow_absolute=allow_absolute),
                     done)

    def export_dialog(self) -> None:
        if self.session is None:
            return
        dlg = ExportDialog(self, str(Path.home() / "flukeid-export.csv"))
        if dlg.exec():
            fmt, path = dlg.choice()
            if path:
                self.export(fmt, path)

    def export(self, fmt: str, path: str) -> None:
        """Export in the background; the file appears only when complete."""
        session = self.session
        if session is None:
            return

        def done(result: tuple[int, list[str]]) -> None:
            rows, notes = result
            # the notes say what the file does not show (relative paths' root, undated photos left out)
            text = "".join([f"Exported {rows} row{'s' if rows != 1 else ''} to {html.escape(path)}.",
                            *(f"<br>Note: {html.escape(n)}." for n in notes)])
            self.notify(text, "info")

        self.run_job("Exporting", lambda p, s: session.export(fmt, path, p, s), done)

    def relink_dialog(self) -> None:
        if self.session is None or self.snapshot is None:
            return
        missing = self.snapshot.missing
        if not missing:
            self.notify("Every photo is where the catalog expects it.", "info")
            return
        folder = ask_relink(self, len(missing), len(self.snapshot.photos), missing[0].path)
        if folder:
            self.relink(folder)

    def relink(self, folder: str) -> None:
        session = self.session
        if session is None:
            return

        def done(n) -> None:
            self.notify(f"Relinked {n} photo{'s' if n != 1 else ''}.", "info")
            self._relink_asked = False
            self.cache.clear()
            self.refresh()

        self.run_job("Relinking photos", lambda p, s: session.relink(folder, p, s), done)

    # ================================================================ review (see app.ui.review_controller)
    @property
    def _match_queue(self) -> list[int]:
        """The photos the match review still has to show, in order (see ReviewQueue)."""
        return self.review.queue.ids

    def _show_match(self, photo_id: int) -> None:
        self.review.show_match(photo_id)

    # ================================================================ model menu, help
    def open_retrain_dialog(self) -> None:
        if self.session is None:
            return
        from app.ui.retrain_dialog import RetrainDialog

        dlg = RetrainDialog(self.session.catalog, self)
        dlg.model_activated.connect(lambda _v: self._load_engine())
        dlg.exec()

    def open_model_versions(self) -> None:
        if self.session is None:
            return
        from app.ui.model_versions import ModelVersionsDialog

        dlg = ModelVersionsDialog(self.session.catalog, self)
        dlg.model_activated.connect(lambda _v: self._load_engine())
        dlg.exec()



def _retrain_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("app.ui.retrain_dialog") is not None
    except (ImportError, ValueError):
        return False
