"""The match review's queue and the review helpers, without Qt (app.services.review)."""

from __future__ import annotations

import sys
from pathlib import Path

from app.services.review import ReviewQueue, describe_import, import_had_errors, pair_lines
from app.services.viewdata import MatchTask, PhotoCard


def task(photo_id: int) -> MatchTask:
    return MatchTask(PhotoCard(photo_id=photo_id, path=f"/p/{photo_id}.jpg", status="unidentified"), [], False)


def test_refill_keeps_the_catalog_order_and_puts_skipped_photos_last():
    q = ReviewQueue()
    assert q.refill([1, 2, 3, 4]) == [1, 2, 3, 4]
    q.skip(2)
    q.skip(1)
    assert q.ids == [3, 4, 2, 1]
    # a refill (after any decision) keeps the skipped ones last, in the order they were skipped
    assert q.refill([1, 2, 3, 4, 5]) == [3, 4, 5, 2, 1]
    # a skipped photo identified elsewhere leaves the queue and is not brought back
    assert q.refill([1, 3, 4]) == [3, 4, 1]
    assert len(q) == 3 and 1 in q and 2 not in q


def test_skipping_again_moves_the_photo_to_the_very_end():
    q = ReviewQueue()
    q.refill([1, 2, 3])
    q.skip(1)
    q.skip(2)
    q.skip(1)
    assert q.ids == [3, 2, 1]
    assert q.skipped == [2, 1]


def test_next_id_passes_over_the_shown_photo_and_returns_it_when_alone():
    q = ReviewQueue()
    q.refill([7, 8])
    assert q.next_id() == 7
    assert q.next_id(7) == 8
    assert q.next_id(8) == 7
    q.decided(7)
    assert q.next_id(8) == 8  # the only one left (skipped): shown again
    q.decided(8)
    assert q.next_id(8) is None and q.next_id() is None


def test_prefetched_match_is_used_once_and_only_for_its_photo():
    q = ReviewQueue()
    q.refill([1, 2, 3])
    assert q.to_prefetch(1) == 2
    q.prefetched = task(2)
    assert q.to_prefetch(1) is None  # already there
    assert q.take_prefetched(3) is None and q.prefetched is not None
    q.decided(1)
    got = q.take_prefetched(2)
    assert got is not None and got.photo.photo_id == 2
    assert got.remaining == 2  # what is left to identify when it is shown
    assert q.prefetched is None and q.take_prefetched(2) is None
    assert q.to_prefetch(2) == 3


def test_invalidate_and_reset_drop_the_prefetched_match():
    q = ReviewQueue()
    q.refill([1, 2])
    q.prefetched = task(2)
    q.invalidate()
    assert q.prefetched is None and q.to_prefetch(1) == 2
    q.skip(1)
    q.prefetched = task(2)
    q.reset()
    assert (q.ids, q.skipped, q.prefetched) == ([], [], None)
    assert q.to_prefetch(None) is None


def test_an_undone_decision_brings_its_photo_back_first():
    q = ReviewQueue()
    q.refill([1, 2, 3])
    q.decided(1)
    q.bring_back(1)
    assert q.ids == [1, 2, 3]
    q.bring_back(3)
    assert q.ids == [3, 1, 2]


def test_pair_lines_are_fractions_of_each_crop_strongest_first():
    lines = pair_lines([(15, 30, 110, 120), (20, 20, 100, 100)], (10, 20, 30, 60), (100, 100, 200, 300))
    assert len(lines) == 2
    a = lines[0]
    assert (a.ax, a.ay, a.bx, a.by) == (0.25, 0.25, 0.1, 0.1)
    assert lines[0].weight == 1.0 and lines[1].weight < lines[0].weight
    assert len(pair_lines([(0, 0, 0, 0)] * 50, (0, 0, 1, 1), (0, 0, 1, 1), limit=30)) == 30


def test_describe_import_names_the_first_problem_files():
    class Report:
        errors = [("/a/one.jpg", "unreadable"), ("/a/two.jpg", "empty"), ("/b/three.jpg", "x"),
                  ("/b/four.jpg", "y")]

        def summary(self) -> str:
            return "imported 3 photos"

    text = describe_import(Report())
    assert text.startswith("Imported 3 photos. Problems: one.jpg: unreadable; two.jpg: empty; three.jpg: x")
    assert "four.jpg" not in text and text.endswith("….")
    assert import_had_errors(Report()) and not import_had_errors(object())


def test_the_review_service_loads_without_qt():
    import subprocess

    code = "import sys, app.services.review, app.services.snapshot; assert 'PySide6' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_status_line_counts_with_thousands_and_no_fluke_only_when_some():
    from app.services.snapshot import status_line

    c = {"photos": 12345, "individuals": 3, "identified": 10, "to_identify": 2, "boxes": 1, "junk": 0}
    assert status_line("cat", c) == ("cat: 12,345 photos · 3 individuals · 10 identified · 2 to identify · "
                                     "1 boxes to check")
    assert status_line("cat", {**c, "junk": 4}).endswith("1 boxes to check · 4 with no fluke")
    assert status_line("empty", {}).startswith("empty: 0 photos · 0 individuals")
