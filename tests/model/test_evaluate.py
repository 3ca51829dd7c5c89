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


def test_all_split_one_query_per_multi_photo_individual():
    recs = make_records({"a": 1, "b": 2, "c": 3, "d": 5, "e": 1}, unknown=3)
    s = ev.make_split(recs, "all", seed=2)
    assert s == ev.all_split(recs, seed=2) and s.protocol == "all" and s.unmatched_individuals
    qind = sorted(recs[i].individual for i in s.queries)
    assert qind == ["b", "c", "d"]  # one per individual with 2+ photos, none for singletons/unknowns
    assert set(s.queries).isdisjoint(s.gallery)
    assert set(s.gallery) | set(s.queries) == set(range(len(recs)))  # every other photo is in the gallery
    assert s.train == ()  # training-free
    gal_ind = [recs[i].individual for i in s.gallery]
    assert {"a", "e"} <= set(gal_ind) and gal_ind.count("unknown") == 3  # singletons and unknowns: distractors
    assert all(q in gal_ind for q in qind)
    # each unidentified gallery photo is an individual of its own; known photos keep their id
    gids = ev.gallery_ids_of(recs, s)
    unknown_ids = [g for i, g in zip(s.gallery, gids) if not recs[i].id_known]
    assert len(set(unknown_ids)) == 3 and all(g.startswith(ev.UNMATCHED_PREFIX) for g in unknown_ids)
    assert ev.gallery_ids_of(recs, ev.make_split(recs, "open", 0)).count(None) == 3  # open: never ranked
    summary = s.summary(recs)
    assert summary["gallery_unidentified"] == 3 and summary["queries"] == 3
    # the query choice follows the seed
    assert any(ev.all_split(recs, seed=k).queries != s.queries for k in range(5))


def test_all_split_unmatched_photo_can_take_a_top5_place():
    recs = make_records({"a": 2, "b": 2}, unknown=1)
    s = ev.all_split(recs, seed=0)
    gids = ev.gallery_ids_of(recs, s)
    # the unidentified photo scores highest for every query: it ranks first, the truth second
    scores = np.array([[0.9 if g is not None and g.startswith(ev.UNMATCHED_PREFIX) else
                        (0.5 if g == recs[q].individual else 0.1) for g in gids] for q in s.queries])
    res = ev.evaluate_split_scores(recs, s, scores)
    assert list(res.ranks) == [2, 2]
    assert res.overall.top1 == 0.0 and res.overall.top5 == 1.0


def test_too_few_individuals_is_a_data_error():
    with pytest.raises(DataError):
        ev.seed_split(make_records({"a": 3, "b": 1}))
    with pytest.raises(DataError):
        ev.open_split(make_records({"a": 3, "b": 3}))
    with pytest.raises(DataError):
        ev.all_split(make_records({"a": 3, "b": 1}, unknown=4))
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


# --- local features, embedding and fusion side by side ----------------------------------------

@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """12 synthetic individuals x 3 photos (model.data.synthetic), small photos: seconds to match."""
    from model.api import generate_dataset, read_labels

    labels = generate_dataset(tmp_path_factory.mktemp("syn") / "set", 12, seed=3, photos=3, size=(384, 256))
    return read_labels(labels).records


def test_local_features_rank_synthetic_individuals_far_above_chance(synthetic_set):
    res = ev.evaluate_methods(synthetic_set, "all", seed=0)
    assert list(res) == ["local"]  # no bundle: local features alone
    r = res["local"]
    assert r.overall.n == 12 and r.info["gallery_photos"] == 24 and r.info["method"] == "local"
    # chance is 1/12 top-1 and 5/12 top-5; a working LNBNN + verification is near perfect here
    assert r.overall.top1 >= 0.75 and r.overall.top5 >= 0.9
    assert r.info["descriptors"] > 0 and r.info["index"] == "exact"
    # the seed protocol runs on the same code path
    assert ev.evaluate_methods(synthetic_set, "seed", seed=0)["local"].overall.top5 >= 0.9


