"""The match review on a catalog with no model: local features rank, verified marks are drawn, and
nothing is claimed that no calibration supports."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.ui.conftest import open_and_wait, wait_idle

pytestmark = pytest.mark.gui

SHOTS = Path(os.environ.get("FLUKEID_SCREENSHOTS", "/tmp"))


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory) -> tuple[Path, list[int]]:
    """A catalog with no model: 4 synthetic whales, 2 labelled photos each, 1 unidentified query each."""
    from app.catalog import Catalog
    from app.services import importing
    from model.api import generate_dataset

    out = tmp_path_factory.mktemp("local_ui")
    labels = generate_dataset(out, 4, seed=11, photos=3, size=(512, 340))
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_ind: dict[str, list[dict]] = {}
    for r in rows:
        by_ind.setdefault(r["individual_id"], []).append(r)
    csv_path = out / "catalog.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "individual_id", "x0", "y0", "x1", "y1"])
        for n, group in enumerate(by_ind.values()):
            for i, r in enumerate(group):
                w.writerow([r["image"], f"HW-{n + 1:04d}" if i < 2 else "", r["x0"], r["y0"], r["x1"], r["y1"]])
    folder = out / "catalog"
    with Catalog.create(folder) as cat:
        importing.import_labelled(cat, csv_path, out / "images")
        queries = cat.unidentified_photo_ids()
    return folder, queries


def _task(folder, photo_id):
    from app.services.review import Session

    s = Session.open(folder)
    try:
        return s.match(photo_id)
    finally:
        s.close()


def test_review_without_calibration_shows_no_percentage_and_draws_inliers(qtbot, local_catalog,
                                                                         no_shipped_calibration):
    from app.ui.images import ImageCache
    from app.ui.match_review import MatchReviewView

    folder, queries = local_catalog
    task = _task(folder, queries[0])
    assert task.model_version is None and not task.calibrated and task.verdict == "ranking"
    view = MatchReviewView(ImageCache())
    qtbot.addWidget(view)
    view.resize(1300, 760)
    view.show()
    view.set_task(task)
    view._cache.wait(10000)  # the crops decode in the image pool
    qtbot.waitUntil(lambda: not view.compare.right.image_rect().isEmpty(), timeout=10000)
    assert "Best match" not in view.banner.text() and "%" not in view.banner.text()
    assert "no calibration" in view.banner.text()
    for card in view.cards:
        if card.candidate is not None:
            assert "%" not in card.score.text()
            assert not card.bar.isVisible()
    assert "verified" in view.cards[0].details.text() and view.cards[0].score.text().endswith("✓</span>")
    # the top candidate's verified correspondences are the lines, as fractions of each crop
    top = task.candidates[0]
    assert top.inliers >= 6 and len(view.compare.lines) == min(30, top.inliers)
    for ln in view.compare.lines:
        assert all(-0.02 <= v <= 1.02 for v in (ln.ax, ln.ay, ln.bx, ln.by))
    assert view.evidence_status.text() == ""
    # with no model the heatmap shows where the two photos agree: a glow at the verified marks
    assert view.heatmap_box.isEnabled() and "agree" in view.heatmap_box.toolTip()
    view.heatmap_box.setChecked(True)
    assert "agree" in view.legend.text() and view.legend.isVisibleTo(view)
    for side, pts in ((view.compare.left, [(ln.ax, ln.ay) for ln in view.compare.lines]),
                      (view.compare.right, [(ln.bx, ln.by) for ln in view.compare.lines])):
        assert side.has_overlay() and side.overlay_item.isVisible()
        alpha = side.overlay_item.pixmap().toImage()
        w, h = alpha.width(), alpha.height()
        at_marks = [alpha.pixelColor(min(w - 1, max(0, round(x * (w - 1)))),
                                     min(h - 1, max(0, round(y * (h - 1))))).alpha() for x, y in pts]
        assert max(at_marks) > 200 and min(at_marks) > 0  # every mark glows, the densest (nearly) fully
        assert alpha.pixelColor(0, 0).alpha() < 255
    view.grab().save(str(SHOTS / "flukeid_local_review.png"))
    # a candidate with no verified correspondence: said, not drawn, and no glow either
    unverified = [i for i, c in enumerate(task.candidates) if not c.inliers]
    assert unverified
    view.select(unverified[0])
    assert view.compare.lines == []
    assert view.evidence_status.text() == "no verified correspondence"
    assert not view.compare.left.overlay_item.isVisible() and not view.compare.right.overlay_item.isVisible()
    view.heatmap_box.setChecked(False)
    assert "unverified" in view.cards[unverified[0]].details.text()
    qtbot.wait(50)  # let the layout take the new text
    view.grab().save(str(SHOTS / "flukeid_local_review_unverified.png"))


def test_window_matches_a_catalog_without_model(qtbot, window, local_catalog, no_shipped_calibration):
    folder, queries = local_catalog
    open_and_wait(qtbot, window, folder)
    assert window.session.engine is None
    window.show_view("match")
    review = window.match_review
    qtbot.waitUntil(lambda: review.task is not None, timeout=30000)
    wait_idle(qtbot, window)
    assert review.task.photo.photo_id in queries
    assert review.task.candidates and review.task.verdict in ("ranking", "unverified")
    assert "matching needs a model" not in window.notification.label.text()
    assert window.model_label.text() == "Model: none (local features match)"
    qtbot.waitUntil(lambda: review.evidence_ready(0), timeout=10000)
    assert review.compare.lines == review._evidence[0]


def _card(i: int, p: float | None, text: str, inliers: int):
    from app.services.viewdata import CandidateCard

    return CandidateCard(individual_id=i, label=f"HW-{i:04d}", score=p if p is not None else 12.0 - i, photo_id=i,
                         photo_path="/nowhere.jpg", photo_box=None, photo_count=2, probability=p, score_text=text,
                         inliers=inliers, evidence=[])


@pytest.mark.parametrize("verdict, top_p, expect, refuse", [
    ("best_match", 0.97, "Best match: HW-0001", "new individual"),
    ("unsure", 0.60, "No confident match", "Best match"),
    ("new", 0.05, "Probably a new individual", "Best match"),
])
def test_calibrated_banner_claims_only_what_the_thresholds_allow(qtbot, verdict, top_p, expect, refuse):
    from app.services.viewdata import MatchTask, PhotoCard
    from app.ui.images import ImageCache
    from app.ui.match_review import MatchReviewView

    cards = [_card(1, top_p, f"{top_p:.0%}", 20), _card(2, 0.02, "2%", 0)]
    task = MatchTask(PhotoCard(9, "/nowhere.jpg", "unidentified"), cards, verdict == "new", 0.10,
                     calibrated=True, best_match_threshold=0.90, verdict=verdict)
    view = MatchReviewView(ImageCache())
    qtbot.addWidget(view)
    view.set_task(task)
    assert expect in view.banner.text() and refuse not in view.banner.text()
    assert view.cards[0].score.text().endswith(f"{top_p:.0%}</span>") and view.cards[0].bar.isVisibleTo(view)
    primary_new = view.new_btn.objectName() == "primary"
    assert primary_new == (verdict == "new")
    # the confirm button is highlighted only where the banner calls it a match
    assert (view.confirm_btn.objectName() == "primary") == (verdict == "best_match")


def test_calibrate_from_the_window_says_why_it_cannot(qtbot, window, local_catalog):
    folder, _ = local_catalog
    open_and_wait(qtbot, window, folder)
    assert window.calibrate_act.isEnabled()
    window.calibrate_act.trigger()
    wait_idle(qtbot, window)
    text = window.notification.label.text()
    assert "not enough pairs" in text and "at least 20" in text  # 8 identified photos: 8 same-individual pairs


def test_a_card_shows_a_named_individual_and_its_probability_whole(qtbot):
    from dataclasses import replace

    from app.services.viewdata import MatchTask, PhotoCard
    from app.ui.images import ImageCache
    from app.ui.match_review import MatchReviewView
    from app.ui.theme import STYLE

    card = replace(_card(4, 0.995, ">99%", 30), label="HW-0004 Pepper", score_short=">99%", photo_count=1,
                   last_seen="2022-08-27")
    task = MatchTask(PhotoCard(9, "/nowhere.jpg", "unidentified"), [card], False, 0.10,
                     calibrated=True, best_match_threshold=0.90, verdict="best_match")
    view = MatchReviewView(ImageCache())
    view.setStyleSheet(STYLE)  # the app's fonts and sizes, as the user sees the card
    qtbot.addWidget(view)
    view.resize(1440, 900)
    view.show()
    view.set_task(task)
    qtbot.waitExposed(view)
    shown = view.cards[0]
    panel = shown.parentWidget()
    for label in (shown.score, shown.name):  # neither is cut off, by the card or by the panel holding it
        assert label.width() >= label.sizeHint().width(), label.objectName()
        assert panel.rect().contains(label.geometry().translated(shown.pos())), label.objectName()


def _shown(label) -> str:
    """What a QLabel displays, as plain text (its rich text rendered the way Qt renders it)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QTextDocument

    if label.textFormat() == Qt.TextFormat.PlainText:
        return label.text()
    doc = QTextDocument()
    doc.setHtml(label.text())
    return doc.toPlainText()


def _calibrated_view(qtbot, cards, verdict: str, threshold: float = 0.0, best_match: float = 0.25,
                     path: str = "/nowhere.jpg"):
    """A match review showing a calibrated task with these candidate cards."""
    from app.services.viewdata import MatchTask, PhotoCard
    from app.ui.images import ImageCache
    from app.ui.match_review import MatchReviewView

    task = MatchTask(PhotoCard(9, path, "unidentified"), cards, False, threshold,
                     calibrated=True, best_match_threshold=best_match, verdict=verdict)
    view = MatchReviewView(ImageCache())
    qtbot.addWidget(view)
    view.set_task(task)
    return view


def test_scores_names_and_file_names_show_as_written_never_as_markup(qtbot):
    """Seen on real photos: a "<1%" score was read as the start of an HTML tag, so every card's score
    was blank and the banner stopped at "ranks first at"."""
    from dataclasses import replace

    odd = "<b>Tom & Jerry</b>"
    cards = [replace(_card(1, 0.004, "<1%", 3), label=odd, score_short="<1%", last_seen="<2020>"),
             _card(2, 0.002, "<1%", 0)]
    view = _calibrated_view(qtbot, cards, "unsure", 0.10, 0.90, path="/x/<fluke>&1.jpg")
    banner = _shown(view.banner)
    assert f"{odd} ranks first at <1%, below the 90% needed" in banner, banner
    assert _shown(view.cards[0].score) == "<1%" and _shown(view.cards[1].score) == "<1%"
    assert _shown(view.cards[0].name) == odd
    assert "last seen <2020>" in _shown(view.cards[0].details)
    assert _shown(view.title).startswith("<fluke>&1.jpg")
    assert _shown(view.compare.left_caption) == "This photo — <fluke>&1.jpg"
    assert _shown(view.compare.right_caption) == f"{odd} — <1%"


