"""End to end with real model code: a tiny ONNX bundle (model.api.Engine) and the classical detector."""

from __future__ import annotations

import pytest

from app.catalog import Catalog
from app.cli import main
from app.services import decisions as D
from app.services import matching
from app.services.importing import import_photos
from model.api import ClassicalDetector, Engine
from tests.app.conftest import write_photo


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from tests.model.tiny_models import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-v1", dim=16, size=48)


def test_import_detect_embed_and_match_with_real_engine(tmp_path, bundle, capsys):
    engine = Engine.load(bundle, "cpu")
    photos = [write_photo(tmp_path / "in" / f"p{i}.jpg", i, size=(160, 120)) for i in range(5)]
    with Catalog.create(tmp_path / "cat") as cat:
        cat.add_model(engine.version, bundle, activate=True)
        rep = import_photos(cat, photos, detector=ClassicalDetector(), engine=engine)
        assert len(rep.imported) == 5 and not rep.errors
        for pid in rep.imported:
            box = cat.current_box(pid)
            assert box is not None and box.source in ("classical", "whole")
            assert cat.embedding(pid, engine.version).shape == (engine.embedding_dim,)
        for pid in rep.imported[:4]:
            D.new_individual(cat, pid)
        res = matching.match_photo(cat, rep.imported[4], engine, k=5)
        assert [c.rank for c in res.candidates] == [1, 2, 3, 4]
        assert {c.best_photo_id for c in res.candidates} == set(rep.imported[:4])
        # the model's head scores are fused with the local features (uncalibrated: a plain fused score)
        assert res.method == "fused" and not res.calibrated
        assert all(0.0 <= c.embedding_score <= 1.0 and c.inliers is not None for c in res.candidates)
        loaded = matching.load_engine(cat)
        assert loaded.version == engine.version
    # the CLI uses the catalog's active model
    assert main(["match", str(tmp_path / "cat"), str(photos[4])]) == 0
    out = capsys.readouterr().out
    assert "1. HW-000" in out and "model tiny" in out and out.count("fused") >= 4


def test_import_with_the_shipped_detector(catalog, tmp_path):
    from model.api import default_detector

    det = default_detector()
    photos = [write_photo(tmp_path / f"p{i}.jpg", i, size=(320, 200)) for i in range(2)]
    rep = import_photos(catalog, photos, detector=det)
    assert len(rep.imported) == 2
    for pid in rep.imported:
        box = catalog.current_box(pid)
        expected = "auto" if type(det).__name__ == "Detector" else "classical"
        assert box.source in (expected, "whole") and box.box is not None
        x0, y0, x1, y1 = box.box
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 200
