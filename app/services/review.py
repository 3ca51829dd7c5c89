"""The review of an open catalog, Qt-free: what the window's jobs run and which photo comes next.

- :class:`Session`: an open catalog plus its loaded model. Every method may run in a worker thread
  (the catalog serialises its connection). Writes go through :mod:`app.services`; reads use the
  catalog's record API. :meth:`Session.match` builds the :class:`MatchTask` and its
  :class:`CandidateCard` s; heatmap crops are cached here.
- :class:`ReviewQueue`: the photos the match review still has to identify, in the order they are
  shown (skipped ones last), and the one matched ahead of time (prefetch). The window asks it what
  to show and tells it what was decided; it holds no Qt object and runs on the GUI thread.
- :func:`describe_import`: the notification line for an import report.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.catalog import Catalog
from app.services.snapshot import Snapshot, individual_label, read_snapshot
from app.services.viewdata import CandidateCard, EvidenceLine, MatchTask, PhotoCard, crop_rect

HEATMAP_SIDE = 768  # crops are reduced to this longer side before heatmaps (fast, plenty for a view)


class Session:
    """A catalog opened by the window, and the engine of its active model (loaded on demand)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.engine = None
        self.detector = None
        self._crops: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.new_catalog = None  # a services.models.NewCatalog when open() created the catalog

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, create: bool = False) -> Session:
        """Open a catalog folder (read-only if another flukeid writes to it); ``create`` makes a new one.

        A new catalog starts with the program's default model when it has one
        (:func:`app.services.models.create_catalog`; what happened is in :attr:`new_catalog`).

        Raises:
            CatalogError: not a catalog, damaged, or saved by a newer flukeid (clear message).
        """
        if create and not (Path(folder) / "catalog.sqlite").exists():
            from app.services import models

            new = models.create_catalog(folder)
            session = cls(new.catalog)
            session.new_catalog = new
            return session
        return cls(Catalog.open(folder, mode="auto"))

    def close(self) -> None:
        self.catalog.close()

    @property
    def model_version(self) -> str | None:
        if self.engine is not None:
            return self.engine.version
        m = self.catalog.active_model()
        return m.version if m else None

    @property
    def device(self) -> str | None:
        return self.engine.provider if self.engine is not None else None

    def load_engine(self):
        """Load the active model bundle (None when the catalog has no model yet)."""
        from model.api import Engine

        model = self.catalog.active_model()
        # one core is left to the GUI thread: onnxruntime's pool would otherwise take them all
        engine = None if model is None else Engine.load(self.catalog.model_path(model), threads=_threads())
        with self._lock:
            self.engine = engine
            self._crops.clear()
        return engine

    def load_detector(self):
        """The default fluke detector (the shipped one, or the classical fallback)."""
        if self.detector is None:
            from model.api import default_detector

            self.detector = default_detector()
        return self.detector

    # -- reading --------------------------------------------------------------------------
    def snapshot(self, progress=None, should_stop=None) -> Snapshot:
        """Photos, individuals and counts for the views."""
        return read_snapshot(self.catalog, progress, should_stop)

    # -- import, export, relink -------------------------------------------------------------
    def import_photos(self, paths: list[str], progress, should_stop):
        """Import files or folders with the default detector and the active model."""
        from app.services import importing

        return importing.import_photos(self.catalog, paths, detector=self.load_detector(), engine=self.engine,
                                       progress=progress, should_stop=should_stop)

    def import_labelled(self, csv: str, images_dir: str | None, progress, should_stop, *,
                        allow_absolute: bool = False):
        """Import a labels.csv / Kaggle train.csv with its photos (``allow_absolute``: see importing)."""
        from app.services import importing

        return importing.import_labelled(self.catalog, csv, images_dir, detector=self.load_detector(),
                                         engine=self.engine, progress=progress, should_stop=should_stop,
                                         allow_absolute=allow_absolute)

    def export(self, fmt: str, path: str, progress=None, should_stop=None) -> tuple[int, list[str]]:
        """Write an export file (identifications, kaggle or sightings); returns (rows, notes for the user)."""
        from app.services import exporting

        notes: list[str] = []
        rows = exporting.export(self.catalog, fmt, path, notes)
        return rows, notes

    def relink(self, folder: str, progress, should_stop) -> int:
        """Find moved photos under ``folder`` by content (SHA-256) and point the catalog at them."""
        from app.services import importing

        return len(importing.relink(self.catalog, folder, progress=progress, should_stop=should_stop))

    # -- matching -------------------------------------------------------------------------
    def photo_card(self, photo_id: int) -> PhotoCard:
        ph = self.catalog.photo(photo_id)
        box = self.catalog.current_box(photo_id)
        return PhotoCard(photo_id=photo_id, path=str(self.catalog.resolve_path(ph)), status="unidentified",
                         date=(ph.taken_at or "")[:10] or None, box=box.box if box else None,
                         box_confidence=box.confidence if box else None)

    def _individual_summary(self, individual_id: int) -> tuple[int, str | None]:
        """(photo count, last sighting date) of an individual."""
        ids = self.catalog.photos_of(individual_id)
        dates = [d for d in ((self.catalog.photo(p).taken_at or "")[:10] for p in ids) if d]
        return len(ids), max(dates) if dates else None

    def match(self, photo_id: int, k: int = 5) -> MatchTask:
        """The query photo and its top-k individuals with their best photos.

        Local features need no model; with the active model loaded, its scores are fused in.
        """
        from app.services import matching

        photo = self.photo_card(photo_id)
        result = matching.match_photo(self.catalog, photo_id, self.engine, k=k)
        q_rect = self._crop_rect(self.catalog.photo(photo_id), photo.box)
        cards = []
        for c in result.candidates:
            ind = self.catalog.individual(int(c.individual))
            best = self.catalog.photo(int(c.best_photo_id))
            box = self.catalog.current_box(best.id)
            count, last = self._individual_summary(ind.id)
            g_box = box.box if box else None
            evidence = None
            if c.pairs is not None:
                evidence = pair_lines(c.pairs, q_rect, self._crop_rect(best, g_box))
            cards.append(CandidateCard(
                individual_id=ind.id, label=individual_label(ind.code, ind.name), score=float(c.score),
                photo_id=best.id, photo_path=str(self.catalog.resolve_path(best)),
                photo_box=g_box, photo_count=count, last_seen=last, probability=c.probability,
                score_text=matching.score_text(c, result), score_short=matching.score_text(c, result, short=True),
                inliers=c.inliers, evidence=evidence))
        return MatchTask(photo, cards, result.suggest_new, result.threshold,
                         model_version=self.engine.version if self.engine is not None else None,
                         calibrated=result.calibrated, best_match_threshold=result.best_match_threshold,
                         verdict=matching.verdict(result), notes=list(result.notes),
                         rejected=self.rejected_individuals(photo_id))

    def rejected_individuals(self, photo_id: int) -> set[int]:
        """Individuals rejected for this photo, as the catalog holds it now (undone rejections left out)."""
        from app.services import decisions

        return decisions.rejected_individuals(self.catalog, photo_id)

    def _crop_rect(self, photo, box) -> tuple[int, int, int, int]:
        """The rectangle of the photo (its pixels) the views show for ``box`` (see crop_rect)."""
        w, h = photo.width, photo.height
        if not w or not h:
            from PIL import Image

            with Image.open(self.catalog.resolve_path(photo)) as im:
                w, h = im.size
            if photo.orientation in (5, 6, 7, 8):
                w, h = h, w
        return crop_rect(box, w, h)

    def calibrate(self, progress, should_stop):
        """Fit and store the match calibration (local, or fused with the loaded model); see app.services.calibration."""
        from app.services import calibration

        return calibration.calibrate(self.catalog, self.engine, progress=progress, should_stop=should_stop)

    def compute_local_features(self, progress, should_stop):
        """Describe every photo that has no (or stale) local features (a resumable background job),
        then build the gallery's search index so the first match does not wait for it."""
        from app.services import matching
        from app.services.local_features import compute_missing_local_features

        report = compute_missing_local_features(self.catalog, progress=progress, should_stop=should_stop)
        if not should_stop():
            progress(1.0, "building the search index")
            matching.warm_local_index(self.catalog)
        return report

    # -- heatmaps and pair evidence ---------------------------------------------------------
    def _crop_maps(self, path: str, box):
        """(crop RGB, box in crop pixels, embedding, feature map) for the crop a view shows."""
        import cv2

        from model.api import load_image

        key = (path, tuple(box) if box else None, self.engine.version)
        with self._lock:
            hit = self._crops.get(key)
        if hit is not None:
            return hit
        image = load_image(path)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = crop_rect(box, w, h)
        crop = image[y0:y1, x0:x1]
        cbox = None if box is None else (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        s = HEATMAP_SIDE / max(crop.shape[:2])
        if s < 1.0:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                              interpolation=cv2.INTER_AREA)
            cbox = None if cbox is None else tuple(v * s for v in cbox)
        emb, fmap = self.engine.embed_with_maps([crop], [cbox])
        value = (np.ascontiguousarray(crop), cbox, emb[0], fmap[0])
        with self._lock:
            self._crops[key] = value
            while len(self._crops) > 24:
                self._crops.popitem(last=False)
        return value

    def heatmap(self, path: str, box) -> np.ndarray:
        """The paper's Figure-5 map over the shown crop (RGB uint8; the view sets its opacity)."""
        from model.api import figure5_overlay, photo_heatmaps

        crop, cbox, _emb, fmap = self._crop_maps(path, box)
        std, mx = photo_heatmaps(fmap, crop.shape[:2], cbox, self.engine.preprocessing)
        return figure5_overlay(crop, std, mx, opacity=1.0)

    def evidence(self, query_path: str, query_box, cand_path: str, cand_box) -> list[EvidenceLine]:
        """Lines joining the marks that raise the pair's score most (fractions of each crop)."""
        from model.api import pair_evidence

        ca, ba, ea, fa = self._crop_maps(query_path, query_box)
        cb, bb, eb, fb = self._crop_maps(cand_path, cand_box)
        ev = pair_evidence(self.engine.score_pairs, ea, fa, ca.shape[:2], ba, eb, fb, cb.shape[:2], bb,
                           self.engine.preprocessing, head=self.engine.separable_head())
        (ha, wa), (hb, wb) = ca.shape[:2], cb.shape[:2]
        lines = [EvidenceLine(xa / wa, ya / ha, xb / wb, yb / hb, float(wt))
                 for ((xa, ya), (xb, yb)), wt in zip(ev.lines, ev.weights)]
        # a peak in the padding the network saw around a crop is no mark on the fluke: leave it out
        return [ln for ln in lines if all(-0.02 <= v <= 1.02 for v in (ln.ax, ln.ay, ln.bx, ln.by))]



