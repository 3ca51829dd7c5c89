"""Calibration of local scores: held-out probabilities on synthetic pairs, thresholds, storage, diagram."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from model.errors import DataError
from model.local.calibration import (
    LOCAL_FEATURES,
    Calibrator,
    best_match_threshold,
    calibration_pairs,
    candidate_features,
    default_calibrator,
    expected_calibration_error,
    load_calibrator,
    save_calibrator,
    write_reliability_diagram,
)
from model.local.index import LocalCandidate, LocalResult

TRUE_W = np.array([1.5, -1.0, 0.8])
TRUE_B = -0.5


def synthetic_pairs(n: int, seed: int):
    """Inputs and labels drawn from a known logistic model (so the true probabilities are known)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 3)) * [1.0, 2.0, 0.5] + [0.5, 0.0, 1.0]
    p = 1 / (1 + np.exp(-(x @ TRUE_W + TRUE_B)))
    return x, (rng.random(n) < p).astype(float), p


def test_held_out_probabilities_are_calibrated():
    x, y, _ = synthetic_pairs(3000, seed=0)
    cal = Calibrator().fit(x, y, ["a", "b", "c"])
    xt, yt, pt = synthetic_pairs(3000, seed=1)
    p = cal.predict_proba(xt)
    assert expected_calibration_error(p, yt) < 0.05
    assert np.max(np.abs(p - pt)) < 0.08  # close to the true probabilities everywhere
    # the cross-validated probabilities of the fitting data are calibrated too
    assert expected_calibration_error(cal.cv_proba, y) < 0.05
    # a constant 0.5 is badly calibrated on the same data: the ECE can tell
    assert expected_calibration_error(np.full(len(yt), 0.9), yt) > 0.2


def test_best_match_threshold_reaches_its_precision_on_held_out_data():
    rng = np.random.default_rng(3)
    n_queries = 1500
    # each query has one top candidate; its input is higher when it is right
    right = rng.random(n_queries) < 0.6
    x = (np.where(right, 2.0, 0.0) + rng.normal(0, 1.2, n_queries))[:, None]
    top = np.ones(n_queries, bool)
    cal = Calibrator().fit(x[:750], right[:750].astype(float), ["s"], top=top[:750], matchable=top[:750])
    t = cal.best_match_threshold
    assert t is not None and 0.5 < t < 1.0
    p = cal.predict_proba(x[750:])
    banner = p >= t
    assert banner.sum() > 100
    assert right[750:][banner].mean() >= 0.92  # the target is 0.95 on the fitting data, by cross-validation
    # about 5% of (matchable) queries fall under the new-individual threshold
    assert 0.02 <= np.mean(p < cal.new_individual_threshold) <= 0.09
    assert cal.new_individual_threshold <= t


def test_best_match_threshold_by_hand():
    p = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    ok = np.array([1, 1, 1, 1, 1, 0, 1])
    assert best_match_threshold(p, ok, 0.95, min_support=1) == 0.7
    assert best_match_threshold(p, ok, 0.8, min_support=1) == 0.5
    assert best_match_threshold(p, np.zeros(7), 0.95) is None
    assert best_match_threshold(p, ok, 0.95, min_support=6) is None


def test_round_trip_and_bad_dicts():
    x, y, _ = synthetic_pairs(400, seed=2)
    cal = Calibrator().fit(x, y, ["a", "b", "c"], top=np.arange(400) % 5 == 0, source="synthetic")
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["version"] == 1 and d["n_pairs"] == 400 and d["feature_names"] == ["a", "b", "c"]
    back = Calibrator.from_dict(d)
    assert np.allclose(back.predict_proba(x), cal.predict_proba(x))
    assert back.best_match_threshold == cal.best_match_threshold and back.source == "synthetic"
    with pytest.raises(DataError, match="version"):
        Calibrator.from_dict({**d, "version": 99})
    with pytest.raises(DataError, match="not a local-feature calibration"):
        Calibrator.from_dict({"kind": "isotonic"})
    with pytest.raises(DataError, match="missing"):
        Calibrator.from_dict({k: v for k, v in d.items() if k != "coef"})
    with pytest.raises(DataError, match="3 inputs"):
        Calibrator.from_dict({**d, "coef": [1.0]})
    with pytest.raises(DataError, match="non-finite"):
        Calibrator.from_dict({**d, "mean": [float("nan"), 0, 0]})
    with pytest.raises(DataError, match="not probabilities"):
        Calibrator.from_dict({**d, "best_match_threshold": 3.0})
    with pytest.raises(ValueError, match="takes 3"):
        cal.predict_proba(np.zeros((2, 4)))


