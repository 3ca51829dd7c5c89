"""The GUI part of ``flukeid self-test``: the Qt platform plugin loads and the main window builds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings


def gui_self_check() -> tuple[bool, str]:
    """Build (and close) the main window with throw-away settings; returns (ok, detail)."""
    from app.ui.app import application
    from app.ui.main_window import MainWindow

    app = application()
    with tempfile.TemporaryDirectory(prefix="flukeid-selftest-qt-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings, confirm_dialogs=False)
        window.show()
        app.processEvents()
        ok = window.isVisible() and len(window.menuBar().actions()) > 0
        detail = f"platform {app.platformName()}, {len(window.menuBar().actions())} menus"
        window.close()
        app.processEvents()
    return ok, detail
