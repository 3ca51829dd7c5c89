"""Torch-free matching: a query embedding against a gallery matrix, individuals ranked by best photo.

The gallery is one embeddings matrix (float16 storage by default: half the memory, and the head
sees float32 copies chunk by chunk) with a photo id and an individual id per row. The catalog
stores the embeddings; this module takes matrices and returns results, with no I/O.

Up to ``prefilter_from`` photos (default 20,000) the head scores the query against every photo
(exact). Past it, an approximate nearest-neighbour prefilter on the embeddings (faiss
``IndexIVFScalarQuantizer``: an inverted file over k-means cells with 8-bit scalar-quantised
vectors, a quarter of float32's memory) retrieves ``prefilter_k`` photos and the head re-ranks
them. IVF rather than HNSW: it trains and fills in seconds on two cores where HNSW takes minutes
for a million vectors, and its 8-bit codes keep a million 512-d photos well under 2.5 GB together
with the float16 matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from model.errors import Interrupted

DEFAULT_PREFILTER_FROM = 20_000
DEFAULT_PREFILTER_K = 512
# IVF cells searched per query. Measured on synthetic 512-d galleries (bench/bench_matching.py):
# recall@5 against exact needs ~128-256 cells at 100k-1M photos (nlist = sqrt(M)); 256 costs tens
# of ms at 1M on two cores and is the whole index below ~65k photos.
DEFAULT_NPROBE = 256


class Scorer(Protocol):
    """Anything that scores one query embedding against gallery rows (model.inference.Engine)."""

    def score(self, query_emb: np.ndarray, gallery: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Candidate:
    """One individual proposed for a query.

    Attributes:
        individual: the individual's id (as given in the gallery).
        score: the head's same-whale probability for the individual's best photo.
        best_photo_id: the gallery photo that scored best.
        rank: 1 for the most likely individual.
    """

    individual: object
    score: float
    best_photo_id: object
    rank: int


@dataclass(frozen=True)
class MatchResult:
    """The ranked individuals for one query and the new-individual suggestion.

    Attributes:
        candidates: up to k individuals, best first.
        suggest_new: True when the best score is under ``threshold`` (or the gallery is empty).
        best_score: the top candidate's score (0.0 when there is none).
        threshold: the new-individual threshold used.
        prefiltered: True when the embedding-space prefilter chose the photos the head scored.
        n_scored: how many gallery photos the head scored.
    """

    candidates: list[Candidate]
    suggest_new: bool
    best_score: float
    threshold: float
    prefiltered: bool
    n_scored: int


@dataclass
class GalleryIndex:
    """Gallery embeddings [M, D] with one photo id and one individual id per row.

    Build it with :meth:`build`; the approximate index is trained lazily on the first query
    that needs it (or explicitly with :meth:`build_prefilter`).
    """

    embeddings: np.ndarray
    photo_ids: np.ndarray
    individual_ids: np.ndarray
    prefilter_from: int = DEFAULT_PREFILTER_FROM
    prefilter_k: int = DEFAULT_PREFILTER_K
    nprobe: int = DEFAULT_NPROBE
    _codes: np.ndarray = field(init=False, repr=False)
    _individuals: np.ndarray = field(init=False, repr=False)
    _ann: object = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2:
            raise ValueError(f"gallery embeddings must be [M, D], not {self.embeddings.shape}")
        m = len(self.embeddings)
        if len(self.photo_ids) != m or len(self.individual_ids) != m:
            raise ValueError(f"{m} embeddings but {len(self.photo_ids)} photo ids and "
                             f"{len(self.individual_ids)} individual ids")
        self._individuals, codes = np.unique(np.asarray(self.individual_ids), return_inverse=True)
        self._codes = codes.reshape(-1).astype(np.int64)

    @classmethod
    def build(cls, embeddings: np.ndarray, photo_ids, individual_ids, *, dtype: str = "float16",
              prefilter_from: int = DEFAULT_PREFILTER_FROM, prefilter_k: int = DEFAULT_PREFILTER_K,
              nprobe: int = DEFAULT_NPROBE) -> GalleryIndex:
        """A gallery from an embeddings matrix and its ids.

        Args:
            embeddings: [M, D] embeddings (any float dtype).
            photo_ids: M photo ids (returned as ``best_photo_id``).
            individual_ids: M individual ids (photos of one individual share it).
            dtype: "float16" (half the memory) or "float32" storage.
            prefilter_from: galleries with at least this many photos use the prefilter.
            prefilter_k: photos the prefilter hands to the head.
            nprobe: IVF cells searched per query (recall against speed).
        """
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
        emb = np.ascontiguousarray(embeddings, dtype=dtype)
        return cls(emb, np.asarray(photo_ids), np.asarray(individual_ids), prefilter_from, prefilter_k, nprobe)

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def uses_prefilter(self) -> bool:
        """Whether queries go through the approximate prefilter (gallery at least prefilter_from)."""
        return len(self) >= self.prefilter_from and len(self) > self.prefilter_k

    @property
    def n_individuals(self) -> int:
        """How many distinct individuals the gallery holds."""
        return len(self._individuals)

    def mean_embedding(self) -> np.ndarray:
        """The gallery's mean embedding [D] float32 (a reference for pair-evidence ablation)."""
        if len(self) == 0:
            return np.zeros(self.embeddings.shape[1], np.float32)
        acc = np.zeros(self.embeddings.shape[1], np.float64)
        for i in range(0, len(self), 65_536):
            acc += self.embeddings[i:i + 65_536].astype(np.float64).sum(axis=0)
        return (acc / len(self)).astype(np.float32)

    def build_prefilter(self, *, seed: int = 0, progress: Callable[[float, str], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> None:
        """Train and fill the IVF + 8-bit scalar-quantiser index (done once per gallery).

        Seconds for 100k photos, a minute or two for 1M on two cores: a long job, so it takes the
        usual ``progress(fraction, message)`` and ``should_stop()`` callbacks.

        Raises:
            Interrupted: ``should_stop()`` returned True (the gallery keeps no partial index).
        """
        import faiss

        def check(fraction: float, message: str) -> None:
            if should_stop is not None and should_stop():
                raise Interrupted("building the gallery's search index was stopped")
            if progress is not None:
                progress(fraction, message)

        m, d = self.embeddings.shape
        nlist = int(min(4096, max(16, round(math.sqrt(m)))))
        rng = np.random.default_rng(seed)
        n_train = min(m, max(nlist * 40, 20_000))
        sample = np.sort(rng.choice(m, n_train, replace=False)) if n_train < m else np.arange(m)
        check(0.0, f"training the search index ({nlist} cells)")
        train = np.ascontiguousarray(self.embeddings[sample], dtype=np.float32)
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        index.cp.seed = seed
        index.cp.niter = 10  # k-means iterations: 10 is plenty for a prefilter, halves training time
        index.train(train)
        del train
        for i in range(0, m, 65_536):
            check(0.3 + 0.7 * i / m, f"indexing photos {i:,}/{m:,}")
            index.add(np.ascontiguousarray(self.embeddings[i:i + 65_536], dtype=np.float32))
        check(1.0, "search index ready")
        index.nprobe = min(self.nprobe, nlist)
        self._ann = index

    def prefilter(self, query_emb: np.ndarray, k: int | None = None) -> np.ndarray:
        """Row indices of the ``k`` gallery photos nearest the query in embedding space."""
        if self._ann is None:
            self.build_prefilter()
        k = min(k or self.prefilter_k, len(self))
        q = np.ascontiguousarray(np.asarray(query_emb, dtype=np.float32).reshape(1, -1))
        _, idx = self._ann.search(q, k)
        idx = idx[0]
        return idx[idx >= 0]

    def rank_individuals(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[Candidate]:
        """The ``k`` best individuals among gallery ``rows`` given their ``scores`` (best photo each)."""
        if len(rows) == 0 or k <= 0:
            return []
        # Most of the time the top few hundred photos already hold k individuals: avoid a full sort.
        n_top = min(len(scores), max(64 * k, 1024))
        while True:
            if n_top < len(scores):
                part = np.argpartition(-scores, n_top - 1)[:n_top]
                order = part[np.argsort(-scores[part], kind="stable")]
            else:
                order = np.argsort(-scores, kind="stable")
            codes = self._codes[rows[order]]
            _, first = np.unique(codes, return_index=True)
            first = np.sort(first)
            if len(first) >= k or n_top >= len(scores):
                break
            n_top = min(len(scores), n_top * 8)
        out = []
        for rank, pos in enumerate(first[:k], start=1):
            row = rows[order[pos]]
            out.append(Candidate(individual=_plain(self._individuals[self._codes[row]]),
                                 score=float(scores[order[pos]]),
                                 best_photo_id=_plain(self.photo_ids[row]), rank=rank))
        return out


def _plain(value):
    """A numpy scalar as the plain Python value (ids come back as given, not as numpy types)."""
    return value.item() if isinstance(value, np.generic) else value


def match(scorer: Scorer | Callable[[np.ndarray, np.ndarray], np.ndarray], query_emb: np.ndarray,
          gallery: GalleryIndex, k: int = 5, *, threshold: float | None = None,
          exact: bool | None = None) -> MatchResult:
    """Rank the gallery's individuals for one query embedding.

    Args:
        scorer: an :class:`~model.inference.Engine` (or anything with ``score(q, G)``, or a
            callable ``f(q, G) -> probabilities``).
        query_emb: the query's embedding [D].
        gallery: the gallery.
        k: how many individuals to return.
        threshold: new-individual threshold; default: the scorer's ``new_individual_threshold``
            (the bundle's calibrated value), else 0.5.
        exact: force (True) or forbid (False) scoring every photo; default: exact below the
            gallery's ``prefilter_from``.

    Returns:
        The top-k individuals, each with its best photo, and ``suggest_new`` when the best score
        is under the threshold.
    """
    if threshold is None:
        threshold = float(getattr(scorer, "new_individual_threshold", 0.5))
    score_fn = scorer.score if hasattr(scorer, "score") else scorer
    q = np.asarray(query_emb, dtype=np.float32).reshape(-1)
    if len(gallery) == 0:
        return MatchResult([], True, 0.0, threshold, False, 0)
    use_prefilter = gallery.uses_prefilter if exact is None else not exact
    if use_prefilter:
        rows = gallery.prefilter(q)
        scores = np.asarray(score_fn(q, gallery.embeddings[rows]), dtype=np.float32).reshape(-1)
    else:
        rows = np.arange(len(gallery))
        scores = np.asarray(score_fn(q, gallery.embeddings), dtype=np.float32).reshape(-1)
    cands = gallery.rank_individuals(rows, scores, k)
    best = cands[0].score if cands else 0.0
    return MatchResult(cands, best < threshold, best, float(threshold), use_prefilter, len(rows))


def calibrate_threshold(same_scores, diff_scores) -> float:
    """The new-individual threshold that best separates known from unknown queries.

    Args:
        same_scores: for validation queries whose individual IS in the gallery, the best score
            of the true individual (a photo scoring at or above the threshold is kept).
        diff_scores: for queries whose individual is NOT in the gallery, the best score over the
            gallery (a photo scoring under the threshold is suggested as new).

    Returns:
        The threshold with the fewest errors (the midpoint of the best gap), as Kaggle's
        new_whale trick tunes it on validation data; 0.5 when both lists are empty.
    """
    same = np.sort(np.asarray(same_scores, dtype=np.float64).reshape(-1))
    diff = np.sort(np.asarray(diff_scores, dtype=np.float64).reshape(-1))
    if len(same) == 0 and len(diff) == 0:
        return 0.5
    values = np.unique(np.concatenate([same, diff]))
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1e-6]])
    # errors(t) = same scored under t (wrongly "new") + diff scored at/above t (wrongly matched)
    errors = np.searchsorted(same, cuts, side="left") + (len(diff) - np.searchsorted(diff, cuts, side="left"))
    best = np.flatnonzero(errors == errors.min())
    t = float(cuts[best[len(best) // 2]])
    return float(min(max(t, 0.0), 1.0))
