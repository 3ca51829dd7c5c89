"""Pair miners: which matched and unmatched pairs an epoch trains on, harder first as epochs pass.

Every epoch the training images are embedded ONCE and the head scores all candidate pairs in
blocks (:func:`score_matrix`); a miner then only picks pairs from that score matrix. Miners are
small and checked (shapes validated, ``no_grad``, output checked), after pytorch-metric-learning:

- :class:`CurriculumMiner` (the paper): equal numbers of matched and unmatched pairs; a fraction
  r of each is the greedily hardest (matched: lowest score, unmatched: highest), the rest random;
  r grows linearly from ``r_start`` to ``r_end`` over the epochs.
- :class:`AssignmentMiner` (the kernel): ``scipy.optimize.linear_sum_assignment`` on the score
  matrix plus random noise that shrinks over the epochs, for unmatched pairs (maximise score
  between different individuals) and, per individual, for matched pairs (minimise score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BIG = 1e6


@dataclass(frozen=True)
class Pairs:
    """Index pairs into the training set and their targets (1 = same individual)."""

    a: np.ndarray
    b: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


@torch.no_grad()
def score_matrix(head: torch.nn.Module, emb: torch.Tensor, block: int = 8192) -> torch.Tensor:
    """Head probabilities for all pairs (i, j) of ``emb`` [N,D] -> [N,N], computed in blocks of pairs.

    The diagonal is set to 1. Runs the head only (never the branch).
    """
    if emb.ndim != 2:
        raise ValueError(f"score_matrix expects embeddings [N,D], got {tuple(emb.shape)}")
    n = emb.shape[0]
    out = torch.empty(n, n, dtype=torch.float32)
    rows = max(1, block // max(n, 1))
    was_training = head.training
    head.eval()
    try:
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            a = emb[r0:r1, None, :].expand(r1 - r0, n, -1).reshape(-1, emb.shape[1])
            b = emb[None, :, :].expand(r1 - r0, n, -1).reshape(-1, emb.shape[1])
            p = torch.sigmoid(head(a.float(), b.float()).float())
            out[r0:r1] = p.reshape(r1 - r0, n).cpu()
    finally:
        head.train(was_training)
    out.fill_diagonal_(1.0)
    return out


class PairMiner:
    """Base miner: validates inputs, runs :meth:`mine` under ``no_grad``, checks the output."""

    def __call__(self, scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                 epoch: int, epochs: int, rng: np.random.Generator) -> Pairs:
        with torch.no_grad():
            s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
            y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            s = s.astype(np.float64)
            if s.ndim != 2 or s.shape[0] != s.shape[1]:
                raise ValueError(f"scores must be a square [N,N] matrix, got {s.shape}")
            if y.shape != (s.shape[0],):
                raise ValueError(f"labels must be [N] with N={s.shape[0]}, got {y.shape}")
            if not np.isfinite(s).all():
                raise ValueError("scores contain NaN or infinity")
            if not 0 <= epoch < epochs:
                raise ValueError(f"epoch {epoch} outside 0..{epochs - 1}")
            pairs = self.mine(s, y, epoch, epochs, rng)
            self._check(pairs, y)
            return pairs

    def mine(self, scores: np.ndarray, labels: np.ndarray, epoch: int, epochs: int,
             rng: np.random.Generator) -> Pairs:
        raise NotImplementedError

    @staticmethod
    def _check(p: Pairs, y: np.ndarray) -> None:
        n = len(y)
        if not (len(p.a) == len(p.b) == len(p.target)):
            raise AssertionError("miner returned pair arrays of different lengths")
        if len(p.a) and (min(p.a.min(), p.b.min()) < 0 or max(p.a.max(), p.b.max()) >= n):
            raise AssertionError("miner returned an index out of range")
        if np.any(p.a == p.b):
            raise AssertionError("miner paired an image with itself")
        if np.any((y[p.a] == y[p.b]).astype(np.float32) != p.target):
            raise AssertionError("miner returned a target that does not match the labels")


def _progress(epoch: int, epochs: int) -> float:
    return epoch / (epochs - 1) if epochs > 1 else 1.0


def _pairs(matched: list[tuple[int, int]], unmatched: list[tuple[int, int]]) -> Pairs:
    allp = matched + unmatched
    a = np.array([p[0] for p in allp], dtype=np.int64)
    b = np.array([p[1] for p in allp], dtype=np.int64)
    t = np.array([1.0] * len(matched) + [0.0] * len(unmatched), dtype=np.float32)
    return Pairs(a, b, t)


class CurriculumMiner(PairMiner):
    """The paper's adversarial curriculum (see module docstring)."""

    def __init__(self, r_start: float = 0.0, r_end: float = 0.8):
        self.r_start, self.r_end = r_start, r_end

    def ratio(self, epoch: int, epochs: int) -> float:
        return self.r_start + (self.r_end - self.r_start) * _progress(epoch, epochs)

    def mine(self, scores, labels, epoch, epochs, rng) -> Pairs:
        n = len(labels)
        r = self.ratio(epoch, epochs)
        same = labels[:, None] == labels[None, :]
        np.fill_diagonal(same, False)
        anchors = np.flatnonzero(same.any(axis=1))  # images whose individual has another photo
        # matched: one partner per anchor; the r-fraction hardest anchors take their lowest-scored partner
        m_cost = np.where(same, scores, np.inf)
        hardest_partner = m_cost.argmin(axis=1)
        order = anchors[np.argsort(m_cost[anchors, hardest_partner[anchors]], kind="stable")]
        n_hard = int(round(r * len(anchors)))
        matched = [(int(i), int(hardest_partner[i])) for i in order[:n_hard]]
        for i in order[n_hard:]:
            matched.append((int(i), int(rng.choice(np.flatnonzero(same[i])))))
        # unmatched: as many; the r-fraction are the greedily highest-scored pairs of different
        # individuals (sweeps in which each image is used at most once, for variety); the rest random
        k = len(matched)
        diff = labels[:, None] != labels[None, :]
        iu, ju = np.nonzero(np.triu(diff, 1))
        unmatched: list[tuple[int, int]] = []
        if len(iu) and k:
            n_hard_u = int(round(r * k))
            taken: set[int] = set()
            order = np.argsort(-scores[iu, ju], kind="stable")
            while len(unmatched) < min(n_hard_u, len(iu)):  # one greedy sweep per round
                used = np.zeros(n, dtype=bool)
                for c in order:
                    if len(unmatched) >= n_hard_u:
                        break
                    i, j = int(iu[c]), int(ju[c])
                    if int(c) in taken or used[i] or used[j]:
                        continue
                    used[i] = used[j] = True
                    unmatched.append((i, j))
                    taken.add(int(c))
            free = np.array([c for c in range(len(iu)) if c not in taken], dtype=np.int64)
            rest = k - len(unmatched)
            if rest > 0 and len(free):
                pick = rng.choice(free, size=rest, replace=rest > len(free))
                unmatched += [(int(iu[c]), int(ju[c])) for c in pick]
        return _pairs(matched, unmatched)


