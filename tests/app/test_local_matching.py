"""Matching with local features and no model: a new catalog of synthetic flukes identifies its whales.

The photos are synthetic flukes (model.api.generate_dataset), two per individual in the gallery
with their labelled boxes and one held out as the query. Nothing here trains or loads a model.
"""

from __future__ import annotations

import csv
import sqlite3

import numpy as np
import pytest

from app.cli import main
from app.services import decisions as D
from app.services import importing, matching
from app.services import local_features as lf
from model.api import FEATURE_VERSION, Interrupted, LocalFeatures, generate_dataset
from tests.app.conftest import FakeEngine

INDIVIDUALS = 5


def _split(out, labels, n_gallery: int):
    """gallery.csv (the first ``n_gallery`` photos of each whale, labelled) and queries.csv (the next
    one, unidentified) next to ``labels``; returns (images, gallery, queries, {query file: code})."""
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_ind: dict[str, list[dict]] = {}
    for r in rows:
        by_ind.setdefault(r["individual_id"], []).append(r)
    gallery, queries = out / "gallery.csv", out / "queries.csv"
    truth = {}
    with open(gallery, "w", newline="") as g, open(queries, "w", newline="") as q:
        gw, qw = csv.writer(g), csv.writer(q)
        for w in (gw, qw):
            w.writerow(["image", "individual_id", "x0", "y0", "x1", "y1"])
        for n, group in enumerate(by_ind.values()):
            code = f"HW-{n + 1:04d}"
            for r in group[:n_gallery]:
                gw.writerow([r["image"], code, r["x0"], r["y0"], r["x1"], r["y1"]])
            r = group[n_gallery]
            qw.writerow([r["image"], "", r["x0"], r["y0"], r["x1"], r["y1"]])  # unidentified, boxed
            truth[r["image"]] = code
    return out / "images", gallery, queries, truth


@pytest.fixture(scope="module")
def flukes(tmp_path_factory):
    """(images folder, gallery.csv, queries.csv, {query file: true code}) of 5 synthetic whales."""
    out = tmp_path_factory.mktemp("flukes")
    return _split(out, generate_dataset(out, INDIVIDUALS, seed=3, photos=3, size=(512, 340)), 2)


@pytest.fixture(scope="module")
def flukes8(tmp_path_factory):
    """The same for 8 whales with 4 gallery photos each: enough pairs to calibrate."""
    out = tmp_path_factory.mktemp("flukes8")
    return _split(out, generate_dataset(out, 8, seed=4, photos=5, size=(512, 340)), 4)


def _fill(catalog, flukes) -> dict[int, str]:
    """Import the gallery (identified) and the queries (unidentified); {query photo id: true code}."""
    images, gallery, queries, truth = flukes
    importing.import_labelled(catalog, gallery, images)
    rep = importing.import_labelled(catalog, queries, images)
    return {pid: truth[catalog.photo(pid).path.rsplit("/", 1)[-1]] for pid in rep.imported}


def _top_code(catalog, result) -> str:
    return catalog.individual(result.candidates[0].individual).code


def test_import_stores_local_features_in_photo_pixels(catalog, flukes):
    queries = _fill(catalog, flukes)
    assert catalog.photos_missing_local_features(FEATURE_VERSION) == []
    for ph in catalog.photos():
        rec = catalog.local_features(ph.id)
        box = catalog.current_box(ph.id).box
        assert rec.feature_version == FEATURE_VERSION and rec.box == box and rec.n > 20
        feats = LocalFeatures.from_bytes(rec.data)
        assert len(feats) == rec.n
        x0, y0, x1, y1 = box  # keypoints lie in the box, in the photo's own pixels
        assert (feats.xy[:, 0] >= x0 - 2).all() and (feats.xy[:, 0] <= x1 + 2).all()
        assert (feats.xy[:, 1] >= y0 - 2).all() and (feats.xy[:, 1] <= y1 + 2).all()
    assert len(queries) == INDIVIDUALS


