"""Evaluation protocols (``seed``, ``open``, ``all``) and re-identification metrics (top-1, top-5, MAP@5).

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
- ``all`` (training-free matchers, e.g. local features, on all of a set): one photo of each
  individual with two or more photos is the query, every other photo is in the gallery; each
  unidentified photo in the gallery counts as an individual of its own (a distractor that can take
  a top-5 place, as an unmatched photo would in a catalog), and singletons are distractors too.
  Nothing is trained: a bundle evaluated on ``all`` must not have been trained on these photos.

Methods (:func:`evaluate_methods`): ``local`` (local features alone, no model: model.local),
``embedding`` (a bundle's head score of each individual's best photo) and ``fused`` (the two
combined per query as the app combines them without calibration: model.fusion), side by side on
one split.

Over 600 lines, one job: the evaluation protocols and their metrics. Where to cut if it grows:
the splits (seed/open/all) and the per-method scoring could be two modules.
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

PROTOCOLS = ("seed", "open", "all")
METHODS = ("local", "embedding", "fused")
# Gallery id of an unidentified photo that counts as an individual of its own (protocol "all").
UNMATCHED_PREFIX = "unmatched photo #"
# Photos are decoded this large for local features, as the app decodes them (app.services.importing).
LOCAL_MAX_SIDE = 1024
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
        protocol: "seed", "open" or "all".
        seed: the random seed that made the split.
        train: records to train on (seed protocol: the same as ``gallery``; ``all``: none).
        gallery: records the queries are scored against.
        queries: records to identify.
        unmatched_individuals: each unidentified gallery photo is ranked as an individual of its
            own (a distractor); False: unidentified photos are never ranked.
    """

    protocol: str
    seed: int
    train: tuple[int, ...]
    gallery: tuple[int, ...]
    queries: tuple[int, ...]
    unmatched_individuals: bool = False

    def summary(self, records: Sequence[Any]) -> dict:
        """Counts of photos and individuals per part (for reports and manifests)."""
        def ids(idx):
            return {records[i].individual for i in idx if records[i].id_known}
        return {
            "protocol": self.protocol, "seed": self.seed,
            "train_photos": len(self.train), "train_individuals": len(ids(self.train)),
            "gallery_photos": len(self.gallery), "gallery_individuals": len(ids(self.gallery)),
            "queries": len(self.queries), "query_individuals": len(ids(self.queries)),
            "gallery_unidentified": sum(1 for i in self.gallery if not records[i].id_known),
        }