def test_fit_refuses_one_class():
    with pytest.raises(DataError, match="at least 2 matching"):
        Calibrator().fit(np.zeros((10, 1)), np.zeros(10), ["s"])


def _result(cands):
    return LocalResult([LocalCandidate(ind, ind * 10, v, n, np.zeros((0, 4), np.float32), v + n) for ind, v, n in cands],
                       300)


def test_candidate_features_and_pairs():
    res = _result([(7, 40.0, 30), (8, 10.0, 0), (9, 5.0, 0)])
    x, names = candidate_features(res, {"embedding": [0.9, 0.2, 0.1]})
    assert names == [*LOCAL_FEATURES, "embedding"]
    assert x[0, 0] == pytest.approx(np.log1p(40)) and x[0, 1] == pytest.approx(np.log1p(30))
    assert x[0, 2] == pytest.approx(np.log1p(40) - np.log1p(10))  # the top stands above the runner-up
    assert x[1, 2] == pytest.approx(np.log1p(10) - np.log1p(40))  # the others below the top
    assert x[0, 3] > 0 and x[1, 3] < 0 and x[2, 4] == pytest.approx(0.1)
    pairs = calibration_pairs([res, _result([(8, 9.0, 0), (7, 3.0, 0)]), res], [7, 7, None])
    assert pairs.y.tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    assert pairs.rank.tolist() == [1, 2, 3, 1, 2, 1, 2, 3]
    assert pairs.matchable.tolist() == [True] * 5 + [False] * 3
    assert pairs.top.sum() == 3 and pairs.query.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_probabilities_rank_with_the_scores():
    rng = np.random.default_rng(0)
    results, truths = [], []
    for _ in range(300):
        right = rng.random() < 0.7
        v = [rng.uniform(30, 80) if right else rng.uniform(5, 20), rng.uniform(5, 20), rng.uniform(1, 5)]
        n = [int(rng.integers(10, 60)) if right else 0, 0, 0]
        results.append(_result([(1, v[0], n[0]), (2, v[1], n[1]), (3, v[2], n[2])]))
        truths.append(1 if right else 99)
    pairs = calibration_pairs(results, truths, matchable=[True] * 300)
    cal = Calibrator().fit(pairs.X, pairs.y, pairs.feature_names, groups=pairs.query, top=pairs.top,
                           matchable=pairs.matchable)
    p = cal.probabilities(results[0])
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    strong = cal.probabilities(_result([(1, 70.0, 50), (2, 10.0, 0)]))
    weak = cal.probabilities(_result([(1, 12.0, 0), (2, 10.0, 0)]))
    assert strong[0] > 0.9 > 0.5 > weak[0]
    assert cal.verdict(strong[0]) == "best_match"
    with pytest.raises(ValueError, match="takes"):
        cal.probabilities(results[0], {"embedding": [1, 2, 3]})


def test_reliability_diagram_png(tmp_path):
    x, y, _ = synthetic_pairs(500, seed=4)
    cal = Calibrator().fit(x, y, ["a", "b", "c"])
    out = tmp_path / "rel.png"
    write_reliability_diagram(out, cal.cv_proba, y, title="synthetic")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 400
    assert (img < 128).any() and (img == 255).mean() > 0.5  # something drawn on a white page


def test_save_load_and_bad_files(tmp_path):
    x, y, _ = synthetic_pairs(300, seed=5)
    cal = Calibrator().fit(x, y, ["a", "b", "c"])
    path = tmp_path / "cal" / "calibration.json"
    save_calibrator(cal, path)
    assert np.allclose(load_calibrator(path).predict_proba(x), cal.predict_proba(x))
    with pytest.raises(DataError, match="not found"):
        load_calibrator(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: cannot read"):
        load_calibrator(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "logistic", "version": 7}')
    with pytest.raises(DataError, match="other.json: calibration version 7"):
        load_calibrator(tmp_path / "other.json")


def test_default_calibration_if_shipped_is_synthetic_and_valid():
    cal = default_calibrator()
    if cal is None:
        pytest.skip("no default calibration shipped")
    assert "synthetic" in cal.source and cal.feature_names == list(LOCAL_FEATURES)
    assert cal.best_match_threshold is not None and cal.new_individual_threshold is not None
    # a clearly verified top candidate is a best match; an unverified, barely-voted one is not
    strong = cal.probabilities(_result([(1, 60.0, 80), (2, 8.0, 0)]))[0]
    weak = cal.probabilities(_result([(1, 3.0, 0), (2, 2.9, 0)]))[0]
    assert cal.verdict(strong) == "best_match" and cal.verdict(weak) != "best_match"