@dataclass
class ReviewQueue:
    """The match review's queue: photos to identify in showing order, and the one prefetched.

    Photos skipped in this session go to the end (in the order they were skipped); a photo whose
    decision is undone comes back first. ``prefetched`` is the next photo's match, read while the
    current one is shown; it is dropped whenever its candidates may be out of date.
    """

    ids: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    prefetched: MatchTask | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, photo_id: object) -> bool:
        return photo_id in self.ids

    def reset(self) -> None:
        """A new catalog: nothing queued, skipped or prefetched."""
        self.ids, self.skipped, self.prefetched = [], [], None

    def refill(self, unidentified_ids: list[int]) -> list[int]:
        """Queue the catalog's unidentified photos (in its order), the ones skipped here last."""
        waiting = set(unidentified_ids)
        ids = [pid for pid in unidentified_ids if pid not in self.skipped]
        ids += [pid for pid in self.skipped if pid in waiting]
        self.ids = ids
        return ids

    def next_id(self, after: int | None = None) -> int | None:
        """The photo to show after ``after`` (the one shown): the first other one queued, else
        ``after`` itself when it is the only one left (skipped), else None."""
        for pid in self.ids:
            if pid != after:
                return pid
        return after if after in self.ids else None

    def take_prefetched(self, photo_id: int) -> MatchTask | None:
        """The prefetched match when it is ``photo_id``'s (then it is no longer kept), with the
        queue's length as its ``remaining``; else None."""
        pre = self.prefetched
        if pre is None or pre.photo.photo_id != photo_id:
            return None
        self.prefetched = None
        pre.remaining = len(self.ids)
        return pre

    def to_prefetch(self, shown: int | None) -> int | None:
        """The photo to match ahead of time while ``shown`` is on screen (None: nothing to do)."""
        pid = self.next_id(shown)
        if pid is None or (self.prefetched is not None and self.prefetched.photo.photo_id == pid):
            return None
        return pid

    def invalidate(self) -> None:
        """Candidates may have changed (a decision, new local features, a calibration)."""
        self.prefetched = None

    def decided(self, photo_id: int) -> None:
        """``photo_id`` was identified (or could not be matched): it leaves the queue."""
        self.ids = [p for p in self.ids if p != photo_id]

    def skip(self, photo_id: int) -> None:
        """``photo_id`` was skipped: it goes to the end, and stays after the later ones on refills."""
        self.skipped = [p for p in self.skipped if p != photo_id] + [photo_id]
        self.ids = [p for p in self.ids if p != photo_id] + [photo_id]

    def bring_back(self, photo_id: int) -> None:
        """A decision on ``photo_id`` was undone: it is shown next."""
        self.ids = [photo_id] + [p for p in self.ids if p != photo_id]


