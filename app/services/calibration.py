"""Fitting the match confidence on the catalog's own identifications and rejections.

Every identified, usable photo is matched as a query against the rest of the catalog (itself
left out), exactly as the match review would match it; each of its shortlisted candidates is a
labelled pair: "same" when the candidate is the individual the photo is identified as (imported
labels, confirmed matches, new individuals: identities a person stated), "different" otherwise;
candidates a reviewer rejected for a photo are among them as "different" once the photo is
identified. A photo whose individual has no other photo gives only "different" pairs: the case of
a new individual, which the new-individual threshold needs.

The pairs' scores (votes, verified inliers, their gaps to the next candidate and, when a model is
active, the embedding score; see :func:`model.api.candidate_features`) are fitted by
:class:`model.api.Calibrator` into one probability, stored in the catalog (versioned,
dated, with its pair counts) and used by every match from then on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from app.catalog import Catalog
from app.services import local_features as lf
from app.services import matching
from app.services.jobs import ProgressFn, StopFn
from model.api import FlukeidError, ImageError, Interrupted

# Fewer pairs than this of either kind and no calibration is fitted: a logistic fit of four or five
# inputs needs some tens of examples of each class to be stable, and the best-match threshold is
# chosen where the measured precision reaches 95%, which 20 "same" pairs can only just show (one
# error in 20 is already 95%).
MIN_SAME = 20
MIN_DIFFERENT = 20
DEFAULT_MAX_QUERIES = 2000


class NotEnoughPairs(FlukeidError):
    """The catalog has too few identified photos or decisions to fit a calibration."""


@dataclass
class CalibrationResult:
    """What :func:`calibrate` fitted and stored."""

    kind: str
    n_queries: int
    n_same: int
    n_different: int
    best_match_threshold: float | None
    new_individual_threshold: float | None
    feature_names: list[str]
    record_id: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        best = (f"'best match' from {self.best_match_threshold:.0%} (95% of top candidates right there)"
                if self.best_match_threshold is not None else
                "no probability reaches 95% precision, so 'best match' is never claimed")
        t = self.new_individual_threshold
        new = (f"'probably new' under {_percent(t)} (about 5% of the photos whose individual is in the catalog "
               "score under it)" if t is not None else "no 'probably new' threshold (no matchable photos)")
        return (f"calibration '{self.kind}' fitted on {self.n_same + self.n_different} pairs from {self.n_queries} "
                f"photos ({self.n_same} same, {self.n_different} different; inputs {', '.join(self.feature_names)}): "
                f"{best}; {new}; {self.seconds:.0f} s")


def _percent(p: float) -> str:
    """A threshold as a percentage with the digits it needs: '0.3%' rather than '0%' (which reads as "off")."""
    if p < 0.001:
        return "<0.1%"
    return f"{p:.1%}" if p < 0.1 else f"{p:.0%}"


def _queries(catalog: Catalog, max_queries: int) -> tuple[list[int], dict[int, int]]:
    """Identified, usable photos to match (a deterministic sample when there are more), and their truth."""
    junk = catalog.junk_photo_ids()
    truth = {i.photo_id: i.individual_id for i in catalog.current_identifications()
             if i.individual_id is not None and i.photo_id not in junk}
    ids = sorted(truth)
    if len(ids) > max_queries:
        rng = np.random.default_rng(0)
        ids = sorted(rng.choice(ids, max_queries, replace=False).tolist())
    return ids, truth


def collect_pairs(catalog: Catalog, engine=None, *, max_queries: int | None = None,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None):
    """Labelled candidate pairs from matching the catalog's own identified photos.

    Each photo is matched as the match review would (itself left out); its shortlisted candidates
    are pairs, "same" where the candidate is its individual. Rejections made on a photo count
    through that photo once it is identified (its rejected candidates are then "different"); a
    photo still unidentified gives no pairs, since the truth of its other candidates is unknown.

    Returns:
        (:class:`model.api.CalibrationPairs`, queries matched, (file, problem) of photos skipped).

    Raises:
        Interrupted: ``should_stop()`` returned True.
    """
    from model.api import calibration_pairs

    queries, truth = _queries(catalog, max_queries or DEFAULT_MAX_QUERIES)
    results, truths, matchable, extras = [], [], [], []
    skipped: list[tuple[str, str]] = []
    for i, pid in enumerate(queries):
        if should_stop is not None and should_stop():
            raise Interrupted(f"calibration stopped after {i} of {len(queries)} photos")
        if progress is not None:
            progress(i / max(len(queries), 1), f"matching photo {i + 1}/{len(queries)}")
        notes: list[str] = []
        try:
            feats = lf.photo_features(catalog, pid, notes)
            emb = (lambda pid=pid: matching.photo_embedding(catalog, pid, engine)) if engine is not None else None
            with matching.index_lock():
                sl = matching.shortlist(catalog, feats, engine, emb, exclude={pid}, notes=notes)
                index, _ = matching.local_index(catalog)
                others = any(index.individual_of(p) == truth[pid] for p in index.photo_ids() if p != pid)
        except ImageError as exc:
            skipped.append((exc.path, exc.problem))
            continue
        results.append(sl.as_local_result())
        extras.append(sl.extra() or {})
        truths.append(truth[pid])
        matchable.append(others)
    if progress is not None:
        progress(1.0, f"{len(results)} photos matched")
    pairs = calibration_pairs(results, truths, matchable=matchable, extras=extras)
    return pairs, len(results), skipped


def calibrate(catalog: Catalog, engine=None, *, max_queries: int | None = None,
              progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> CalibrationResult:
    """Fit and store the calibration of local (or, with ``engine``, fused) matching for this catalog.

    Raises:
        NotEnoughPairs: fewer than MIN_SAME "same" or MIN_DIFFERENT "different" pairs (the message
            says how many there are and what would add more).
        Interrupted: stopped by ``should_stop`` (nothing is stored).
    """
    t0 = time.perf_counter()
    pairs, n_queries, skipped = collect_pairs(catalog, engine, max_queries=max_queries, progress=progress,
                                              should_stop=should_stop)
    y = pairs.y
    n_same, n_diff = int(y.sum()), int(len(y) - y.sum())
    if n_same < MIN_SAME or n_diff < MIN_DIFFERENT:
        raise NotEnoughPairs(
            f"{catalog.root}: not enough pairs to calibrate: {n_same} same-individual and {n_diff} "
            f"different-individual pairs from {n_queries} photos; at least {MIN_SAME} of each are needed "
            "(a stable fit, and a 'best match' threshold whose 95% precision can be measured). "
            "Identify more photos (individuals with two or more photos give same-individual pairs), "
            "or import a labelled catalog")
    from model.api import Calibrator

    kind = matching.calibration_kind(engine)
    cal = Calibrator().fit(pairs.X, y, pairs.feature_names, groups=pairs.query, top=pairs.top,
                           matchable=pairs.matchable, source=f"{kind}: {n_queries} identified photos of the catalog")
    data = cal.to_dict()
    rec = catalog.add_calibration(kind, data, n_pairs=len(y), n_same=n_same, n_different=n_diff,
                                  format_version=data.get("version"), source="catalog")
    return CalibrationResult(kind, n_queries, n_same, n_diff, cal.best_match_threshold,
                             cal.new_individual_threshold, list(pairs.feature_names), rec, skipped,
                             time.perf_counter() - t0)
