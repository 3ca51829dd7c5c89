"""A whole review session driven through the window, as a biologist would, on a synthetic catalog."""

from __future__ import annotations

import csv

import pytest
from PySide6.QtCore import Qt

from tests.ui.conftest import open_and_wait, wait_idle

pytestmark = pytest.mark.gui


def _open_with_field_photos(qtbot, window, ui_catalog, n: int) -> None:
    """Open the catalog and import the first ``n`` field photos (boxed by the detector, not identified)."""
    folder, new_photos = ui_catalog
    open_and_wait(qtbot, window, folder)
    window.import_photos([str(p) for p in new_photos[:n]])
    wait_idle(qtbot, window)


def _match_task(qtbot, window, photo_ok=None):
    """Wait until the match review shows a photo (one that ``photo_ok(photo_id)`` accepts); its task."""
    review = window.match_review
    qtbot.waitUntil(lambda: review.task is not None and (photo_ok is None or photo_ok(review.task.photo.photo_id)),
                    timeout=30000)
    return review.task


def test_import_box_match_undo_redo_new_export(qtbot, window, ui_catalog, tmp_path):
    from app.catalog import Catalog

    folder, new_photos = ui_catalog
    open_and_wait(qtbot, window, folder)
    assert window.session.engine is not None
    assert "Model: tiny-v1" in window.model_label.text()
    assert "CPU" in window.device_label.text() or "GPU" in window.device_label.text()
    assert len(window.snapshot.photos) == 10

    # import the field photos (detector boxes, unchecked)
    window.import_photos([str(p.parent) for p in new_photos[:1]])
    wait_idle(qtbot, window)
    assert len(window.snapshot.photos) == 15
    assert "5 photos imported" in window.notification.label.text()

    # box review: Enter accepts the box of the photo shown, the next one comes up at once
    window.show_view("boxes")
    assert len(window.box_review._queue) == 5
    window.activateWindow()
    window.box_review.setFocus()
    first = window.box_review.current()
    qtbot.keyClick(window.box_review, Qt.Key.Key_Return)
    assert window.box_review.current() is not None
    assert window.box_review.current().photo_id != first.photo_id
    wait_idle(qtbot, window)
    cat: Catalog = window.session.catalog
    assert cat.current_box(first.photo_id).confirmed

    # match review: key 1 confirms the top candidate
    window.show_view("match")
    task = _match_task(qtbot, window)
    assert 1 <= len(task.candidates) <= 5
    scores = [c.score for c in task.candidates]
    assert scores == sorted(scores, reverse=True)
    query = task.photo.photo_id
    top = task.candidates[0]
    window.match_review.setFocus()
    qtbot.keyClick(window.match_review, Qt.Key.Key_1)
    wait_idle(qtbot, window)
    assert cat.current_individual(query) == top.individual_id
    # the next unidentified photo came up
    _match_task(qtbot, window, lambda photo_id: photo_id != query)

    # undo, redo: through the catalog's append-only history
    window.undo_act.trigger()
    wait_idle(qtbot, window)
    assert cat.current_individual(query) is None
    assert window.match_review.task.photo.photo_id == query  # the photo is back for a new decision
    window.redo_act.trigger()
    wait_idle(qtbot, window)
    assert cat.current_individual(query) == top.individual_id
    kinds = [a.kind for a in cat.actions()]
    assert kinds[:3] == ["redo", "undo", "confirm"]

    # N declares a new individual for the photo now shown
    before = len(cat.individuals())
    shown = window.match_review.task.photo.photo_id
    window.match_review.setFocus()
    qtbot.keyClick(window.match_review, Qt.Key.Key_N)
    wait_idle(qtbot, window)
    assert len(cat.individuals()) == before + 1
    new_ind = cat.current_individual(shown)
    assert new_ind is not None and cat.individual(new_ind).code.startswith("HW-")
    window.show_view("individuals")
    assert any(r.individual_id == new_ind for r in window.individuals_view._rows)

    # export the identifications
    out = tmp_path / "ids.csv"
    window.export("identifications", str(out))
    wait_idle(qtbot, window)
    assert out.is_file()
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 12
    text = window.notification.label.text()
    assert f"Exported {len(rows)} rows to" in text
    assert "Note: image paths are relative to" in text  # what the file alone does not say

    # the sightings table leaves the undated photos out, and the notification says how many
    out = tmp_path / "sightings.csv"
    window.export("sightings", str(out))
    wait_idle(qtbot, window)
    assert out.is_file()
    assert "without a date" in window.notification.label.text()


