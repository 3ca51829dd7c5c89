"""Workers always report, errors are visible, odd catalogs get a clear message, torch stays out."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest
from PySide6.QtCore import QSettings

from model.api import DataError, Interrupted
from tests.ui.conftest import REPO_ROOT, open_and_wait, wait_idle

pytestmark = pytest.mark.gui


def test_job_runner_emits_result_error_or_cancelled_and_always_finished(qtbot):
    from app.ui.workers import JobRunner

    runner = JobRunner()
    seen: list = []

    def ok(progress, should_stop):
        progress(0.5, "half")
        return 42

    def bad(progress, should_stop):
        raise DataError("labels.csv: line 3: no individual_id")

    def stopping(progress, should_stop):
        while not should_stop():
            pass
        raise Interrupted("stopped")

    with qtbot.waitSignal(runner.job_finished, timeout=30000):
        runner.submit("ok", ok, on_result=lambda v: seen.append(("result", v)),
                      on_progress=lambda f, m: seen.append(("progress", f, m)))
    with qtbot.waitSignals([runner.job_failed, runner.job_finished], timeout=30000):
        runner.submit("bad", bad, on_error=lambda e: seen.append(("error", str(e))))
    job = runner.submit("stop", stopping, on_cancelled=lambda: seen.append(("cancelled",)))
    with qtbot.waitSignal(runner.job_finished, timeout=30000):
        job.cancel()
    assert ("result", 42) in seen
    assert ("progress", 0.5, "half") in seen
    assert ("error", "labels.csv: line 3: no individual_id") in seen
    assert ("cancelled",) in seen
    assert runner.running == []


def test_failing_job_shows_a_visible_message(qtbot, window):
    def boom(progress, should_stop):
        raise DataError("/data/labels.csv: column individual_id is missing")

    window.run_job("Importing a labelled catalog", boom)
    qtbot.waitUntil(lambda: window.notification.isVisible(), timeout=30000)
    text = window.notification.label.text()
    assert "Importing a labelled catalog failed" in text
    assert "column individual_id is missing" in text
    assert window.notification.property("kind") == "error"
    # the error and the job's end are two queued signals: the progress bar goes with the second
    qtbot.waitUntil(lambda: not window.job_progress.isVisible(), timeout=30000)


def test_catalog_from_newer_version_gets_clear_message(qtbot, window, tmp_path):
    from app.catalog import Catalog

    folder = tmp_path / "future"
    Catalog.create(folder).close()
    with sqlite3.connect(folder / "catalog.sqlite") as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    window.open_catalog(str(folder))
    qtbot.waitUntil(lambda: window.notification.isVisible(), timeout=10000)
    text = window.notification.label.text()
    assert "newer" in text and "future" in text
    assert text.startswith("<b>Catalog from a newer flukeid.</b>")  # told apart by its error class
    assert window.notification.action_btn.text() == "Open another…"
    assert window.session is None


def test_a_catalog_another_flukeid_writes_to_is_named_in_use(qtbot, window, tmp_path, monkeypatch):
    from app.catalog import CatalogLockedError
    from app.catalog.lock import LockHolder
    from app.services import review as sessions

    def locked(cls, folder, create=False):
        raise CatalogLockedError(tmp_path / "busy", LockHolder(4242, "boat-laptop", "ana", None))

    monkeypatch.setattr(sessions.Session, "open", classmethod(locked))
    window.open_catalog(str(tmp_path / "busy"))
    qtbot.waitUntil(lambda: window.notification.isVisible(), timeout=10000)
    text = window.notification.label.text()
    assert text.startswith("<b>Catalog in use.</b>") and "ana on boat-laptop (process 4242)" in text


def test_moved_photos_offer_relink_and_relink_finds_them(qtbot, window, ui_catalog, tmp_path, synthetic_set):
    folder, new_photos = ui_catalog
    from app.catalog import Catalog
    from app.services import importing

    field = new_photos[0].parent
    with Catalog.open(folder) as cat:
        importing.import_photos(cat, [field])
    moved = tmp_path / "moved-field"
    shutil.move(str(field), moved)
    open_and_wait(qtbot, window, folder)
    assert len(window.snapshot.missing) == 5
    text = window.notification.label.text()
    assert "5 of 15 photos were not found" in text
    assert window.notification.action_btn.text() == "Relink…"
    window.relink(str(moved))
    wait_idle(qtbot, window)
    assert window.snapshot.missing == []
    assert "Relinked 5 photos" in window.notification.label.text()


def test_merge_individuals_says_what_changes_and_can_be_undone(qtbot, window, ui_catalog):
    from app.ui.dialogs import merge_summary

    folder, _ = ui_catalog
    open_and_wait(qtbot, window, folder)
    rows = window.snapshot.individuals
    a, b = rows[0], rows[1]
    text = merge_summary(a, b)
    assert f"All <b>{a.photo_count}</b> photos" in text and b.label in text and "Undo" in text
    window.individuals_view.merge_requested.emit(a.individual_id, b.individual_id)
    wait_idle(qtbot, window)
    cat = window.session.catalog
    assert cat.individual(a.individual_id).merged_into == b.individual_id
    assert len(cat.photos_of(b.individual_id)) == a.photo_count + b.photo_count
    window.show_view("individuals")
    assert all(r.individual_id != a.individual_id for r in window.individuals_view._rows)
    window.undo_act.trigger()
    wait_idle(qtbot, window)
    assert cat.individual(a.individual_id).merged_into is None
    assert len(cat.photos_of(a.individual_id)) == a.photo_count


def test_rename_and_notes_are_recorded(qtbot, window, ui_catalog):
    folder, _ = ui_catalog
    open_and_wait(qtbot, window, folder)
    view = window.individuals_view
    window.show_view("individuals")
    iid = window.snapshot.individuals[0].individual_id
    view.select(iid)
    view.name_edit.setText("Salt")
    view.rename_btn.click()
    view.notes.setPlainText("notch on the left trailing edge")
    view.save_notes_btn.click()
    wait_idle(qtbot, window)
    ind = window.session.catalog.individual(iid)
    assert ind.name == "Salt" and ind.notes == "notch on the left trailing edge"
    assert view.current_id() == iid
    assert "Salt" in view.heading.text()


def test_recent_catalogs_and_window_state_kept_in_settings(qtbot, ui_catalog, tmp_path):
    from app.ui.main_window import MainWindow

    folder, _ = ui_catalog
    path = tmp_path / "s.ini"
    s = QSettings(str(path), QSettings.Format.IniFormat)
    win = MainWindow(s, confirm_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    open_and_wait(qtbot, win, folder)
    win.close()
    s2 = QSettings(str(path), QSettings.Format.IniFormat)
    assert s2.value("last_catalog") == str(folder)
    win2 = MainWindow(s2, confirm_dialogs=False)
    qtbot.addWidget(win2)
    assert win2.recent_catalogs()[0] == str(folder)
    assert [a.text() for a in win2.recent_menu.actions()] == [str(folder)]
    win2.close()


def test_garbage_settings_do_not_break_the_window(qtbot, tmp_path):
    from app.ui.main_window import MainWindow

    path = tmp_path / "bad.ini"
    path.write_text("[window]\ngeometry=not-bytes\nstate=@Invalid()\n[General]\nrecent=42\n")
    win = MainWindow(QSettings(str(path), QSettings.Format.IniFormat), confirm_dialogs=False)
    qtbot.addWidget(win)
    assert win.recent_catalogs() == ["42"]
    win.close()


def test_building_the_main_window_does_not_import_torch():
    code = ("import sys; from app.ui.app import application; from app.ui.main_window import MainWindow; "
            "application(); w = MainWindow(); w.show(); "
            "bad = [m for m in ('torch', 'torchvision', 'timm', 'sqlite_utils') if m in sys.modules and m != 'sqlite_utils']; "
            "print('BAD', bad); sys.exit(1 if bad else 0)")
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_read_only_catalog_records_nothing_and_says_so(qtbot, window, ui_catalog, monkeypatch):
    from PySide6.QtCore import Qt

    from app.catalog import Catalog
    from app.services import importing
    from app.services import review as sessions

    folder, new_photos = ui_catalog
    with Catalog.open(folder) as cat:
        importing.import_photos(cat, [new_photos[0]])
    monkeypatch.setattr(sessions.Session, "open",
                        classmethod(lambda cls, f, create=False: cls(Catalog.open(f, mode="read"))))
    open_and_wait(qtbot, window, folder)
    assert "read-only" in window.notification.label.text()
    assert not window.import_act.isEnabled()
    window.show_view("match")
    qtbot.waitUntil(lambda: window.match_review.task is not None, timeout=30000)
    task = window.match_review.task
    window.match_review.setFocus()
    qtbot.keyClick(window.match_review, Qt.Key.Key_1)
    wait_idle(qtbot, window)
    assert "Not recorded" in window.notification.label.text()
    assert window.match_review.task.photo.photo_id == task.photo.photo_id
    assert window.session.catalog.match_decisions() == []
    assert window.undo_stack.count() == 0
