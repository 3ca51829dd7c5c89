"""Fixtures for model tests: a tiny exported bundle that follows the ONNX contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.model.tiny_models import build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A verified bundle (branch D=32, 64x64 input, paper-structured head); do not modify it."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-v1")


@pytest.fixture
def tiny_bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst
