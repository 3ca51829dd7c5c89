"""bench_local's scoring sweep reads one set of verifications for many settings: it must rank exactly as
a plain LocalIndex with each setting does (hand-made patterns, no shared data)."""

from __future__ import annotations

import pytest

from bench.bench_local import RAW_MIN_INLIERS, _MemoVerifyIndex
from model.local.features import extract
from model.local.index import LocalIndex
from tests.model.local_images import pattern, transformed


def _view(seed: int, angle: float, scale: float, crop, noise: int):
    img, _ = transformed(pattern(seed), angle=angle, scale=scale, crop=crop, noise_seed=noise)
    return extract(img, None, max_keypoints=300)


@pytest.fixture(scope="module")
def data():
    gallery = {10 * i + j: (100 + i, _view(i + 1, a, s, c, noise=10 * i + j))
               for i in range(4) for j, (a, s, c) in enumerate([(10.0, 0.9, (10, 10, 20, 5)), (-15.0, 0.8, (40, 5, 10, 30))])}
    queries = {1000: _view(2, 30.0, 0.75, (25, 30, 15, 10), noise=99), 1001: _view(3, -25.0, 0.85, (5, 20, 30, 5), noise=98)}
    return gallery, queries


@pytest.mark.parametrize("transform", ["similarity", "affine"])
def test_memo_index_ranks_as_a_plain_index_for_every_setting(data, transform):
    gallery, queries = data
    memo: dict = {}
    memo_idx = _MemoVerifyIndex({id(f): q for q, f in queries.items()}, memo, transform=transform)
    memo_idx.add_many((p, ind, f) for p, (ind, f) in gallery.items())
    for min_inliers in (RAW_MIN_INLIERS, 7, 40):
        for rank_by in ("inliers", "votes"):
            plain = LocalIndex(transform=transform, min_inliers=min_inliers, rank_by=rank_by)
            plain.add_many((p, ind, f) for p, (ind, f) in gallery.items())
            memo_idx.min_inliers, memo_idx.rank_by = min_inliers, rank_by
            for f in queries.values():
                for top, photos in ((2, 1), (4, 2)):
                    a = plain.search(f, verify_top=top, verify_photos=photos)
                    b = memo_idx.search(f, verify_top=top, verify_photos=photos)
                    assert [(c.individual_id, c.best_photo_id, c.inliers, c.score) for c in a.candidates] == \
                        [(c.individual_id, c.best_photo_id, c.inliers, c.score) for c in b.candidates]
    # each (query, photo) was verified once, and read again by each of the 6 (min_inliers, rank_by) settings
    assert 0 < len(memo) <= len(queries) * len(gallery) and memo_idx.calls >= 6 * len(memo)
    assert all(k[2] == transform for k in memo) and memo_idx.cpu_seconds > 0
    # the true individual verifies (queries are views of patterns 2 and 3: individuals 101 and 102)
    memo_idx.min_inliers, memo_idx.rank_by = 7, "inliers"
    assert memo_idx.search(queries[1000]).candidates[0].individual_id == 101
    assert memo_idx.search(queries[1001]).candidates[0].individual_id == 102
