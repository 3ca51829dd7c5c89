"""Model > Retrain...: train on the catalog's confirmed photos, compare, activate or keep.

Training runs in a separate process (see :mod:`app.services.retraining`); this dialog runs the
Qt-free job through :class:`app.ui.workers.JobRunner` and receives its events through queued
signals, so the GUI thread only draws. Closing the dialog stops and waits for its jobs, and no
late signal of theirs reaches a closed catalog. It never imports torch: the device list comes
from the training Python.
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.services import retraining
from app.ui.notification import plain
from app.ui.workers import Job, JobRunner

# --- live plot ------------------------------------------------------------------------------------


class TrainingPlot(QWidget):
    """Loss (left scale) and validation top-5 (right scale, 0..1) per epoch, drawn with QPainter."""

    LOSS_COLOR = QColor(200, 70, 50)
    TOP5_COLOR = QColor(40, 110, 200)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumSize(360, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.epochs: list[int] = []
        self.loss: list[float] = []
        self.top5: list[float | None] = []
        self.total_epochs = 0

    def clear(self) -> None:
        self.epochs, self.loss, self.top5 = [], [], []
        self.update()

    def add_epoch(self, epoch: int, loss: float, top5: float | None, total: int | None = None) -> None:
        if self.epochs and epoch <= self.epochs[-1]:  # a resumed run repeats nothing, but be safe
            keep = [i for i, e in enumerate(self.epochs) if e < epoch]
            self.epochs = [self.epochs[i] for i in keep]
            self.loss = [self.loss[i] for i in keep]
            self.top5 = [self.top5[i] for i in keep]
        self.epochs.append(int(epoch))
        self.loss.append(float(loss))
        self.top5.append(None if top5 is None else float(top5))
        if total:
            self.total_epochs = int(total)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        fm = p.fontMetrics()
        left, right, top, bottom = 48, 44, 10, fm.height() + 12
        area = QRectF(left, top, max(1, self.width() - left - right), max(1, self.height() - top - bottom))
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(area)
        text = self.palette().text().color()
        if not self.epochs:
            p.setPen(text)
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss and validation top-5 appear here, per epoch")
            p.end()
            return
        n = max(self.total_epochs, self.epochs[-1], 2)
        finite = [v for v in self.loss if math.isfinite(v)]
        lmax = max(finite) if finite else 1.0
        lmin = min(0.0, min(finite)) if finite else 0.0
        if lmax - lmin < 1e-9:
            lmax = lmin + 1.0

        def x_of(e: int) -> float:
            return area.left() + (e - 1) / max(1, n - 1) * area.width()

        def y_of(v: float, lo: float, hi: float) -> float:
            return area.bottom() - (v - lo) / (hi - lo) * area.height()

        p.setPen(text)
        p.drawText(QRectF(0, area.top() - 4, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight, f"{lmax:.3g}")
        p.drawText(QRectF(0, area.bottom() - fm.height() + 4, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight, f"{lmin:.3g}")
        p.drawText(QRectF(area.right() + 4, area.top() - 4, right, fm.height()), Qt.AlignmentFlag.AlignLeft, "1.0")
        p.drawText(QRectF(area.right() + 4, area.bottom() - fm.height() + 4, right, fm.height()), Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height() + 4), Qt.AlignmentFlag.AlignLeft, "epoch 1")
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height() + 4), Qt.AlignmentFlag.AlignRight, f"epoch {n}")
        p.setPen(self.LOSS_COLOR)
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height() + 4), Qt.AlignmentFlag.AlignHCenter, "— loss")
        self._series(p, [(x_of(e), y_of(v, lmin, lmax)) for e, v in zip(self.epochs, self.loss) if math.isfinite(v)], self.LOSS_COLOR)
        pts = [(x_of(e), y_of(min(1.0, max(0.0, v)), 0.0, 1.0)) for e, v in zip(self.epochs, self.top5) if v is not None]
        self._series(p, pts, self.TOP5_COLOR)
        p.setPen(self.TOP5_COLOR)
        p.drawText(QRectF(area.left(), area.top() + 2, area.width() - 4, fm.height()), Qt.AlignmentFlag.AlignRight, "validation top-5 —")
        p.end()

    @staticmethod
    def _series(p: QPainter, pts: list[tuple[float, float]], color: QColor) -> None:
        if not pts:
            return
        p.setPen(QPen(color, 2))
        path = QPainterPath(QPointF(*pts[0]))
        for x, y in pts[1:]:
            path.lineTo(x, y)
        p.drawPath(path)
        p.setBrush(color)
        for x, y in pts:
            p.drawEllipse(QPointF(x, y), 2.5, 2.5)
        p.setBrush(Qt.BrushStyle.NoBrush)


def format_duration(seconds: float | None) -> str:
    """``1 h 05 min``, ``4 min 10 s``, ``12 s``; empty for None."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# --- the dialog -----------------------------------------------------------------------------------


