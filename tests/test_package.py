"""The desktop build: `make package` output runs its --self-test offscreen (marked `package`).

Builds dist/flukeid with PyInstaller unless a build newer than the sources is there already.
Run with `make package-test`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.package
EXE = REPO / "dist" / "flukeid" / "flukeid"


def _newest_source() -> float:
    newest = 0.0
    for top in ("app", "model", "resources", "packaging"):
        for p in (REPO / top).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                newest = max(newest, p.stat().st_mtime)
    return newest


@pytest.fixture(scope="module")
def built() -> Path:
    if not (EXE.is_file() and EXE.stat().st_mtime > _newest_source()):
        if subprocess.run([sys.executable, "-m", "PyInstaller", "--version"], capture_output=True).returncode:
            pytest.fail("PyInstaller is not installed: run `make package-test` (it installs the package extra)")
        env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
        r = subprocess.run(["bash", str(REPO / "packaging" / "build.sh")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return EXE


def test_built_program_passes_its_self_test(built):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([str(built), "--self-test"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-test passed" in r.stdout


def test_built_program_carries_no_torch(built):
    internal = built.parent / "_internal"
    assert not (internal / "torch").exists()
    assert (internal / "resources" / "models" / "demo" / "manifest.json").is_file()
