"""Fixtures for the GUI tests: a tiny model bundle, synthetic flukes, a catalog, a window."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny untrained branch + head exported under the bundle contract (64x64 input)."""
    from tests.model.tiny_models import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-v1", size=64, dim=16)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Five synthetic whales, three photos each: (images folder, label rows)."""
    from model.api import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    labels = generate_dataset(out, 5, seed=3, photos=3, size=(256, 176))
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out / "images", rows


@pytest.fixture
def ui_catalog(tmp_path, tiny_bundle, synthetic_set) -> tuple[Path, list[Path]]:
    """A catalog with the tiny model active and two labelled photos per whale.

    Returns the catalog folder and the third photo of each whale (not imported yet) copied to
    a field folder.
    """
    from app.catalog import Catalog
    from app.services import importing, matching

    images, rows = synthetic_set
    by_ind: dict[str, list[dict]] = {}
    for r in rows:
        by_ind.setdefault(r["individual_id"], []).append(r)
    labelled = tmp_path / "labelled.csv"
    field = tmp_path / "field"
    field.mkdir()
    new_photos = []
    with open(labelled, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "individual_id", "x0", "y0", "x1", "y1"])
        for n, group in enumerate(by_ind.values()):
            for r in group[:2]:
                w.writerow([r["image"], f"HW-{n + 1:04d}", r["x0"], r["y0"], r["x1"], r["y1"]])
            dest = field / group[2]["image"]
            shutil.copy(images / group[2]["image"], dest)
            new_photos.append(dest)
    folder = tmp_path / "catalog"
    with Catalog.create(folder) as cat:
        dest = cat.models_dir / "tiny-v1"
        shutil.copytree(tiny_bundle, dest)
        cat.add_model("tiny-v1", dest, activate=True)
        engine = matching.load_engine(cat)
        importing.import_labelled(cat, labelled, images, engine=engine)
    return folder, new_photos


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def is_idle(window) -> bool:
    return (not window.jobs.running and not window.writer.running and not window.light.running
            and not window._refresh_pending)


@pytest.fixture
def window(qtbot, settings):
    from app.ui.main_window import MainWindow

    win = MainWindow(settings, confirm_dialogs=False)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.close()


def wait_idle(qtbot, window, timeout: int = 60000) -> None:
    """Wait until no job, write or refresh is pending (twice, as one job may start another)."""
    qtbot.wait(50)
    qtbot.waitUntil(lambda: is_idle(window), timeout=timeout)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: is_idle(window), timeout=timeout)


def open_and_wait(qtbot, window, folder) -> None:
    window.open_catalog(str(folder))
    qtbot.waitUntil(lambda: window.session is not None and window.snapshot is not None, timeout=60000)
    wait_idle(qtbot, window)


class GuiProbe:
    """Measures how long the GUI thread goes without serving a 10 ms timer.

    Records, for each gap between ticks, the wall-clock time and the GUI thread's own CPU time.
    The CPU time says whether our code worked in the GUI thread (a fixed bound holds on any
    machine); the wall gap also counts waiting for the GIL and for a CPU, so its bound is relaxed
    on a machine loaded by other processes (load average above twice the cores), where waiting
    for a CPU is not ours to fix.
    """

    def __init__(self):
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self.cpu: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)
        self._last = (0.0, 0.0)

    def _tick(self) -> None:
        import time

        now, now_cpu = time.perf_counter(), time.thread_time()
        self.gaps.append(now - self._last[0])
        self.cpu.append(now_cpu - self._last[1])
        self._last = (now, now_cpu)

    def start(self) -> None:
        import time

        self._last = (time.perf_counter(), time.thread_time())
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def assert_responsive(self, limit: float = 0.100, loaded_limit: float = 0.5) -> None:
        import os

        assert self.gaps, "the probe never ticked"
        worst, worst_cpu = max(self.gaps), max(self.cpu)
        load = os.getloadavg()[0]
        overloaded = load > 2 * (os.cpu_count() or 1)
        print(f"worst gap {worst * 1000:.1f} ms, worst GUI CPU per gap {worst_cpu * 1000:.1f} ms, "
              f"{len(self.gaps)} ticks, load average {load:.1f}")
        assert worst_cpu < limit, f"GUI thread busy for {worst_cpu * 1000:.0f} ms"
        bound = loaded_limit if overloaded else limit
        assert worst < bound, f"GUI thread blocked for {worst * 1000:.0f} ms (load average {load:.1f})"
