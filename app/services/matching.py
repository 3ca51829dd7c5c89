"""Matching a photo against the catalog (catalog side): local features, embeddings, fusion, calibration.

Local features are the core and need no model: the gallery is every identified, usable photo
with fresh local features, held in a :class:`model.api.LocalIndex` (LNBNN votes, then spatial
verification of the best individuals). The index is a cache of the catalog, kept in step with it
(photos added, relabelled, re-boxed, removed) by comparing against :meth:`Catalog.change_marker`.

When a model is active, each candidate individual also gets its embedding score (the head's
score of its best photo, :func:`model.api.match`), and the two are fused: by the catalog's
calibration into one probability when there is one, else by a plain z-scored sum (a rank and
a plain score, never a percentage).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.catalog import Catalog, CatalogError
from app.services import local_features as lf
from app.services.jobs import ProgressFn, StopFn, each_photo
from model.api import FUSION_SHORTLIST as SHORTLIST  # individuals each signal proposes before fusion
from model.api import ImageError, load_image

MODEL_SIDE = 1024  # same decoding as app.services.importing


def load_engine(catalog: Catalog, *, device: str = "auto", bundle: str | Path | None = None):
    """The inference engine of the catalog's active model (or of ``bundle``), or None when there is none.

    Raises:
        BundleError: the bundle is missing or damaged (the message names the file).
    """
    from model.api import Engine

    if bundle is None:
        active = catalog.active_model()
        if active is None:
            return None
        bundle = catalog.model_path(active)
    return Engine.load(bundle, device)


def require_engine(catalog: Catalog, *, device: str = "auto", bundle: str | Path | None = None):
    """Like :func:`load_engine`, but raises CatalogError with what to do when there is no model."""
    engine = load_engine(catalog, device=device, bundle=bundle)
    if engine is None:
        raise CatalogError(f"{catalog.root}: no model: this catalog has no active model. Train one "
                           "(flukeid retrain) or pass a bundle folder with --model")
    return engine


def _image_and_box(catalog: Catalog, photo_id: int) -> tuple[np.ndarray, tuple | None]:
    ph = catalog.photo(photo_id)
    image = load_image(catalog.resolve_path(ph), max_side=MODEL_SIDE)
    scale = (ph.width or image.shape[1]) / image.shape[1]
    cur = catalog.current_box(photo_id)
    box = tuple(v / scale for v in cur.box) if cur is not None and cur.box is not None else None
    return image, box


def photo_embedding(catalog: Catalog, photo_id: int, engine, *, store: bool = True) -> np.ndarray:
    """The photo's embedding under the engine's version (computed from its current box if missing)."""
    emb = catalog.embedding(photo_id, engine.version)
    if emb is None:
        image, box = _image_and_box(catalog, photo_id)
        emb = np.asarray(engine.embed([image], [box]), dtype=np.float32)[0]
        if store and not catalog.readonly:
            catalog.put_embedding(photo_id, engine.version, emb)
    return emb


def gallery_rows(catalog: Catalog, model_version: str, *, exclude: set[int] | None = None
                 ) -> tuple[np.ndarray, list[int], list[int]]:
    """(embeddings [M, D], photo ids, individual ids) of identified, usable photos with an embedding."""
    exclude = exclude or set()
    current = {i.photo_id: i.individual_id for i in catalog.current_identifications()
               if i.individual_id is not None and i.photo_id not in exclude}
    ids, mat = catalog.embeddings(model_version, list(current))
    junk = catalog.junk_photo_ids()
    keep = [k for k, pid in enumerate(ids) if pid not in junk]
    ids = [ids[k] for k in keep]
    mat = mat[keep] if len(keep) else np.zeros((0, mat.shape[1] if mat.ndim == 2 else 0), np.float32)
    return mat, ids, [current[p] for p in ids]


def match_embedding(catalog: Catalog, query_emb: np.ndarray, engine, *, k: int = 5,
                    exclude: set[int] | None = None):
    """Rank the catalog's individuals for a query embedding (a :class:`model.api.MatchResult`)."""
    from model.api import match

    return match(engine, query_emb, gallery(catalog, engine.version, len(query_emb)), k, exclude=exclude)