def test_a_score_far_below_every_threshold_is_grey_not_green(qtbot):
    """Seen on real photos: with the 'probably new' suggestion off (threshold 0), "<1%" was lime."""
    from app.ui.match_review import score_colour

    grey, lime, green = "#8a939c", "#a6c84c", "#3fae6a"
    assert [score_colour(p, 0.0, 0.25) for p in (0.002, 0.15, 0.30)] == [grey, lime, green]
    assert [score_colour(p, 0.10, 0.90) for p in (0.05, 0.40, 0.50, 0.95)] == [grey, grey, lime, green]
    # a catalog's own calibration: 'probably new' under 0.3%, best match from 46% (seen on real photos)
    assert [score_colour(p, 0.003, 0.46) for p in (0.005, 0.2, 0.3, 0.5)] == [grey, grey, lime, green]
    assert [score_colour(p, None) for p in (0.3, 0.6, 0.8)] == [grey, lime, green]  # uncalibrated bundle score
    view = _calibrated_view(qtbot, [_card(1, 0.3, "30%", 12), _card(2, 0.004, "<1%", 0)], "best_match")
    assert green in view.cards[0].score.text() and grey in view.cards[1].score.text()


def test_a_calibrated_photo_with_nothing_verified_says_so_and_pushes_no_button(qtbot):
    """Seen on real humpbacks: every miss had 0 verified marks on all five candidates, and the banner
    only said "No confident match"; it now says nothing verified and that it may be a new individual."""
    view = _calibrated_view(qtbot, [_card(1, 0.004, "<1%", 0), _card(2, 0.003, "<1%", 0)], "unsure")
    banner = _shown(view.banner)
    assert banner.startswith("No candidate shares verified marks with this photo. HW-0001 ranks first at <1%.")
    assert "may be a new individual" in banner and "Best match" not in banner
    assert view.confirm_btn.objectName() != "primary" and view.new_btn.objectName() != "primary"


def test_the_calibration_summary_stays_until_closed(qtbot, window, local_catalog, monkeypatch):
    """A job of about a minute on a real catalog: its summary used to vanish after 8 s, often
    while the user was looking at another view."""
    from app.services.calibration import CalibrationResult

    folder, _ = local_catalog
    open_and_wait(qtbot, window, folder)
    result = CalibrationResult("local", 573, 64, 5666, 0.46, 0.003, ["log_votes"], 1, seconds=37.0)
    monkeypatch.setattr(window.session, "calibrate", lambda progress, should_stop: result)
    window.calibrate_act.trigger()
    wait_idle(qtbot, window)
    bar = window.notification
    assert bar.isVisibleTo(window) and "fitted on 5730 pairs" in bar.label.text()
    assert not window._hide_timer.isActive()
    window.notify("Relinked 2 photos.")  # an ordinary message still goes by itself
    assert window._hide_timer.isActive()