def test_reject_keeps_photo_and_shows_next_candidate(qtbot, window, ui_catalog):
    _open_with_field_photos(qtbot, window, ui_catalog, 1)
    window.show_view("match")
    task = _match_task(qtbot, window)
    review = window.match_review
    assert review.selected == 0
    # the keys work wherever the focus is in the window (here: the tab bar just clicked)
    window.activateWindow()
    qtbot.waitActive(window)
    window.tabs.tabBar().setFocus()
    qtbot.keyClick(window.tabs.tabBar(), Qt.Key.Key_R)
    wait_idle(qtbot, window)
    assert review.task is task  # still deciding this photo
    assert review.selected == 1
    decisions = window.session.catalog.match_decisions(task.photo.photo_id)
    assert [d.decision for d in decisions] == ["reject"]
    assert decisions[0].individual_id == task.candidates[0].individual_id


def test_heatmap_toggle_and_evidence(qtbot, window, ui_catalog):
    _open_with_field_photos(qtbot, window, ui_catalog, 1)
    window.show_view("match")
    _match_task(qtbot, window)
    review = window.match_review
    review.setFocus()
    qtbot.keyClick(review, Qt.Key.Key_H)
    qtbot.waitUntil(lambda: review.compare.left.has_overlay(), timeout=30000)
    assert review.compare.left.overlay_item.isVisible()
    review.opacity.setValue(30)
    assert abs(review.compare.left.overlay_item.opacity() - 0.3) < 1e-6
    qtbot.keyClick(review, Qt.Key.Key_H)
    assert not review.compare.left.overlay_item.isVisible()
    # the pair evidence lines arrived for the shown candidate, as fractions of the crops
    qtbot.waitUntil(lambda: review.evidence_ready(0), timeout=30000)
    assert review.compare.lines == review._evidence[0]
    for ln in review.compare.lines:
        assert all(-0.02 <= v <= 1.02 for v in (ln.ax, ln.ay, ln.bx, ln.by))
    # synchronized zoom: zooming the query zooms the candidate
    review.compare.left.zoom_by(2.0)
    assert review.compare.right.view_state()[0] == pytest.approx(2.0)


def test_opening_a_photo_goes_to_the_view_that_needs_it(qtbot, window, ui_catalog):
    _open_with_field_photos(qtbot, window, ui_catalog, 2)
    boxed = [p for p in window.snapshot.photos if p.status == "box"]
    known = [p for p in window.snapshot.photos if p.status == "identified"]
    window.photos_view.photo_activated.emit(boxed[-1].photo_id)
    assert window.tabs.currentWidget() is window.box_review
    assert window.box_review.current().photo_id == boxed[-1].photo_id
    window.photos_view.photo_activated.emit(known[0].photo_id)
    assert window.tabs.currentWidget() is window.individuals_view
    assert window.individuals_view.current_id() == known[0].individual_id