_GALLERY_CACHE: dict = {}  # (id(catalog), model version) -> (change marker, GalleryIndex)


def gallery(catalog: Catalog, model_version: str, dim: int):
    """The :class:`model.api.GalleryIndex` of identified, usable photos with an embedding.

    The full gallery is cached until the catalog changes (identifications, boxes, embeddings or
    actions), so reviewing photo after photo does not reload every embedding. Matching leaves
    photos out with ``match(..., exclude=...)``, which needs no copy of it.
    """
    from model.api import GalleryIndex

    key = (id(catalog), model_version)
    marker = (str(catalog.root), catalog.change_marker())
    hit = _GALLERY_CACHE.get(key)
    if hit is not None and hit[0] == marker:
        full = hit[1]
    else:
        mat, photo_ids, individual_ids = gallery_rows(catalog, model_version)
        if not photo_ids:
            mat = np.zeros((0, dim), np.float32)
        full = GalleryIndex.build(mat, photo_ids, individual_ids)
        _GALLERY_CACHE.clear()  # one catalog and model at a time: memory stays bounded
        _GALLERY_CACHE[key] = (marker, full)
    return full




@dataclasses.dataclass
class _LocalCache:
    """The gallery's LocalIndex for one catalog and what it holds: {photo id: (individual, feature row id)}."""

    key: tuple
    marker: tuple | None = None
    index: object = None
    held: dict = dataclasses.field(default_factory=dict)
    missing: int = 0


_LOCAL_CACHE: dict = {}  # (id(catalog), root) -> _LocalCache (one catalog at a time)
# One lock for the cached index: updating it, building its faiss structure and searching it are not
# safe from two threads at once (the window matches in one thread while another job warms it).
_INDEX_LOCK = threading.RLock()


def _loader(catalog: Catalog):
    """``photo_id -> LocalFeatures`` for the index (read from the catalog when verification needs them)."""
    from model.api import LocalFeatures

    def load(photo_id: int):
        rec = catalog.local_features(photo_id)
        feats = lf.decode_record(catalog, rec, repair=not catalog.readonly) if rec is not None else None
        return feats if feats is not None else LocalFeatures()

    return load


EXACT_ALWAYS = 1 << 62


def local_index(catalog: Catalog, notes: list[str] | None = None, *, exact: bool | None = None):
    """The :class:`model.api.LocalIndex` of identified, usable photos with fresh local features.

    Kept between calls and brought in step with the catalog when it changed: photos whose
    individual changed are relabelled, photos no longer in the gallery (set back to unidentified,
    marked unusable, re-boxed) removed, new or recomputed ones added. Damaged stored features
    are recomputed (and said in ``notes``).

    ``exact=True`` makes it search exactly whatever its size: for one query (the command line),
    where training the inverted file of a large gallery (tens of seconds) costs far more than one
    exact search (about a second at 264k descriptors); ``False`` goes back to the index's default.

    Returns:
        (index, how many gallery photos have no fresh local features yet).
    """
    from model.api import FEATURE_VERSION, LocalIndex

    with _INDEX_LOCK:
        key = (id(catalog), str(catalog.root))
        cache = _LOCAL_CACHE.get(key)
        if cache is None:
            _LOCAL_CACHE.clear()
            cache = _LOCAL_CACHE[key] = _LocalCache(key)
        if exact is not None:
            if cache.index is None:
                cache.index, cache.held = LocalIndex(loader=_loader(catalog)), {}
            if exact:
                cache.index.exact_below = EXACT_ALWAYS
            elif cache.index.exact_below == EXACT_ALWAYS:
                cache.index.exact_below = LocalIndex().exact_below
        marker = catalog.change_marker()
        if cache.index is not None and cache.marker == marker:
            return cache.index, cache.missing
        if cache.index is None:
            cache.index, cache.held = LocalIndex(loader=_loader(catalog)), {}
        index = cache.index
        junk = catalog.junk_photo_ids()
        current = {i.photo_id: i.individual_id for i in catalog.current_identifications()
                   if i.individual_id is not None and i.photo_id not in junk}
        stale = set(catalog.photos_missing_local_features(FEATURE_VERSION))
        stamps = catalog.local_feature_stamps()
        want = {pid: (ind, stamps[pid]) for pid, ind in current.items() if pid in stamps and pid not in stale}
        for pid, (ind, stamp) in list(cache.held.items()):
            if pid not in want or want[pid][1] != stamp:
                index.remove(pid)
                del cache.held[pid]
            elif want[pid][0] != ind:
                index.relabel(pid, want[pid][0])
                cache.held[pid] = want[pid]
        new = [pid for pid in want if pid not in cache.held]
        adds = []
        for rec in catalog.iter_local_features(new):
            feats = lf.decode_record(catalog, rec, notes, repair=not catalog.readonly)
            if feats is None:
                continue
            adds.append((rec.photo_id, want[rec.photo_id][0], feats))
            cache.held[rec.photo_id] = want[rec.photo_id]
        if len(adds) <= 64 and len(index) > len(adds):
            for pid, ind, feats in adds:  # a few photos join the built index (no rebuild, no retraining)
                index.add(pid, ind, feats)
        else:
            index.add_many(adds)  # many: one (re)build on the next search
        cache.missing = len(current) - len(cache.held)
        cache.marker = marker
        return index, cache.missing


