"""The Retrain and Model versions dialogs, driven with a fake training Python (pytest-qt, offscreen)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from app.services import retraining  # noqa: E402
from app.ui.model_versions import ModelVersionsDialog  # noqa: E402
from app.ui.retrain_dialog import RetrainDialog, TrainingPlot, format_duration  # noqa: E402
from tests.app.retrain_fakes import (
    catalog_fixture,  # noqa: E402, F401  (the `catalog` fixture)
    fake_training_env,  # noqa: E402
)
from tests.ui.conftest import GuiProbe  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    path = fake_training_env(tmp_path, monkeypatch)
    monkeypatch.setenv(retraining.TRAINING_PYTHON_ENV, path)
    return path


@pytest.fixture
def embed_stub(monkeypatch):
    import numpy as np

    calls = []

    def embed_missing(catalog, engine, version, *, progress=None, should_stop=None):
        calls.append(version)
        todo = catalog.photos_missing_embedding(version)
        for i, pid in enumerate(todo):
            catalog.put_embedding(pid, version, np.zeros(engine.embedding_dim, np.float32))
            if progress:
                progress((i + 1) / len(todo), f"Embedding photo {i + 1}/{len(todo)}")

    monkeypatch.setattr("app.services.matching.embed_missing", embed_missing)
    return calls


def _dialog(qtbot, catalog) -> RetrainDialog:
    dlg = RetrainDialog(catalog)
    qtbot.addWidget(dlg)
    dlg.config_combo.setCurrentIndex(dlg.config_combo.findData("tiny"))
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    return dlg


def test_dialog_trains_shows_comparison_and_activates(qtbot, catalog, fake_python, embed_stub, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.1")
    dlg = _dialog(qtbot, catalog)
    assert "16 confirmed photos" in dlg.summary_label.text()
    qtbot.waitUntil(lambda: "PyTorch" in dlg.device_label.text() or "not possible" in dlg.device_label.text(),
                    timeout=60000)
    assert "PyTorch" in dlg.device_label.text()  # the probe ran in the training Python, not here
    dlg.epochs_spin.setValue(4)
    dlg.resume_check.setChecked(False)
    # the GUI thread stays free while training runs (its own CPU time per timer gap; the wall-clock
    # gap only where the machine is not loaded by others)
    probe = GuiProbe()
    probe.start()
    events = []
    dlg.event_received.connect(events.append)
    with qtbot.waitSignal(dlg.training_finished, timeout=60000) as blocker:
        dlg.start()
        assert dlg.is_running()
    probe.stop()
    result = blocker.args[0]
    assert [e.data["epoch"] for e in events if e.kind == "epoch"] == [1, 2, 3, 4]
    assert dlg.plot.epochs == [1, 2, 3, 4] and dlg.plot.loss[0] == 1.0 and dlg.plot.top5[1] == pytest.approx(0.4)
    assert dlg.progress.value() == 1000
    assert dlg.compare_box.isVisibleTo(dlg) and dlg.compare_table.rowCount() == 5
    assert dlg.compare_table.item(0, 1).text() == "m-initial" and dlg.compare_table.item(0, 2).text() == result.version
    assert dlg.activate_button.isVisibleTo(dlg) and dlg.keep_button.isVisibleTo(dlg)
    probe.assert_responsive()
    assert catalog.active_model().version == "m-initial"
    # the user clicks at once: the training job has handed over its result, activation may start
    assert not dlg.is_running()
    with qtbot.waitSignal(dlg.model_activated, timeout=60000) as act:
        dlg.activate_new_model()
    assert act.args == [result.version] and embed_stub == [result.version]
    assert catalog.active_model().version == result.version


def test_dialog_cancel_keeps_model_and_offers_resume(qtbot, catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.3")
    dlg = _dialog(qtbot, catalog)
    dlg.epochs_spin.setValue(20)
    assert not dlg.resume_check.isVisibleTo(dlg)
    epochs = []
    dlg.event_received.connect(lambda e: epochs.append(e) if e.kind == "epoch" else None)
    dlg.start()
    qtbot.waitUntil(lambda: len(epochs) >= 1, timeout=30000)
    # closing while training asks; "No" keeps training
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    dlg.reject()
    assert dlg.is_running()
    dlg.cancel()
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=30000)
    assert "Cancelled" in dlg.status_label.text()
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1
    assert dlg.resume_check.isVisibleTo(dlg) and dlg.resume_check.isChecked()
    assert dlg.options().resume


def test_closing_during_training_stops_it(qtbot, catalog, fake_python, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setenv("FAKE_EPOCH_S", "0.3")
    dlg = _dialog(qtbot, catalog)
    dlg.epochs_spin.setValue(50)
    dlg.show()
    epochs = []
    dlg.event_received.connect(lambda e: epochs.append(e) if e.kind == "epoch" else None)
    dlg.start()
    qtbot.waitUntil(lambda: len(epochs) >= 1, timeout=30000)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.Yes)
    assert dlg.close()
    assert asked and not dlg.is_running() and dlg.jobs.pool.activeThreadCount() == 0  # stopped, waited for
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1


def test_dialog_crash_shows_error_and_changes_nothing(qtbot, catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_MODE", "crash")
    dlg = _dialog(qtbot, catalog)
    dlg.epochs_spin.setValue(3)
    dlg.resume_check.setChecked(False)
    with qtbot.waitSignal(dlg.training_failed, timeout=30000) as failed:
        dlg.start()
    assert "exited with code 1" in failed.args[0] and "CUDA out of memory" in failed.args[0]
    assert "Failed" in dlg.status_label.text() and not dlg.compare_box.isVisibleTo(dlg)
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1
    qtbot.waitUntil(lambda: dlg.start_button.isEnabled(), timeout=60000)


def test_dialog_without_training_python_says_so(qtbot, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("FLUKEID_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv(retraining.TRAINING_PYTHON_ENV, str(tmp_path / "missing-python"))
    dlg = _dialog(qtbot, catalog)
    qtbot.waitUntil(lambda: "not possible" in dlg.device_label.text(), timeout=30000)
    assert "training Python not found" in dlg.device_label.text()


def test_model_versions_lists_and_switches(qtbot, catalog, fake_python, embed_stub):
    result = retraining.retrain(catalog, retraining.RetrainOptions(epochs=1, detector=False))
    dlg = ModelVersionsDialog(catalog)
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 2
    versions = [dlg.table.item(i, 0).text() for i in range(2)]
    assert set(versions) == {"m-initial", result.version}
    row = versions.index(result.version)
    assert dlg.table.item(row, 3).text().endswith("%")  # top-1 of the held-out comparison
    dlg.select_version(result.version)
    assert dlg.use_button.isEnabled()
    with qtbot.waitSignal(dlg.model_activated, timeout=30000):
        dlg.activate_selected()
    assert catalog.active_model().version == result.version
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=60000)
    # switch back to the old one
    dlg.select_version("m-initial")
    with qtbot.waitSignal(dlg.model_activated, timeout=30000):
        dlg.activate_selected()
    assert catalog.active_model().version == "m-initial"
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=60000)


def test_plot_and_durations(qtbot):
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.total_epochs = 5
    for e, (loss, top5) in enumerate([(1.0, 0.1), (0.7, None), (float("nan"), 0.5)], start=1):
        plot.add_epoch(e, loss, top5)
    plot.resize(400, 200)
    image = plot.grab()  # paints without error, including NaN and missing values
    assert not image.isNull()
    plot.add_epoch(2, 0.6, 0.3)  # a resumed run restarts at epoch 2: later points are replaced
    assert plot.epochs == [1, 2]
    assert format_duration(75) == "1 min 15 s" and format_duration(3725) == "1 h 02 min" and format_duration(None) == ""
