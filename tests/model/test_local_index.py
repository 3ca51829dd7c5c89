"""LocalIndex: LNBNN ranking on hand-made patterns, index updates, exact/approximate regimes."""

from __future__ import annotations

import numpy as np
import pytest

from model.local.features import extract
from model.local.index import LocalIndex, LocalResult
from model.local.verify import MIN_INLIERS
from tests.model.local_images import pattern, transformed

# (angle, scale, crop) of the gallery photos and of the query: the query's view is new to the gallery
GALLERY_VIEWS = [(10.0, 0.9, (10, 10, 20, 5)), (-15.0, 0.8, (40, 5, 10, 30))]
QUERY_VIEW = (30.0, 0.75, (25, 30, 15, 10))
N_INDIVIDUALS = 6


def view(seed: int, angle: float, scale: float, crop, noise: int):
    img, _ = transformed(pattern(seed), angle=angle, scale=scale, crop=crop, noise_seed=noise)
    return extract(img, None, max_keypoints=300)


@pytest.fixture(scope="module")
def gallery():
    """{photo_id: (individual_id, features)}: individuals 101..106, two photos each (ids 10*i + j)."""
    out = {}
    for i in range(N_INDIVIDUALS):
        for j, (a, s, c) in enumerate(GALLERY_VIEWS):
            out[10 * i + j] = (101 + i, view(i + 1, a, s, c, noise=100 * i + j))
    return out


@pytest.fixture(scope="module")
def query():
    """A new view of individual 104 (pattern seed 4)."""
    a, s, c = QUERY_VIEW
    return view(4, a, s, c, noise=999)


def filled(gallery, **kwargs) -> LocalIndex:
    idx = LocalIndex(**kwargs)
    idx.add_many((pid, ind, f) for pid, (ind, f) in gallery.items())
    return idx


def test_lnbnn_ranks_the_right_individual_first(gallery, query):
    idx = filled(gallery)
    assert len(idx) == 2 * N_INDIVIDUALS and sorted(idx.photo_ids()) == sorted(gallery)
    res = idx.search(query, k=5)
    assert isinstance(res, LocalResult) and res.n_query_features == len(query)
    top = res.candidates[0]
    assert top.individual_id == 104 and top.best_photo_id in (30, 31)
    assert top.inliers >= 20 and top.verified
    assert top.pairs.shape == (top.inliers, 4) and top.pairs.dtype == np.float32
    # its votes clearly beat the runner-up's, and no other individual verifies
    assert top.votes > 3 * res.candidates[1].votes
    assert all(c.inliers < MIN_INLIERS for c in res.candidates[1:])
    assert [c.score for c in res.candidates] == sorted((c.score for c in res.candidates), reverse=True)
    assert len({c.individual_id for c in res.candidates}) == len(res.candidates) <= 5
    # votes alone (no verification) rank it first too
    assert idx.search(query, verify_top=0).candidates[0].individual_id == 104


def test_pairs_are_true_correspondences(gallery, query):
    """Inlier pairs map query pixels to gallery pixels by the views' known poses."""
    idx = filled(gallery)
    top = idx.search(query).candidates[0]
    a, s, c = QUERY_VIEW
    _, m_q = transformed(pattern(4), angle=a, scale=s, crop=c)
    a, s, c = GALLERY_VIEWS[top.best_photo_id % 10]
    _, m_g = transformed(pattern(4), angle=a, scale=s, crop=c)
    # pattern -> query is m_q; pattern -> gallery is m_g: query -> gallery = m_g . m_q^-1
    inv = np.linalg.inv(np.vstack([m_q, [0, 0, 1]]))
    q2g = (np.vstack([m_g, [0, 0, 1]]) @ inv)[:2]
    proj = top.pairs[:, :2] @ q2g[:, :2].T + q2g[:, 2]
    assert np.median(np.linalg.norm(proj - top.pairs[:, 2:], axis=1)) < 2.0


def test_remove_and_relabel_change_the_result(gallery, query):
    idx = filled(gallery)
    idx.relabel(30, 999)
    res = idx.search(query, k=3)
    ids = [c.individual_id for c in res.candidates]
    assert ids[0] in (104, 999) and {104, 999} <= set(ids)
    idx.relabel(31, 999)
    res = idx.search(query, k=3)
    assert res.candidates[0].individual_id == 999 and 104 not in [c.individual_id for c in res.candidates]
    idx.remove(30)
    idx.remove(31)
    assert len(idx) == 2 * N_INDIVIDUALS - 2 and 30 not in idx
    res = idx.search(query, k=5)
    assert 999 not in [c.individual_id for c in res.candidates]
    assert all(c.inliers < MIN_INLIERS for c in res.candidates)
    # adding it back (as a new photo id) restores the match
    idx.add(77, 104, gallery[30][1])
    assert idx.search(query).candidates[0].individual_id == 104
    with pytest.raises(KeyError):
        idx.remove(30)