def _known_groups(records: Sequence[Any]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.id_known:
            groups[str(r.individual)].append(i)
    return groups


def _multi_photo_groups(records: Sequence[Any], protocol: str) -> dict[str, list[int]]:
    """The individuals with 2+ photos (their record indices); at least two of them, or DataError."""
    groups = {k: v for k, v in _known_groups(records).items() if len(v) >= 2}
    if len(groups) < 2:
        raise DataError(f"{protocol} protocol needs at least 2 individuals with 2+ photos; found {len(groups)}")
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
    groups = _multi_photo_groups(records, "seed")
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


def all_split(records: Sequence[Any], seed: int = 0) -> Split:
    """The protocol for training-free matchers on all of a set.

    One photo (a seeded choice) of each individual with 2+ photos is the query; every other photo
    (the rest of those individuals' photos, singletons, unidentified photos) is in the gallery,
    where each unidentified photo is ranked as an individual of its own. Nothing to train on.

    Raises:
        DataError: fewer than two individuals have two or more photos.
    """
    rng = np.random.default_rng(seed)
    groups = _multi_photo_groups(records, "all")
    queries = sorted(int(rng.choice(groups[k])) for k in sorted(groups))
    qset = set(queries)
    gallery = [i for i in range(len(records)) if i not in qset]
    return Split("all", seed, (), tuple(gallery), tuple(queries), unmatched_individuals=True)


def make_split(records: Sequence[Any], protocol: str, seed: int = 0) -> Split:
    """:func:`seed_split`, :func:`open_split` or :func:`all_split` by name.

    Raises:
        ValueError: unknown protocol name.
    """
    if protocol == "seed":
        return seed_split(records, seed)
    if protocol == "open":
        return open_split(records, seed)
    if protocol == "all":
        return all_split(records, seed)
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


def gallery_ids_of(records: Sequence[Any], split: Split) -> list[str | None]:
    """The individual of each gallery photo of a split, as ranked: unidentified photos are None,
    or ``UNMATCHED_PREFIX + record index`` when the split ranks them as individuals of their own."""
    if not split.unmatched_individuals:
        return ids_of(records, split.gallery)
    return [str(records[i].individual) if records[i].id_known else f"{UNMATCHED_PREFIX}{i}" for i in split.gallery]


def evaluate_split_scores(records: Sequence[Any], split: Split, scores: np.ndarray) -> EvalResult:
    """:func:`evaluate_scores` for a split's queries and gallery, bucketed by photos in ``records``."""
    res = evaluate_scores(scores, ids_of(records, split.queries), gallery_ids_of(records, split),
                          photo_counts(records))
    res.info.update(split.summary(records))
    return res


# --- decoding ------------------------------------------------------------------------------

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


def decode_record(record: Any, max_side: int) -> tuple[np.ndarray, tuple | None]:
    """A record's photo decoded at most ``max_side`` on its longer side, and its box in those pixels.

    Raises:
        ImageError: the photo cannot be read (names the file).
    """
    from model.preprocess import load_image

    img = load_image(record.path, max_side=max_side)  # first: raises ImageError naming the file
    if record.box is None:
        return img, None
    from PIL import Image

    with Image.open(record.path) as im:
        full = im.size[::-1]
    return img, _scaled_box(record.box, full, img.shape[:2])


# --- bundles ---------------------------------------------------------------------------------

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
    out = []
    step = 64
    for s in range(0, len(idx), step):
        if should_stop():
            raise Interrupted("evaluation stopped")
        images, boxes = [], []
        for i in idx[s:s + step]:
            img, box = decode_record(records[i], max_side)
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


def _embedding_scores(engine: Any, records: Sequence[Any], split: Split, *, flip: bool,
                      progress: Callable[[float, str], None], should_stop: Callable[[], bool]
                      ) -> tuple[np.ndarray, dict]:
    """The head's score of every (query, gallery photo) pair of a split [Q, G], and the seconds
    spent embedding and scoring."""
    t0 = time.perf_counter()
    need = sorted(set(split.gallery) | set(split.queries))
    pos = {i: k for k, i in enumerate(need)}
    emb = embed_records(engine, records, need, flip=flip, progress=progress, should_stop=should_stop)
    t1 = time.perf_counter()
    q = emb[[pos[i] for i in split.queries]]
    g = emb[[pos[i] for i in split.gallery]]
    scores = engine.score(q, g) if len(q) else np.zeros((0, len(g)), np.float32)
    return scores, {"embed_s": round(t1 - t0, 2), "score_s": round(time.perf_counter() - t1, 2)}


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
        protocol: "seed", "open" or "all".
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

    split = make_split(records, protocol, seed)
    engine = Engine.load(bundle, device)
    scores, timing = _embedding_scores(engine, records, split, flip=flip, progress=lambda f, m: progress(0.9 * f, m),
                                       should_stop=should_stop)
    progress(1.0, "scored")
    res = evaluate_split_scores(records, split, scores)
    res.info.update({"method": "embedding", "bundle": str(bundle), "flip": flip, "provider": engine.provider,
                     **timing})
    return res


# --- local features, fusion: the three methods side by side ----------------------------------

def local_features_of(records: Sequence[Any], idx: Sequence[int], *, max_side: int = LOCAL_MAX_SIDE,
                      progress: Callable[[float, str], None] = _noop_progress,
                      should_stop: Callable[[], bool] = _never) -> dict[int, Any]:
    """Local features (:func:`model.local.features.extract`) of the indexed records' box crops.

    Photos are decoded as the app decodes them (at most ``max_side``); positions are in the
    decoded photo's pixels.

    Returns:
        record index -> LocalFeatures.

    Raises:
        ImageError: a photo cannot be read (names the file).
        Interrupted: ``should_stop`` returned True.
    """
    from model.local.features import extract

    out = {}
    for n, i in enumerate(idx):
        if should_stop():
            raise Interrupted("evaluation stopped")
        img, box = decode_record(records[i], max_side)
        out[i] = extract(img, box)
        if n % 16 == 15 or n == len(idx) - 1:
            progress((n + 1) / len(idx), f"local features of {n + 1}/{len(idx)} photos")
    return out


def _codes(gallery_ids: Sequence[str | None]) -> tuple[np.ndarray, int]:
    """Each gallery photo's individual as a dense code (-1: unidentified, never ranked) and how many."""
    names = sorted({g for g in gallery_ids if g is not None})
    col = {n: j for j, n in enumerate(names)}
    return np.array([-1 if g is None else col[g] for g in gallery_ids], np.int64), len(names)


def _photo_matrix(per_query: list[dict[int, float]], codes: np.ndarray, n_codes: int) -> np.ndarray:
    """[Q, G]: each gallery photo gets its individual's score for the query (-inf when unscored)."""
    out = np.full((len(per_query), len(codes)), -np.inf)
    ranked = codes >= 0
    for q, sc in enumerate(per_query):
        row = np.full(n_codes, -np.inf)
        if sc:
            row[np.fromiter(sc.keys(), np.int64, len(sc))] = np.fromiter(sc.values(), np.float64, len(sc))
        out[q, ranked] = row[codes[ranked]]
    return out


def _best_per_individual(scores: np.ndarray, codes: np.ndarray, n_codes: int,
                         photo_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per query, each individual's best photo score [Q, K] (-inf: no photo) and that photo's id [Q, K]."""
    best = np.full((scores.shape[0], n_codes), -np.inf)
    photo = np.full((scores.shape[0], n_codes), -1, np.int64)
    ranked = np.flatnonzero(codes >= 0)
    pid = np.asarray(photo_ids, np.int64)[ranked]
    for q in range(scores.shape[0]):
        s = np.asarray(scores[q], np.float64)[ranked]
        order = np.argsort(s, kind="stable")  # ascending: the best photo of an individual is written last
        best[q, codes[ranked][order]] = s[order]
        photo[q, codes[ranked][order]] = pid[order]
    return best, photo


def local_feature_records(records: Sequence[Any], split: Split) -> list[int]:
    """The records whose local features :func:`evaluate_local` needs: the ranked gallery photos
    (unidentified photos only where the split ranks them) and the queries."""
    codes, _ = _codes(gallery_ids_of(records, split))
    indexed = [g for g, c in zip(split.gallery, codes, strict=True) if c >= 0]
    return sorted(set(indexed) | set(split.queries))


def fill_local_index(index: Any, records: Sequence[Any], split: Split, feats: dict[int, Any]) -> Any:
    """Fill a LocalIndex with a split's ranked gallery photos as :func:`evaluate_local` ranks them:
    photo id = record index, individual id = the individual's position among the gallery's sorted
    individual names. Returns the index."""
    codes, _ = _codes(gallery_ids_of(records, split))
    index.add_many((g, int(c), feats[g]) for g, c in zip(split.gallery, codes, strict=True) if c >= 0)
    return index


def evaluate_local(records: Sequence[Any], split: Split, feats: dict[int, Any], *, k: int = 5,
                   index: Any = None, votes: list | None = None, verify_top: int | None = None,
                   verify_photos: int | None = None, progress: Callable[[float, str], None] = _noop_progress,
                   should_stop: Callable[[], bool] = _never) -> tuple[EvalResult, Any, list[Any]]:
    """Local features alone on a split, ranked as the app ranks (``local`` of :func:`evaluate_methods`).

    A :class:`model.local.index.LocalIndex` over the gallery's ranked photos; each query's
    individuals ranked by LNBNN votes with the best verified (:meth:`LocalIndex.rank`); the
    individuals past the ``k`` candidates by their votes.

    Args:
        records: labelled records.
        split: the protocol's split (:func:`make_split`).
        feats: record index -> LocalFeatures for every record of :func:`local_feature_records`
            (e.g. from :func:`local_features_of`, or a cache of it).
        k: candidates ranked by the full score (the app's shortlist); the rest by votes.
        index: the LocalIndex to rank with (its settings: transform, min_inliers, rank_by): empty (it
            is filled with the split's gallery) or already holding exactly that gallery (to measure
            several settings on one index); default ``LocalIndex()``.
        votes: the queries' :meth:`LocalIndex.votes_many` on that index, reused (default: searched).
        verify_top: individuals verified per query (default: LocalIndex.rank's).
        verify_photos: photos verified per such individual (default: LocalIndex.rank's).
        progress: ``progress(fraction, message)``.
        should_stop: returns True to stop.

    Returns:
        (the result, the filled index, each query's LocalResult). The result's ``info`` holds the
        split summary, "query_ms" (index search + ranking, per query, in a batch), "index" and
        "descriptors".

    Raises:
        Interrupted: ``should_stop`` returned True.
    """
    from model.local.index import LocalIndex

    codes, n_codes = _codes(gallery_ids_of(records, split))
    if index is None:
        index = LocalIndex()
    rank_kw = {name: v for name, v in (("verify_top", verify_top), ("verify_photos", verify_photos)) if v is not None}
    t1 = time.perf_counter()
    if not len(index):
        fill_local_index(index, records, split, feats)
    progress(0.0, "searching the local-feature index")
    queries = [feats[q] for q in split.queries]
    if votes is None:
        votes = index.votes_many(queries)
    elif len(votes) != len(queries):
        raise ValueError(f"{len(votes)} votes for {len(queries)} queries")
    results = []
    for n, (qf, v) in enumerate(zip(queries, votes, strict=True)):
        if should_stop():
            raise Interrupted("evaluation stopped")
        results.append(index.rank(qf, v, k=k, **rank_kw))
        progress((n + 1) / len(queries), f"verified {n + 1}/{len(queries)} queries")
    t2 = time.perf_counter()
    per_query = []
    for (_, per_ind), res in zip(votes, results, strict=True):
        sc = dict(per_ind)
        sc.update({c.individual_id: c.score for c in res.candidates})
        per_query.append(sc)
    r = evaluate_split_scores(records, split, _photo_matrix(per_query, codes, n_codes))
    r.info.update({"method": "local", "query_ms": round(1e3 * (t2 - t1) / max(1, len(queries)), 1),
                   "index": index.kind if len(index) else "empty", "descriptors": index.n_descriptors})
    return r, index, results


def evaluate_methods(records: Sequence[Any], protocol: str = "seed", seed: int = 0, *,
                     bundle: str | Path | None = None, local: bool = True, flip: bool = False,
                     device: str = "auto", shortlist: int | None = None,
                     progress: Callable[[float, str], None] = _noop_progress,
                     should_stop: Callable[[], bool] = _never) -> dict[str, EvalResult]:
    """Local features, a bundle's embedding and their fusion, evaluated on one split.

    - ``local``: a :class:`model.local.index.LocalIndex` over the gallery's ranked photos
      (unidentified photos only where the protocol ranks them); each query's individuals ranked as
      the app ranks them (LNBNN votes, spatial verification of the best, verified first); the
      individuals past the shortlist by their votes.
    - ``embedding``: the bundle's head score of each individual's best photo (as
      :func:`evaluate_bundle`).
    - ``fused``: :func:`model.fusion.fuse_shortlist` per query (the app's uncalibrated fusion):
      the union of both signals' ``shortlist`` best individuals, ranked by z(local) + z(embedding);
      individuals outside the shortlist are not ranked (a miss).

    Args:
        records: labelled records (see :func:`model.data.records.read_labels`).
        protocol: "seed", "open" or "all".
        seed: the split's seed.
        bundle: a model bundle folder; None evaluates local features alone (no model needed).
        local: evaluate local features (and, with a bundle, the fusion).
        flip: embedding test-time augmentation (average with the mirror image's embedding).
        device: onnxruntime device for the bundle.
        shortlist: individuals each signal proposes before fusion (default: model.fusion.SHORTLIST,
            as in the app).
        progress: ``progress(fraction, message)``.
        should_stop: returns True to stop.

    Returns:
        Method name ("local", "embedding", "fused") -> result, in that order, for the methods run.
        Each result's ``info`` holds the split summary, the method and its timings.

    Raises:
        ValueError: neither local features nor a bundle to evaluate.
        BundleError: the bundle cannot be loaded.
        DataError: the records do not support the protocol.
        ImageError: a photo cannot be read.
        Interrupted: ``should_stop`` returned True.
    """
    from model.fusion import SHORTLIST, fuse_shortlist

    if not local and bundle is None:
        raise ValueError("nothing to evaluate: local features are off and no bundle was given")
    k = SHORTLIST if shortlist is None else int(shortlist)
    split = make_split(records, protocol, seed)
    gids = gallery_ids_of(records, split)
    codes, n_codes = _codes(gids)
    w_local, w_emb = (0.6 if local else 0.0), (0.4 if bundle is not None else 0.0)
    w_local, w_emb = w_local / (w_local + w_emb), w_emb / (w_local + w_emb)
    out: dict[str, EvalResult] = {}
    index = results = None
    if local:
        t0 = time.perf_counter()
        feats = local_features_of(records, local_feature_records(records, split),
                                  progress=lambda f, m: progress(0.9 * w_local * f, m), should_stop=should_stop)
        t1 = time.perf_counter()
        r, index, results = evaluate_local(records, split, feats, k=k,
                                           progress=lambda f, m: progress(w_local * (0.9 + 0.1 * f), m),
                                           should_stop=should_stop)
        r.info["features_s"] = round(t1 - t0, 2)
        out["local"] = r
    if bundle is not None:
        from model.inference import Engine

        engine = Engine.load(bundle, device)
        scores, timing = _embedding_scores(engine, records, split, flip=flip,
                                           progress=lambda f, m: progress(w_local + w_emb * f, m),
                                           should_stop=should_stop)
        t1 = time.perf_counter()
        r = evaluate_split_scores(records, split, scores)
        r.info.update({"method": "embedding", "bundle": str(bundle), "flip": flip, "provider": engine.provider,
                       **timing})
        out["embedding"] = r
        if local:
            best, photo = _best_per_individual(scores, codes, n_codes, split.gallery)
            per_query = []
            for q in range(len(split.queries)):
                finite = np.flatnonzero(np.isfinite(best[q]))
                top = finite[np.argsort(-best[q][finite], kind="stable")[:k]]
                emb_top = [(int(j), int(photo[q, j]), float(best[q, j])) for j in top]

                def emb_score(ind: int, q: int = q) -> tuple[float, int | None]:
                    ok = np.isfinite(best[q, ind])
                    return (float(best[q, ind]), int(photo[q, ind])) if ok else (0.0, None)

                rows = fuse_shortlist(index, feats[split.queries[q]], results[q], emb_top, emb_score)
                per_query.append({c.individual: c.fused for c in rows})
            r = evaluate_split_scores(records, split, _photo_matrix(per_query, codes, n_codes))
            r.info.update({"method": "fused", "bundle": str(bundle), "shortlist": k,
                           "fuse_ms": round(1e3 * (time.perf_counter() - t1) / max(1, len(split.queries)), 1)})
            out["fused"] = r
    progress(1.0, "evaluated")
    return {m: out[m] for m in METHODS if m in out}


def format_result(res: EvalResult, title: str = "") -> str:
    """A short plain-text report: overall and per-bucket top-1, top-5, MAP@5."""
    lines = [title] if title else []
    o = res.overall
    lines.append(f"queries {o.n}: top-1 {o.top1:.1%}  top-5 {o.top5:.1%}  MAP@5 {o.map5:.3f}")
    for name, m in res.by_photos.items():
        lines.append(f"  individuals with {name} photos ({m.n} queries): top-1 {m.top1:.1%}  "
                     f"top-5 {m.top5:.1%}  MAP@5 {m.map5:.3f}")
    return "\n".join(lines)


def format_comparison(results: dict[str, EvalResult]) -> str:
    """A compact side-by-side table of several methods on one split (top-1 / top-5 / MAP@5,
    then top-5 by photos per individual)."""
    buckets = [name for name, _, _ in PHOTO_BUCKETS if any(name in r.by_photos for r in results.values())]
    head = f"{'method':<10} {'queries':>7} {'top-1':>7} {'top-5':>7} {'MAP@5':>6}"
    head += "".join(f" {'top-5 ' + b:>10}" for b in buckets)
    lines = [head]
    for name, r in results.items():
        o = r.overall
        line = f"{name:<10} {o.n:>7} {o.top1:>7.1%} {o.top5:>7.1%} {o.map5:>6.3f}"
        for b in buckets:
            m = r.by_photos.get(b)
            line += f" {'-' if m is None else f'{m.top5:.1%}':>10}"
        lines.append(line)
    return "\n".join(lines)
