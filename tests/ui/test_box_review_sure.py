"""Box review: the boxes the detector is sure of are accepted in one step, and one Undo takes them back."""

from __future__ import annotations

import pytest

from tests.ui.conftest import open_and_wait, wait_idle

pytestmark = pytest.mark.gui


def _card(pid: int, conf: float | None, source: str = "auto", box=(1.0, 1.0, 9.0, 9.0)):
    from app.services.viewdata import PhotoCard

    return PhotoCard(pid, f"/x/{pid}.jpg", "unidentified", box=box, box_confidence=conf, box_source=source,
                     box_to_check=True)


def test_the_button_counts_the_sure_boxes_and_hands_them_over(qtbot):
    from app.ui.box_review import BoxReviewView
    from app.ui.images import ImageCache

    view = BoxReviewView(ImageCache(), sure=0.8)
    qtbot.addWidget(view)
    view.show()
    view.set_queue([_card(1, 0.99), _card(2, 0.8), _card(3, 0.79), _card(4, None, "manual"),
                    _card(5, 0.95, "imported"), _card(6, 0.9, box=None)])
    assert view.sure_photo_ids() == [1, 2]
    assert view.accept_sure_btn.isVisible() and view.accept_sure_btn.text() == "Accept the 2 sure boxes (≥80%)"
    with qtbot.waitSignal(view.sure_boxes_accepted) as got:
        view.accept_sure_btn.click()
    assert got.args == [[1, 2]]
    view.set_queue([_card(3, 0.79)])
    assert not view.accept_sure_btn.isVisible()


def test_accept_sure_boxes_in_the_window_then_undo(qtbot, window, ui_catalog):
    folder, new_photos = ui_catalog
    open_and_wait(qtbot, window, folder)
    window.import_photos([str(new_photos[0].parent)])
    wait_idle(qtbot, window)
    window.show_view("boxes")
    review = window.box_review
    queued = {p.photo_id for p in review._queue}
    sure = review.sure_photo_ids()
    assert sure and len(queued) == 5  # the shipped detector is sure of some synthetic flukes
    review.accept_sure_btn.click()
    wait_idle(qtbot, window)
    assert {p.photo_id for p in review._queue} == queued - set(sure)
    cat = window.session.catalog
    assert all(cat.current_box(pid).confirmed for pid in sure)
    assert window.undo_stack.undoText() == f"Accept {len(sure)} sure box{'es' if len(sure) != 1 else ''}"
    window.undo_stack.undo()
    wait_idle(qtbot, window)
    assert {p.photo_id for p in review._queue} == queued
    assert not any(cat.current_box(pid).confirmed for pid in sure)
