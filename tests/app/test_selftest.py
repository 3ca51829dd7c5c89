"""``flukeid self-test`` (the desktop build's --self-test) from the source tree."""

from __future__ import annotations

import shutil

import pytest

from app.services import selftest


def test_self_test_passes_with_the_shipped_models():
    report = selftest.run_self_test()
    assert report.ok, "\n".join(report.lines())
    names = [name for name, _, _ in report.steps]
    assert "photo matched against the catalog" in names
    assert "fluke detected in a synthetic photo" in names


def test_self_test_fails_clearly_when_the_demo_model_is_damaged(tmp_path, monkeypatch):
    from app import paths

    damaged = tmp_path / "demo"
    shutil.copytree(paths.demo_bundle_dir(), damaged)
    head = damaged / "head.onnx"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    monkeypatch.setattr(paths, "demo_bundle_dir", lambda: damaged)
    report = selftest.run_self_test()
    assert not report.ok
    text = "\n".join(report.lines())
    assert "head.onnx" in text and "checksum" in text


@pytest.mark.gui
def test_self_test_command_exit_code(capsys):
    from app.cli import main

    assert main(["self-test"]) == 0
    out = capsys.readouterr().out
    assert "self-test passed" in out
    assert "main window built (Qt)" in out
