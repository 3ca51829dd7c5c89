"""Shared test setup: Qt offscreen before any Qt import, tiny synthetic data, shared-data paths."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# OpenMP threads that wait passively: on a busy machine torch's spinning threads made the training
# tests 4x slower (see app.cli.configure_process); set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

# Property tests draw the same examples on every run (a CI that passes today passes tomorrow);
# HYPOTHESIS_PROFILE=explore draws new random ones, to look for bugs (``make explore``).
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# As in the app (app.ui.gcguard): reference cycles are collected on the main thread only, after
# each test, never by a worker thread that happens to allocate (a cycle holding a widget destroyed
# on a worker thread crashed the suite).
gc.disable()


@pytest.fixture(autouse=True)
def _collect_on_main_thread():
    yield
    from app.ui.gcguard import collect_if_due

    collect_if_due()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent (the suite passes without it)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def no_shipped_calibration(monkeypatch):
    """A program shipped without its default calibration: a catalog matches uncalibrated (rank and plain score)."""
    from app.services import matching

    monkeypatch.setattr(matching, "_shipped_local_calibrator", lambda: None)
