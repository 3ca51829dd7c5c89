"""Model versions ▸ Add model…: pick a bundle folder, check, copy and embed in the background (offscreen)."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from app.catalog import Catalog  # noqa: E402
from app.services import models  # noqa: E402
from app.services.importing import import_photos  # noqa: E402
from app.ui.model_versions import ModelVersionsDialog  # noqa: E402
from tests.app.conftest import write_photo  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def catalog(tmp_path):
    photos = [write_photo(tmp_path / "field" / f"p{i}.jpg", i, size=(120, 90)) for i in range(3)]
    cat = Catalog.create(tmp_path / "cat")
    import_photos(cat, photos)
    yield cat
    cat.close()


@pytest.fixture
def other_bundle(tiny_bundle, tmp_path):
    """The tiny bundle under another version (tiny-v2)."""
    dst = tmp_path / "v2"
    shutil.copytree(tiny_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"] = "tiny-v2"
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _dialog(qtbot, catalog) -> ModelVersionsDialog:
    dlg = ModelVersionsDialog(catalog)
    qtbot.addWidget(dlg)
    return dlg


def _settled(qtbot, dlg) -> None:
    """Wait for the job and its last signal (the progress bar is hidden by the finished slot)."""
    qtbot.waitUntil(lambda: not dlg.is_running() and not dlg.progress.isVisibleTo(dlg), timeout=60000)


def _versions(dlg) -> list[str]:
    return [dlg.table.item(i, 0).text() for i in range(dlg.table.rowCount())]


def test_add_button_on_a_catalog_without_a_model_adds_and_activates(qtbot, catalog, tiny_bundle, monkeypatch):
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: asked.append(a) or str(tiny_bundle)))
    dlg = _dialog(qtbot, catalog)
    assert dlg.table.rowCount() == 0 and dlg.add_button.isEnabled()
    with qtbot.waitSignal(dlg.model_activated, timeout=60000) as sig:
        dlg.add_button.click()
    assert asked and sig.args == ["tiny-v1"]
    _settled(qtbot, dlg)
    assert catalog.active_model().version == "tiny-v1"
    assert all(catalog.embedding(p.id, "tiny-v1") is not None for p in catalog.photos())
    assert _versions(dlg) == ["tiny-v1"] and dlg.table.item(0, 2).text() == "active"
    assert "added and active (3 photos embedded)" in dlg.status_label.text()
    assert dlg.add_button.isEnabled()


def test_a_second_model_is_added_embedded_and_selected_not_activated(qtbot, catalog, tiny_bundle, other_bundle):
    models.add_bundle(catalog, tiny_bundle, activate=True)
    dlg = _dialog(qtbot, catalog)
    dlg.add_model(str(other_bundle))
    assert not dlg.add_button.isEnabled()  # one job at a time
    _settled(qtbot, dlg)
    assert catalog.active_model().version == "tiny-v1"
    assert sorted(_versions(dlg)) == ["tiny-v1", "tiny-v2"]
    assert dlg.selected_version().version == "tiny-v2" and dlg.use_button.isEnabled()
    assert all(catalog.embedding(p.id, "tiny-v2") is not None for p in catalog.photos())
    assert "Use this model" in dlg.status_label.text()


def test_a_damaged_bundle_is_shown_to_the_user_and_the_active_model_stays(qtbot, catalog, tiny_bundle,
                                                                          other_bundle, monkeypatch):
    models.add_bundle(catalog, tiny_bundle, activate=True)
    data = bytearray((other_bundle / "branch.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (other_bundle / "branch.onnx").write_bytes(bytes(data))
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda parent, title, text, *a: shown.append((title, text))))
    dlg = _dialog(qtbot, catalog)
    dlg.show()
    dlg.add_model(str(other_bundle))
    _settled(qtbot, dlg)
    assert shown and shown[0][0] == "Could not add the model"
    assert f"{other_bundle / 'branch.onnx'}: checksum mismatch" in shown[0][1]
    assert "active model is unchanged" in shown[0][1]
    assert str(other_bundle / "branch.onnx") in dlg.status_label.text()
    assert catalog.active_model().version == "tiny-v1" and _versions(dlg) == ["tiny-v1"]
    assert dlg.add_button.isEnabled()


@pytest.mark.parametrize("default", [None, "tiny-v1", "missing"])
def test_gui_new_catalog_starts_with_the_default_model_when_the_program_declares_one(
        qtbot, window, tiny_bundle, tmp_path, monkeypatch, default):
    from tests.app.test_model_add import use_resources
    from tests.ui.conftest import wait_idle

    res = use_resources(monkeypatch, tmp_path / "res", tiny_bundle, default)
    window.open_catalog(str(tmp_path / "new"), create=True)
    qtbot.waitUntil(lambda: window.session is not None, timeout=60000)
    wait_idle(qtbot, window)
    active = window.session.catalog.active_model()
    shown = window.notification.label.text()
    if default == "tiny-v1":
        assert active.version == "tiny-v1"
        assert window.session.engine is not None and window.session.engine.version == "tiny-v1"
        assert "default model tiny-v1" in shown
    else:
        assert active is None and window.session.catalog.models() == []
        # no model is no warning: matching works on local features; only a failed default says why
        assert "needs a model" not in shown and "matching starts once" not in shown
        assert ("could not be installed" in shown and str(res / "models" / "missing") in shown
                and "Matching works without a model" in shown and "Add model" in shown) == (default == "missing")
