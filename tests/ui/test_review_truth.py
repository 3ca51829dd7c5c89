"""Review actions tell the truth (issue 17, item 5): after every action, undo and redo, what the
views show is what the catalog holds.

The first tests pin each defect seen by a user; the last one is a property test: random
sequences of review actions (decide, reject, new, skip, no fluke, accept the sure boxes, undo,
redo) driven through the window, with the views compared to the catalog after each step.
"""

from __future__ import annotations

import re
import shutil

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from PySide6.QtCore import Qt

from app.services import decisions
from app.services.importing import BOX_CHECK_BELOW
from tests.ui.conftest import open_and_wait, wait_idle

pytestmark = pytest.mark.gui


def _open_with_field_photos(qtbot, window, folder, photos) -> None:
    open_and_wait(qtbot, window, folder)
    window.import_photos([str(p) for p in photos])
    wait_idle(qtbot, window)


def _task(qtbot, window):
    qtbot.waitUntil(lambda: window.match_review.task is not None, timeout=30000)
    return window.match_review.task


def _press(qtbot, window, key, mods=Qt.KeyboardModifier.NoModifier) -> None:
    window.activateWindow()
    qtbot.keyClick(window, key, mods)
    wait_idle(qtbot, window)


def _count(window, name: str) -> int:
    m = re.search(rf"([\d,]+) {name}", window.counts_label.text())
    assert m, window.counts_label.text()
    return int(m.group(1).replace(",", ""))


def _tab_count(window, index: int) -> int:
    m = re.search(r"\((\d+)\)", window.tabs.tabText(index))
    return int(m.group(1)) if m else 0


def test_undoing_a_rejection_clears_the_card_and_the_banner_follows(qtbot, window, ui_catalog):
    folder, new_photos = ui_catalog
    _open_with_field_photos(qtbot, window, folder, new_photos[:1])
    window.show_view("match")
    task = _task(qtbot, window)
    review = window.match_review
    assert len(task.candidates) >= 2
    top = task.candidates[0]
    _press(qtbot, window, Qt.Key.Key_R)
    assert review.rejected_ranks == {0}
    assert review.cards[0].details.text() == "rejected for this photo"
    assert top.label not in review.banner.text()  # the banner no longer offers the rejected whale
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    cat = window.session.catalog
    assert decisions.rejected_individuals(cat, task.photo.photo_id) == set()
    assert review.task.photo.photo_id == task.photo.photo_id
    assert review.rejected_ranks == set()
    assert review.cards[0].details.text() != "rejected for this photo"
    review.select(0)
    assert review.reject_btn.isEnabled()
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert review.rejected_ranks == {0}  # redo: rejected again


def test_undoing_a_new_individual_puts_the_count_back(qtbot, window, ui_catalog):
    folder, new_photos = ui_catalog
    _open_with_field_photos(qtbot, window, folder, new_photos[:1])
    before = _count(window, "individuals")
    window.show_view("match")
    _task(qtbot, window)
    _press(qtbot, window, Qt.Key.Key_N)
    assert _count(window, "individuals") == before + 1
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert _count(window, "individuals") == before
    window.show_view("individuals")
    assert len(window.individuals_view._rows) == before


def test_a_photo_with_no_fluke_leaves_the_match_review_count(qtbot, window, ui_catalog):
    folder, new_photos = ui_catalog
    _open_with_field_photos(qtbot, window, folder, new_photos[:3])
    todo = _tab_count(window, 2)
    assert todo == 3 == _count(window, "to identify")
    window.show_view("boxes")
    junk = window.box_review.current().photo_id
    _press(qtbot, window, Qt.Key.Key_J)
    assert _tab_count(window, 2) == todo - 1 == _count(window, "to identify")
    assert junk not in window._match_queue
    window.show_view("match")
    task = _task(qtbot, window)
    assert task.photo.photo_id != junk
    assert f"{todo - 1} unidentified photos left" in window.match_review.remaining.text()


def test_skipping_in_the_box_review_moves_through_the_queue(qtbot, window, ui_catalog):
    folder, new_photos = ui_catalog
    _open_with_field_photos(qtbot, window, folder, new_photos[:3])
    window.show_view("boxes")
    review = window.box_review
    seen = []
    for _ in range(4):
        seen.append((review.current().photo_id, re.search(r"\((\d+) of (\d+)\)", review.title.text()).groups()))
        _press(qtbot, window, Qt.Key.Key_S)
    assert [pos for _, pos in seen] == [("1", "3"), ("2", "3"), ("3", "3"), ("1", "3")]
    assert len({pid for pid, _ in seen[:3]}) == 3 and seen[3][0] == seen[0][0]


