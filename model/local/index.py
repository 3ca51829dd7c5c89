"""The gallery's descriptor index: LNBNN voting over every gallery keypoint, then spatial verification.

Scoring a query (HotSpotter's recipe, on faiss):

1. Each query descriptor's ``k + 1`` nearest gallery descriptors. The (k+1)-th is the normaliser:
   a neighbour's vote is (distance to the normaliser) - (distance to the neighbour), so a mark
   counts in proportion to how much closer it is than the crowd (local naive Bayes nearest
   neighbour, LNBNN). Each query descriptor votes at most once per photo and once per individual
   (its best neighbour there), so an individual with many photos does not win by numbers.
2. Individuals ranked by their summed votes; the ``verify_top`` best individuals have their best
   ``verify_photos`` photos checked by :func:`model.local.verify.verify` (ratio test + RANSAC
   similarity, or affine: the index's ``transform``). The verified inliers are the evidence the
   app draws.
3. The ranking score (the index's ``rank_by``, see :func:`rank_score`): "inliers" (the default):
   an individual with verified inliers (at least the index's ``min_inliers``) ranks by
   ``inliers + votes`` (the inliers dominate: verified correspondences are what a biologist would
   accept), ahead of the unverified ones, which rank by votes; "votes": by votes alone, the
   verification only supplies the evidence.

The index is a cache of what the catalog stores: it is filled from LocalFeatures with ``add``,
kept in step with ``remove``/``relabel``, and rebuilt from the catalog when missing or stale.

Exact or approximate (measured on humpback_kaggle2019_v2's real descriptors, 978 photos, 477k
descriptors, 500 per query, on this shared 2-core CPU; bench/bench_local.py):

- exact: faiss IndexScalarQuantizer with 8-bit direct codes (exact for uint8 RootSIFT, a quarter
  of float32's memory, and faster than IndexFlatL2 here: 0.1 s against 0.47 s at 100k descriptors)
  costs about 1 ms per 1,000 gallery descriptors per query (1.0-1.8 s at 477k), so it is used below
  ``EXACT_BELOW`` = 100k descriptors (about 200 photos, ~0.1 s a query);
- inverted file (IndexIVFScalarQuantizer, same 8-bit direct codes, not residuals; ``nlist`` about
  ``NLIST_FACTOR * sqrt(n)`` k-means cells; see the constants for the training): with nlist 2048 at 477k descriptors, ``nprobe`` 16 found the
  exact nearest photo for 91% of query descriptors (61 ms a query), 32 for 97% (94 ms), 64 for
  99% (191 ms); top-1/top-5 over the 46 humpback queries were 58.7/63.0% at 16, 60.9/65.2% at 32
  and 60.9/67.4% at 64, against 60.9/67.4% exact. Default nprobe 32;
- from ``PQ_FROM`` = 20M descriptors (about 40k photos, where 8-bit codes would take 2.7 GB) the
  cells hold 32-byte product-quantised codes (IndexIVFPQ): at nprobe 32 on the same data the
  exact nearest photo was found for 66% of descriptors and top-1/top-5 were 58.7/60.9%, one to two
  queries fewer than 8-bit codes, for a quarter of the memory.

LNBNN's k: top-1/top-5 over the 46 queries (exact search) were 58.7/69.6% at k=1, 60.9/67.4% at
k=2 and 3, 58.7/63.0% at 4, 54.3/65.2% at 6-12: k=3 (one or two queries apart; noisy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import faiss
import numpy as np

from model.local.features import DESC_DIM, DESC_SCALE, LocalFeatures
from model.local.verify import DEFAULT_TRANSFORM, MIN_INLIERS, TRANSFORMS, Verification, verify

__all__ = ["LocalCandidate", "LocalIndex", "LocalResult", "Verification", "verify", "rank_score", "RANK_BY"]

# Keypoints per photo are addressed as (photo_id << KP_BITS) | keypoint: 4,096 keypoints at most.
KP_BITS = 12
MAX_PHOTO_ID = (1 << (63 - KP_BITS)) - 1
# LNBNN neighbours per query descriptor (plus one normaliser).
DEFAULT_K = 3
EXACT_BELOW = 100_000
DEFAULT_NPROBE = 32
# Product quantisation (PQ_M bytes a descriptor instead of 128) from this many descriptors.
PQ_FROM = 20_000_000
PQ_M = 32
# The inverted file is retrained when the gallery has grown (or shrunk) this many times since its training.
RETRAIN_GROWTH = 4.0
# The inverted file's k-means: NLIST_FACTOR * sqrt(n) cells (rounded to a power of two), trained on
# TRAIN_POINTS_PER_CELL points a cell for KMEANS_ITERS iterations. Measured on the 978 humpback
# photos (477k descriptors; 111 leave-one-out queries, votes only): 4 sqrt(n) cells, 64 points,
# 25 iterations (faiss's default) built in 14 s, 40 ms a query, top-1/top-5 64.9/70.3%; 2 sqrt(n),
# 40 points, 10 iterations built in 2.7 s, 48 ms a query, 64.9/69.4% (one query apart). The first
# match after an import waits for the build, so the cheaper one.
TRAIN_POINTS_PER_CELL = 40
KMEANS_ITERS = 10
NLIST_FACTOR = 2.0
# Verification depth: the best-voted photo of each of the 20 best-voted individuals (20 verifications
# a query). Measured (bench/bench_local.py, scoring sweep) against the previous 10 individuals x 2
# photos, which also costs 20 verifications a query on multi-photo galleries: top-1/top-5 rose on
# humpback "all" from 58.7/67.4% to 60.9/69.6% (46 queries), on right whales "seed" from 46.0/50.5%
# to 46.5/51.0% (1,201 queries) and on the synthetic set from 96.0/96.0% to 96.6/96.6% (528
# queries), at the same query time; a second photo of an individual verified less often than a
# deeper individual. 40 x 1 gained 0.7 more on right whales for twice the verification time.
DEFAULT_VERIFY_TOP = 20
DEFAULT_VERIFY_PHOTOS = 1
# The ranking score of a candidate (rank_score): "inliers" (verified first) or "votes". Ranking by
# votes alone (verification only as evidence) lost 3.8 points top-1 on right whales and 2.8 on the
# synthetic set, none on humpback.
RANK_BY = ("inliers", "votes")
DEFAULT_RANK_BY = "inliers"
VERIFIED_OFFSET = 1e6
# Extra neighbours fetched per excluded photo (at most EXCLUDE_EXTRA_MAX), to filter it out.
EXCLUDE_EXTRA = 2
EXCLUDE_EXTRA_MAX = 8


def rank_score(votes: float, inliers: int, *, min_inliers: int = MIN_INLIERS, rank_by: str = DEFAULT_RANK_BY) -> float:
    """The plain ranking score of a candidate.

    ``rank_by="inliers"``: verified individuals (inliers >= ``min_inliers``) above the others:
    verified ``VERIFIED_OFFSET + inliers + votes``, unverified ``votes`` (LNBNN votes stay far below
    the offset: at most 4,096 query descriptors voting at most sqrt(2) each). ``rank_by="votes"``:
    the votes alone.
    """
    if rank_by == "votes":
        return float(votes)
    if rank_by != "inliers":
        raise ValueError(f"unknown rank_by {rank_by!r} (choose from {', '.join(RANK_BY)})")
    if inliers >= min_inliers:
        return VERIFIED_OFFSET + float(inliers) + float(votes)
    return float(votes)


@dataclass(frozen=True, eq=False)
class LocalCandidate:
    """One individual proposed for a query.

    Attributes:
        individual_id: the individual (as given to :meth:`LocalIndex.add`).
        best_photo_id: its photo with the most verified inliers (or the most votes).
        votes: the individual's LNBNN votes.
        inliers: verified inlier correspondences with ``best_photo_id`` (0: none verified).
        pairs: float32 [n, 4] (qx, qy, gx, gy) inlier correspondences in each photo's own pixels,
            strongest first.
        score: the plain score the candidates are ranked by (:func:`rank_score`).
        verified: True when this candidate's photos went through spatial verification.
    """

    individual_id: int
    best_photo_id: int
    votes: float
    inliers: int
    pairs: np.ndarray
    score: float
    verified: bool = False


@dataclass(frozen=True, eq=False)
class LocalResult:
    """The ranked candidates of one query.

    Attributes:
        candidates: best first (at most ``k``).
        n_query_features: the query's keypoints (0: nothing to match, candidates is empty).
        photo_votes: every photo that received votes -> its LNBNN votes (for analysis).
    """

    candidates: list[LocalCandidate]
    n_query_features: int
    photo_votes: dict[int, float] = field(default_factory=dict)


@dataclass
class _Photo:
    individual_id: int
    n: int
    feats: LocalFeatures | None


def _photo_range(photo_id: int) -> tuple[int, int]:
    return photo_id << KP_BITS, (photo_id + 1) << KP_BITS


class LocalIndex:
    """Gallery photos' local features, searchable by LNBNN votes with spatial verification.

    Args:
        k: LNBNN neighbours per query descriptor.
        exact_below: gallery descriptors below which the search is exact.
        nprobe: inverted-file cells searched per query descriptor (approximate regime).
        loader: ``photo_id -> LocalFeatures`` to fetch a gallery photo's features when they are
            needed (verification, a rebuild) instead of keeping every photo's features in memory;
            None keeps them in memory (138 bytes a keypoint, about 69 KB a photo).
        transform: the pose spatial verification fits ("similarity" or "affine").
        min_inliers: verified inliers below this count as none.
        rank_by: the ranking score, "inliers" or "votes" (:func:`rank_score`).
    """

    def __init__(self, *, k: int = DEFAULT_K, exact_below: int = EXACT_BELOW, nprobe: int = DEFAULT_NPROBE,
                 pq_from: int = PQ_FROM, loader: Callable[[int], LocalFeatures] | None = None,
                 transform: str = DEFAULT_TRANSFORM, min_inliers: int = MIN_INLIERS, rank_by: str = DEFAULT_RANK_BY):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r} (choose from {', '.join(TRANSFORMS)})")
        if rank_by not in RANK_BY:
            raise ValueError(f"unknown rank_by {rank_by!r} (choose from {', '.join(RANK_BY)})")
        if min_inliers < 3:
            raise ValueError(f"min_inliers must be at least 3 (a pose needs 3 correspondences), got {min_inliers}")
        self.transform = transform
        self.min_inliers = int(min_inliers)
        self.rank_by = rank_by
        self.k = k
        self.exact_below = exact_below
        self.pq_from = pq_from
        self.nprobe = nprobe
        self.loader = loader
        self._photos: dict[int, _Photo] = {}
        self._n_desc = 0
        self._index = None  # built lazily: faiss index over (photo << KP_BITS | kp) ids
        self._kind = ""  # "exact" or "ivf"
        self._trained_for = 0

    # --- contents --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._photos)

    def __contains__(self, photo_id: int) -> bool:
        return int(photo_id) in self._photos

    def photo_ids(self) -> list[int]:
        """The gallery photos, in the order they were added."""
        return list(self._photos)

    def individual_of(self, photo_id: int) -> int:
        return self._photos[int(photo_id)].individual_id

    @property
    def n_descriptors(self) -> int:
        return self._n_desc

    @property
    def kind(self) -> str:
        """"exact" or "ivf" once searched or filled ("" while empty)."""
        self._ensure_index()
        return self._kind

    def features(self, photo_id: int) -> LocalFeatures:
        """A gallery photo's features (from memory, or the loader)."""
        p = self._photos[int(photo_id)]
        if p.feats is not None:
            return p.feats
        if self.loader is None:
            raise KeyError(f"photo {photo_id}: features not kept and no loader given")
        return self.loader(int(photo_id))

    def add(self, photo_id: int, individual_id: int, feats: LocalFeatures) -> None:
        """Add (or replace) a gallery photo."""
        photo_id = int(photo_id)
        if not 0 <= photo_id <= MAX_PHOTO_ID:
            raise ValueError(f"photo id {photo_id} is outside 0..{MAX_PHOTO_ID}")
        if len(feats) > (1 << KP_BITS):
            raise ValueError(f"photo {photo_id}: {len(feats)} keypoints, at most {1 << KP_BITS}")
        if feats.mirrored:
            raise ValueError(f"photo {photo_id}: mirrored features are for queries, not the gallery")
        if photo_id in self._photos:
            self.remove(photo_id)
        self._photos[photo_id] = _Photo(individual_id, len(feats), None if self.loader else feats)
        self._n_desc += len(feats)
        if self._index is not None and len(feats):
            if self._needs_rebuild():
                self._index = None
            else:
                self._add_to_index(photo_id, feats)

    def add_many(self, items: Iterable[tuple[int, int, LocalFeatures]]) -> None:
        """Add many photos; the index is rebuilt once, on the next search (faster than ``add`` one by one)."""
        self._index = None
        for pid, ind, feats in items:
            self.add(pid, ind, feats)

    def remove(self, photo_id: int) -> None:
        """Remove a gallery photo (KeyError if absent)."""
        photo_id = int(photo_id)
        p = self._photos.pop(photo_id)
        self._n_desc -= p.n
        if self._index is not None and p.n:
            lo, hi = _photo_range(photo_id)
            self._index.remove_ids(faiss.IDSelectorRange(lo, hi))

    def relabel(self, photo_id: int, individual_id: int) -> None:
        """Give a gallery photo another individual (KeyError if absent); the index is unchanged."""
        self._photos[int(photo_id)].individual_id = individual_id

    # --- the faiss index ---------------------------------------------------------------------

    def _needs_rebuild(self) -> bool:
        n = self._n_desc
        if self._kind == "exact":
            return n >= self.exact_below
        if self._kind == "ivf" and n >= self.pq_from:
            return True
        return n >= RETRAIN_GROWTH * self._trained_for or n * RETRAIN_GROWTH <= self._trained_for or n < self.exact_below

    def _all_descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        descs, ids = [], []
        for pid, p in self._photos.items():
            if p.n:
                f = self.features(pid)
                descs.append(f.desc)
                ids.append((pid << KP_BITS) + np.arange(p.n, dtype=np.int64))
        if not descs:
            return np.zeros((0, DESC_DIM), np.float32), np.zeros(0, np.int64)
        return np.concatenate(descs).astype(np.float32), np.concatenate(ids)

    def _ensure_index(self) -> None:
        if self._index is not None and not self._needs_rebuild():
            return
        x, ids = self._all_descriptors()
        n = len(x)
        if n < self.exact_below:
            index = faiss.IndexIDMap(faiss.IndexScalarQuantizer(DESC_DIM, faiss.ScalarQuantizer.QT_8bit_direct))
            self._kind = "exact"
        else:
            nlist = int(min(65536, 2 ** round(math.log2(NLIST_FACTOR * math.sqrt(n)))))
            quantizer = faiss.IndexFlatL2(DESC_DIM)
            if n >= self.pq_from:
                index = faiss.IndexIVFPQ(quantizer, DESC_DIM, nlist, PQ_M, 8)
            else:
                # by_residual=False: 8-bit direct codes hold the uint8 descriptor itself (a residual would be clipped)
                index = faiss.IndexIVFScalarQuantizer(quantizer, DESC_DIM, nlist, faiss.ScalarQuantizer.QT_8bit_direct,
                                                      faiss.METRIC_L2, False)
            index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
            index.cp.niter = KMEANS_ITERS
            rng = np.random.default_rng(0)
            sample = x if n <= nlist * TRAIN_POINTS_PER_CELL else x[rng.choice(n, nlist * TRAIN_POINTS_PER_CELL, replace=False)]
            index.train(sample)
            index.nprobe = self.nprobe
            self._kind = "ivfpq" if n >= self.pq_from else "ivf"
        self._trained_for = n
        if n:
            index.add_with_ids(x, ids)
        self._index = index

    def _add_to_index(self, photo_id: int, feats: LocalFeatures) -> None:
        ids = (photo_id << KP_BITS) + np.arange(len(feats), dtype=np.int64)
        self._index.add_with_ids(feats.descriptors_f32(), ids)

    # --- search ------------------------------------------------------------------------------

    def _neighbours(self, desc: np.ndarray, excludes: list[list[int]], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Nearest gallery descriptors of a stack of query descriptors.

        ``rows`` gives each query's number of descriptors, ``excludes`` each query's photos to
        leave out. Returns (distances [N, k+1] in RootSIFT units, photo ids [N, k+1], -1 where none).

        Excluded photos are filtered out of a few extra neighbours rather than by a faiss selector:
        selectors doubled the exact search's time (1.6 s -> 2.9 s at 477k descriptors).
        """
        self._ensure_index()
        k1 = self.k + 1
        extra = min(EXCLUDE_EXTRA_MAX, EXCLUDE_EXTRA * max((len(e) for e in excludes), default=0))
        params = faiss.SearchParametersIVF(nprobe=self.nprobe) if self._kind.startswith("ivf") else None
        d2, ids = self._index.search(desc, k1 + extra, params=params)
        photo = np.where(ids >= 0, ids >> KP_BITS, -1)
        if extra:
            drop = np.zeros(photo.shape, bool)
            start = 0
            for n, excl in zip(rows, excludes):
                if excl:
                    drop[start:start + n] = np.isin(photo[start:start + n], excl)
                start += n
            photo = np.where(drop, -1, photo)
            order = np.argsort(photo < 0, axis=1, kind="stable")  # kept neighbours first, in distance order
            photo = np.take_along_axis(photo, order, axis=1)[:, :k1]
            d2 = np.take_along_axis(d2, order, axis=1)[:, :k1]
        return np.sqrt(np.maximum(d2, 0.0)) / DESC_SCALE, photo

    def _votes(self, dist: np.ndarray, photo: np.ndarray) -> tuple[dict[int, float], dict]:
        """LNBNN votes of one query's neighbours: (per photo, per individual)."""
        k = self.k
        ok = photo[:, k] >= 0  # fewer than k+1 neighbours: no normaliser, no vote
        qi = np.repeat(np.flatnonzero(ok), k)
        ph = photo[ok, :k].ravel()
        vote = (dist[ok, k][:, None] - dist[ok, :k]).ravel()
        good = ph >= 0
        qi, ph, vote = qi[good].astype(np.int64), ph[good], np.maximum(vote[good], 0.0)
        if not len(ph):
            return {}, {}
        uniq, inv = np.unique(ph, return_inverse=True)
        key_of: dict = {}  # individual id -> dense code
        codes = np.array([key_of.setdefault(self._photos[int(p)].individual_id, len(key_of)) for p in uniq])
        ind = codes[inv]
        # one vote per (query descriptor, photo) and per (query descriptor, individual): the best
        order = np.argsort(-vote, kind="stable")
        qi, inv, ind, vote = qi[order], inv[order], ind[order], vote[order]
        _, first = np.unique(qi * len(uniq) + inv, return_index=True)
        photo_votes = np.bincount(inv[first], weights=vote[first], minlength=len(uniq))
        _, first = np.unique(qi * len(key_of) + ind, return_index=True)
        ind_votes = np.bincount(ind[first], weights=vote[first], minlength=len(key_of))
        return ({int(p): float(v) for p, v in zip(uniq, photo_votes)},
                {i: float(ind_votes[c]) for i, c in key_of.items()})

    def votes_many(self, queries: list[LocalFeatures], excludes: list[Iterable[int]] | None = None) -> list[tuple[dict, dict]]:
        """:meth:`votes` for many queries with one index search."""
        excludes = [self._present(e) for e in (excludes or [()] * len(queries))]
        if len(excludes) != len(queries):
            raise ValueError("excludes needs one entry per query")
        rows = [len(q) for q in queries]
        if not self._n_desc or not sum(rows):
            return [({}, {}) for _ in queries]
        desc = np.concatenate([q.desc for q in queries if len(q)]).astype(np.float32)
        dist, photo = self._neighbours(desc, excludes, rows)
        out, start = [], 0
        for n in rows:
            out.append(self._votes(dist[start:start + n], photo[start:start + n]) if n else ({}, {}))
            start += n
        return out

    def votes(self, query: LocalFeatures, exclude: Iterable[int] = ()) -> tuple[dict[int, float], dict]:
        """LNBNN votes of a query: (per gallery photo, per individual); photos without votes are absent."""
        return self.votes_many([query], [exclude])[0]

    def _verify(self, query: LocalFeatures, photo_id: int) -> Verification:
        """Spatial verification of a query against one gallery photo, with this index's settings."""
        return verify(query, self.features(photo_id), min_inliers=self.min_inliers, transform=self.transform)

    def _present(self, exclude: Iterable[int]) -> list[int]:
        return [p for p in (int(x) for x in exclude) if p in self._photos and self._photos[p].n]

    def rank(self, query: LocalFeatures, votes: tuple[dict, dict], *, k: int = 5,
             verify_top: int = DEFAULT_VERIFY_TOP, verify_photos: int = DEFAULT_VERIFY_PHOTOS,
             mirrored: LocalFeatures | None = None, m_votes: tuple[dict, dict] | None = None) -> LocalResult:
        """Rank individuals from a query's :meth:`votes` and verify the best (see :meth:`search`);
        ``m_votes`` are the votes of the ``mirrored`` query features."""
        per_photo, per_ind = dict(votes[0]), dict(votes[1])
        orient = dict.fromkeys(per_ind, query)
        if m_votes is not None:
            m_photo, m_ind = m_votes
            for ind, v in m_ind.items():
                if v > per_ind.get(ind, -1.0):
                    per_ind[ind] = v
                    orient[ind] = mirrored
            for p, v in m_photo.items():
                if orient[self._photos[p].individual_id] is mirrored:
                    per_photo[p] = v
                else:
                    per_photo.setdefault(p, 0.0)
        if not per_ind:
            return LocalResult([], len(query), per_photo)
        photos_of: dict = {}
        for p, _ in sorted(per_photo.items(), key=lambda t: -t[1]):
            if orient[self._photos[p].individual_id] is mirrored and p not in m_votes[0]:
                continue
            photos_of.setdefault(self._photos[p].individual_id, []).append(p)
        ranked = sorted(per_ind, key=lambda i: -per_ind[i])
        cands = []
        # unverified candidates rank by votes, i.e. in this order: the first verify_top + k suffice
        for r, ind in enumerate(ranked[:verify_top + k]):
            best = photos_of[ind][0]
            inl, pairs = 0, np.zeros((0, 4), np.float32)
            if r < verify_top:
                for p in photos_of[ind][:verify_photos]:
                    v = self._verify(orient[ind], p)
                    if v.inliers > inl:
                        inl, pairs, best = v.inliers, v.pairs, p
            score = rank_score(per_ind[ind], inl, min_inliers=self.min_inliers, rank_by=self.rank_by)
            cands.append(LocalCandidate(ind, best, per_ind[ind], inl, pairs, score, r < verify_top))
        cands.sort(key=lambda c: -c.score)
        return LocalResult(cands[:k], len(query), per_photo)

    def search(self, query: LocalFeatures, *, k: int = 5, exclude: Iterable[int] = frozenset(),
               verify_top: int = DEFAULT_VERIFY_TOP, verify_photos: int = DEFAULT_VERIFY_PHOTOS,
               mirrored: LocalFeatures | None = None) -> LocalResult:
        """The ``k`` most likely individuals for a query photo.

        Args:
            query: the query photo's features.
            k: candidates returned.
            exclude: gallery photos to leave out (e.g. the query itself when it is in the gallery).
            verify_top: how many of the best-voted individuals are spatially verified (0: none).
            verify_photos: how many of each such individual's best-voted photos are verified.
            mirrored: the query's mirrored features (``extract(..., mirror=True)``), for a
                flip-aware search: each individual keeps the better of the two orientations.
        """
        return self.search_many([query], k=k, excludes=[exclude], verify_top=verify_top,
                                verify_photos=verify_photos, mirrored=None if mirrored is None else [mirrored])[0]

    def search_many(self, queries: list[LocalFeatures], *, k: int = 5, excludes: list[Iterable[int]] | None = None,
                    verify_top: int = DEFAULT_VERIFY_TOP, verify_photos: int = DEFAULT_VERIFY_PHOTOS,
                    mirrored: list[LocalFeatures] | None = None) -> list[LocalResult]:
        """:meth:`search` for many queries with one index search (faster for a batch)."""
        if any(q.mirrored for q in queries):
            raise ValueError("mirrored features go in `mirrored`, the query itself must be unmirrored")
        if mirrored is not None and len(mirrored) != len(queries):
            raise ValueError("mirrored needs one entry per query")
        votes = self.votes_many(queries, excludes)
        m_votes = self.votes_many(mirrored, excludes) if mirrored is not None else [None] * len(queries)
        return [self.rank(q, v, k=k, verify_top=verify_top, verify_photos=verify_photos,
                          mirrored=None if mirrored is None else mirrored[i], m_votes=m_votes[i])
                for i, (q, v) in enumerate(zip(queries, votes))]
