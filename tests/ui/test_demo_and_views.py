"""The demo catalog and screenshot mode; the box editor and the photo filters on their own."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QPixmap

pytestmark = pytest.mark.gui


def test_demo_catalog_is_built_once_and_screenshots_render(qtbot, tmp_path, tiny_bundle, monkeypatch):
    from app.catalog import Catalog
    from app.services.demo import create_demo_catalog, is_demo_ready
    from app.ui.app import take_screenshots

    folder = tmp_path / "demo"
    create_demo_catalog(folder, bundle_dir=tiny_bundle, individuals=10)
    assert is_demo_ready(folder)
    with Catalog.open(folder, mode="read") as cat:
        st = cat.stats()
        assert st["identified_photos"] > 0 and st["unidentified_photos"] > 0
        assert st["active_model"] == "tiny-v1"
        # fitted on its catalogued whales: the demo shows calibrated probabilities
        assert [c.kind for c in cat.calibrations()] == ["fused:tiny-v1"]
        dated = [p.taken_at for p in cat.photos() if p.taken_at]
        assert len(dated) == st["photos"]
    # already there: no rebuild (nothing generated, the database file untouched)
    before = (folder / "catalog.sqlite").stat()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the demo catalog was built again")

    monkeypatch.setattr("model.api.generate_dataset", no_rebuild)
    assert create_demo_catalog(folder, bundle_dir=tiny_bundle, individuals=10) == folder
    after = (folder / "catalog.sqlite").stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    monkeypatch.undo()

    shots = take_screenshots(str(folder), tmp_path / "shots", size=(1100, 700))
    assert [p.name for p in shots] == ["photos.png", "box_review.png", "match_review.png", "individuals.png"]
    for p in shots:
        pm = QPixmap(str(p))
        assert pm.width() == 1100 and pm.height() >= 700  # the minimum size may add a few pixels
        assert p.stat().st_size > 20_000  # real content, not a blank window


def test_demo_refuses_a_folder_holding_another_catalog(tmp_path, tiny_bundle):
    from app.catalog import Catalog, CatalogError
    from app.services.demo import create_demo_catalog

    Catalog.create(tmp_path / "mine").close()
    with pytest.raises(CatalogError, match="not the demo catalog"):
        create_demo_catalog(tmp_path / "mine", bundle_dir=tiny_bundle, individuals=3)


def test_box_editor_drag_corner_and_redraw(qtbot):
    from app.ui.image_view import BoxEditor

    editor = BoxEditor()
    qtbot.addWidget(editor)
    editor.resize(400, 300)
    editor.show()
    pm = QPixmap(400, 300)
    pm.fill(Qt.GlobalColor.gray)
    editor.set_pixmap(pm)
    editor.set_box((100, 100, 200, 200))
    qtbot.wait(20)
    changed = []
    editor.box_changed.connect(changed.append)
    vp = editor.viewport()

    def at(x, y) -> QPoint:
        return editor.mapFromScene(x, y)

    # drag the bottom-right corner
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=at(200, 200))
    qtbot.mouseMove(vp, at(260, 240))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=at(260, 240))
    x0, y0, x1, y1 = editor.box()
    assert (x0, y0) == pytest.approx((100, 100), abs=1)
    assert (x1, y1) == pytest.approx((260, 240), abs=3)
    # drag outside the box: a new box
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=at(20, 20))
    qtbot.mouseMove(vp, at(80, 60))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=at(80, 60))
    assert editor.box() == pytest.approx((20, 20, 80, 60), abs=3)
    assert len(changed) == 2


def test_photo_filters(qtbot):
    from app.services.viewdata import PhotoCard
    from app.ui.images import ImageCache
    from app.ui.photos_view import PhotosView

    view = PhotosView(ImageCache())
    qtbot.addWidget(view)
    view.set_photos([
        PhotoCard(1, "/x/a.jpg", "identified", 7, "HW-0007", "2023-07-01"),
        PhotoCard(2, "/x/b.jpg", "unidentified", date="2024-07-02"),
        PhotoCard(3, "/x/c.jpg", "box", date="2024-08-02"),
        PhotoCard(4, "/x/d.jpg", "identified", 7, "HW-0007", "2024-07-09"),
    ])
    assert view.model.rowCount() == 4
    view.status_filter.setCurrentIndex(view.status_filter.findData("identified"))
    assert [p.photo_id for p in view.filtered()] == [1, 4]
    view.date_filter.setText("2024-07")
    assert [p.photo_id for p in view.filtered()] == [4]
    view.status_filter.setCurrentIndex(0)
    assert [p.photo_id for p in view.filtered()] == [2, 4]
    view.date_filter.clear()
    view.individual_filter.setCurrentIndex(view.individual_filter.findData(7))
    assert [p.photo_id for p in view.filtered()] == [1, 4]
    assert view.count_label.text() == "2 of 4 photos"


def test_demo_without_its_model_says_how_to_build_it(tmp_path):
    from app.services.demo import create_demo_catalog
    from model.api import BundleError

    with pytest.raises(BundleError, match="make demo-model"):
        create_demo_catalog(tmp_path / "demo", bundle_dir=tmp_path / "nothing-here", individuals=3)
    assert not (tmp_path / "demo" / "catalog.sqlite").exists()
