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


def _env_without_display() -> dict[str, str]:
    import os

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.gui
@pytest.mark.parametrize("spelling", [["self-test"], ["--self-test"]])
def test_self_test_runs_without_a_display_in_either_spelling(spelling):
    """No DISPLAY: Qt used to abort the whole self-test (signal 6); now the window is built offscreen."""
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "app", *spelling], cwd=REPO, env=_env_without_display(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "[ok] main window built (Qt)" in out.stdout and "no display: built offscreen" in out.stdout
    assert out.stdout.rstrip().endswith("self-test passed")


@pytest.mark.gui
def test_gui_check_reports_a_display_qt_cannot_use(monkeypatch):
    from app.commands.selftest import gui_check

    for name, value in _env_without_display().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "no-such-platform")  # Qt aborts the child process
    ok, detail = gui_check()
    assert not ok
    assert detail.startswith("Qt could not start") and "no-such-platform" in detail


def test_top_level_self_test_flag_is_the_command(capsys):
    from app.cli import main

    assert main(["--self-test", "--no-gui"]) == 0
    assert "self-test passed" in capsys.readouterr().out
