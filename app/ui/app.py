"""Start the desktop app: QApplication, theme, main window; and the screenshot mode."""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings, Qt
from PySide6.QtWidgets import QApplication

from app.ui import gcguard
from app.ui.main_window import APP, ORG, VIEWS, MainWindow
from app.ui.qtcompat import guard_refcounts
from app.ui.theme import apply_theme

SCREENSHOT_NAMES = {"photos": "photos", "boxes": "box_review", "match": "match_review",
                    "individuals": "individuals"}


def application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (created once), themed; guarded against a known PySide6 defect."""
    guard_refcounts()
    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName(ORG)
        QCoreApplication.setApplicationName(APP)
        app = QApplication(argv or sys.argv[:1])
        apply_theme(app)
    gcguard.install(app)  # cycles holding Qt objects are destroyed on the GUI thread only
    return app  # type: ignore[return-value]


def pump(seconds: float, until=None) -> bool:
    """Run the event loop for up to ``seconds`` or until ``until()`` is true; returns ``until()``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if until is not None and until():
            return True
        time.sleep(0.01)
    return bool(until and until())


def wait_idle(window: MainWindow, seconds: float = 120.0) -> bool:
    """Pump events until no job, write or image load is pending."""
    def idle() -> bool:
        return (not window.jobs.running and not window.writer.running and not window.light.running
                and window.cache.pool.activeThreadCount() == 0 and not window._refresh_pending)

    pump(0.2)
    ok = pump(seconds, idle)
    pump(0.3)
    return ok and pump(seconds, idle)


def display_problem() -> str | None:
    """Why no window can be shown here (Linux without a display), or None."""
    import os

    if sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM") \
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return ("no display: flukeid needs a desktop session (DISPLAY or WAYLAND_DISPLAY is not set). "
                "Over ssh use `ssh -X`, or render the views with `flukeid demo --screenshot DIR`.")
    return None


def run_gui(catalog: str | None = None, *, view: str | None = None, settings: QSettings | None = None,
            exit_after_show: bool = False) -> int:
    """Open the window (on ``catalog`` or the last one used) and run until it closes.

    ``exit_after_show`` quits once the first window is shown and the event loop has run (start-up timing).
    """
    problem = display_problem()
    if problem:
        print(f"flukeid: error: {problem}", file=sys.stderr)
        return 2
    app = application()
    window = MainWindow(settings)
    window.show()
    if exit_after_show:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, app.quit)
        return app.exec()
    target = catalog or window.settings.value("last_catalog")
    if target and (Path(str(target)) / "catalog.sqlite").is_file():
        window.open_catalog(str(target))
    elif catalog:
        window.notify(f"{html.escape(str(catalog))}: not a flukeid catalog (no catalog.sqlite)", "error")
    if view:
        window.catalog_opened.connect(lambda _p: window.show_view(view))
    return app.exec()


def take_screenshots(catalog: str, out_dir: str | Path, *, settings: QSettings | None = None,
                     size: tuple[int, int] = (1440, 900)) -> list[Path]:
    """Open ``catalog``, render each main view to ``out_dir/<view>.png``, and return the files."""
    _app = application()  # keep a reference while the window lives
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if settings is None:  # never touch the user's own settings, nor leave a file next to the pictures
        import tempfile

        settings = QSettings(str(Path(tempfile.mkdtemp(prefix="flukeid-shots-")) / "settings.ini"),
                             QSettings.Format.IniFormat)
    window = MainWindow(settings, confirm_dialogs=False)
    window.resize(*size)
    window.show()
    window.open_catalog(catalog)
    pump(60, lambda: window.session is not None and window.snapshot is not None)
    wait_idle(window)
    files = []
    for name in VIEWS:
        window.show_view(name)
        if name == "match":
            pump(30, lambda: window.match_review.task is not None)
            wait_idle(window)
            _show_clearest_match(window)
            review = window.match_review
            if review.task is not None and review.task.candidates:
                review.heatmap_box.setChecked(True)
                wait_idle(window)
        if name == "individuals" and window.individuals_view.table_model.rowCount():
            window.individuals_view.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
            window.individuals_view.table.selectRow(0)
            wait_idle(window)
        pump(0.5)
        wait_idle(window)
        path = out / f"{SCREENSHOT_NAMES[name]}.png"
        window.grab().save(str(path))
        files.append(path)
    window.close()
    window.deleteLater()
    pump(0.2)
    return files


def _lead(task) -> float:
    c = task.candidates
    return (c[0].score - (c[1].score if len(c) > 1 else 0.0)) if c else -1.0


def _show_clearest_match(window: MainWindow, tries: int = 10) -> None:
    """For the screenshot: of the first few queued photos, show the one whose best match leads most."""
    best = None
    for pid in list(window._match_queue[:tries]):
        window._show_match(pid)
        if not pump(30, lambda pid=pid: window.match_review.task is not None
                    and window.match_review.task.photo.photo_id == pid):
            continue
        task = window.match_review.task
        if best is None or _lead(task) > _lead(best[1]):
            best = (pid, task)
    if best is not None:
        window._show_match(best[0])
        pump(30, lambda: window.match_review.task is not None
             and window.match_review.task.photo.photo_id == best[0])
