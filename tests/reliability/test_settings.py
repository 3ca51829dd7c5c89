"""Garbage settings: the main window still starts and the retraining setting falls back.

tests/ui/test_robustness.py::test_garbage_settings_do_not_break_the_window covers one hand-written
bad ini file; here hypothesis writes values of random types and random bytes under every key the
window reads, and the settings file itself is made of random bytes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("PySide6")

KEYS = ("window/geometry", "window/state", "recent", "last_catalog")
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what QSettings can store at all
VALUES = st.one_of(
    st.none(), INT64, st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=64),
    st.lists(st.one_of(INT64, st.text(max_size=10)), max_size=5), st.booleans(),
)


def _build(qtbot, qs):
    from app.ui.main_window import MainWindow

    win = MainWindow(qs, confirm_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    recent = win.recent_catalogs()
    assert isinstance(recent, list) and all(isinstance(r, str) for r in recent)
    win.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({k: VALUES for k in KEYS}))
def test_random_typed_values_under_every_key(qtbot, tmp_path, values):
    from PySide6.QtCore import QByteArray, QSettings

    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    qs.clear()
    for k, v in values.items():
        qs.setValue(k, QByteArray(v) if isinstance(v, bytes) else v)
    qs.sync()
    _build(qtbot, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_random_bytes_as_the_settings_file(qtbot, tmp_path, data):
    from PySide6.QtCore import QSettings

    path = tmp_path / "garbage.ini"
    path.write_bytes(data)
    _build(qtbot, QSettings(str(path), QSettings.Format.IniFormat))


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage", b"[1, 2]", b'{"training_python": 42}',
                                     b'{"training_python": null}', b"{"])
def test_garbage_retraining_setting_falls_back(tmp_path, monkeypatch, content):
    from app.services import retraining

    monkeypatch.setenv("FLUKEID_CONFIG_DIR", str(tmp_path))
    (tmp_path / "retraining.json").write_bytes(content)
    value = retraining.load_training_python()
    assert value is None or value == "42"
    retraining.save_training_python("/usr/bin/python3")  # and it can be repaired by saving
    assert json.loads((tmp_path / "retraining.json").read_text())["training_python"] == "/usr/bin/python3"
    assert retraining.load_training_python() == "/usr/bin/python3"
