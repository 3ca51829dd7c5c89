"""Fitting the match confidence on the catalog's own identifications and rejections.

Every identified, usable photo is matched as a query against the rest of the catalog (itself
left out), exactly as the match review would match it; each of its candidates is a labelled pair:
"same" when the candidate is the individual the photo is identified as (imported labels,
confirmed matches, new individuals: identities a person stated), "different" otherwise. Photos
the reviewer rejected candidates for add those rejections as "different" pairs. A photo whose
individual has no other photo gives only "different" pairs: the case of a new individual, which
the new-individual threshold needs.

The pairs' scores (votes, verified inliers and, when a model is active, the embedding score) are
fitted by :class:`model.api.Calibrator` into one probability, stored in the catalog (versioned,
dated, with its pair counts) and used by every match from then on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.catalog import Catalog
from app.services import matching
from model.api import FlukeidError, ImageError, Interrupted

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]

# Fewer pairs than this of either kind and no calibration is fitted: a logistic fit of two or three
# inputs needs some tens of examples of each class to be stable, and the best-match threshold is
# chosen where the measured precision reaches 95%, which 20 "same" pairs can only just show (one
# error in 20 is already 95%).
MIN_SAME = 20
MIN_DIFFERENT = 20
DEFAULT_MAX_QUERIES = 2000
PAIRS_PER_QUERY = 5  # the candidates the match review shows


class NotEnoughPairs(FlukeidError):
    """The catalog has too few identified photos or decisions to fit a calibration."""


@dataclass
class CalibrationResult:
    """What :func:`calibrate` fitted and stored."""

    kind: str
    n_queries: int
    n_same: int
    n_different: int
    best_match_threshold: float
    new_individual_threshold: float
    feature_names: list[str]
    record_id: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"calibration '{self.kind}' fitted on {self.n_same + self.n_different} pairs from {self.n_queries} "
                f"photos ({self.n_same} same, {self.n_different} different; inputs {', '.join(self.feature_names)}): "
                f"'best match' from {self.best_match_threshold:.0%}, 'probably new' under "
                f"{self.new_individual_threshold:.0%}; {self.seconds:.0f} s")


def feature_names(engine=None) -> list[str]:
    """The calibrator's inputs: local evidence, plus the embedding score when a model is fused."""
    names = ["log_votes", "log_inliers"]
    return names + ["embedding_score"] if engine is not None else names


def _queries(catalog: Catalog, max_queries: int) -> tuple[list[int], dict[int, int]]:
    """Photos to match (identified ones, and unidentified ones with rejections), and their truth."""
    junk = catalog.junk_photo_ids()
    truth = {i.photo_id: i.individual_id for i in catalog.current_identifications()
             if i.individual_id is not None and i.photo_id not in junk}
    ids = sorted(truth)
    if len(ids) > max_queries:
        rng = np.random.default_rng(0)
        ids = sorted(rng.choice(ids, max_queries, replace=False).tolist())
    rejected = {d.query_photo_id for d in catalog.match_decisions(effective_only=True)
                if d.decision == "reject" and d.query_photo_id not in junk}
    extra = sorted(rejected - set(ids))
    return ids + extra, truth


def collect_pairs(catalog: Catalog, engine=None, *, max_queries: int | None = None,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None
                  ) -> tuple[list[dict], np.ndarray, int, list[tuple[str, str]]]:
    """Labelled candidate pairs from matching the catalog's own photos.

    Returns:
        (feature dicts, labels 0/1, queries matched, (file, problem) of photos that could not be).

    Raises:
        Interrupted: ``should_stop()`` returned True.
    """
    queries, truth = _queries(catalog, max_queries or DEFAULT_MAX_QUERIES)
    rejections: dict[int, set[int]] = {}
    for d in catalog.match_decisions(effective_only=True):
        if d.decision == "reject" and d.individual_id is not None:
            rejections.setdefault(d.query_photo_id, set()).add(d.individual_id)
    feats: list[dict] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    done = 0
    for i, pid in enumerate(queries):
        if should_stop is not None and should_stop():
            raise Interrupted(f"calibration stopped after {i} of {len(queries)} photos")
        if progress is not None:
            progress(i / max(len(queries), 1), f"matching photo {i + 1}/{len(queries)}")
        try:
            result = matching.match_photo(catalog, pid, engine, k=PAIRS_PER_QUERY)
        except ImageError as exc:
            skipped.append((exc.path, exc.problem))
            continue
        done += 1
        true_ind = truth.get(pid)
        for c in result.candidates:
            if true_ind is not None:
                same = int(c.individual) == true_ind
            elif int(c.individual) in rejections.get(pid, ()):
                same = False
            else:
                continue  # unidentified photo: only its rejections are known
            feats.append(matching.candidate_features(c))
            labels.append(int(same))
    if progress is not None:
        progress(1.0, f"{len(labels)} pairs from {done} photos")
    return feats, np.asarray(labels, np.int64), done, skipped


def calibrate(catalog: Catalog, engine=None, *, max_queries: int | None = None,
              progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> CalibrationResult:
    """Fit and store the calibration of local (or, with ``engine``, fused) matching for this catalog.

    Raises:
        NotEnoughPairs: fewer than MIN_SAME "same" or MIN_DIFFERENT "different" pairs (the message
            says how many there are and what would add more).
        Interrupted: stopped by ``should_stop`` (nothing is stored).
    """
    t0 = time.perf_counter()
    feats, y, n_queries, skipped = collect_pairs(catalog, engine, max_queries=max_queries, progress=progress,
                                                 should_stop=should_stop)
    n_same, n_diff = int(y.sum()), int(len(y) - y.sum())
    if n_same < MIN_SAME or n_diff < MIN_DIFFERENT:
        raise NotEnoughPairs(
            f"{catalog.root}: not enough pairs to calibrate: {n_same} same-individual and {n_diff} "
            f"different-individual pairs from {n_queries} photos; at least {MIN_SAME} of each are needed "
            "(a stable fit, and a 'best match' threshold whose 95% precision can be measured). "
            "Identify more photos (individuals with two or more photos give same-individual pairs), "
            "or import a labelled catalog")
    from model.api import Calibrator

    names = feature_names(engine)
    x = np.array([[f[n] for n in names] for f in feats], np.float64)
    cal = Calibrator()
    fitted = cal.fit(x, y, names)
    cal = fitted if fitted is not None else cal
    data = cal.to_dict()
    kind = matching.calibration_kind(engine)
    rec = catalog.add_calibration(kind, data, n_pairs=len(y), n_same=n_same, n_different=n_diff,
                                  format_version=data.get("version"), source="catalog")
    return CalibrationResult(kind, n_queries, n_same, n_diff, float(cal.best_match_threshold),
                             float(cal.new_individual_threshold), names, rec, skipped,
                             time.perf_counter() - t0)