def warm_local_index(catalog: Catalog) -> None:
    """Bring the index in step with the catalog and build its search structure now (the first
    search would otherwise do it: tens of seconds past ~100k descriptors, for the inverted file's training)."""
    with _INDEX_LOCK:
        index, _ = local_index(catalog)
        _ = index.kind  # builds the faiss index (LocalIndex has no public build method)


def index_lock() -> threading.RLock:
    """The lock to hold around :func:`shortlist` and other direct uses of the cached index."""
    return _INDEX_LOCK


def forget_local_index() -> None:
    """Drop the cached index (the next match rebuilds it from the catalog)."""
    with _INDEX_LOCK:
        _LOCAL_CACHE.clear()


def calibration_kind(engine=None) -> str:
    """The catalog's calibration for this combination of signals: "local" or "fused:<model version>"."""
    return "local" if engine is None else f"fused:{engine.version}"


def load_calibrator(catalog: Catalog, engine=None):
    """The calibrator for local-only or fused matching (the catalog's, else a shipped default), or None."""
    kind = calibration_kind(engine)
    rec = catalog.calibration(kind)
    if rec is not None:
        from model.api import Calibrator

        try:
            return Calibrator.from_dict(rec.data)
        except Exception:  # noqa: BLE001 - a damaged or outdated calibration: match without one
            return None
    if engine is None:
        return _shipped_local_calibrator()
    return None


def _shipped_local_calibrator():
    """The local-only calibration shipped with the program (fitted on synthetic flukes only).

    Measured on the real humpback queries (docs/BENCHMARKS.md, local features): its "Best match"
    held 98.4% precision and its probabilities an ECE of 0.03 on top candidates, but its "probably
    new" threshold flagged 37.8% of matchable queries: that suggestion is switched off here until
    the catalog's own calibration (flukeid calibrate) replaces this one.
    """
    from model.api import default_calibrator

    try:
        cal = default_calibrator()
    except Exception:  # noqa: BLE001 - a damaged resource: match without calibration
        return None
    if cal is not None:
        cal.new_individual_threshold = None
    return cal


def _match(catalog: Catalog, query_feats, engine, query_emb: Callable[[], np.ndarray] | None, *, k: int,
           exclude: set[int], notes: list[str]):
    with _INDEX_LOCK:
        return _match_locked(catalog, query_feats, engine, query_emb, k=k, exclude=exclude, notes=notes)