def test_add_replaces_an_existing_photo(gallery, query):
    idx = filled(gallery)
    n = idx.n_descriptors
    idx.add(30, 101, gallery[0][1])  # photo 30 now shows individual 101's marks
    idx.add(31, 101, gallery[1][1])
    assert len(idx) == 2 * N_INDIVIDUALS and idx.n_descriptors == n - len(gallery[30][1]) - len(gallery[31][1]) \
        + len(gallery[0][1]) + len(gallery[1][1])
    assert idx.search(query).candidates[0].inliers < MIN_INLIERS


def test_exclude_leaves_the_query_photo_out(gallery):
    idx = filled(gallery)
    ind, feats = gallery[30]
    with_self = idx.search(feats).candidates[0]
    assert with_self.best_photo_id == 30 and with_self.inliers > 100
    without = idx.search(feats, exclude={30}).candidates[0]
    assert without.individual_id == ind and without.best_photo_id == 31
    assert without.inliers < with_self.inliers


@pytest.mark.parametrize("pq", [False, True])
def test_approximate_index_agrees_with_exact(gallery, query, pq):
    exact = filled(gallery)
    approx = filled(gallery, exact_below=1000, pq_from=1000 if pq else 10**9, nprobe=64)
    assert exact.kind == "exact" and approx.kind == ("ivfpq" if pq else "ivf")
    a, b = exact.search(query), approx.search(query)
    assert b.candidates[0].individual_id == a.candidates[0].individual_id == 104
    assert b.candidates[0].inliers == a.candidates[0].inliers  # verification uses the photos' own features


def test_index_switches_kind_as_it_grows_and_shrinks(gallery, query):
    idx = LocalIndex(exact_below=2000)
    items = list(gallery.items())
    idx.add(*[items[0][0], *items[0][1]])
    assert idx.kind == "exact"
    for pid, (ind, f) in items[1:]:
        idx.add(pid, ind, f)  # crossing exact_below drops the exact index; the next search trains an IVF
    assert idx.kind == "ivf"
    assert idx.search(query).candidates[0].individual_id == 104
    for pid, _ in items[1:]:
        idx.remove(pid)
    assert idx.kind == "exact" and len(idx) == 1


def test_mirrored_query_needs_the_flip_aware_search(gallery):
    idx = filled(gallery)
    a, s, c = QUERY_VIEW
    img, _ = transformed(pattern(4), angle=a, scale=s, crop=c, noise_seed=5)
    flipped = np.ascontiguousarray(img[:, ::-1])
    plain = idx.search(extract(flipped, None, max_keypoints=300))
    # (ellipses look alike mirrored, so a few correspondences survive without the flip)
    aware = idx.search(extract(flipped, None, max_keypoints=300),
                       mirrored=extract(flipped, None, max_keypoints=300, mirror=True))
    top = aware.candidates[0]
    assert top.individual_id == 104 and top.inliers >= max(20, 3 * plain.candidates[0].inliers)
    assert top.votes > 2 * max(c.votes for c in plain.candidates)
    # the pairs are in the (flipped) query photo's own pixels: they lie inside it
    assert np.all((top.pairs[:, 0] >= 0) & (top.pairs[:, 0] < flipped.shape[1]))


def test_loader_keeps_features_out_of_memory(gallery, query):
    calls = []

    def load(pid):
        calls.append(pid)
        return gallery[pid][1]

    idx = LocalIndex(loader=load)
    idx.add_many((pid, ind, f) for pid, (ind, f) in gallery.items())
    assert all(p.feats is None for p in idx._photos.values())
    res = idx.search(query, verify_top=2, verify_photos=1)
    assert res.candidates[0].individual_id == 104
    assert set(calls) >= {res.candidates[0].best_photo_id}


def test_empty_cases(gallery, query):
    assert LocalIndex().search(query).candidates == []
    idx = filled(gallery)
    empty = extract(np.zeros((50, 50), np.uint8), None)
    res = idx.search(empty)
    assert res.candidates == [] and res.n_query_features == 0


def test_bad_inputs_are_refused(gallery, query):
    idx = LocalIndex()
    with pytest.raises(ValueError, match="outside"):
        idx.add(-1, 1, query)
    with pytest.raises(ValueError, match="mirrored"):
        idx.add(1, 1, extract(pattern(1), None, max_keypoints=50, mirror=True))
    with pytest.raises(ValueError, match="k must be"):
        LocalIndex(k=0)