# ---------------------------------------------------------------- the property test
def _truth(cat) -> dict:
    """What the catalog holds, computed from its records (not from the window's snapshot)."""
    photos = cat.photos()
    idents = {p.id: cat.current_individual(p.id) for p in photos}
    merged = {i.id: i.merged_into for i in cat.individuals(include_merged=True)}

    def final(iid):
        while iid is not None and merged.get(iid) is not None:
            iid = merged[iid]
        return iid

    boxes = {p.id: cat.current_box(p.id) for p in photos}
    junk = {pid for pid, b in boxes.items() if b is not None and b.junk and idents[pid] is None}

    def to_check(b, identified: bool) -> bool:  # issue 17 item 6: doubtful boxes, whatever the way in
        if b is None:
            return not identified
        if b.confirmed or b.junk:
            return False
        return not identified or b.confidence is None or b.confidence < BOX_CHECK_BELOW

    unchecked = {pid for pid, b in boxes.items() if to_check(b, idents[pid] is not None)}
    identified = {pid for pid, iid in idents.items() if iid is not None}
    return {"photos": len(photos), "individuals": len({final(i) for i in idents.values() if i is not None}),
            "identified": len(identified), "to_identify": len(photos) - len(identified) - len(junk),
            "boxes": len(unchecked), "junk": junk, "unidentified": set(idents) - identified - junk,
            "unchecked": unchecked}


def _check_views(window) -> None:
    cat = window.session.catalog
    t = _truth(cat)
    assert _count(window, "photos") == t["photos"]
    assert _count(window, "individuals") == t["individuals"]
    assert _count(window, "identified") == t["identified"]
    assert _count(window, "to identify") == t["to_identify"] == _tab_count(window, 2)
    assert _count(window, "boxes to check") == t["boxes"] == _tab_count(window, 1)
    assert set(window._match_queue) == t["unidentified"]
    review = window.match_review
    task = review.task
    if task is not None:
        pid = task.photo.photo_id
        assert pid in t["unidentified"], "the match review shows a photo that is not waiting"
        rejected = decisions.rejected_individuals(cat, pid)
        shown = {c.individual_id for r, c in enumerate(task.candidates) if r in review.rejected_ranks}
        assert shown == rejected & {c.individual_id for c in task.candidates[:5]}
        for rank, card in enumerate(review.cards[:len(task.candidates)]):
            assert (card.details.text() == "rejected for this photo") == (rank in review.rejected_ranks)
        best = re.search(r"Best match: ([^<]+)</b>", review.banner.text())
        if best:
            named = next(c for c in task.candidates if c.label == best.group(1))
            assert named.individual_id not in rejected, "the banner offers a rejected whale"
        assert review.remaining.text().startswith(f"{len(window._match_queue)} unidentified")
    box = window.box_review
    if window.tabs.currentWidget() is box:
        assert len(box._queue) == t["boxes"]
        if box.current() is not None:
            assert box.current().photo_id in t["unchecked"]
            i, n = re.search(r"\((\d+) of (\d+)\)", box.title.text()).groups()
            assert int(n) == t["boxes"] and box._queue[int(i) - 1].photo_id == box.current().photo_id


ACTIONS = {
    "confirm": ("match", Qt.Key.Key_1, Qt.KeyboardModifier.NoModifier),
    "confirm2": ("match", Qt.Key.Key_2, Qt.KeyboardModifier.NoModifier),
    "reject": ("match", Qt.Key.Key_R, Qt.KeyboardModifier.NoModifier),
    "new": ("match", Qt.Key.Key_N, Qt.KeyboardModifier.NoModifier),
    "skip": ("match", Qt.Key.Key_S, Qt.KeyboardModifier.NoModifier),
    "no_fluke": ("boxes", Qt.Key.Key_J, Qt.KeyboardModifier.NoModifier),
    "box_skip": ("boxes", Qt.Key.Key_S, Qt.KeyboardModifier.NoModifier),
    "accept_box": ("boxes", Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier),
    "accept_sure_boxes": ("boxes", None, None),  # the box review's button, not a key
    "undo": (None, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier),
    "redo": (None, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier),
}


def test_views_match_the_catalog_after_any_sequence_of_review_actions(qtbot, window, ui_catalog, tmp_path):
    folder, new_photos = ui_catalog
    _open_with_field_photos(qtbot, window, folder, new_photos)
    # the template, copied at rest (nothing is being written): every example starts from it
    template = tmp_path / "template"
    shutil.copytree(folder, template, ignore=shutil.ignore_patterns("flukeid.lock"))
    examples = [0]

    class Review(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            examples[0] += 1
            copy = tmp_path / f"example-{examples[0]}"
            shutil.copytree(template, copy)
            with qtbot.waitSignal(window.catalog_opened, timeout=60000):
                window.open_catalog(copy)
            window.snapshot = None  # the previous example's: wait for this catalog's own
            qtbot.waitUntil(lambda: window.snapshot is not None and window.session.engine is not None,
                            timeout=60000)
            wait_idle(qtbot, window)
            window.show_view("match")
            wait_idle(qtbot, window)

        @rule(action=st.sampled_from(sorted(ACTIONS)))
        def act(self, action):
            view, key, mods = ACTIONS[action]
            if view is not None and window.tabs.currentWidget() is not getattr(
                    window, {"match": "match_review", "boxes": "box_review"}[view]):
                window.show_view(view)
                wait_idle(qtbot, window)
            window.activateWindow()
            if key is None:
                window.box_review.accept_sure()  # what its button does (nothing when no box is sure)
            else:
                qtbot.keyClick(window, key, mods)
            wait_idle(qtbot, window)

        @invariant()
        def views_tell_the_truth(self):
            _check_views(window)

    run_state_machine_as_test(Review, settings=settings(
        max_examples=10, stateful_step_count=10, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