@dataclasses.dataclass
class Shortlist:
    """The individuals both signals propose for one query, in the uncalibrated order, with what the
    calibrator reads: ``as_local_result()`` and ``extra()`` (see :func:`model.api.candidate_features`)."""

    rows: list  # model.api.FusedCandidate, best first
    method: str  # "local" or "fused"
    n_gallery: int

    def as_local_result(self):
        from model.api import LocalCandidate, LocalResult

        return LocalResult([LocalCandidate(r.individual, r.best_photo_id, r.votes, r.inliers,
                                           r.pairs if r.pairs is not None else np.zeros((0, 4), np.float32),
                                           r.local_score, True) for r in self.rows], 0)

    def extra(self) -> dict | None:
        return {"embedding": [r.embedding_score for r in self.rows]} if self.method == "fused" else None


def shortlist(catalog: Catalog, query_feats, engine, query_emb: Callable[[], np.ndarray] | None, *,
              k: int = SHORTLIST, exclude: set[int], notes: list[str]) -> Shortlist:
    """The candidate individuals of a query before calibration (call with the index lock held)."""
    from model.api import FusedCandidate, fuse_shortlist, verify_pair

    index, missing = local_index(catalog, notes)
    if missing:
        notes.append(f"{missing} identified photo{'s have' if missing != 1 else ' has'} no local features yet "
                     "(they are left out until computed)")
    if not len(query_feats):
        notes.append("no keypoints were found in this photo's box: local features cannot match it")
    k = max(k, SHORTLIST)
    local = index.search(query_feats, k=k, exclude=exclude) if len(index) else None
    if engine is None or query_emb is None:
        rows = [FusedCandidate(int(c.individual_id), int(c.best_photo_id), float(c.votes), int(c.inliers), c.pairs,
                               float(c.score), from_local=True) for c in (local.candidates if local else [])]
        return Shortlist(rows, "local", len(index))
    q = query_emb()
    gal = gallery(catalog, engine.version, len(q))
    emb = match_embedding(catalog, q, engine, k=k, exclude=exclude)
    # uncalibrated order: model.fusion's rule (a plain sum of z-scores), the one flukeid evaluate measures
    rows = fuse_shortlist(index, query_feats, local,
                          [(int(c.individual), int(c.best_photo_id), float(c.score)) for c in emb.candidates],
                          lambda ind: (_embedding_score(gal, engine, q, ind, exclude), None), verify=verify_pair)
    return Shortlist(rows, "fused", len(index))


def _match_locked(catalog: Catalog, query_feats, engine, query_emb: Callable[[], np.ndarray] | None, *, k: int,
                  exclude: set[int], notes: list[str]):
    from model.api import Candidate, MatchResult

    sl = shortlist(catalog, query_feats, engine, query_emb, k=k, exclude=exclude, notes=notes)
    calibrator = load_calibrator(catalog, engine if sl.method == "fused" else None)
    probs = None
    if sl.rows and calibrator is not None:
        try:
            probs = np.asarray(calibrator.probabilities(sl.as_local_result(), sl.extra()), np.float64)
        except (KeyError, ValueError) as exc:
            notes.append(f"the stored calibration does not fit these scores ({exc}): shown uncalibrated")
    cands = []
    for i, r in enumerate(sl.rows):
        p = None if probs is None else float(probs[i])
        plain = r.fused if sl.method == "fused" else r.local_score
        cands.append(Candidate(individual=r.individual, score=p if p is not None else plain,
                               best_photo_id=r.best_photo_id, rank=0, probability=p, local_score=r.local_score,
                               votes=r.votes, embedding_score=r.embedding_score, inliers=r.inliers,
                               pairs=r.pairs if r.pairs is not None else np.zeros((0, 4), np.float32)))
    calibrated = probs is not None
    if calibrated:
        cands.sort(key=lambda c: -c.probability)  # stable: ties keep the uncalibrated order
    cands = [dataclasses.replace(c, rank=r) for r, c in enumerate(cands[:k], start=1)]
    threshold, best_thr = 0.0, None
    if calibrated:
        threshold = float(calibrator.new_individual_threshold or 0.0)  # None: never suggests new
        best_thr = calibrator.best_match_threshold  # None: never says "Best match"
    best = cands[0].score if cands else 0.0
    suggest_new = not cands or (calibrated and cands[0].probability < threshold)
    return MatchResult(cands, bool(suggest_new), float(best), threshold, sl.n_gallery, sl.method,
                       calibrated=calibrated, best_match_threshold=best_thr, notes=tuple(notes))


