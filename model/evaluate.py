"""Evaluation protocols (``seed``, ``open``) and re-identification metrics (top-1, top-5, MAP@5).

Torch-free: the protocols split labelled records into training, gallery and query photos; the
metrics take a score matrix ``[Q, G]`` (higher = more likely the same whale), rank the gallery's
individuals for each query by their best-scoring photo, and report top-1, top-5 and MAP@5 (the
Kaggle definition: with one true individual per query, 1/rank if it is within the first five),
overall and split by how many photos the query's individual has (1-2, 3-5, 6+).

Records are anything with ``path``, ``individual``, ``box`` and ``id_known`` attributes
(:class:`model.data.records.LabelledPhoto`). Rows with ``id_known`` false are never positives: they may
sit in a gallery as distractors but are never ranked as an individual, and are never queries.

Protocols:

- ``seed`` (the paper's): individuals with two or more photos; about 2/3 of each individual's
  photos form the gallery, which is also the training set, the rest are queries.
- ``open`` (the real use): individuals with two or more photos are split into training and
  unseen individuals; for each unseen individual one photo is the query and its other photos
  join a gallery that also holds every other photo of the data set (the other unseen
  individuals, the training individuals, singletons and unidentified photos) as distractors.
  No query individual is in the training set.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import DataError, Interrupted

PROTOCOLS = ("seed", "open")
# Buckets of "photos of the query's individual in the whole data set".
PHOTO_BUCKETS: tuple[tuple[str, int, float], ...] = (("1-2", 1, 2), ("3-5", 3, 5), ("6+", 6, math.inf))


def _noop_progress(fraction: float, message: str) -> None:
    pass


def _never() -> bool:
    return False


# --- protocols -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Indices into the record list for one protocol run.

    Attributes:
        protocol: "seed" or "open".
        seed: the random seed that made the split.
        train: records to train on (seed protocol: the same as ``gallery``).
        gallery: records the queries are scored against.
        queries: records to identify.
    """

    protocol: str
    seed: int
    train: tuple[int, ...]
    gallery: tuple[int, ...]
    queries: tuple[int, ...]

    def summary(self, records: Sequence[Any]) -> dict:
        """Counts of photos and individuals per part (for reports and manifests)."""
        def ids(idx):
            return {records[i].individual for i in idx if records[i].id_known}
        return {
            "protocol": self.protocol, "seed": self.seed,
            "train_photos": len(self.train), "train_individuals": len(ids(self.train)),
            "gallery_photos": len(self.gallery), "gallery_individuals": len(ids(self.gallery)),
            "queries": len(self.queries), "query_individuals": len(ids(self.queries)),
        }


