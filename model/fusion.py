"""Uncalibrated fusion of local-feature evidence and the embedding score for one query.

When no calibration exists, local features and a model's embedding are combined per query by a
plain sum of z-scores over the query's shortlist (WildFusion's uncalibrated baseline):

1. the shortlist: the ``k`` individuals local features rank best (:meth:`LocalIndex.search`,
   with spatial verification) and the ``k`` individuals the embedding ranks best (the head's score
   of each individual's best photo), united;
2. every shortlisted individual gets both signals: its local evidence ``votes + inliers`` (an
   individual only the embedding proposed gets the largest LNBNN vote of any of its photos and the
   verified inliers of the embedding's best photo), and its embedding score (the head's best
   photo score);
3. ``fused = z(local evidence) + z(embedding score)``, z-scored over the shortlist, highest first.

Individuals outside the shortlist are not ranked. This is the one place the rule lives: the app's
matching (app.services.matching) and ``flukeid evaluate`` both call :func:`fuse_shortlist`.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Individuals each signal proposes before fusion (the union is scored by both).
SHORTLIST = 10


def _empty_pairs() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def zscore(values) -> np.ndarray:
    """(values - mean) / standard deviation; all zeros when the values (nearly) do not vary."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return values
    sd = float(values.std())
    return (values - values.mean()) / sd if sd > 1e-12 else np.zeros_like(values)


def fuse_plain(local_evidence, embedding_scores) -> np.ndarray:
    """The uncalibrated fused score of a query's shortlisted individuals: z(local) + z(embedding)."""
    local_evidence = np.asarray(local_evidence, np.float64)
    embedding_scores = np.asarray(embedding_scores, np.float64)
    if local_evidence.shape != embedding_scores.shape:
        raise ValueError(f"local evidence {local_evidence.shape} and embedding scores {embedding_scores.shape} differ")
    return zscore(local_evidence) + zscore(embedding_scores)


@dataclass
class FusedCandidate:
    """One shortlisted individual with both signals.

    Attributes:
        individual: the individual (the ids given to the LocalIndex and the embedding gallery).
        best_photo_id: the photo to show: local features' best photo, else the embedding's.
        votes: LNBNN votes (an individual only the embedding proposed: its best photo's votes).
        inliers: verified inlier correspondences with ``best_photo_id`` (0: none verified).
        pairs: float32 [n, 4] (qx, qy, gx, gy) inlier correspondences, strongest first.
        local_score: local features' plain score (:func:`model.local.index.rank_score` for a local
            candidate; ``votes + inliers`` for one only the embedding proposed).
        embedding_score: the head's score of the individual's best photo.
        embedding_photo: that photo (None when the individual has no embedded photo).
        fused: z(votes + inliers) + z(embedding_score) over the shortlist.
        from_local: proposed by local features (False: by the embedding only).
    """

    individual: int
    best_photo_id: int
    votes: float = 0.0
    inliers: int = 0
    pairs: np.ndarray = field(default_factory=_empty_pairs)
    local_score: float = 0.0
    embedding_score: float = 0.0
    embedding_photo: int | None = None
    fused: float = 0.0
    from_local: bool = False

    @property
    def local_evidence(self) -> float:
        """What the fusion reads of local features: votes + verified inliers."""
        return float(self.votes) + float(self.inliers)


def fuse_shortlist(index, query, local, embedding_top: Sequence[tuple[int, int, float]],
                   embedding_score: Callable[[int], tuple[float, int | None]], *,
                   verify: Callable | None = None) -> list[FusedCandidate]:
    """The fused, uncalibrated shortlist of one query, best first (see the module docstring).

    Args:
        index: the gallery's :class:`model.local.index.LocalIndex` (may be empty).
        query: the query's :class:`model.local.features.LocalFeatures`.
        local: the query's :class:`model.local.index.LocalResult` from ``index.search`` (its
            candidates are the local half of the shortlist), or None when there was no search.
        embedding_top: the embedding's best individuals as (individual, best photo, score).
        embedding_score: ``individual -> (score, best photo or None)`` for an individual the
            embedding did not propose (``(0.0, None)`` when it has no embedded photo).
        verify: ``verify(query, gallery_features) -> Verification`` (default
            :func:`model.local.verify.verify`) for an individual only the embedding proposed.

    Returns:
        The shortlisted individuals, sorted by ``fused`` (highest first; ties keep local
        features' order, then the embedding's).
    """
    if verify is None:
        from model.local.verify import verify
    rows: dict[int, FusedCandidate] = {}
    for c in (local.candidates if local is not None else []):
        rows[int(c.individual_id)] = FusedCandidate(int(c.individual_id), int(c.best_photo_id), float(c.votes),
                                                    int(c.inliers), c.pairs, float(c.score), from_local=True)
    seen_emb = set()
    for ind, photo, score in embedding_top:
        ind = int(ind)
        seen_emb.add(ind)
        row = rows.get(ind)
        if row is None:
            row = rows[ind] = FusedCandidate(ind, int(photo))
            _local_evidence(index, query, local, row, verify)
        row.embedding_score, row.embedding_photo = float(score), int(photo)
    for row in rows.values():
        if row.individual not in seen_emb:
            score, photo = embedding_score(row.individual)
            row.embedding_score, row.embedding_photo = float(score), None if photo is None else int(photo)
    out = list(rows.values())
    if out:
        fused = fuse_plain([r.local_evidence for r in out], [r.embedding_score for r in out])
        for r, f in zip(out, fused, strict=True):
            r.fused = float(f)
        out.sort(key=lambda r: -r.fused)  # stable
    return out


def _local_evidence(index, query, local, row: FusedCandidate, verify) -> None:
    """Votes and verified correspondences for an individual local features did not shortlist."""
    votes = local.photo_votes if local is not None else {}
    mine = [p for p in index.photo_ids() if index.individual_of(p) == row.individual] if len(index) else []
    row.votes = max((votes.get(p, 0.0) for p in mine), default=0.0)
    if row.best_photo_id in index and len(query):
        v = verify(query, index.features(row.best_photo_id))
        row.inliers, row.pairs = int(v.inliers), v.pairs
    row.local_score = row.votes + row.inliers
