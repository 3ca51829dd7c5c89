"""Model > Model versions: every bundle of the catalog with its metrics; switch back to one.

Switching runs :func:`app.services.retraining.activate` on a worker thread (it verifies the
bundle and embeds any photo the chosen model has no embedding for, then moves the pointer).
"Add model…" runs :func:`app.services.models.add_bundle` the same way (check, copy into the
catalog, embed; activate when the catalog has no active model yet).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
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
from app.ui.retrain_dialog import ThreadJob

COLUMNS = ("version", "created", "active", "top-1", "top-5", "MAP@5", "held-out photos", "status")


def _pct(v) -> str:
    return "" if v is None else f"{float(v):.1%}"


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
        self.job: ThreadJob | None = None
        lay = QVBoxLayout(self)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        lay.addWidget(self.table, 1)
        self.status_label = QLabel("Metrics: top-1, top-5 and MAP@5 on the held-out confirmed photos of the "
                                   "retraining that made the model.")
        self.status_label.setWordWrap(True)
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
        self.resize(760, 360)

    def refresh(self) -> None:
        """Re-read the catalog's bundles."""
        self.versions = list(self.service.list_model_versions(self.catalog))
        self.table.setRowCount(len(self.versions))
        for i, v in enumerate(self.versions):
            m = v.metrics or {}
            cells = (
                v.version, v.created or "", "active" if v.active else "", _pct(m.get("top1")),
                _pct(m.get("top5")), _pct(m.get("map5")), str(m.get("n_queries", "")), v.problem or "ok",
            )
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if v.active:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if j == 0:
                    item.setData(Qt.ItemDataRole.UserRole, v.version)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
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
        running = self.job is not None and self.job.is_running()
        self.use_button.setEnabled(bool(v and not v.active and not v.problem and not running))
        self.add_button.setEnabled(not running)

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def activate_selected(self) -> None:
        """Switch to the selected bundle (embeddings first, then the pointer)."""
        v = self.selected_version()
        if v is None or v.active or self.is_running():
            return
        catalog, service, version = self.catalog, self.service, v.version

        def work(sig, should_stop):
            service.activate(catalog, version, progress=sig.progress, should_stop=should_stop)
            return version

        self.job = ThreadJob(work, self)
        self.job.signals.progress.connect(lambda f, m: (self.progress.setValue(int(f * 1000)), self.status_label.setText(m)))
        self.job.signals.result.connect(self._on_activated)
        self.job.signals.error.connect(self._on_error)
        self.job.signals.finished.connect(lambda j=self.job: self._finished(j))
        self.progress.setVisible(True)
        self.use_button.setEnabled(False)
        self.status_label.setText(f"Switching to {version}: computing embeddings (the current model serves meanwhile)…")
        self.job.start()

    def _on_activated(self, version: str) -> None:
        self.refresh()
        self.status_label.setText(f"Model {version} is now active.")
        self.model_activated.emit(version)

    def _on_error(self, exc) -> None:
        self.status_label.setText(f"Could not switch: {exc}")
        if self.isVisible():
            QMessageBox.warning(self, "Could not switch models", str(exc))

    def _finished(self, job: ThreadJob) -> None:
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

        def work(sig, should_stop):
            return models.add_bundle(catalog, folder, activate=activate, embed=True, progress=sig.progress,
                                     should_stop=should_stop)

        self.job = ThreadJob(work, self)
        self.job.signals.progress.connect(lambda f, m: (self.progress.setValue(int(f * 1000)), self.status_label.setText(m)))
        self.job.signals.result.connect(self._on_added)
        self.job.signals.error.connect(self._on_add_error)
        self.job.signals.finished.connect(lambda j=self.job: self._finished(j))
        self.progress.setVisible(True)
        self.use_button.setEnabled(False)
        self.add_button.setEnabled(False)
        self.status_label.setText(f"Adding the model in {folder}: checking it…")
        self.job.start()

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