def test_skip_records_and_moves_on_and_a_lone_photo_stays(qtbot, window, ui_catalog):
    _open_with_field_photos(qtbot, window, ui_catalog, 2)
    window.show_view("match")
    first = _match_task(qtbot, window).photo.photo_id
    window.match_review.setFocus()
    qtbot.keyClick(window.match_review, Qt.Key.Key_S)
    wait_idle(qtbot, window)
    second = _match_task(qtbot, window, lambda photo_id: photo_id != first).photo.photo_id
    qtbot.keyClick(window.match_review, Qt.Key.Key_N)  # the second is a new whale
    wait_idle(qtbot, window)
    _match_task(qtbot, window, lambda photo_id: photo_id == first)
    qtbot.keyClick(window.match_review, Qt.Key.Key_S)  # skipping the last one keeps it on screen
    wait_idle(qtbot, window)
    assert _match_task(qtbot, window).photo.photo_id == first
    cat = window.session.catalog
    assert [d.decision for d in cat.match_decisions(first)] == ["skip", "skip"]
    assert cat.current_individual(second) is not None


def test_redrawn_box_is_recorded_and_undone(qtbot, window, ui_catalog):
    _open_with_field_photos(qtbot, window, ui_catalog, 1)
    window.show_view("boxes")
    photo = window.box_review.current()
    cat = window.session.catalog
    before = cat.current_box(photo.photo_id)
    new_box = (10.0, 12.0, 200.0, 150.0)
    qtbot.waitUntil(lambda: not window.box_review.editor.image_rect().isEmpty(), timeout=10000)
    window.box_review.editor.set_box(tuple(v * window.box_review._scale for v in new_box))
    window.box_review.accept_current()
    wait_idle(qtbot, window)
    after = cat.current_box(photo.photo_id)
    assert after.confirmed and after.source == "manual"
    assert after.box == pytest.approx(new_box, abs=1.0)
    window.undo_act.trigger()
    wait_idle(qtbot, window)
    undone = cat.current_box(photo.photo_id)
    assert undone.box == pytest.approx(before.box) and not undone.confirmed
    assert len(cat.box_history(photo.photo_id)) == 3  # detector, redrawn, undo: nothing overwritten


def test_labelled_import_offers_to_import_rows_with_absolute_paths(qtbot, window, ui_catalog, tmp_path):
    folder, new_photos = ui_catalog
    open_and_wait(qtbot, window, folder)
    before = window.session.catalog.photo_count()
    labels = tmp_path / "more.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "individual_id"])
        w.writerow([new_photos[0].name, "HW-0001"])  # inside the images folder
        w.writerow([str(new_photos[1].resolve()), "HW-0002"])  # an absolute path: refused unless allowed
    window.import_labelled(str(labels), str(new_photos[0].parent))
    wait_idle(qtbot, window)
    bar = window.notification
    assert window.session.catalog.photo_count() == before + 1
    assert "absolute path" in bar.label.text()
    assert bar.action_btn.isVisibleTo(window) and "1 absolute path" in bar.action_btn.text()

    bar.action_btn.click()  # the user has seen the path and allows it
    wait_idle(qtbot, window)
    assert window.session.catalog.photo_count() == before + 2
    assert not bar.action_btn.isVisibleTo(window)  # nothing left to offer


def test_while_the_next_photo_is_matched_the_review_says_so(qtbot, window, ui_catalog, monkeypatch):
    import threading

    _open_with_field_photos(qtbot, window, ui_catalog, 3)
    window.show_view("match")
    first = _match_task(qtbot, window)
    review = window.match_review
    wait_idle(qtbot, window)
    gate = threading.Event()
    session_type = type(window.session)
    real_match = session_type.match
    monkeypatch.setattr(session_type, "match", lambda self, pid: (gate.wait(30), real_match(self, pid))[1])
    window.activateWindow()
    qtbot.waitActive(window)
    qtbot.keyClick(window.tabs.tabBar(), Qt.Key.Key_1)  # confirm: the next photo must be matched anew
    qtbot.waitUntil(lambda: review.task is None, timeout=10000)
    qtbot.wait(300)  # the catalog is read again meanwhile
    assert review.empty.isVisible() and review.empty.text() == review.PENDING
    assert "Every photo is identified" not in review.empty.text()
    gate.set()
    qtbot.waitUntil(lambda: review.task is not None, timeout=30000)
    assert review.task.photo.photo_id != first.photo.photo_id
    assert not review.empty.isVisible()