def test_no_model_matches_the_right_individual_first(catalog, flukes, no_shipped_calibration):
    queries = _fill(catalog, flukes)
    assert catalog.active_model() is None
    for qid, code in queries.items():
        res = matching.match_photo(catalog, qid, None)
        assert res.method == "local" and not res.calibrated
        assert _top_code(catalog, res) == code
        top = res.candidates[0]
        assert top.inliers >= 6 and top.pairs.shape == (top.inliers, 4)
        assert top.probability is None and "%" not in matching.score_text(top, res)
        assert [c.rank for c in res.candidates] == list(range(1, len(res.candidates) + 1))
        # the evidence: the pairs' query ends are on the query's fluke, the gallery ends on the best photo's
        qx0, qy0, qx1, qy1 = catalog.current_box(qid).box
        assert (top.pairs[:, 0] >= qx0 - 2).all() and (top.pairs[:, 0] <= qx1 + 2).all()
        gx0, gy0, gx1, gy1 = catalog.current_box(top.best_photo_id).box
        assert (top.pairs[:, 2] >= gx0 - 2).all() and (top.pairs[:, 2] <= gx1 + 2).all()
        assert matching.verdict(res) == "ranking"


def test_a_new_catalog_is_calibrated_by_the_shipped_default_which_never_says_new(catalog, flukes):
    """Day one: the synthetic-only default calibration gives probabilities and 'Best match'; its
    'probably new' (37.8% of real matchable queries) is off until the catalog's own calibration."""
    from model.api import default_calibrator

    assert default_calibrator() is not None and default_calibrator().new_individual_threshold is not None
    queries = _fill(catalog, flukes)
    for qid, code in queries.items():
        res = matching.match_photo(catalog, qid, None)
        assert res.calibrated and _top_code(catalog, res) == code
        assert all(0.0 <= c.probability <= 1.0 for c in res.candidates)
        assert "%" in matching.score_text(res.candidates[0], res)
        assert matching.verdict(res) in ("best_match", "unsure") and not res.suggest_new


