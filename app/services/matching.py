"""Matching a photo against the catalog (catalog side): engine loading, gallery, top-k, embeddings.

The gallery is every identified, usable photo with an embedding under the engine's version;
the model side (:func:`model.api.match`) ranks individuals by their best photo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.catalog import Catalog, CatalogError
from model.api import ImageError, Interrupted, load_image

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]
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


def match_photo(catalog: Catalog, photo_id: int, engine, *, k: int = 5):
    """The top-k individuals for a catalog photo (the photo itself is left out of the gallery).

    Returns:
        :class:`model.api.MatchResult`: candidates (individual = catalog individual id,
        best_photo_id = catalog photo id, score, rank) and ``suggest_new``.

    Raises:
        ImageError: the photo's file cannot be read (when its embedding must be computed).
    """
    q = photo_embedding(catalog, photo_id, engine)
    return match_embedding(catalog, q, engine, k=k, exclude={photo_id})


def match_file(catalog: Catalog, path: str | Path, engine, *, detector=None, k: int = 5):
    """The top-k individuals for a photo file that need not be in the catalog.

    The box comes from ``detector`` when given, else the whole photo is used.
    """
    image = load_image(path, max_side=MODEL_SIDE)
    box = detector.detect(image).box if detector is not None else None
    q = np.asarray(engine.embed([image], [box]), dtype=np.float32)[0]
    return match_embedding(catalog, q, engine, k=k)


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
    for i, pid in enumerate(todo):
        if should_stop is not None and should_stop():
            raise Interrupted(f"embedding stopped after {i} of {len(todo)} photos")
        if progress is not None:
            progress(i / max(len(todo), 1), f"Embedding photo {i + 1}/{len(todo)}")
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