def _embedding_score(gal, engine, q: np.ndarray, individual: int, exclude: set[int]) -> float:
    """The head's score of an individual's best photo (0.0 when it has no embedded photo)."""
    rows = np.flatnonzero((np.asarray(gal.individual_ids) == individual)
                          & ~np.isin(np.asarray(gal.photo_ids), list(exclude)))
    if not len(rows):
        return 0.0
    return float(np.max(np.asarray(engine.score(q, gal.embeddings[rows].astype(np.float32)))))


def percent(p: float) -> str:
    """A calibrated probability as shown: whole percent, but never a promise of certainty
    (">99%" and "<1%" at the ends: the calibration is measured to a few percent, not to 0.01%)."""
    if p >= 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{p:.0%}"


def score_text(c, result, *, short: bool = False) -> str:
    """A candidate's score as the user should read it: a percentage only when calibrated.

    "87%" (calibrated probability); local features uncalibrated: "14 marks" (verified
    correspondences; verified candidates rank first) or "votes 12.3" (unverified: descriptor votes
    only); "fused +1.24" (local and embedding uncalibrated: a sum of z-scores) or "score 0.734"
    (the embedding alone). ``short``: the number alone for a card ("14 ✓", "12.3", "+1.2").
    """
    if result.calibrated and c.probability is not None:
        return percent(c.probability)
    if result.method == "local":
        if short:
            return f"{c.inliers} ✓" if c.inliers else f"{c.votes:.1f}"
        return f"{c.inliers} marks" if c.inliers else f"votes {c.votes:.1f}"
    if result.method == "fused":
        return f"{c.score:+.1f}" if short else f"fused {c.score:+.2f}"
    return f"{c.score:.2f}" if short else f"score {c.score:.3f}"


def verdict(result) -> str:
    """What may honestly be said about a result's top candidate.

    Returns:
        "empty" (no candidates), "best_match" (calibrated probability at or above the best-match
        threshold), "new" (calibrated probability under the new-individual threshold),
        "unsure" (calibrated, in between), "unverified" (uncalibrated local matching, and the top
        candidate shares no verified correspondence), or "ranking" (uncalibrated: a ranking, no claim).
    """
    if not result.candidates:
        return "empty"
    top = result.candidates[0]
    if result.calibrated and top.probability is not None:
        if result.best_match_threshold is not None and top.probability >= result.best_match_threshold:
            return "best_match"
        return "new" if result.threshold is not None and top.probability < result.threshold else "unsure"
    if result.method not in ("local", "fused"):  # the embedding alone, with the bundle's threshold
        return "new" if result.suggest_new else "ranking"
    return "unverified" if not top.inliers else "ranking"


def match_photo(catalog: Catalog, photo_id: int, engine=None, *, k: int = 5):
    """The top-k individuals for a catalog photo (the photo itself is left out of the gallery).

    Works with no model (local features alone); with an engine, local and embedding scores are fused.

    Returns:
        :class:`model.api.MatchResult`: candidates (individual = catalog individual id,
        best_photo_id = catalog photo id, score, rank, probability when calibrated, verified
        inliers and their pairs in photo pixels) and ``suggest_new``.

    Raises:
        ImageError: the photo's file cannot be read (when its features or embedding must be computed).
    """
    notes: list[str] = []
    feats = lf.photo_features(catalog, photo_id, notes)
    emb = (lambda: photo_embedding(catalog, photo_id, engine)) if engine is not None else None
    return _match(catalog, feats, engine, emb, k=k, exclude={photo_id}, notes=notes)