def _known_groups(records: Sequence[Any]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.id_known:
            groups[str(r.individual)].append(i)
    return groups


def photo_counts(records: Sequence[Any]) -> dict[str, int]:
    """Photos per known individual in the whole record list."""
    return {k: len(v) for k, v in _known_groups(records).items()}


def seed_split(records: Sequence[Any], seed: int = 0, gallery_fraction: float = 2 / 3) -> Split:
    """The paper's protocol: per individual with 2+ photos, ~2/3 gallery (= training), the rest queries.

    Each individual keeps at least one gallery photo and gives at least one query. Deterministic
    for a given seed and record order.

    Raises:
        DataError: fewer than two individuals have two or more photos.
    """
    rng = np.random.default_rng(seed)
    groups = {k: v for k, v in _known_groups(records).items() if len(v) >= 2}
    if len(groups) < 2:
        raise DataError(f"seed protocol needs at least 2 individuals with 2+ photos; found {len(groups)}")
    gallery: list[int] = []
    queries: list[int] = []
    for key in sorted(groups):
        idx = list(groups[key])
        rng.shuffle(idx)
        n_gal = min(len(idx) - 1, max(1, round(len(idx) * gallery_fraction)))
        gallery += idx[:n_gal]
        queries += idx[n_gal:]
    gallery.sort()
    queries.sort()
    return Split("seed", seed, tuple(gallery), tuple(gallery), tuple(queries))


def open_split(records: Sequence[Any], seed: int = 0, unseen_fraction: float = 0.2,
               min_unseen: int = 2) -> Split:
    """The open protocol: query individuals are never in the training set.

    Individuals with 2+ photos are split into training and unseen individuals (``unseen_fraction``
    of them, at least ``min_unseen``). Each unseen individual gives one query photo; every other
    photo (its own other photos, other unseen individuals, training individuals, singletons and
    unidentified photos) forms the gallery. Training uses only the training individuals' photos.

    Raises:
        DataError: too few individuals with two or more photos.
    """
    rng = np.random.default_rng(seed)
    groups = {k: v for k, v in _known_groups(records).items() if len(v) >= 2}
    keys = sorted(groups)
    n_unseen = max(min_unseen, round(len(keys) * unseen_fraction))
    if len(keys) < n_unseen + 1:
        raise DataError(f"open protocol needs at least {n_unseen + 1} individuals with 2+ photos; "
                        f"found {len(keys)}")
    order = rng.permutation(len(keys))
    unseen = {keys[i] for i in order[:n_unseen]}
    train = sorted(i for k in keys if k not in unseen for i in groups[k])
    queries = sorted(int(rng.choice(groups[k])) for k in sorted(unseen))
    qset = set(queries)
    gallery = [i for i in range(len(records)) if i not in qset]
    return Split("open", seed, tuple(train), tuple(gallery), tuple(queries))


def make_split(records: Sequence[Any], protocol: str, seed: int = 0) -> Split:
    """:func:`seed_split` or :func:`open_split` by name.

    Raises:
        ValueError: unknown protocol name.
    """
    if protocol == "seed":
        return seed_split(records, seed)
    if protocol == "open":
        return open_split(records, seed)
    raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")


# --- metrics ---------------------------------------------------------------------------------

@dataclass
class Metrics:
    """Top-1, top-5 and MAP@5 over a set of queries (fractions 0..1)."""

    n: int = 0
    top1: float = 0.0
    top5: float = 0.0
    map5: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    """Metrics overall and split by photos per individual, plus each query's rank.

    Attributes:
        overall: metrics over every query with a known individual.
        by_photos: bucket name ("1-2", "3-5", "6+") -> metrics of the queries whose individual
            has that many photos in the data set (empty buckets are left out).
        ranks: per evaluated query, the 1-based rank of its individual (``inf`` when absent).
        info: free-form details (protocol, split summary, timings).
    """

    overall: Metrics
    by_photos: dict[str, Metrics] = field(default_factory=dict)
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (without the per-query ranks)."""
        return {"overall": self.overall.to_dict(),
                "by_photos": {k: m.to_dict() for k, m in self.by_photos.items()},
                "info": self.info}


def _metrics(ranks: np.ndarray) -> Metrics:
    if len(ranks) == 0:
        return Metrics()
    inv = np.where(ranks <= 5, 1.0 / ranks, 0.0)
    return Metrics(int(len(ranks)), float(np.mean(ranks <= 1)), float(np.mean(ranks <= 5)), float(inv.mean()))


def _bucket(count: int) -> str:
    for name, lo, hi in PHOTO_BUCKETS:
        if lo <= count <= hi:
            return name
    return PHOTO_BUCKETS[0][0]


def individual_scores(scores: np.ndarray, gallery_ids: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Collapse photo scores [Q, G] to individual scores [Q, K] (best photo per individual).

    Gallery entries whose id is None (unidentified photos) are dropped: they are never ranked.

    Returns:
        The [Q, K] matrix and the K individual names (sorted).
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = sorted({g for g in gallery_ids if g is not None})
    col = {n: j for j, n in enumerate(names)}
    out = np.full((scores.shape[0], len(names)), -np.inf)
    for g, gid in enumerate(gallery_ids):
        if gid is None:
            continue
        j = col[gid]
        np.maximum(out[:, j], scores[:, g], out=out[:, j])
    return out, names


def ranks_of_truth(ind_scores: np.ndarray, names: Sequence[str], query_ids: Sequence[str]) -> np.ndarray:
    """1-based rank of each query's true individual among ``names`` (``inf`` if not there).

    Ties count against the query (a tied individual ranks ahead of the true one), so a constant
    score matrix gives no credit.
    """
    col = {n: j for j, n in enumerate(names)}
    ranks = np.full(len(query_ids), np.inf)
    for q, qid in enumerate(query_ids):
        j = col.get(qid)
        if j is None:
            continue
        s = ind_scores[q]
        t = s[j]
        if not np.isfinite(t):
            continue
        ranks[q] = 1 + int(np.sum(s > t)) + int(np.sum(s == t)) - 1
    return ranks


def evaluate_scores(scores: np.ndarray, query_ids: Sequence[str | None], gallery_ids: Sequence[str | None],
                    counts: dict[str, int] | None = None) -> EvalResult:
    """Top-1, top-5 and MAP@5 of a score matrix (higher = more likely the same individual).

    Args:
        scores: [Q, G] scores of each query against each gallery photo (or class).
        query_ids: the true individual of each query; None for an unidentified photo (skipped).
        gallery_ids: the individual of each gallery photo; None for an unidentified photo (a
            distractor that is never ranked).
        counts: photos per individual in the whole data set, for the split by photos per
            individual (default: counted from the queries and gallery).

    Returns:
        The metrics, overall and by photos per individual, with each evaluated query's rank. A
        query whose individual has no gallery photo counts as a miss.
    """
    scores = np.asarray(scores)
    if scores.shape != (len(query_ids), len(gallery_ids)):
        raise ValueError(f"scores have shape {scores.shape}, expected ({len(query_ids)}, {len(gallery_ids)})")
    keep = [i for i, q in enumerate(query_ids) if q is not None]
    qids = [str(query_ids[i]) for i in keep]
    gids = [None if g is None else str(g) for g in gallery_ids]
    ind, names = individual_scores(scores[keep], gids)
    ranks = ranks_of_truth(ind, names, qids)
    if counts is None:
        counts = Counter(q for q in qids) + Counter(g for g in gids if g is not None)
    buckets: dict[str, list[float]] = defaultdict(list)
    for qid, r in zip(qids, ranks, strict=True):
        buckets[_bucket(int(counts.get(qid, 1)))].append(r)
    by = {name: _metrics(np.asarray(buckets[name])) for name, _, _ in PHOTO_BUCKETS if buckets.get(name)}
    missing = int(np.sum(~np.isfinite(ranks)))
    return EvalResult(_metrics(ranks), by, ranks, {"queries_without_positive": missing,
                                                   "gallery_individuals": len(names)})


def random_scores(n_queries: int, n_gallery: int, seed: int = 0) -> np.ndarray:
    """The random baseline: independent uniform scores [Q, G]."""
    return np.random.default_rng(seed).random((n_queries, n_gallery))


def evaluate_random(records: Sequence[Any], protocol: str = "seed", seed: int = 0) -> EvalResult:
    """The random baseline on a protocol (scores drawn uniformly per gallery photo)."""
    split = make_split(records, protocol, seed)
    scores = random_scores(len(split.queries), len(split.gallery), seed)
    res = evaluate_split_scores(records, split, scores)
    res.info["method"] = "random"
    return res


def ids_of(records: Sequence[Any], idx: Sequence[int]) -> list[str | None]:
    """The individual of each indexed record, None where it is unidentified."""
    return [str(records[i].individual) if records[i].id_known else None for i in idx]


def evaluate_split_scores(records: Sequence[Any], split: Split, scores: np.ndarray) -> EvalResult:
    """:func:`evaluate_scores` for a split's queries and gallery, bucketed by photos in ``records``."""
    res = evaluate_scores(scores, ids_of(records, split.queries), ids_of(records, split.gallery),
                          photo_counts(records))
    res.info.update(split.summary(records))
    return res


# --- bundles ---------------------------------------------------------------------------------

def load_crops(records: Sequence[Any], idx: Sequence[int], *, max_side: int = 1600) -> list[np.ndarray]:
    """Decode the indexed photos (RGB uint8), reduced to ``max_side`` for speed."""
    from model.preprocess import load_image

    return [load_image(records[i].path, max_side=max_side) for i in idx]


def _scaled_box(box, orig_hw: tuple[int, int], new_hw: tuple[int, int]):
    if box is None:
        return None
    sy, sx = new_hw[0] / orig_hw[0], new_hw[1] / orig_hw[1]
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def embed_records(engine: Any, records: Sequence[Any], idx: Sequence[int], *, flip: bool = False,
                  max_side: int = 1600, progress: Callable[[float, str], None] = _noop_progress,
                  should_stop: Callable[[], bool] = _never) -> np.ndarray:
    """Embed the indexed records with an inference Engine (boxes scaled with any reduction).

    Args:
        engine: a loaded :class:`model.inference.Engine`.
        records: the records.
        idx: which records to embed.
        flip: also embed the left-right mirrored photo and average the two embeddings.
        max_side: photos are decoded with their longer side at most this.
        progress: ``progress(fraction, message)``.
        should_stop: returns True to stop (raises Interrupted).

    Raises:
        ImageError: a photo cannot be read (names the file).
        Interrupted: ``should_stop`` returned True.
    """
    from model.preprocess import load_image

    out = []
    step = 64
    for s in range(0, len(idx), step):
        if should_stop():
            raise Interrupted("evaluation stopped")
        images, boxes = [], []
        for i in idx[s:s + step]:
            r = records[i]
            full = None
            if r.box is not None:
                from PIL import Image

                with Image.open(r.path) as im:
                    full = im.size[::-1]
            img = load_image(r.path, max_side=max_side)
            box = _scaled_box(r.box, full, img.shape[:2]) if full else None
            images.append(img)
            boxes.append(box)
        e = engine.embed(images, boxes)
        if flip:
            fl = [np.ascontiguousarray(im[:, ::-1]) for im in images]
            fb = [None if b is None else (im.shape[1] - b[2], b[1], im.shape[1] - b[0], b[3])
                  for im, b in zip(images, boxes, strict=True)]
            e = (e + engine.embed(fl, fb)) / 2.0
        out.append(e)
        progress(min(1.0, (s + step) / max(len(idx), 1)), f"embedded {min(s + step, len(idx))}/{len(idx)} photos")
    return np.concatenate(out) if out else np.zeros((0, engine.embedding_dim), np.float32)


def evaluate_bundle(bundle: str | Path, records: Sequence[Any], protocol: str = "seed", seed: int = 0, *,
                    flip: bool = False, device: str = "auto",
                    progress: Callable[[float, str], None] = _noop_progress,
                    should_stop: Callable[[], bool] = _never) -> EvalResult:
    """Evaluate a model bundle on a protocol: embed every needed photo once, score with the head.

    The protocol's training part is not used here: for a fair figure the bundle must have been
    trained on ``make_split(records, protocol, seed).train`` (and nothing from its queries).

    Args:
        bundle: the bundle folder.
        records: labelled records (see :func:`model.data.records.read_labels`).
        protocol: "seed" or "open".
        seed: the split's seed.
        flip: test-time augmentation: average each photo's embedding with its mirror image's.
        device: onnxruntime device ("auto", "cpu", "cuda").
        progress: ``progress(fraction, message)``.
        should_stop: returns True to stop.

    Raises:
        BundleError: the bundle cannot be loaded.
        DataError: the records do not support the protocol.
        ImageError: a photo cannot be read.
        Interrupted: ``should_stop`` returned True.
    """
    from model.inference import Engine

    t0 = time.perf_counter()
    split = make_split(records, protocol, seed)
    engine = Engine.load(bundle, device)
    need = sorted(set(split.gallery) | set(split.queries))
    pos = {i: k for k, i in enumerate(need)}
    emb = embed_records(engine, records, need, flip=flip,
                        progress=lambda f, m: progress(0.9 * f, m), should_stop=should_stop)
    t1 = time.perf_counter()
    q = emb[[pos[i] for i in split.queries]]
    g = emb[[pos[i] for i in split.gallery]]
    scores = engine.score(q, g) if len(q) else np.zeros((0, len(g)), np.float32)
    progress(1.0, "scored")
    res = evaluate_split_scores(records, split, scores)
    res.info.update({"bundle": str(bundle), "flip": flip, "provider": engine.provider,
                     "embed_s": round(t1 - t0, 2), "score_s": round(time.perf_counter() - t1, 2)})
    return res


def format_result(res: EvalResult, title: str = "") -> str:
    """A short plain-text report: overall and per-bucket top-1, top-5, MAP@5."""
    lines = [title] if title else []
    o = res.overall
    lines.append(f"queries {o.n}: top-1 {o.top1:.1%}  top-5 {o.top5:.1%}  MAP@5 {o.map5:.3f}")
    for name, m in res.by_photos.items():
        lines.append(f"  individuals with {name} photos ({m.n} queries): top-1 {m.top1:.1%}  "
                     f"top-5 {m.top5:.1%}  MAP@5 {m.map5:.3f}")
    return "\n".join(lines)
