"""Model > Model versions: every bundle of the catalog with its metrics; switch back to one.

Switching runs :func:`app.services.retraining.activate` through a :class:`JobRunner` (it verifies
the bundle and embeds any photo the chosen model has no embedding for, then moves the pointer).
Closing the dialog cancels and waits for the switch; no late signal reaches a closed catalog.
"Add model…" runs :func:`app.services.models.add_bundle` the same way (check, copy into the
catalog, embed; activate when the catalog has no active model yet).
"""

from __future__ import annotations

from datetime import UTC, datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.services import models, retraining
from app.ui.workers import Job, JobRunner

COLUMNS = ("version", "added", "active", "top-1", "top-5", "MAP@5", "queries", "verified on", "status")
WHAT_CHARS = 60  # the "verified on" cell is cut here; its tooltip has the whole text


def _pct(v) -> str:
    return "" if v is None else f"{float(v):.1%}"


def local_time(iso: str | None) -> str:
    """An ISO-8601 timestamp (UTC as the catalog stores it) as local date and time, or the text as is."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


class ModelVersionsDialog(QDialog):
    """Lists the catalog's model bundles with their metrics; "Use this model" switches to one.

    Signals:
        model_activated(str): the version that became active.
    """

    model_activated = Signal(str)

    def __init__(self, catalog, parent: QWidget | None = None, service=retraining):
        super().__init__(parent)
        self.setWindowTitle("Model versions")
        self.catalog = catalog
        self.service = service
        self.jobs = JobRunner(self, max_threads=1, alive=lambda: not catalog.closed)
        self.job: Job | None = None
        lay = QVBoxLayout(self)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        lay.addWidget(self.table, 1)
        self.status_label = QLabel("Top-1, top-5 and MAP@5: how often the right individual came first, among "
                                   "the first five, and the mean precision, in the evaluation each model was "
                                   "verified with (\"verified on\"; a retrained model: held-out confirmed "
                                   "photos of this catalog). Times are local.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)  # errors and folder names, shown as written
        lay.addWidget(self.status_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        lay.addWidget(self.progress)
        row = QHBoxLayout()
        self.use_button = QPushButton("Use this model")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.activate_selected)
        self.add_button = QPushButton("Add model…")
        self.add_button.setToolTip("Copy a model bundle folder (manifest.json, branch.onnx, head.onnx) into "
                                   "this catalog and compute the photos' embeddings with it")
        self.add_button.clicked.connect(self.add_model_dialog)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        row.addWidget(self.use_button)
        row.addWidget(self.add_button)
        row.addStretch(1)
        row.addWidget(close)
        lay.addLayout(row)
        self.versions: list = []
        self.refresh()
        self.resize(980, 380)

    def refresh(self) -> None:
        """Re-read the catalog's bundles."""
        self.versions = list(self.service.list_model_versions(self.catalog))
        self.table.setRowCount(len(self.versions))
        for i, v in enumerate(self.versions):
            ver = v.verification
            what = ver.what if ver else "no evaluation recorded"
            short = what if len(what) <= WHAT_CHARS else what[:WHAT_CHARS - 1] + "…"
            cells = (
                v.version, local_time(v.created), "active" if v.active else "",
                _pct(ver.top1) if ver else "", _pct(ver.top5) if ver else "",
                f"{ver.map5:.3f}" if ver and ver.map5 is not None else "",
                str(ver.queries) if ver and ver.queries is not None else "", short, v.problem or "ok",
            )
            tips = {1: f"{v.created} (UTC)" if v.created else "", 7: what, 8: v.problem or ""}
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if tips.get(j):
                    item.setToolTip(tips[j])
                if v.active:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if j == 0:
                    item.setData(Qt.ItemDataRole.UserRole, v.version)
                self.table.setItem(i, j, item)
        header = self.table.horizontalHeader()
        for j, name in enumerate(COLUMNS):  # "verified on" takes the room left (its tooltip has it all)
            header.setSectionResizeMode(j, QHeaderView.ResizeMode.Stretch if name == "verified on"
                                        else QHeaderView.ResizeMode.ResizeToContents)
        self._selection_changed()

    def selected_version(self):
        rows = self.table.selectionModel().selectedRows()
        return self.versions[rows[0].row()] if rows else None

    def select_version(self, version: str) -> None:
        for i, v in enumerate(self.versions):
            if v.version == version:
                self.table.selectRow(i)

    def _selection_changed(self) -> None:
        v = self.selected_version()
        running = self.is_running()
        self.use_button.setEnabled(bool(v and not v.active and not v.problem and not running))
        self.add_button.setEnabled(not running)

    def is_running(self) -> bool:
        """True until the running switch has reported its result, error or cancellation."""
        return self.job is not None and not self.job.settled

    def activate_selected(self) -> None:
        """Switch to the selected bundle (embeddings first, then the pointer)."""
        v = self.selected_version()
        if v is None or v.active or self.is_running():
            return
        catalog, service, version = self.catalog, self.service, v.version

        def work(progress, should_stop):
            service.activate(catalog, version, progress=progress, should_stop=should_stop)
            return version

        holder: list[Job] = []
        self.job = self.jobs.submit(
            f"Switching to {version}", work, on_result=self._on_activated, on_error=self._on_error,
            on_progress=lambda f, m: (self.progress.setValue(int(f * 1000)), self.status_label.setText(m)),
            on_finished=lambda: self._finished(holder[0]), report_errors=False)
        holder.append(self.job)
        self.progress.setVisible(True)
        self.use_button.setEnabled(False)
        self.status_label.setText(f"Switching to {version}: computing embeddings (the current model serves meanwhile)…")

    def _on_activated(self, version: str) -> None:
        self.refresh()
        self.status_label.setText(f"Model {version} is now active.")
        self.model_activated.emit(version)

    def _on_error(self, exc) -> None:
        self.status_label.setText(f"Could not switch: {exc}")
        if self.isVisible():
            QMessageBox.warning(self, "Could not switch models", str(exc))

    def _finished(self, job: Job) -> None:
        if job is not self.job:  # a newer switch already runs
            return
        self.progress.setVisible(False)
        self.refresh()

    # -- Add model… ---------------------------------------------------------------------------------
    def add_model_dialog(self) -> None:
        """Ask for a bundle folder, then :meth:`add_model` it."""
        if self.is_running():
            return
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder (holding manifest.json)")
        if folder:
            self.add_model(folder)

    def add_model(self, folder: str) -> None:
        """Check the bundle folder, copy it into the catalog and embed the photos with it, in the background.

        The new model becomes active only when the catalog has none; otherwise it is listed and
        selected, and "Use this model" switches at once (its embeddings are already there).
        """
        if self.is_running():
            return
        catalog = self.catalog
        activate = catalog.active_model() is None

        def work(progress, should_stop):
            return models.add_bundle(catalog, folder, activate=activate, embed=True, progress=progress,
                                     should_stop=should_stop)

        holder: list[Job] = []
        self.job = self.jobs.submit(
            f"Adding the model in {folder}", work, on_result=self._on_added, on_error=self._on_add_error,
            on_progress=lambda f, m: (self.progress.setValue(int(f * 1000)), self.status_label.setText(m)),
            on_finished=lambda: self._finished(holder[0]), report_errors=False)
        holder.append(self.job)
        self.progress.setVisible(True)
        self.use_button.setEnabled(False)
        self.add_button.setEnabled(False)
        self.status_label.setText(f"Adding the model in {folder}: checking it…")

    def _on_added(self, result) -> None:
        self.refresh()
        self.select_version(result.version)
        unread = f" {len(result.errors)} photos could not be read and have no embedding." if result.errors else ""
        if result.active:
            self.status_label.setText(f"Model {result.version} added and active ({result.embedded} photos "
                                      f"embedded).{unread}")
            self.model_activated.emit(result.version)
        else:
            how = "added" if result.copied else "is already in this catalog"
            self.status_label.setText(f"Model {result.version} {how}; its embeddings are ready: select it and "
                                      f"click \"Use this model\" to switch.{unread}")

    def _on_add_error(self, exc) -> None:
        self.status_label.setText(f"Could not add the model: {exc}")
        if self.isVisible():
            QMessageBox.warning(self, "Could not add the model", f"{exc}\n\nThe active model is unchanged.")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.jobs.shutdown()
        super().closeEvent(event)

    def done(self, result: int) -> None:  # every way a dialog ends
        self.jobs.shutdown()
        super().done(result)