def test_cli_new_import_match_without_model(tmp_path, flukes, capsys, no_shipped_calibration):
    images, gallery, queries, truth = flukes
    cat = tmp_path / "cat"
    assert main(["new", str(cat)]) == 0
    assert main(["import", str(cat), "--labels", str(gallery), "--images", str(images), "--no-detect"]) == 0
    out = capsys.readouterr()
    assert "10 photos imported" in out.out
    assert "needs a model" not in out.err + out.out and "without embeddings" not in out.err
    # a query photo that is not in the catalog: matched from its file (the detector draws its box)
    name, code = next(iter(truth.items()))
    assert main(["match", str(cat), str(images / name)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("1.")]
    assert lines and code in lines[0] and "inliers" in lines[0]
    assert "%" not in out  # no calibration: a rank and a plain score, never a percentage
    assert "uncalibrated" in out


def test_cli_match_computes_missing_features_first(tmp_path, flukes, capsys):
    images, gallery, queries, truth = flukes
    cat_dir = tmp_path / "cat"
    assert main(["new", str(cat_dir)]) == 0
    assert main(["import", str(cat_dir), "--labels", str(gallery), "--images", str(images), "--no-detect"]) == 0
    assert main(["import", str(cat_dir), "--labels", str(queries), "--images", str(images), "--no-detect"]) == 0
    from app.catalog import Catalog

    with Catalog.open(cat_dir) as cat:  # a catalog imported before local features existed
        with cat.transaction():
            cat._conn.execute("DELETE FROM local_features")
        qid = cat.unidentified_photo_ids()[0]
        code = truth[cat.photo(qid).path.rsplit("/", 1)[-1]]
    capsys.readouterr()
    assert main(["match", str(cat_dir), str(qid)]) == 0
    out = capsys.readouterr()
    assert "100%" in out.err  # the progress line of the features computed before matching
    first = [ln for ln in out.out.splitlines() if ln.strip().startswith("1.")][0]
    assert code in first
    with Catalog.open(cat_dir) as cat:
        assert cat.photos_missing_local_features(FEATURE_VERSION) == []


def test_relabel_and_unusable_photos_update_the_index(catalog, flukes):
    queries = _fill(catalog, flukes)
    qid, code = next(iter(queries.items()))
    res = matching.match_photo(catalog, qid, None)
    assert _top_code(catalog, res) == code
    index, missing = matching.local_index(catalog)
    assert missing == 0 and len(index) == 2 * INDIVIDUALS
    # the true whale's photos are relabelled as a new individual: the answer follows
    true_id = catalog.individual_by_code(code).id
    mine = catalog.photos_of(true_id)
    new_id = D.new_individual(catalog, mine[0], code="HW-0100").individual_id
    D.identify(catalog, mine[1], new_id)
    res = matching.match_photo(catalog, qid, None)
    assert _top_code(catalog, res) == "HW-0100"
    assert matching.local_index(catalog)[0] is index  # updated in place, not rebuilt
    # both photos marked unusable: the whale drops out of the candidates
    for pid in mine:
        D.mark_junk(catalog, pid)
    res = matching.match_photo(catalog, qid, None)
    assert new_id not in {c.individual for c in res.candidates}
    assert len(matching.local_index(catalog)[0]) == 2 * INDIVIDUALS - 2
    # and a photo set back to unidentified leaves the gallery too
    other = next(p for p in index.photo_ids())
    D.identify(catalog, other, None)
    assert other not in matching.local_index(catalog)[0]
    # a confirmed match joins it (the next query can be matched to it)
    D.confirm(catalog, qid, new_id)
    assert qid in matching.local_index(catalog)[0]
    assert matching.local_index(catalog)[0].individual_of(qid) == new_id


def test_corrupt_stored_features_are_rebuilt_with_a_message(catalog, flukes):
    queries = _fill(catalog, flukes)
    qid, code = next(iter(queries.items()))
    victim = catalog.photos_of(catalog.individual_by_code(code).id)[0]
    data = bytearray(catalog.local_features(victim).data)
    data[40:60] = bytes(20)  # damaged bytes in the descriptors
    with catalog.transaction():
        catalog._conn.execute("UPDATE local_features SET data = ? WHERE photo_id = ?",
                              [sqlite3.Binary(bytes(data)), victim])
    matching.forget_local_index()
    res = matching.match_photo(catalog, qid, None)
    assert any("damaged" in n and "recomputed" in n and str(victim) in n for n in res.notes)
    assert _top_code(catalog, res) == code
    LocalFeatures.from_bytes(catalog.local_features(victim).data)  # stored again, sound


def test_compute_missing_local_features_is_resumable(catalog, flukes):
    _fill(catalog, flukes)
    ids = [p.id for p in catalog.photos()]
    with catalog.transaction():
        catalog._conn.execute("DELETE FROM local_features WHERE photo_id IN (?, ?, ?)", ids[:3])
    box = catalog.current_box(ids[5]).box
    D.set_box(catalog, ids[5], (box[0] + 5, box[1], box[2], box[3]))  # a redrawn box: stale features
    assert catalog.photos_missing_local_features(FEATURE_VERSION) == ids[:3] + [ids[5]]
    calls = []
    with pytest.raises(Interrupted):
        lf.compute_missing_local_features(catalog, progress=lambda f, m: calls.append(f),
                                          should_stop=lambda: len(calls) >= 2)
    assert len(catalog.photos_missing_local_features(FEATURE_VERSION)) == 2  # two done before the stop
    rep = lf.compute_missing_local_features(catalog, progress=lambda f, m: calls.append(f))
    assert len(rep.computed) == 2 and rep.errors == [] and calls[-1] == 1.0
    assert catalog.photos_missing_local_features(FEATURE_VERSION) == []
    assert catalog.local_features(ids[5]).box == catalog.current_box(ids[5]).box


def test_missing_photo_file_is_reported_not_raised(catalog, flukes, tmp_path):
    _fill(catalog, flukes)
    pid = catalog.photos()[0].id
    catalog.set_photo_path(pid, str(tmp_path / "gone.jpg"))
    catalog.delete_local_features(pid)
    rep = lf.compute_missing_local_features(catalog)
    assert rep.computed == [] and len(rep.errors) == 1 and "gone.jpg" in rep.errors[0][0]


def test_model_and_local_features_are_fused(catalog, flukes):
    images, gallery, queries, truth = flukes
    eng = FakeEngine()
    importing.import_labelled(catalog, gallery, images, engine=eng)
    rep = importing.import_labelled(catalog, queries, images, engine=eng)
    qid = rep.imported[0]
    code = truth[catalog.photo(qid).path.rsplit("/", 1)[-1]]
    res = matching.match_photo(catalog, qid, eng)
    assert res.method == "fused" and not res.calibrated
    assert all(c.embedding_score is not None and c.inliers is not None for c in res.candidates)
    assert _top_code(catalog, res) == code
    assert matching.score_text(res.candidates[0], res).startswith("fused")


def test_import_reports_a_feature_failure_and_goes_on(catalog, flukes, monkeypatch):
    images, gallery, queries, truth = flukes
    real = lf.extract_on_decoded
    calls = []

    def flaky(image, box, scale):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return real(image, box, scale)

    monkeypatch.setattr(lf, "extract_on_decoded", flaky)
    rep = importing.import_labelled(catalog, gallery, images)
    assert len(rep.imported) == 2 * INDIVIDUALS and len(rep.feature_errors) == 1
    assert "boom" in rep.feature_errors[0][1] and "1 without local features" in rep.summary()
    assert len(catalog.photos_missing_local_features(FEATURE_VERSION)) == 1


def test_match_file_without_box_uses_the_whole_photo(catalog, flukes):
    images, gallery, queries, truth = flukes
    _fill(catalog, flukes)
    name, code = next(iter(truth.items()))
    res = matching.match_file(catalog, images / name, None)
    assert res.candidates and res.method == "local"
    assert np.isfinite([c.score for c in res.candidates]).all()


def test_calibrate_refuses_too_few_pairs_and_says_why(catalog, flukes, capsys):
    from app.services import calibration

    _fill(catalog, flukes)
    with pytest.raises(calibration.NotEnoughPairs) as err:
        calibration.calibrate(catalog)
    text = str(err.value)
    assert "same-individual" in text and f"at least {calibration.MIN_SAME}" in text
    pairs, n, skipped = calibration.collect_pairs(catalog)
    assert n == 2 * INDIVIDUALS and skipped == []  # every identified photo was matched
    assert int(pairs.y.sum()) == 2 * INDIVIDUALS  # each photo's own whale (its other photo) is a candidate
    assert pairs.matchable.all() and pairs.top.sum() == n
    assert catalog.calibration("local") is None  # nothing stored


def test_calibrated_matching_shows_probabilities(tmp_path, flukes8, capsys):
    from app.catalog import Catalog
    from app.services import calibration
    from model.api import Calibrator

    images, gallery, queries, truth = flukes8
    cat_dir = tmp_path / "cat"
    assert main(["new", str(cat_dir)]) == 0
    for csv_path in (gallery, queries):
        assert main(["import", str(cat_dir), "--labels", str(csv_path), "--images", str(images), "--no-detect"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(cat_dir)]) == 0
    out = capsys.readouterr().out
    assert "fitted on" in out and "32 photos" in out
    with Catalog.open(cat_dir) as cat:
        rec = cat.calibration("local")
        assert rec.n_same >= calibration.MIN_SAME and rec.n_pairs == rec.n_same + rec.n_different
        cal = Calibrator.from_dict(rec.data)
        assert cal.n_pairs == rec.n_pairs
        qid = cat.unidentified_photo_ids()[0]
        code = truth[cat.photo(qid).path.rsplit("/", 1)[-1]]
        res = matching.match_photo(cat, qid, None)
        assert res.calibrated and _top_code(cat, res) == code
        probs = [c.probability for c in res.candidates]
        assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
        assert matching.score_text(res.candidates[0], res).endswith("%")
        v = matching.verdict(res)
        top = probs[0]
        if cal.best_match_threshold is not None and top >= cal.best_match_threshold:
            assert v == "best_match"
        elif top < res.threshold:
            assert v == "new"
        else:
            assert v == "unsure"
    assert main(["match", str(cat_dir), str(qid)]) == 0
    out = capsys.readouterr().out
    assert ", calibrated" in out and "%" in out and code in out.splitlines()[1]


def test_a_damaged_calibration_is_ignored(catalog, flukes):
    queries = _fill(catalog, flukes)
    catalog.add_calibration("local", {"kind": "logistic", "version": 999}, n_pairs=1, n_same=1, n_different=0)
    res = matching.match_photo(catalog, next(iter(queries)), None)
    assert not res.calibrated and res.candidates  # matched as if there were none


def test_one_off_queries_search_exactly(catalog, flukes):
    queries = _fill(catalog, flukes)
    index, _ = matching.local_index(catalog, exact=True)
    assert index.kind == "exact" and index.exact_below == matching.EXACT_ALWAYS
    res = matching.match_photo(catalog, next(iter(queries)), None)
    assert res.candidates and matching.local_index(catalog)[0] is index
    matching.local_index(catalog, exact=False)
    assert index.exact_below < matching.EXACT_ALWAYS


def test_a_probability_is_never_shown_as_certain():
    assert [matching.percent(p) for p in (0.0, 0.004, 0.01, 0.5, 0.99, 0.995, 1.0)] == \
        ["<1%", "<1%", "1%", "50%", "99%", ">99%", ">99%"]


def test_calibration_summary_gives_a_small_threshold_its_digits():
    """Seen on a real humpback catalog: "'probably new' under 0%" read as "off" for a threshold of 0.3%."""
    from app.services.calibration import CalibrationResult

    def summary(new):
        return CalibrationResult("local", 573, 64, 5666, 0.46, new, ["log_votes"], 1).summary()

    assert "'probably new' under 0.3% (about 5% of the photos whose individual is in the catalog" in summary(0.003)
    assert "'probably new' under <0.1%" in summary(0.0002)
    assert "'probably new' under 12%" in summary(0.12)
    assert "no 'probably new' threshold" in summary(None)
    assert "'best match' from 46%" in summary(0.003)


@pytest.mark.parametrize("p, inliers, expect", [
    (0.97, 30, "best match: HW-1 (97%; called a match from 50%)"),
    (0.30, 12, "no confident match: compare the candidates before deciding"),
    (0.30, 0, "no confident match, and no candidate shares verified marks with this photo: it may be new"),
    (0.30, None, "no confident match: compare the candidates before deciding"),  # the embedding alone
    (0.01, 0, "probably a new individual (best 1% < 5%)"),
])
def test_the_match_command_says_what_the_calibrated_result_supports(p, inliers, expect):
    from types import SimpleNamespace

    from app.commands.catalog import _verdict_line

    top = SimpleNamespace(individual=1, probability=p, **({} if inliers is None else {"inliers": inliers}))
    result = SimpleNamespace(candidates=[top], calibrated=True, best_match_threshold=0.5, threshold=0.05,
                             method="local", suggest_new=False)
    assert _verdict_line(result, {1: "HW-1"}) == f"  -> {expect}"