def test_affine_verification_finds_the_same_individual(gallery, query):
    """An affine RANSAC (6 degrees of freedom) also verifies the rotated, scaled, cropped copy, with
    correspondences that follow the views' known poses. Its two extra degrees of freedom line up
    chance correspondences of different patterns more often (7 here against at most 6 for a
    similarity), far below the true match's."""
    idx = filled(gallery, transform="affine")
    res = idx.search(query)
    top = res.candidates[0]
    assert top.individual_id == 104 and top.inliers >= 20
    assert all(c.inliers <= 10 and 10 * c.inliers < top.inliers for c in res.candidates[1:])
    a, s, c = QUERY_VIEW
    _, m_q = transformed(pattern(4), angle=a, scale=s, crop=c)
    a, s, c = GALLERY_VIEWS[top.best_photo_id % 10]
    _, m_g = transformed(pattern(4), angle=a, scale=s, crop=c)
    q2g = (np.vstack([m_g, [0, 0, 1]]) @ np.linalg.inv(np.vstack([m_q, [0, 0, 1]])))[:2]
    proj = top.pairs[:, :2] @ q2g[:, :2].T + q2g[:, 2]
    assert np.median(np.linalg.norm(proj - top.pairs[:, 2:], axis=1)) < 2.0


def test_rank_by_votes_keeps_the_vote_order_and_the_evidence(gallery, query):
    """Made-up votes put individual 101 ahead of 104: ranked by inliers, the verified 104 comes first;
    ranked by votes, 101 stays first and 104 keeps its verified correspondences as evidence."""
    idx_inl, idx_votes = filled(gallery), filled(gallery, rank_by="votes")
    per_photo = {0: 5.0, 1: 4.0, 30: 2.0, 31: 1.0, 10: 0.5}
    votes = (per_photo, {101: 6.0, 104: 2.5, 102: 0.5})
    by_inliers = idx_inl.rank(query, votes)
    assert [c.individual_id for c in by_inliers.candidates] == [104, 101, 102]
    by_votes = idx_votes.rank(query, votes)
    assert [c.individual_id for c in by_votes.candidates] == [101, 104, 102]
    assert [c.score for c in by_votes.candidates] == [6.0, 2.5, 0.5]
    c104 = by_votes.candidates[1]
    assert c104.verified and c104.inliers >= 20 and c104.pairs.shape == (c104.inliers, 4)


def test_min_inliers_sets_what_counts_as_verified(gallery, query):
    top = filled(gallery).search(query).candidates[0]
    # just above the true match's inliers: nothing verifies, the ranking falls back to votes
    strict = filled(gallery, min_inliers=top.inliers + 1).search(query)
    assert all(c.inliers == 0 for c in strict.candidates)
    assert strict.candidates[0].individual_id == 104 and strict.candidates[0].score == pytest.approx(top.votes)
    assert filled(gallery, min_inliers=top.inliers).search(query).candidates[0].inliers == top.inliers


def test_bad_scoring_settings_are_refused(query):
    with pytest.raises(ValueError, match="transform"):
        LocalIndex(transform="homography")
    with pytest.raises(ValueError, match="rank_by"):
        LocalIndex(rank_by="photos")
    with pytest.raises(ValueError, match="min_inliers"):
        LocalIndex(min_inliers=2)
    from model.local.verify import verify

    with pytest.raises(ValueError, match="transform"):
        verify(query, query, transform="projective")


def test_default_depth_verifies_the_best_voted_photo_of_each_top_individual(gallery, query):
    """By default one photo (the best-voted) of each of up to DEFAULT_VERIFY_TOP individuals is verified."""
    from model.local.index import DEFAULT_VERIFY_PHOTOS, DEFAULT_VERIFY_TOP

    calls = []
    idx = LocalIndex(loader=lambda pid: calls.append(pid) or gallery[pid][1])
    idx.add_many((pid, ind, f) for pid, (ind, f) in gallery.items())
    assert idx.kind == "exact"  # built (the build reads every photo through the loader)
    calls.clear()
    per_photo, per_ind = idx.votes(query)
    res = idx.rank(query, (per_photo, per_ind), k=N_INDIVIDUALS)
    assert DEFAULT_VERIFY_PHOTOS == 1 and DEFAULT_VERIFY_TOP >= N_INDIVIDUALS
    assert len(calls) == len(per_ind) == N_INDIVIDUALS and all(c.verified for c in res.candidates)
    best_voted = {}
    for p, v in per_photo.items():
        ind = gallery[p][0]
        if v > per_photo.get(best_voted.get(ind, -1), -1.0):
            best_voted[ind] = p
    assert sorted(calls) == sorted(best_voted.values())
