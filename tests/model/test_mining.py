"""Pair miners on tiny score matrices whose hardest pairs are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.nets.heads import L1Head
from model.training.mining import AssignmentMiner, CurriculumMiner, score_matrix

# 6 images, individuals A A B B C C (labels 0 0 1 1 2 2)
LABELS = np.array([0, 0, 1, 1, 2, 2])


def _scores() -> np.ndarray:
    s = np.full((6, 6), 0.1)
    np.fill_diagonal(s, 1.0)
    # matched pairs: A is easy (0.9), B is hard (0.2), C is medium (0.6)
    s[0, 1] = s[1, 0] = 0.9
    s[2, 3] = s[3, 2] = 0.2
    s[4, 5] = s[5, 4] = 0.6
    # the hardest unmatched pairs (scored highest): (0,2) then (3,5), then (1,4)
    s[0, 2] = s[2, 0] = 0.95
    s[3, 5] = s[5, 3] = 0.8
    s[1, 4] = s[4, 1] = 0.7
    s[0, 4] = s[4, 0] = 0.65  # high, but 0 is already used by the hardest pair
    return s


def _unmatched(p):
    return {tuple(sorted((int(a), int(b)))) for a, b, t in zip(p.a, p.b, p.target) if t == 0}


def test_curriculum_full_hardness_picks_the_hand_computed_pairs():
    p = CurriculumMiner(1.0, 1.0)(_scores(), LABELS, 0, 3, np.random.default_rng(0))
    assert int(p.target.sum()) == 6 and len(p) == 12  # equal numbers
    un = _unmatched(p)
    # first greedy sweep (each image once): (0,2), (3,5), (1,4); the second starts with (0,4)
    assert {(0, 2), (3, 5), (1, 4), (0, 4)} <= un
    # with two photos per individual the hardest matched partner is the only one
    assert {(int(a), int(b)) for a, b, t in zip(p.a, p.b, p.target) if t == 1} == {
        (0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)}


def test_curriculum_hard_fraction_grows_over_epochs():
    m = CurriculumMiner(0.0, 1.0)
    assert m.ratio(0, 5) == 0.0 and m.ratio(4, 5) == 1.0 and 0 < m.ratio(2, 5) < 1
    rng = np.random.default_rng(1)
    s = _scores()
    hard = {(0, 2), (3, 5), (1, 4)}
    hits_first = np.mean([len(_unmatched(m(s, LABELS, 0, 5, rng)) & hard) for _ in range(50)])
    hits_last = np.mean([len(_unmatched(m(s, LABELS, 4, 5, rng)) & hard) for _ in range(5)])
    assert hits_last == 3
    assert hits_first < 2.5


def test_curriculum_matched_hardest_first():
    # individual A has three photos: 0-1 scored 0.9, 0-2 scored 0.1, 1-2 scored 0.5
    labels = np.array([0, 0, 0, 1])
    s = np.eye(4)
    s[0, 1] = s[1, 0] = 0.9
    s[0, 2] = s[2, 0] = 0.1
    s[1, 2] = s[2, 1] = 0.5
    p = CurriculumMiner(1.0, 1.0)(s, labels, 0, 1, np.random.default_rng(0))
    matched = {(int(a), int(b)) for a, b, t in zip(p.a, p.b, p.target) if t == 1}
    assert matched == {(0, 2), (2, 0), (1, 2)}


def test_assignment_miner_without_noise_is_the_optimal_assignment():
    p = AssignmentMiner(0.0, 0.0)(_scores(), LABELS, 0, 2, np.random.default_rng(0))
    un = _unmatched(p)
    # the assignment maximises the total unmatched score; every image appears; (0,2) is in it
    assert (0, 2) in un
    assert int(p.target.sum()) == 6 and len(p) - 6 <= 6
    for a, b, t in zip(p.a, p.b, p.target):
        assert (LABELS[a] == LABELS[b]) == bool(t)


def test_assignment_noise_shrinks_and_randomises():
    m = AssignmentMiner(10.0, 0.0)
    assert m.noise(0, 3) == 10.0 and m.noise(2, 3) == 0.0
    rng = np.random.default_rng(0)
    seen = {frozenset(_unmatched(m(_scores(), LABELS, 0, 3, rng))) for _ in range(20)}
    assert len(seen) > 1  # big noise: different assignments
    last = {frozenset(_unmatched(m(_scores(), LABELS, 2, 3, rng))) for _ in range(5)}
    assert len(last) == 1  # no noise: deterministic


@pytest.mark.parametrize("miner", [CurriculumMiner(0.5, 0.5), AssignmentMiner(0.1, 0.1)])
def test_miners_validate_inputs(miner):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="square"):
        miner(np.zeros((3, 4)), np.zeros(3), 0, 1, rng)
    with pytest.raises(ValueError, match="labels"):
        miner(np.zeros((3, 3)), np.zeros(4), 0, 1, rng)
    with pytest.raises(ValueError, match="NaN"):
        miner(np.full((2, 2), np.nan), np.array([0, 1]), 0, 1, rng)
    with pytest.raises(ValueError, match="epoch"):
        miner(np.zeros((2, 2)), np.array([0, 1]), 3, 2, rng)


def test_score_matrix_runs_the_head_over_all_pairs_in_blocks():
    head = L1Head(3)
    emb = torch.tensor([[0.0, 0, 0], [1, 1, 1], [0.1, 0, 0], [5, 5, 5]])
    full = score_matrix(head, emb, block=1000)
    small = score_matrix(head, emb, block=3)  # one row per block
    assert torch.allclose(full, small)
    with torch.no_grad():
        expect = torch.sigmoid(head(emb[1:2], emb[3:4]))
    assert torch.isclose(full[1, 3], expect[0])
    assert full[0, 2] > full[0, 1] > full[0, 3]  # closer embeddings score higher
    assert torch.all(torch.diagonal(full) == 1)
