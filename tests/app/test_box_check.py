"""Doubtful boxes reach the box review whatever the way in (issue 17, item 6).

A labelled import used to confirm every labelled box unseen and identify the photo, so a box the
detector drew with low confidence, or a labelled box the detector disagreed with, never showed
up in the box review (a scanned print with a caption: IoU 0.00 at confidence 0.69).
"""

from __future__ import annotations

import csv

import pytest

from app.services.importing import BOX_CHECK_BELOW, box_needs_check, import_labelled, import_photos
from app.services.snapshot import read_snapshot
from tests.app.conftest import FakeDetection, write_photo


class ScriptedDetector:
    """Boxes the middle half of each photo with the confidence scripted for its size; or a box in a
    corner (far from any labelled box) for the widths in ``elsewhere``."""

    def __init__(self, confidence: dict[int, float], elsewhere: set[int] = frozenset()):
        self.confidence = confidence
        self.elsewhere = elsewhere

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        if w in self.elsewhere:
            return FakeDetection((0, 0, w * 0.1, h * 0.1), 0.95)
        return FakeDetection((w * 0.25, h * 0.25, w * 0.75, h * 0.75), self.confidence.get(w, 0.99))


def _labels(tmp_path, widths: list[int], boxes: bool):
    images = tmp_path / "images"
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "individual_id", "x0", "y0", "x1", "y1"] if boxes else ["image", "individual_id"])
        for i, width in enumerate(widths):
            write_photo(images / f"p{i}.jpg", i, size=(width, 64))
            box = [width * 0.25, 16, width * 0.75, 48]
            w.writerow([f"p{i}.jpg", f"HW-{i + 1:04d}", *box] if boxes else [f"p{i}.jpg", f"HW-{i + 1:04d}"])
    return path, images


def _queued(catalog) -> dict[int, str]:
    snap = read_snapshot(catalog, check_files=False)
    return {p.photo_id: p.status for p in snap.box_queue}


def test_low_confidence_detector_boxes_of_a_labelled_import_go_to_the_box_review(catalog, tmp_path):
    path, images = _labels(tmp_path, [96, 100, 104], boxes=False)
    detector = ScriptedDetector({96: 0.99, 100: 0.69, 104: BOX_CHECK_BELOW - 0.01})
    rep = import_labelled(catalog, path, images, detector=detector)
    assert len(rep.imported) == 3 and rep.identified == 3
    by_width = {catalog.photo(p).width: p for p in rep.imported}
    queued = _queued(catalog)
    assert set(queued) == {by_width[100], by_width[104]}
    assert all(status == "identified" for status in queued.values())  # identified, and still checked


def test_a_labelled_box_the_detector_disagrees_with_waits_unconfirmed(catalog, tmp_path):
    path, images = _labels(tmp_path, [96, 100], boxes=True)
    rep = import_labelled(catalog, path, images, detector=ScriptedDetector({}, elsewhere={100}))
    by_width = {catalog.photo(p).width: p for p in rep.imported}
    agreed, disputed = catalog.current_box(by_width[96]), catalog.current_box(by_width[100])
    assert agreed.confirmed and agreed.source == "imported"
    assert not disputed.confirmed and disputed.source == "imported"
    assert disputed.box == pytest.approx((25.0, 16.0, 75.0, 48.0))  # the labelled box is kept
    assert set(_queued(catalog)) == {by_width[100]}


def test_labelled_boxes_without_a_detector_stay_confirmed(catalog, tmp_path):
    path, images = _labels(tmp_path, [96, 100], boxes=True)
    rep = import_labelled(catalog, path, images)
    assert all(catalog.current_box(p).confirmed for p in rep.imported)
    assert _queued(catalog) == {}


def test_field_photos_wait_for_their_box_whatever_the_confidence(catalog, tmp_path):
    files = [write_photo(tmp_path / "field" / f"f{i}.jpg", 10 + i, size=(96 + 4 * i, 64)) for i in range(2)]
    rep = import_photos(catalog, files, detector=ScriptedDetector({96: 0.99, 100: 0.3}))
    assert set(_queued(catalog)) == set(rep.imported)


def test_which_boxes_need_checking():
    from app.catalog.records import BoxRecord

    def box(confirmed=False, junk=False, confidence=0.5):
        return BoxRecord(id=1, photo_id=1, box=(0, 0, 1, 1), source="auto", confidence=confidence,
                         confirmed=confirmed,
                         junk=junk, who=None, created_at="", action_id=None)

    assert box_needs_check(box(), identified=False) and box_needs_check(box(), identified=True)
    assert not box_needs_check(box(confidence=0.95), identified=True)
    assert box_needs_check(box(confidence=0.95), identified=False)
    assert not box_needs_check(box(confirmed=True), identified=False)
    assert not box_needs_check(box(junk=True), identified=True)
    assert box_needs_check(None, identified=False) and not box_needs_check(None, identified=True)


def test_the_boxes_the_detector_is_sure_of_are_accepted_in_one_undoable_step(catalog, tmp_path):
    """A field day of thousands of photos: one action accepts every box the detector is sure of,
    the doubtful ones stay in the box review, and one Undo takes them all back."""
    from app.catalog import CatalogError
    from app.services import decisions

    widths = [96, 100, 104, 108, 112]
    files = [write_photo(tmp_path / "field" / f"f{i}.jpg", 20 + i, size=(w, 64)) for i, w in enumerate(widths)]
    detector = ScriptedDetector({96: 0.99, 100: BOX_CHECK_BELOW, 104: BOX_CHECK_BELOW - 0.01, 108: 0.3, 112: 0.97})
    rep = import_photos(catalog, files, detector=detector)
    by_width = {catalog.photo(p).width: p for p in rep.imported}
    decisions.mark_junk(catalog, by_width[112])  # no fluke after all: not accepted behind the reviewer's back
    before = dict(_queued(catalog))
    assert set(before) == {by_width[w] for w in (96, 100, 104, 108)}

    done = decisions.confirm_sure_boxes(catalog, list(before) + [by_width[112]], BOX_CHECK_BELOW)
    sure = {by_width[96], by_width[100]}
    assert "Accepted 2 boxes the detector was sure of" == done.description
    assert set(_queued(catalog)) == set(before) - sure
    for pid in sure:
        cur = catalog.current_box(pid)
        assert cur.confirmed and cur.source == "auto" and cur.confidence >= BOX_CHECK_BELOW
    assert catalog.current_box(by_width[112]).junk and not catalog.current_box(by_width[112]).confirmed

    decisions.undo(catalog)  # one undo: both back, as they were
    assert _queued(catalog) == before
    assert not any(catalog.current_box(p).confirmed for p in sure)
    decisions.redo(catalog)
    assert set(_queued(catalog)) == set(before) - sure

    with pytest.raises(CatalogError, match="no unconfirmed box the detector is at least 80% sure of"):
        decisions.confirm_sure_boxes(catalog, list(before), BOX_CHECK_BELOW)  # nothing left: nothing recorded
    decisions.undo(catalog)  # so an Undo now still takes back the batch, not an earlier decision
    assert _queued(catalog) == before
