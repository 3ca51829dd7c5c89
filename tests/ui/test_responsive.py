"""The GUI thread is never blocked for more than 100 ms, even while 200 photos import.

A 10 ms QTimer probe (:class:`tests.ui.conftest.GuiProbe`) records the wall-clock gap between its
ticks and the GUI thread's own CPU time in each gap; the wall-clock bound is relaxed on a machine
loaded by other processes, and the measured numbers are printed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.ui.conftest import GuiProbe, open_and_wait, wait_idle

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

    probe = GuiProbe()
    probe.start()
    window.import_photos([str(field)])
    wait_idle(qtbot, window, timeout=240000)
    qtbot.wait(300)  # thumbnails of the new photos load too
    probe.stop()

    assert len(window.snapshot.photos) == 210
    assert len(probe.gaps) > 50
    probe.assert_responsive()
