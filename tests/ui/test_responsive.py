"""The GUI thread is never blocked for more than 100 ms, even while 200 photos import.

A 10 ms QTimer probe records the wall-clock gap between its ticks and the GUI thread's own CPU
time in each gap. The CPU time says whether our code worked in the GUI thread; the wall gap also
counts waiting for the GIL (a worker holding it) and for a CPU. On a machine loaded by other
processes (load average above twice the cores) waiting for a CPU is not ours to fix, so the
wall-clock bound is relaxed there and the measured numbers are printed.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QTimer

from tests.ui.conftest import open_and_wait, wait_idle

pytestmark = pytest.mark.gui


def _photos(folder, n: int):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        arr = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        arr[30:90, 40:120] = rng.integers(0, 60)
        Image.fromarray(arr).save(folder / f"p{i:03d}.jpg", quality=85)
    return folder


def test_gui_thread_stays_responsive_while_200_photos_import(qtbot, window, ui_catalog, tmp_path):
    folder, _ = ui_catalog
    open_and_wait(qtbot, window, folder)
    field = _photos(tmp_path / "many", 200)
    window.show_view("photos")

    gaps: list[float] = []
    cpu: list[float] = []
    last = [time.perf_counter(), time.thread_time()]

    def tick() -> None:
        now, now_cpu = time.perf_counter(), time.thread_time()
        gaps.append(now - last[0])
        cpu.append(now_cpu - last[1])
        last[0], last[1] = now, now_cpu

    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(tick)
    probe.start()
    last[0], last[1] = time.perf_counter(), time.thread_time()
    window.import_photos([str(field)])
    wait_idle(qtbot, window, timeout=240000)
    qtbot.wait(300)  # thumbnails of the new photos load too
    probe.stop()

    assert len(window.snapshot.photos) == 210
    assert len(gaps) > 50
    worst, worst_cpu = max(gaps), max(cpu)
    load = os.getloadavg()[0]
    overloaded = load > 2 * (os.cpu_count() or 1)
    print(f"worst gap {worst * 1000:.1f} ms, worst GUI CPU per gap {worst_cpu * 1000:.1f} ms, "
          f"{len(gaps)} ticks, load average {load:.1f}")
    assert worst_cpu < 0.100, f"GUI thread busy for {worst_cpu * 1000:.0f} ms"
    limit = 0.5 if overloaded else 0.100
    assert worst < limit, f"GUI thread blocked for {worst * 1000:.0f} ms (load average {load:.1f})"
