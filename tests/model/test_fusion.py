"""model.fusion: the uncalibrated z-scored fusion of local evidence and the embedding score."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from model.fusion import fuse_plain, fuse_shortlist, zscore
from model.local.index import LocalCandidate, LocalResult


def test_zscore_and_plain_fusion():
    assert np.allclose(zscore([1.0, 2.0, 3.0]), [-1.2247449, 0.0, 1.2247449])
    assert np.array_equal(zscore([5.0, 5.0]), [0.0, 0.0])  # no spread: no information, no NaN
    assert zscore([]).shape == (0,)
    # the embedding decides when local evidence is flat, and the two add otherwise
    assert np.argmax(fuse_plain([3.0, 3.0, 3.0], [0.1, 0.9, 0.5])) == 1
    f = fuse_plain([10.0, 0.0], [0.0, 1.0])
    assert f[0] == pytest.approx(f[1])  # one standard deviation each way: a tie
    with pytest.raises(ValueError):
        fuse_plain([1.0], [1.0, 2.0])


@dataclass
class FakeIndex:
    """What fuse_shortlist reads of a LocalIndex: photos, their individuals and features."""

    photos: dict[int, int]  # photo -> individual
    feats: dict[int, str] = field(default_factory=dict)

    def __len__(self):
        return len(self.photos)

    def __contains__(self, p):
        return p in self.photos

    def photo_ids(self):
        return list(self.photos)

    def individual_of(self, p):
        return self.photos[p]

    def features(self, p):
        return f"feats-{p}"


@dataclass
class FakeVerification:
    inliers: int
    pairs: np.ndarray


def test_shortlist_is_the_union_of_both_signals_scored_by_both():
    index = FakeIndex({10: 1, 11: 1, 20: 2, 30: 3, 40: 4})
    local = LocalResult([LocalCandidate(1, 10, votes=8.0, inliers=20, pairs=np.zeros((20, 4), np.float32),
                                        score=1e6 + 28.0, verified=True),
                         LocalCandidate(2, 20, votes=3.0, inliers=0, pairs=np.zeros((0, 4), np.float32),
                                        score=3.0, verified=True)],
                        n_query_features=100, photo_votes={10: 6.0, 11: 7.5, 20: 3.0, 30: 1.0, 40: 0.5})
    verified = []

    def verify(q, g):
        verified.append((q, g))
        return FakeVerification(9, np.ones((9, 4), np.float32))

    asked = []

    def emb_score(ind):
        asked.append(ind)
        return {1: (0.2, 11), 2: (0.1, 20)}[ind]

    # the embedding proposes 3 (which local features did not) and 2 (which they did)
    rows = fuse_shortlist(index, "query", local, [(3, 30, 0.95), (2, 20, 0.3)], emb_score, verify=verify)
    by = {r.individual: r for r in rows}
    assert set(by) == {1, 2, 3}
    assert asked == [1]  # only the individual the embedding did not propose is looked up
    assert verified == [("query", "feats-30")]  # only the embedding-only individual is verified here
    assert by[3].votes == 1.0 and by[3].inliers == 9 and by[3].local_score == 10.0 and not by[3].from_local
    assert by[2].embedding_score == 0.3 and by[2].embedding_photo == 20 and by[2].from_local
    assert by[1].embedding_score == 0.2 and by[1].embedding_photo == 11 and by[1].local_score == 1e6 + 28.0
    expected = zscore([28.0, 3.0, 10.0]) + zscore([0.2, 0.3, 0.95])
    assert [by[i].fused for i in (1, 2, 3)] == pytest.approx(list(expected))
    assert [r.fused for r in rows] == sorted((r.fused for r in rows), reverse=True)


def test_without_local_search_the_embedding_alone_orders():
    rows = fuse_shortlist(FakeIndex({}), "query", None, [(5, 50, 0.4), (6, 60, 0.9)],
                          lambda ind: (0.0, None))
    assert [r.individual for r in rows] == [6, 5]
    assert all(r.votes == 0.0 and r.inliers == 0 for r in rows)