class RetrainDialog(QDialog):
    """Train a new model on the catalog, show the comparison, activate it or keep the current one.

    Args:
        catalog: the open catalog (passed to the retraining service).
        service: the retraining service module (tests may pass a stand-in with the same functions).

    Signals:
        model_activated(str): the version that became active.
        training_finished(object): the :class:`retraining.RetrainResult` of a finished run.
        training_failed(str): the error message shown to the user.
    """

    model_activated = Signal(str)
    training_finished = Signal(object)
    training_failed = Signal(str)
    event_received = Signal(object)

    def __init__(self, catalog, parent: QWidget | None = None, service=retraining):
        super().__init__(parent)
        self.setWindowTitle("Retrain model")
        self.catalog = catalog
        self.service = service
        # not lowered: the training process started from the job would inherit a lowered priority
        self.jobs = JobRunner(self, max_threads=2, alive=lambda: not catalog.closed, low_priority=False)
        self.job: Job | None = None
        self.result: Any = None
        self.last_error: str | None = None
        self._started_at = 0.0
        self._env: Any = None
        self._resumable = False
        self._build()
        self._refresh_summary()
        self._check_python()

    # layout
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        box = QGroupBox("Training set (confirmed identifications)")
        self.summary_label = QLabel("…")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.PlainText)
        QVBoxLayout(box).addWidget(self.summary_label)
        lay.addWidget(box)

        settings = QGroupBox("Training")
        form = QFormLayout(settings)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 10000)
        self.epochs_spin.setSpecialValueText("configuration default")
        self.epochs_spin.setValue(0)
        form.addRow("Epochs", self.epochs_spin)
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(0, 7 * 24 * 60)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setSpecialValueText("no limit")
        self.budget_spin.setToolTip("Stop after the last epoch that fits in this time and use that model")
        form.addRow("Time budget", self.budget_spin)
        self.config_combo = QComboBox()
        for name, label in (("cpu", "cpu: small network, fast"), ("paper", "paper: the paper's network (GPU)"), ("tiny", "tiny: smoke test")):
            self.config_combo.addItem(label, name)
        form.addRow("Configuration", self.config_combo)
        self.device_combo = QComboBox()
        for name, label in (("auto", "Automatic"), ("cuda", "GPU (CUDA)"), ("cpu", "CPU")):
            self.device_combo.addItem(label, name)
        form.addRow("Device", self.device_combo)
        self.device_label = QLabel("checking the training Python…")
        self.device_label.setWordWrap(True)
        form.addRow("", self.device_label)
        py_row = QHBoxLayout()
        self.python_edit = QLineEdit(self.service.load_training_python() or "")
        self.python_edit.setPlaceholderText("the Python with PyTorch used for training")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_python)
        self.check_button = QPushButton("Check")
        self.check_button.clicked.connect(self._check_python)
        py_row.addWidget(self.python_edit, 1)
        py_row.addWidget(browse)
        py_row.addWidget(self.check_button)
        form.addRow("Training Python", py_row)
        self.resume_check = QCheckBox("Resume the cancelled run")
        self.resume_check.setVisible(False)
        form.addRow("", self.resume_check)
        lay.addWidget(settings)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.plot = TrainingPlot()
        lay.addWidget(self.progress)
        lay.addWidget(self.status_label)
        lay.addWidget(self.plot, 1)

        self.compare_box = QGroupBox("Comparison on held-out confirmed photos")
        cl = QVBoxLayout(self.compare_box)
        self.compare_table = QTableWidget(0, 3)
        self.compare_table.setHorizontalHeaderLabels(["", "current model", "new model"])
        self.compare_table.verticalHeader().setVisible(False)
        cl.addWidget(self.compare_table)
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        cl.addWidget(self.verdict_label)
        self.compare_box.setVisible(False)
        lay.addWidget(self.compare_box)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.activate_button = QPushButton("Activate new model")
        self.activate_button.setVisible(False)
        self.activate_button.clicked.connect(self.activate_new_model)
        self.keep_button = QPushButton("Keep current")
        self.keep_button.setVisible(False)
        self.keep_button.clicked.connect(self.keep_current)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        for b in (self.start_button, self.cancel_button, self.activate_button, self.keep_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        lay.addLayout(buttons)
        self.resize(620, 640)

    # state
    def is_running(self) -> bool:
        """True while a training, export, evaluation or activation job is running."""
        return self.job is not None and not self.job.settled

    def _refresh_summary(self) -> None:
        try:
            s = self.service.training_set_summary(self.catalog)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.summary_label.setText(f"Cannot read the catalog: {exc}")
            self.start_button.setEnabled(False)
            return
        self.summary_label.setText(s.describe())
        self.start_button.setEnabled(s.trainable)
        resumable = self.service.find_resumable_run(self.catalog)
        self._resumable = resumable is not None
        self.resume_check.setVisible(resumable is not None)
        self.resume_check.setChecked(resumable is not None)

    def _browse_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the training Python")
        if path:
            self.python_edit.setText(path)
            self._check_python()

    def _check_python(self) -> None:
        python = self.python_edit.text().strip() or self.service.default_training_python()
        self.device_label.setText("checking the training Python…")
        self.check_button.setEnabled(False)

        service = self.service
        self._probe_job = self.jobs.submit(
            "Checking the training Python", lambda progress, should_stop: service.probe_training_python(python),
            on_result=self._on_probe, on_error=lambda exc: self._on_probe_error(str(exc)),
            on_finished=lambda: self.check_button.setEnabled(True), report_errors=False)

    def _on_probe(self, env) -> None:
        self._env = env
        self.device_label.setText(env.describe())
        if self.python_edit.text().strip():
            self.service.save_training_python(self.python_edit.text().strip())

    def _on_probe_error(self, message: str) -> None:
        self._env = None
        self.device_label.setText(f"<b>Training is not possible:</b> {plain(message)}")

    def options(self):
        """The :class:`retraining.RetrainOptions` the form describes."""
        return self.service.RetrainOptions(
            device=self.device_combo.currentData(),
            epochs=self.epochs_spin.value() or None,
            config=self.config_combo.currentData(),
            resume=self._resumable and self.resume_check.isChecked(),
            training_python=self.python_edit.text().strip() or None,
            time_budget_s=self.budget_spin.value() * 60 or None,
        )

    # training
    def start(self) -> None:
        """Start training with the form's options (in a separate process)."""
        if self.is_running():
            return
        opts = self.options()
        self.result = None
        self.last_error = None
        self.plot.clear()
        self.plot.total_epochs = opts.epochs or 0
        self.progress.setValue(0)
        self.compare_box.setVisible(False)
        self.activate_button.setVisible(False)
        self.keep_button.setVisible(False)
        self.status_label.setText("Preparing the training data…")
        self._started_at = time.monotonic()
        catalog, service = self.catalog, self.service

        def work(progress, should_stop):
            return service.retrain(catalog, opts, on_event=progress.event, should_stop=should_stop)

        self._run_job("Retraining", work, self._on_trained)
        self.cancel_button.setEnabled(True)
        self.start_button.setEnabled(False)

    def _run_job(self, name: str, fn, on_result) -> None:
        # ``is_running()`` is False from the moment the result arrives, so a slot reacting to it
        # (or the user's next click) may start the next job at once
        holder: list[Job] = []
        self.job = self.jobs.submit(
            name, fn, on_result=on_result, on_error=self._on_error, on_event=self._on_event,
            on_progress=self._on_progress, on_cancelled=self._on_cancelled,
            on_finished=lambda: self._on_job_finished(holder[0]), report_errors=False)
        holder.append(self.job)

    def cancel(self) -> None:
        """Stop training; the last checkpoint is kept and the next Retrain offers to resume it."""
        if self.is_running():
            self.status_label.setText("Stopping (the last checkpoint is kept)…")
            self.cancel_button.setEnabled(False)
            self.job.cancel()

    def _on_event(self, ev) -> None:
        self.event_received.emit(ev)
        if ev.kind == "epoch":
            d = ev.data
            frac = ev.fraction()
            if frac is not None:
                self.progress.setValue(int(frac * 1000))
            try:
                self.plot.add_epoch(int(d["epoch"]), float(d.get("loss", float("nan"))), d.get("val_top5"), d.get("epochs"))
            except (KeyError, TypeError, ValueError):
                pass
            self.status_label.setText(retraining.describe_epoch(ev))  # the CLI's wording: one formatter
        elif ev.kind == "start":
            if ev.data.get("epochs"):
                self.plot.total_epochs = int(ev.data["epochs"])
            self.status_label.setText(f"Training started ({ev.data.get('device', 'device chosen by the trainer')})…")
        elif ev.kind == "stage":
            self.status_label.setText(ev.message)
            if ev.data.get("fraction") is not None:
                self.progress.setValue(int(float(ev.data["fraction"]) * 1000))

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        if message:
            self.status_label.setText(message)

    def _on_trained(self, result) -> None:
        self.result = result
        self.progress.setValue(1000)
        self.status_label.setText(
            f"Training finished in {format_duration(time.monotonic() - self._started_at)}: new model {result.version}."
        )
        self._show_comparison(result)
        self.training_finished.emit(result)

    def _show_comparison(self, result) -> None:
        rows = result.comparison_rows()
        self.compare_table.setRowCount(len(rows))
        for i, (name, old, new) in enumerate(rows):
            for j, text in enumerate((name, old, new)):
                self.compare_table.setItem(i, j, QTableWidgetItem(text))
        self.compare_table.resizeColumnsToContents()
        self.compare_table.resizeRowsToContents()
        height = self.compare_table.horizontalHeader().height() + 2 * self.compare_table.frameWidth()
        height += sum(self.compare_table.rowHeight(i) for i in range(len(rows)))
        self.compare_table.setFixedHeight(height)
        self.compare_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.verdict_label.setText(" ".join(t for t in (result.verdict(), result.detector) if t))
        self.compare_box.setVisible(True)
        self.activate_button.setVisible(True)
        self.keep_button.setVisible(True)
        self.activate_button.setEnabled(True)
        self.keep_button.setEnabled(True)
        self.activate_button.setDefault(result.is_better())

    def _on_error(self, exc) -> None:
        self.last_error = str(exc)
        self.status_label.setText(f"<b>Failed:</b> {plain(exc)}")
        self.training_failed.emit(str(exc))
        QMessageBox.warning(self, "Retraining failed", str(exc)) if self.isVisible() else None

    def _on_cancelled(self) -> None:
        self.status_label.setText("Cancelled. The current model is unchanged; the last checkpoint is kept "
                                  "and the next Retrain offers to resume it.")

    def _on_job_finished(self, job: Job) -> None:
        if job is not self.job:  # a newer job (activation) already runs
            return
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self._refresh_summary()

    # activation
    def activate_new_model(self) -> None:
        """Embed the catalog with the new model (the old one serves meanwhile), then switch."""
        if self.result is None or self.is_running():
            return
        version = self.result.version
        self.activate_button.setEnabled(False)
        self.keep_button.setEnabled(False)
        self.start_button.setEnabled(False)
        self.status_label.setText(f"Computing embeddings with {version}; the current model serves until they are ready…")
        catalog, service = self.catalog, self.service

        def work(progress, should_stop):
            service.activate(catalog, version, progress=progress, should_stop=should_stop)
            return version

        self._run_job("Activating the new model", work, self._on_activated)
        self.cancel_button.setEnabled(True)

    def _on_activated(self, version: str) -> None:
        self.status_label.setText(f"Model {version} is now active.")
        self.activate_button.setVisible(False)
        self.keep_button.setVisible(False)
        self.model_activated.emit(version)

    def keep_current(self) -> None:
        """Keep the active model; the new bundle stays listed under Model versions."""
        self.activate_button.setVisible(False)
        self.keep_button.setVisible(False)
        if self.result is not None:
            self.status_label.setText(
                f"Kept the current model. {self.result.version} stays available under Model > Model versions."
            )

    def confirm_stop(self) -> bool:
        """Ask whether to stop a running job (True: stopped or nothing running; False: keep going)."""
        if not self.is_running():
            return True
        answer = QMessageBox.question(
            self,
            "Training is running",
            "Training is running. Stop it? (The last checkpoint is kept; Retrain can resume it.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.stop_and_wait()
        return True

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        if not self.confirm_stop():
            event.ignore()
            return
        self.jobs.shutdown()
        super().closeEvent(event)

    def reject(self) -> None:  # Escape and the window's close button on some platforms
        if self.confirm_stop():
            super().reject()

    def done(self, result: int) -> None:  # every way a dialog ends
        self.jobs.shutdown()
        super().done(result)

    def stop_and_wait(self, timeout: float = 30.0) -> bool:
        """Cancel the running jobs and wait for them (the dialog closing); True when they ended."""
        self.jobs.cancel_all()
        return self.jobs.wait(int(timeout * 1000))
