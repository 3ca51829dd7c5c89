"""Protocols and metrics of model.evaluate on hand-made data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from model import evaluate as ev
from model.data.records import LabelledPhoto
from model.errors import DataError


def make_records(sizes: dict[str, int], unknown: int = 0) -> list[LabelledPhoto]:
    recs = [LabelledPhoto(f"{k}_{i}.png", k) for k, n in sizes.items() for i in range(n)]
    recs += [LabelledPhoto(f"u_{i}.png", "unknown", None, False) for i in range(unknown)]
    return recs


# --- metrics ---------------------------------------------------------------------------------

def test_metrics_known_ranks():
    # gallery: a, a, b, c, d, e, f ; queries with true ids a, b, c
    gallery = ["a", "a", "b", "c", "d", "e", "f"]
    scores = np.array([
        [0.1, 0.9, 0.5, 0.2, 0.0, 0.0, 0.0],  # a best (via its 2nd photo) -> rank 1
        [0.9, 0.1, 0.5, 0.8, 0.0, 0.0, 0.0],  # a 0.9, c 0.8, b 0.5 -> rank 3
        [0.9, 0.9, 0.8, 0.1, 0.7, 0.6, 0.5],  # a, b, d, e, f ahead of c -> rank 6
    ])
    res = ev.evaluate_scores(scores, ["a", "b", "c"], gallery)
    assert list(res.ranks) == [1, 3, 6]
    assert res.overall.n == 3
    assert res.overall.top1 == pytest.approx(1 / 3)
    assert res.overall.top5 == pytest.approx(2 / 3)
    assert res.overall.map5 == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_ties_count_against_the_query():
    res = ev.evaluate_scores(np.zeros((2, 4)), ["a", "b"], ["a", "b", "c", "d"])
    assert list(res.ranks) == [4, 4]
    assert res.overall.top1 == 0.0


def test_unknown_rows_are_never_positives():
    # the unknown gallery photo scores highest but is not ranked; an unknown query is skipped
    scores = np.array([[0.99, 0.5, 0.4], [0.9, 0.1, 0.2]])
    res = ev.evaluate_scores(scores, ["a", None], [None, "a", "b"])
    assert res.overall.n == 1
    assert list(res.ranks) == [1]
    # two unknown photos with the same "id" do not match each other either
    res2 = ev.evaluate_scores(np.array([[0.9, 0.1]]), [None], [None, "a"])
    assert res2.overall.n == 0


def test_missing_positive_is_a_miss():
    res = ev.evaluate_scores(np.array([[0.5, 0.4]]), ["z"], ["a", "b"])
    assert res.overall.top5 == 0.0 and res.info["queries_without_positive"] == 1


def test_split_by_photos_per_individual():
    gallery = ["a", "b", "c"]
    scores = np.eye(3)[[0, 1, 2]] * 1.0
    scores[2] = [1.0, 0.5, 0.0]  # c ranked 3rd
    res = ev.evaluate_scores(scores, ["a", "b", "c"], gallery, counts={"a": 2, "b": 4, "c": 7})
    assert set(res.by_photos) == {"1-2", "3-5", "6+"}
    assert res.by_photos["1-2"].top1 == 1.0 and res.by_photos["3-5"].top1 == 1.0
    assert res.by_photos["6+"].top1 == 0.0 and res.by_photos["6+"].top5 == 1.0
    assert res.by_photos["6+"].map5 == pytest.approx(1 / 3)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        ev.evaluate_scores(np.zeros((2, 3)), ["a"], ["a", "b", "c"])


def test_random_baseline_near_chance():
    recs = make_records({f"i{k}": 6 for k in range(50)})
    res = ev.evaluate_random(recs, "seed", seed=1)
    assert 0.0 < res.overall.top5 < 0.3  # chance is 5/50 = 10%


# --- protocols -------------------------------------------------------------------------------

def test_seed_split_deterministic_and_leak_free():
    recs = make_records({"a": 1, "b": 2, "c": 3, "d": 9, "e": 6}, unknown=3)
    s1, s2 = ev.seed_split(recs, seed=4), ev.seed_split(recs, seed=4)
    assert s1 == s2
    assert set(s1.queries).isdisjoint(s1.gallery)
    assert s1.train == s1.gallery
    used = set(s1.queries) | set(s1.gallery)
    assert all(recs[i].id_known and recs[i].individual != "a" for i in used)  # singletons, unknowns out
    for k, n in {"b": 2, "c": 3, "d": 9, "e": 6}.items():
        g = sum(recs[i].individual == k for i in s1.gallery)
        q = sum(recs[i].individual == k for i in s1.queries)
        assert g >= 1 and q >= 1 and g + q == n
        assert g == min(n - 1, max(1, round(n * 2 / 3)))


def test_seed_split_varies_with_seed():
    recs = make_records({f"i{k}": 9 for k in range(10)})
    assert ev.seed_split(recs, 0).queries != ev.seed_split(recs, 1).queries


def test_open_split_leak_free():
    recs = make_records({f"i{k}": 2 + k % 5 for k in range(20)} | {"single": 1}, unknown=2)
    s = ev.open_split(recs, seed=3, unseen_fraction=0.25)
    assert s == ev.open_split(recs, seed=3, unseen_fraction=0.25)
    qind = [recs[i].individual for i in s.queries]
    assert len(qind) == len(set(qind)) == 5  # one query per unseen individual
    train_ind = {recs[i].individual for i in s.train}
    assert train_ind.isdisjoint(qind)
    assert set(s.queries).isdisjoint(s.gallery)
    assert set(s.gallery) | set(s.queries) == set(range(len(recs)))
    # each query's individual still has a photo in the gallery; distractors are there
    gal_ind = [recs[i].individual for i in s.gallery]
    assert all(q in gal_ind for q in qind)
    assert "single" in gal_ind and "unknown" in gal_ind
    assert all(recs[i].id_known for i in s.train)


def test_too_few_individuals_is_a_data_error():
    with pytest.raises(DataError):
        ev.seed_split(make_records({"a": 3, "b": 1}))
    with pytest.raises(DataError):
        ev.open_split(make_records({"a": 3, "b": 3}))
    with pytest.raises(ValueError):
        ev.make_split(make_records({"a": 3, "b": 3}), "closed")


def test_perfect_scores_on_split():
    recs = make_records({f"i{k}": 4 for k in range(8)})
    split = ev.seed_split(recs, 0)
    q = [recs[i].individual for i in split.queries]
    g = [recs[i].individual for i in split.gallery]
    scores = np.array([[1.0 if a == b else 0.0 for b in g] for a in q])
    res = ev.evaluate_split_scores(recs, split, scores)
    assert res.overall.top1 == 1.0 and res.overall.map5 == 1.0
    assert res.info["query_individuals"] == 8


# --- bundles ---------------------------------------------------------------------------------

def test_evaluate_bundle_runs_on_tiny_bundle(tiny_bundle, tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    recs = []
    for k in range(4):
        base = (rng.random((40, 60)) * 255).astype(np.uint8)
        for j in range(3):
            img = np.clip(base.astype(int) + rng.integers(-5, 6, base.shape), 0, 255).astype(np.uint8)
            p = tmp_path / f"w{k}_{j}.png"
            cv2.imwrite(str(p), img)
            recs.append(LabelledPhoto(str(p), f"w{k}", (2.0, 2.0, 58.0, 38.0) if j == 0 else None))
    res = ev.evaluate_bundle(tiny_bundle, recs, "seed", seed=0, flip=True, device="cpu")
    assert res.overall.n == 4
    assert 0.0 <= res.overall.top1 <= res.overall.top5 <= 1.0
    assert res.info["gallery_photos"] == 8
    assert "top-5" in ev.format_result(res)


def test_cli_evaluate_prints_metrics(tiny_bundle, tmp_path, capsys):
    import cv2

    from app.cli import main

    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    rows = ["image,individual_id,id_known"]
    for k in range(3):
        for j in range(3):
            cv2.imwrite(str(tmp_path / "images" / f"w{k}_{j}.png"), (rng.random((30, 40)) * 255).astype(np.uint8))
            rows.append(f"w{k}_{j}.png,w{k},1")
    rows.append("missing.png,w9,1")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    rc = main(["evaluate", "--bundle", str(tiny_bundle), "--data", str(tmp_path / "labels.csv"),
               "--images", str(tmp_path / "images"), "--protocol", "seed", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0
    assert "top-1" in out.out and "top-5" in out.out and "MAP@5" in out.out and "queries 3" in out.out
    assert "missing.png" in out.err
    rc = main(["evaluate", "--bundle", str(tmp_path / "nope"), "--data", str(tmp_path / "labels.csv"),
               "--images", str(tmp_path / "images")])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_shipped_demo_bundle_is_small_verified_and_measured():
    from pathlib import Path

    from model.bundle import verify_bundle
    from model.inference import Engine

    demo = Path(__file__).resolve().parents[2] / "resources" / "models" / "demo"
    manifest = verify_bundle(demo)
    assert sum(p.stat().st_size for p in demo.iterdir()) < 20 * 1024 * 1024
    assert "synthetic" in manifest["training"]["data"]
    held = manifest["metrics"]["synthetic_heldout_seed"]
    assert held["n"] > 0 and 0.0 <= held["top1"] <= held["top5"] <= 1.0
    engine = Engine.load(demo, "cpu")
    img = (np.random.default_rng(0).random((120, 200, 3)) * 255).astype(np.uint8)
    emb = engine.embed([img, img], [None, (10.0, 10.0, 190.0, 110.0)])
    assert emb.shape == (2, engine.embedding_dim) and np.isfinite(emb).all()
    if "detector" in manifest:
        assert (demo / "detector.onnx").is_file()