EVIDENCE_LINES = 30  # the strongest verified correspondences drawn


def pair_lines(pairs, rect_a, rect_b, limit: int = EVIDENCE_LINES) -> list[EvidenceLine]:
    """Verified correspondences (qx, qy, gx, gy in each photo's pixels, strongest first) as lines in
    fractions of the two crops the compare view shows (``rect_a`` / ``rect_b``: x0, y0, x1, y1)."""
    ax0, ay0, ax1, ay1 = rect_a
    bx0, by0, bx1, by1 = rect_b
    pairs = np.asarray(pairs, np.float64).reshape(-1, 4)[:limit]
    n = len(pairs)
    return [EvidenceLine((qx - ax0) / max(ax1 - ax0, 1), (qy - ay0) / max(ay1 - ay0, 1),
                         (gx - bx0) / max(bx1 - bx0, 1), (gy - by0) / max(by1 - by0, 1),
                         weight=1.0 - 0.7 * i / max(n, 1))
            for i, (qx, qy, gx, gy) in enumerate(pairs)]


def _threads() -> int:
    import os

    return max(1, (os.cpu_count() or 2) - 1)


def describe_import(report) -> str:
    """One line for the notification bar."""
    text = report.summary() if hasattr(report, "summary") else str(report)
    errors = getattr(report, "errors", [])
    if errors:
        shown = "; ".join(f"{Path(f).name}: {p}" for f, p in errors[:3])
        text += f". Problems: {shown}" + (" …" if len(errors) > 3 else "")
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def import_had_errors(report) -> bool:
    return bool(getattr(report, "errors", []))
