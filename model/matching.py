"""Torch-free matching: a query embedding against a gallery matrix, individuals ranked by best photo.

The gallery is one embeddings matrix (float16 storage by default: half the memory, and the head
sees float32 copies chunk by chunk) with a photo id and an individual id per row. The catalog
stores the embeddings; this module takes matrices and returns results, with no I/O.

Up to ``prefilter_from`` photos (default 20,000) every photo is scored. From ``table_from``
photos (default 1,024) on, when the head is a sum of per-position terms (both of the paper's
heads are; see model.separable), every photo is scored by table lookup over 8-bit codes of the
gallery and the real head re-scores the best ``rerank_k`` photos plus the best photo of each of
the leading individuals: tens of times cheaper than running the head over every photo, with the
same top-5 individuals in every query the benchmark and the tests have tried. Past
``prefilter_from``, an approximate nearest-neighbour prefilter on the embeddings (faiss
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
from model.separable import CodedGallery, SeparableHead

DEFAULT_PREFILTER_FROM = 20_000
DEFAULT_PREFILTER_K = 512
# IVF cells searched per query. Measured on synthetic 512-d galleries (bench/bench_matching.py):
# recall@5 against exact needs ~128-256 cells at 100k-1M photos (nlist = sqrt(M)); 256 costs tens
# of ms at 1M on two cores and is the whole index below ~65k photos.
DEFAULT_NPROBE = 256
# Table scoring (model.separable) from this many photos: below it the head over every photo is cheap.
DEFAULT_TABLE_FROM = 1_024
# Photos the real head re-scores after table scoring (plus the best photo of each leading individual).
DEFAULT_RERANK_K = 128


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
        probability: the calibrated probability that the query shows this individual (None when
            no calibration applies: then ``score`` is a plain score, not a probability).
        local_score: the local-feature ranking score, when local features took part.
        votes: the individual's LNBNN votes (local features), when they took part.
        embedding_score: the embedding head's score of the best photo, when a model took part.
        inliers: verified correspondences with ``best_photo_id`` (0: none verified; None: not checked).
        pairs: float32 [n, 4] (qx, qy, gx, gy) of those correspondences in each photo's own pixels,
            strongest first (None: not checked).
    """

    individual: object
    score: float
    best_photo_id: object
    rank: int
    probability: float | None = None
    local_score: float | None = None
    votes: float | None = None
    embedding_score: float | None = None
    inliers: int | None = None
    pairs: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MatchResult:
    """The ranked individuals for one query and the new-individual suggestion.

    Attributes:
        candidates: up to k individuals, best first.
        suggest_new: True when the best score is under ``threshold`` (or the gallery is empty).
        best_score: the top candidate's score (0.0 when there is none).
        threshold: the new-individual threshold used.
        n_scored: how many gallery photos were scored (by the head, or by table lookup).
        method: "head" (the head over every photo), "table" (table lookup over every photo, the
            head over the best) or "prefilter" (approximate nearest neighbours, the head over those);
            "local" (local features alone) or "fused" (local features and the embedding).
        calibrated: True when the candidates' ``probability`` values are calibrated.
        best_match_threshold: with calibration, the probability from which the top candidate may be
            called the best match (its measured precision is high enough).
        notes: things the user should know (features repaired, photos not yet described).
    """

    candidates: list[Candidate]
    suggest_new: bool
    best_score: float
    threshold: float
    n_scored: int
    method: str = "head"
    calibrated: bool = False
    best_match_threshold: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def prefiltered(self) -> bool:
        """True when the embedding-space prefilter chose the photos the head scored."""
        return self.method == "prefilter"


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
    table_from: int = DEFAULT_TABLE_FROM
    rerank_k: int = DEFAULT_RERANK_K
    _codes: np.ndarray = field(init=False, repr=False)
    _individuals: np.ndarray = field(init=False, repr=False)
    _ann: object = field(init=False, default=None, repr=False)
    _coded: CodedGallery | None = field(init=False, default=None, repr=False)

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
              nprobe: int = DEFAULT_NPROBE, table_from: int = DEFAULT_TABLE_FROM,
              rerank_k: int = DEFAULT_RERANK_K) -> GalleryIndex:
        """A gallery from an embeddings matrix and its ids.

        Args:
            embeddings: [M, D] embeddings (any float dtype).
            photo_ids: M photo ids (returned as ``best_photo_id``).
            individual_ids: M individual ids (photos of one individual share it).
            dtype: "float16" (half the memory) or "float32" storage.
            prefilter_from: galleries with at least this many photos use the prefilter.
            prefilter_k: photos the prefilter hands to the head.
            nprobe: IVF cells searched per query (recall against speed).
            table_from: galleries with at least this many photos are scored by table lookup
                when the head allows it (see model.separable).
            rerank_k: photos the real head re-scores after table lookup.
        """
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
        emb = np.ascontiguousarray(embeddings, dtype=dtype)
        return cls(emb, np.asarray(photo_ids), np.asarray(individual_ids), prefilter_from, prefilter_k, nprobe,
                   table_from, rerank_k)

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

    def coded(self) -> CodedGallery:
        """The gallery as 8-bit codes per dimension (built on first use, then kept)."""
        if self._coded is None:
            self._coded = CodedGallery.build(self.embeddings)
        return self._coded

    def prefilter(self, query_emb: np.ndarray, k: int | None = None) -> np.ndarray:
        """Row indices of the ``k`` gallery photos nearest the query in embedding space."""
        if self._ann is None:
            self.build_prefilter()
        k = min(k or self.prefilter_k, len(self))
        q = np.ascontiguousarray(np.asarray(query_emb, dtype=np.float32).reshape(1, -1))
        _, idx = self._ann.search(q, k)
        idx = idx[0]
        return idx[idx >= 0]

    def best_positions(self, rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Positions in ``rows``/``scores`` of the best photo of each of the ``k`` best individuals."""
        if len(rows) == 0 or k <= 0:
            return np.zeros(0, np.int64)
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
        return order[first[:k]]

    def rank_individuals(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[Candidate]:
        """The ``k`` best individuals among gallery ``rows`` given their ``scores`` (best photo each)."""
        out = []
        for rank, pos in enumerate(self.best_positions(rows, scores, k), start=1):
            row = rows[pos]
            out.append(Candidate(individual=_plain(self._individuals[self._codes[row]]),
                                 score=float(scores[pos]),
                                 best_photo_id=_plain(self.photo_ids[row]), rank=rank))
        return out

    def table_rows(self, head: SeparableHead, query: np.ndarray, k: int,
                   allowed: np.ndarray | None = None) -> np.ndarray:
        """Rows for the real head after table scoring every photo: the ``rerank_k`` best photos
        plus the best photo of each of the ``4 k`` leading individuals among the best
        ``8 rerank_k`` (so that k individuals are there even when one individual holds many of
        the best photos). Rows not ``allowed`` are left out."""
        n_out = 0 if allowed is None else len(allowed) - int(allowed.sum())
        rows, approx = self.coded().search(head, query, 8 * self.rerank_k + n_out)
        if allowed is not None:
            ok = allowed[rows]
            rows, approx = rows[ok], approx[ok]
        lead = self.best_positions(rows, approx, 4 * k)
        return rows[np.union1d(np.arange(min(self.rerank_k, len(rows))), lead)]


def _plain(value):
    """A numpy scalar as the plain Python value (ids come back as given, not as numpy types)."""
    return value.item() if isinstance(value, np.generic) else value


def _separable(scorer) -> SeparableHead | None:
    """The scorer's head as a sum of per-position terms, when it offers one."""
    get = getattr(scorer, "separable_head", None)
    head = get() if callable(get) else get
    return head if isinstance(head, SeparableHead) else None


def match(scorer: Scorer | Callable[[np.ndarray, np.ndarray], np.ndarray], query_emb: np.ndarray,
          gallery: GalleryIndex, k: int = 5, *, threshold: float | None = None,
          exact: bool | None = None, table: bool | None = None, exclude=None) -> MatchResult:
    """Rank the gallery's individuals for one query embedding.

    Args:
        scorer: an :class:`~model.inference.Engine` (or anything with ``score(q, G)``, or a
            callable ``f(q, G) -> probabilities``); an optional ``separable_head()`` method
            enables table scoring.
        query_emb: the query's embedding [D].
        gallery: the gallery.
        k: how many individuals to return.
        threshold: new-individual threshold; default: the scorer's ``new_individual_threshold``
            (the bundle's calibrated value), else 0.5.
        exact: force (True) or forbid (False) scoring every photo; default: every photo below the
            gallery's ``prefilter_from``, the prefilter above.
        table: when every photo is scored, use (True) or avoid (False) table scoring with a
            re-scoring by the head; default: from the gallery's ``table_from`` photos when the
            scorer's head is separable.
        exclude: photo ids to leave out (e.g. the query itself when it is in the gallery).

    Returns:
        The top-k individuals, each with its best photo, and ``suggest_new`` when the best score
        is under the threshold.
    """
    if threshold is None:
        threshold = float(getattr(scorer, "new_individual_threshold", 0.5))
    score_fn = scorer.score if hasattr(scorer, "score") else scorer
    q = np.asarray(query_emb, dtype=np.float32).reshape(-1)
    allowed = None
    if exclude is not None and len(gallery):
        ex = np.asarray(sorted(exclude) if isinstance(exclude, set) else list(exclude))
        if len(ex):
            allowed = ~np.isin(np.asarray(gallery.photo_ids), ex)
            if allowed.all():
                allowed = None
    n_allowed = len(gallery) if allowed is None else int(allowed.sum())
    if n_allowed == 0:
        return MatchResult([], True, 0.0, threshold, 0)
    use_prefilter = gallery.uses_prefilter if exact is None else not exact
    head = None if use_prefilter else _separable(scorer)
    if head is not None and table is not False and (table or n_allowed >= gallery.table_from):
        rows = gallery.table_rows(head, q, k, allowed)
        method, n_scored = "table", n_allowed
    elif use_prefilter:
        extra = 0 if allowed is None else len(gallery) - n_allowed
        rows = gallery.prefilter(q, gallery.prefilter_k + extra)
        if allowed is not None:
            rows = rows[allowed[rows]]
        method, n_scored = "prefilter", len(rows)
    else:
        rows = np.arange(len(gallery)) if allowed is None else np.flatnonzero(allowed)
        method, n_scored = "head", len(rows)
    emb = gallery.embeddings if (method == "head" and allowed is None) else gallery.embeddings[rows]
    scores = np.asarray(score_fn(q, emb), dtype=np.float32).reshape(-1)
    cands = gallery.rank_individuals(rows, scores, k)
    best = cands[0].score if cands else 0.0
    return MatchResult(cands, best < threshold, best, float(threshold), n_scored, method)


def calibrate_threshold(same_scores, diff_scores) -> float:
    """The new-individual threshold that best separates known from unknown queries.

    The one calibration of the project: training calls it on its held-out individuals and stores
    the result in the model bundle (``new_individual_threshold``).

    Args:
        same_scores: for validation queries whose individual IS in the gallery, the best score
            of the true individual (a photo scoring at or above the threshold is kept).
        diff_scores: for queries whose individual is NOT in the gallery (or a known query's best
            score over all other individuals, what an unseen whale would get), the best score
            over the gallery (a photo scoring under the threshold is suggested as new).

    Returns:
        The cut with the best balanced accuracy (the mean of the share of ``same_scores`` kept and
        the share of ``diff_scores`` called new; the lowest such cut on a tie), a midpoint between
        observed scores as Kaggle's new_whale trick tunes it, clipped to 0..1; 0.5 when either list
        is empty (nothing to calibrate on).
    """
    same = np.asarray(same_scores, dtype=np.float64).reshape(-1)
    diff = np.asarray(diff_scores, dtype=np.float64).reshape(-1)
    if len(same) == 0 or len(diff) == 0:
        return 0.5
    values = np.unique(np.concatenate([same, diff]))
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1e-6]])
    balanced = [((same >= t).mean() + (diff < t).mean()) / 2 for t in cuts]
    return float(np.clip(cuts[int(np.argmax(balanced))], 0.0, 1.0))