def test_evaluate_local_on_given_features_is_what_evaluate_methods_measures(synthetic_set):
    """evaluate_local on precomputed features (a bench's cache) gives evaluate_methods' local row; its
    index settings and verification depth change the ranking it measures."""
    from model.local.index import LocalIndex

    split = ev.make_split(synthetic_set, "seed", 0)
    need = ev.local_feature_records(synthetic_set, split)
    assert set(need) == set(split.gallery) | set(split.queries)
    feats = ev.local_features_of(synthetic_set, need)
    direct = ev.evaluate_methods(synthetic_set, "seed", seed=0)["local"]
    r, index, results = ev.evaluate_local(synthetic_set, split, feats, k=5)
    assert np.array_equal(r.ranks, direct.ranks) and r.overall.to_dict() == direct.overall.to_dict()
    assert len(index) == len(split.gallery) and len(results) == len(split.queries)
    assert r.info["method"] == "local" and r.info["query_ms"] > 0
    # an index already filled by fill_local_index, with its votes, gives the same ranking
    again = ev.fill_local_index(LocalIndex(), synthetic_set, split, feats)
    votes = again.votes_many([feats[q] for q in split.queries])
    r2, same, _ = ev.evaluate_local(synthetic_set, split, feats, k=5, index=again, votes=votes)
    assert same is again and len(again) == len(split.gallery) and np.array_equal(r2.ranks, r.ranks)
    with pytest.raises(ValueError, match="votes"):
        ev.evaluate_local(synthetic_set, split, feats, index=again, votes=votes[:-1])
    # no verification and votes alone: the ranking is the LNBNN votes', with nothing verified
    votes_only, _, res_v = ev.evaluate_local(synthetic_set, split, feats, k=5, index=LocalIndex(rank_by="votes"),
                                             verify_top=0)
    assert not any(c.verified or c.inliers for res in res_v for c in res.candidates)
    expected = []
    names = sorted({str(synthetic_set[g].individual) for g in split.gallery})
    for q in split.queries:
        truth = str(synthetic_set[q].individual)
        votes = index.votes(feats[q])[1]  # the same gallery: individual code -> votes
        t = votes.get(names.index(truth), -np.inf)
        expected.append(1 + sum(v >= t for v in votes.values()) - 1 if np.isfinite(t) else np.inf)
    assert list(votes_only.ranks) == expected


def test_local_unmatched_duplicate_is_a_distractor_in_protocol_all(synthetic_set, tmp_path):
    """An unidentified copy of a query photo is ranked as an individual of its own under 'all': it
    takes rank 1 and pushes the (verified) true individual to rank 2."""
    import shutil

    from model.data.records import LabelledPhoto
    from model.local.features import extract
    from model.local.verify import verify

    split = ev.all_split(synthetic_set, 0)
    cache: dict = {}

    def feats(i):
        if i not in cache:
            cache[i] = extract(*ev.decode_record(synthetic_set[i], ev.LOCAL_MAX_SIDE))
        return cache[i]

    def best_inliers(q):
        same = [g for g in split.gallery if synthetic_set[g].individual == synthetic_set[q].individual]
        return max(verify(feats(q), feats(g)).inliers for g in same)

    strength = [best_inliers(q) for q in split.queries]
    j = int(np.argmax(strength))  # the query with the strongest verified match: it stays verified
    assert strength[j] >= 10
    q = split.queries[j]
    copy = tmp_path / "copy.jpg"
    shutil.copy(synthetic_set[q].path, copy)
    recs = list(synthetic_set) + [LabelledPhoto(copy, None, synthetic_set[q].box, False)]
    assert ev.all_split(recs, 0).queries == split.queries
    r = ev.evaluate_methods(recs, "all", seed=0)["local"]
    assert r.info["gallery_unidentified"] == 1
    assert r.ranks[j] == 2  # the copy first, the true individual second


def test_three_methods_with_a_bundle(synthetic_set, tiny_bundle):
    res = ev.evaluate_methods(synthetic_set, "all", seed=0, bundle=tiny_bundle, device="cpu")
    assert list(res) == ["local", "embedding", "fused"]
    assert all(r.overall.n == 12 for r in res.values())
    # the embedding row is the bundle's own scoring
    alone = ev.evaluate_bundle(tiny_bundle, synthetic_set, "all", seed=0, device="cpu")
    assert list(res["embedding"].ranks) == list(alone.ranks)
    # fusing strong local evidence with an untrained tiny embedding stays far above chance (1/12)
    assert res["fused"].overall.top5 >= 0.75
    assert res["fused"].info["shortlist"] == 10
    only = ev.evaluate_methods(synthetic_set, "all", seed=0, bundle=tiny_bundle, device="cpu", local=False)
    assert list(only) == ["embedding"]
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ev.evaluate_methods(synthetic_set, "all", local=False)
    table = ev.format_comparison(res)
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["local", "embedding", "fused"]


def test_fused_row_ranks_only_the_shortlist(synthetic_set, tiny_bundle):
    """With a shortlist of 1 per signal, at most two individuals are ranked per query: a query whose
    individual neither signal puts first is a miss even for top-5."""
    res = ev.evaluate_methods(synthetic_set, "all", seed=0, bundle=tiny_bundle, device="cpu", shortlist=1)
    ranks = res["fused"].ranks
    assert np.all((ranks <= 2) | ~np.isfinite(ranks))
    hit = (res["local"].ranks == 1) | (res["embedding"].ranks == 1)
    assert np.array_equal(np.isfinite(ranks), hit)