def match_file(catalog: Catalog, path: str | Path, engine=None, *, detector=None, k: int = 5):
    """The top-k individuals for a photo file that need not be in the catalog.

    The box comes from ``detector`` when given, else the whole photo is used. The query's
    correspondences are in the pixels of the photo as decoded (at most ``MODEL_SIDE``).
    """
    from model.api import extract_local_features

    image = load_image(path, max_side=MODEL_SIDE)
    det = detector.detect(image) if detector is not None else None
    box = det.box if det is not None else None
    feats = extract_local_features(image, box)
    emb = (lambda: np.asarray(engine.embed([image], [box]), dtype=np.float32)[0]) if engine is not None else None
    return _match(catalog, feats, engine, emb, k=k, exclude=set(), notes=[])


def embed_missing(catalog: Catalog, engine, model_version: str | None = None, *,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  photo_ids: list[int] | None = None) -> dict:
    """Embed every photo that has no embedding under ``model_version`` (default ``engine.version``).

    Each photo uses its current box (or the whole photo). Photos whose file cannot be read are
    listed, the rest continue. ``photo_ids`` limits the work to those photos.

    Returns:
        ``{"embedded": [photo ids], "errors": [(file, problem)], "seconds": float}``.

    Raises:
        Interrupted: ``should_stop`` returned True (embeddings stored so far stay).
    """
    version = model_version or engine.version
    todo = catalog.photos_missing_embedding(version)
    if photo_ids is not None:
        wanted = set(photo_ids)
        todo = [pid for pid in todo if pid in wanted]
    out: dict = {"embedded": [], "errors": [], "seconds": 0.0}
    t0 = time.perf_counter()
    for pid in each_photo(todo, "embedding", progress=progress, should_stop=should_stop, report=out,
                          step="Embedding photo {i}/{n}"):
        try:
            image, box = _image_and_box(catalog, pid)
        except ImageError as exc:
            out["errors"].append((exc.path, exc.problem))
            continue
        catalog.put_embedding(pid, version, np.asarray(engine.embed([image], [box]), dtype=np.float32)[0])
        out["embedded"].append(pid)
    out["seconds"] = time.perf_counter() - t0
    if progress is not None:
        progress(1.0, f"{len(out['embedded'])} photos embedded")
    return out


def gallery_missing(catalog: Catalog, model_version: str) -> tuple[list[int], int]:
    """The gallery photos (identified, usable) with no embedding under ``model_version``.

    Returns:
        (their photo ids, the number of photos in the gallery).
    """
    identified = {i.photo_id for i in catalog.current_identifications() if i.individual_id is not None}
    identified -= catalog.junk_photo_ids()
    missing = set(catalog.photos_missing_embedding(model_version)) & identified
    return sorted(missing), len(identified)


def embed_gallery(catalog: Catalog, engine, *, progress: ProgressFn | None = None,
                  should_stop: StopFn | None = None) -> dict:
    """Make sure the gallery can be matched with ``engine``: embed the gallery photos it has not seen.

    Matching compares a query only with gallery photos embedded under the engine's version, so a
    model the catalog has not used (``flukeid match --model BUNDLE``, photos imported without a
    model) would otherwise find nothing. The embeddings are stored, so this happens once per
    model. A read-only catalog cannot store them: the photos are left out (``left_out``), and
    when that is the whole gallery the match is refused.

    Returns:
        ``{"embedded": [photo ids], "errors": [(file, problem)], "left_out": int, "gallery": int}``.

    Raises:
        CatalogError: the catalog is read-only and nothing in the gallery was embedded with this model.
        Interrupted: ``should_stop`` returned True (embeddings stored so far stay).
    """
    missing, size = gallery_missing(catalog, engine.version)
    out: dict = {"embedded": [], "errors": [], "left_out": 0, "gallery": size}
    if not missing:
        return out
    if catalog.readonly:
        if len(missing) == size:
            raise CatalogError(
                f"{catalog.root}: nothing in the gallery was embedded with model {engine.version}, and the "
                f"catalog is read-only ({catalog.readonly_reason}), so its {size} photos cannot be embedded "
                "now: match again when the catalog can be written, or match with the active model")
        out["left_out"] = len(missing)
        return out
    done = embed_missing(catalog, engine, engine.version, progress=progress, should_stop=should_stop,
                         photo_ids=missing)
    out.update(embedded=done["embedded"], errors=done["errors"], left_out=len(done["errors"]))
    return out
