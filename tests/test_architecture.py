"""The layer rules of ARCHITECTURE.md are import-linter contracts; ruff keeps the code clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240)


def test_import_contracts_hold():
    r = _run([str(BIN / "lint-imports"), "--no-cache"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def _copy_tree(tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    dst.mkdir()
    shutil.copy(REPO / "pyproject.toml", dst)
    for pkg in ("app", "model"):
        shutil.copytree(REPO / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("model/_layer_probe.py", "import PySide6\n"),
        ("model/inference.py", "import torch\n"),
        ("app/services/_layer_probe.py", "import sqlite_utils\n"),
        ("app/ui/_layer_probe.py", "import model.nets\n"),
        # app reaches the model through model.api (model.errors alone is allowed)
        ("app/catalog/_layer_probe.py", "from model.bundle import read_manifest\n"),
        ("app/services/_layer_probe.py", "import model.local.index\n"),
        ("app/services/_layer_probe.py", "import PySide6\n"),
        ("app/catalog/_layer_probe.py", "from PySide6.QtCore import QObject\n"),
        ("app/commands/_layer_probe.py", "import PySide6\n"),
        # a command reaching Qt by any route but the GUI entry points named in pyproject.toml
        ("app/commands/_layer_probe.py", "import app.ui.main_window\n"),
        ("app/commands/gui.py", "import app.ui.main_window\n"),
    ],
)
def test_breaking_a_layer_rule_fails(tmp_path, module, line):
    repo = _copy_tree(tmp_path)
    target = repo / module
    text = target.read_text() if target.exists() else ""
    target.write_text(line + text)
    r = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=repo, capture_output=True, text=True, timeout=240,
        env={"PYTHONPATH": str(repo), "PATH": str(BIN)},
    )
    assert r.returncode != 0, f"adding {line!r} to {module} was not caught:\n{r.stdout}"
    assert "BROKEN" in r.stdout


def test_ruff_clean():
    r = _run([str(BIN / "ruff"), "check", "app", "model", "tests", "bench", "tools"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gui_modules_and_cli_do_not_import_torch():
    code = "import sys, app.cli; app.cli.build_parser(); import model.api; print('torch' in sys.modules)"
    r = _run([sys.executable, "-c", code], REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
