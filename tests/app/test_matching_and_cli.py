"""Matching through the catalog (fake engine) and the catalog CLI commands."""

from __future__ import annotations

import os

import numpy as np
import pytest

from app.cli import main
from app.services import decisions as D
from app.services import matching
from app.services.importing import import_photos
from tests.app.conftest import FakeEngine, write_photo


def test_match_photo_ranks_identified_individuals(catalog, tmp_path):
    eng = FakeEngine()
    ps = [write_photo(tmp_path / f"p{i}.jpg", i) for i in range(4)]
    ids = import_photos(catalog, ps, engine=eng).imported
    for pid in ids[:3]:
        D.new_individual(catalog, pid)
    # the query is a near copy of photo 1 (same content, re-saved)
    q = write_photo(tmp_path / "q.png", 1, fmt="PNG")
    qid = import_photos(catalog, [q], engine=eng).imported[0]
    res = matching.match_photo(catalog, qid, eng, k=5)
    assert [c.rank for c in res.candidates] == [1, 2, 3]
    assert res.candidates[0].individual == catalog.current_individual(ids[1])
    assert res.candidates[0].best_photo_id == ids[1]
    assert qid not in {c.best_photo_id for c in res.candidates}


def test_match_without_model_errors_clearly(catalog):
    assert matching.load_engine(catalog) is None
    with pytest.raises(Exception, match="no active model"):
        matching.require_engine(catalog)


def test_cli_new_import_export_stats(tmp_path, capsys):
    cat = tmp_path / "cat"
    assert main(["new", str(cat)]) == 0
    for i in range(3):
        write_photo(tmp_path / "in" / f"p{i}.jpg", i)
    (tmp_path / "in" / "bad.jpg").write_text("no")
    # exit code 1: some files were skipped (the rest imported)
    assert main(["import", str(cat), str(tmp_path / "in"), "--no-detect", "--no-embed"]) == 1
    out = capsys.readouterr()
    assert "3 photos imported" in out.out and "bad.jpg" in out.err and "100%" in out.err
    assert main(["stats", str(cat)]) == 0
    assert "photos" in capsys.readouterr().out
    assert main(["export", str(cat), "--format", "kaggle", "--out", str(tmp_path / "k.csv")]) == 0
    assert (tmp_path / "k.csv").read_text().count("new_whale") == 3
    # no model and nothing identified yet: matching still runs (local features) and says so
    assert main(["match", str(cat), str(tmp_path / "in" / "p0.jpg")]) == 0
    out = capsys.readouterr().out
    assert "no identified photos to compare with yet" in out and "model" not in out
    assert main(["new", str(cat)]) == 2


def test_cli_import_labels(tmp_path, capsys):
    cat = tmp_path / "cat"
    assert main(["new", str(cat)]) == 0
    for i in range(2):
        write_photo(tmp_path / "d" / "images" / f"p{i}.jpg", i)
    (tmp_path / "d" / "labels.csv").write_text("image,individual_id\np0.jpg,W1\np1.jpg,new_whale\n")
    assert main(["import", str(cat), "--labels", str(tmp_path / "d" / "labels.csv"), "--no-detect"]) == 0
    assert "2 photos imported, 1 identified" in capsys.readouterr().out
    main(["stats", str(cat)])
    out = capsys.readouterr().out
    assert "identified photos" in out and "individuals" in out


def test_gallery_is_cached_until_the_catalog_changes(catalog, tmp_path):
    eng = FakeEngine()
    ps = [write_photo(tmp_path / f"p{i}.jpg", i) for i in range(3)]
    ids = import_photos(catalog, ps, engine=eng).imported
    D.new_individual(catalog, ids[0])
    g1 = matching.gallery(catalog, eng.version, 8)
    assert matching.gallery(catalog, eng.version, 8) is g1 and len(g1) == 1
    assert matching.match_embedding(catalog, np.zeros(8, np.float32), eng, exclude={ids[0]}).candidates == []
    D.new_individual(catalog, ids[1])
    g2 = matching.gallery(catalog, eng.version, 8)
    assert g2 is not g1 and len(g2) == 2
    D.mark_junk(catalog, ids[1])
    assert len(matching.gallery(catalog, eng.version, 8)) == 1
    # an identified query photo is left out of its own gallery
    res = matching.match_photo(catalog, ids[0], eng)
    assert res.candidates == []


def test_cli_makes_openmp_threads_wait_passively(monkeypatch):
    """Set before torch loads: waiting OpenMP threads made CPU training up to 4x slower next to other jobs."""
    from app import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cli.configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own choice is kept
    cli.configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