class AssignmentMiner(PairMiner):
    """The kernel's miner: linear assignment on the (noisy) score matrix, noise shrinking over epochs."""

    def __init__(self, noise_start: float = 1.0, noise_end: float = 0.05):
        self.noise_start, self.noise_end = noise_start, noise_end

    def noise(self, epoch: int, epochs: int) -> float:
        return self.noise_start + (self.noise_end - self.noise_start) * _progress(epoch, epochs)

    def mine(self, scores, labels, epoch, epochs, rng) -> Pairs:
        from scipy.optimize import linear_sum_assignment

        n = len(labels)
        k = self.noise(epoch, epochs)
        matched: list[tuple[int, int]] = []
        for lab in np.unique(labels):
            idx = np.flatnonzero(labels == lab)
            if len(idx) < 2:
                continue
            cost = scores[np.ix_(idx, idx)] + k * rng.random((len(idx), len(idx)))  # low score = hard
            np.fill_diagonal(cost, BIG)
            rows, cols = linear_sum_assignment(cost)
            matched += [(int(idx[r]), int(idx[c])) for r, c in zip(rows, cols)]
        same = labels[:, None] == labels[None, :]
        if same.all():
            return _pairs(matched, [])
        cost = -(scores + k * rng.random((n, n)))  # maximise score between different individuals
        cost[same] = BIG
        rows, cols = linear_sum_assignment(cost)
        unmatched = [(int(r), int(c)) for r, c in zip(rows, cols) if not same[r, c]]
        if len(unmatched) > len(matched) > 0:  # equal numbers: keep the hardest (highest-scored) ones
            order = np.argsort([-scores[i, j] for i, j in unmatched], kind="stable")[: len(matched)]
            unmatched = [unmatched[o] for o in sorted(order)]
        return _pairs(matched, unmatched)


def concat_pairs(parts: list[Pairs]) -> Pairs:
    """Several miners' (or rounds') pairs as one set."""
    return Pairs(np.concatenate([p.a for p in parts]), np.concatenate([p.b for p in parts]),
                 np.concatenate([p.target for p in parts]))


def create_miner(cfg) -> PairMiner:
    """The miner named by a :class:`model.config.MiningConfig`."""
    return {"curriculum": lambda: CurriculumMiner(cfg.r_start, cfg.r_end),
            "lap": lambda: AssignmentMiner(cfg.noise_start, cfg.noise_end)}[cfg.kind]()
