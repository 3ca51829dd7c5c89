"""Spatial verification of one (query, gallery) pair: which keypoint correspondences agree on one pose.

1. Candidate correspondences: each query descriptor's two nearest gallery descriptors
   (``cv2.BFMatcher``, L2 on RootSIFT), kept when the nearest is clearly nearer than the second
   (Lowe's ratio test), one per gallery keypoint (the nearest wins).
2. RANSAC fit of a similarity (rotation, uniform scale, translation: ``cv2.estimateAffinePartial2D``;
   or, with ``transform="affine"``, a full affine map: ``cv2.estimateAffine2D``) from query to gallery pixels; the tolerance is a fraction of the gallery region's longer side,
   so it means the same on a 300-pixel crop and a 3000-pixel photo. A fluke seen from another
   angle is not exactly similar, but a similarity has 4 degrees of freedom where an affine has 6,
   so chance alignments of unrelated marks are rarer (measured in bench/bench_local.py).
3. The correspondences RANSAC keeps are the inliers, strongest (lowest ratio) first. Fewer than
   ``min_inliers`` count as no verified correspondence at all: random correspondences line up by
   chance in threes and fours.

A mirrored query (``LocalFeatures.mirrored``) is fitted in mirrored coordinates, and the model
returned maps the query photo's own pixels to the gallery photo's (a reflection then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from model.local.features import LocalFeatures

# Ratio test, RANSAC tolerance and the inlier minimum, measured on humpback_kaggle2019_v2
# (bench/bench_local.py): over 1,000 random pairs of different whales the most inliers were 6
# (ratio 0.85, tolerance 0.02), while 57% of the 90 same-whale pairs reached 7. Ratios 0.8-0.9 and
# tolerances 0.01-0.04 all gave 51-57% of same-whale pairs above the different-whale maximum.
RATIO = 0.85
# RANSAC tolerance as a fraction of the gallery region's longer side (10 px on a 512-px crop).
RANSAC_TOLERANCE = 0.02
MIN_INLIERS = 7
# A fitted scale outside [1/MAX_SCALE_CHANGE, MAX_SCALE_CHANGE] x the ratio of region sizes is no fluke.
MAX_SCALE_CHANGE = 3.0
RANSAC_ITERS = 2000
# The pose RANSAC fits: "similarity" (4 degrees of freedom) or "affine" (6). Measured (bench/bench_local.py,
# scoring sweep): affine at >= 7 inliers verified a wrong top candidate for 47 of 1,201 right-whale
# queries (similarity: 11) and 10 of 46 humpback queries (2) for +0.5 / +2.2 points top-1; at >= 9
# inliers it was below similarity at >= 7 on every set. Similarity stays.
TRANSFORMS = ("similarity", "affine")
DEFAULT_TRANSFORM = "similarity"


def _empty_pairs() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass(frozen=True, eq=False)
class Verification:
    """The outcome of :func:`verify`.

    Attributes:
        inliers: how many correspondences agree on one pose (0 when fewer than ``min_inliers``).
        pairs: float32 [n, 4] (qx, qy, gx, gy) of the inlier correspondences in each photo's own
            pixels, strongest first (empty when ``inliers`` is 0).
        model: 2x3 float64 map from query pixels to gallery pixels, or None.
    """

    inliers: int = 0
    pairs: np.ndarray = field(default_factory=_empty_pairs)
    model: np.ndarray | None = None


def ratio_matches(q: LocalFeatures, g: LocalFeatures, ratio: float = RATIO) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio-test correspondences: (query indices, gallery indices, ratio), one per gallery keypoint."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(q) < 1 or len(g) < 2:
        return empty
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(q.descriptors_f32(), g.descriptors_f32(), k=2)
    qi, gi, rr = [], [], []
    for m in knn:
        if len(m) < 2:
            continue
        a, b = m
        r = a.distance / b.distance if b.distance > 0 else (0.0 if a.distance == 0 else 1.0)
        if r < ratio:
            qi.append(a.queryIdx)
            gi.append(a.trainIdx)
            rr.append(r)
    if not qi:
        return empty
    qi, gi, rr = np.asarray(qi), np.asarray(gi), np.asarray(rr, np.float32)
    order = np.argsort(rr, kind="stable")
    _, first = np.unique(gi[order], return_index=True)  # the strongest correspondence per gallery keypoint
    keep = np.sort(order[first])
    keep = keep[np.argsort(rr[keep], kind="stable")]
    return qi[keep], gi[keep], rr[keep]


def verify(q: LocalFeatures, g: LocalFeatures, *, ratio: float = RATIO, min_inliers: int = MIN_INLIERS,
           tolerance: float = RANSAC_TOLERANCE, transform: str = DEFAULT_TRANSFORM, seed: int = 0) -> Verification:
    """Verified correspondences between a query photo and a gallery photo (see the module docstring).

    Args:
        q: the query's features (may be mirrored).
        g: the gallery photo's features.
        ratio: Lowe's ratio test threshold.
        min_inliers: fewer inliers than this count as none.
        tolerance: RANSAC tolerance as a fraction of the gallery region's longer side.
        transform: the pose fitted, "similarity" or "affine" (:data:`TRANSFORMS`).
        seed: OpenCV's RNG seed for RANSAC, so a pair always gives the same answer.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r} (choose from {', '.join(TRANSFORMS)})")
    qi, gi, rr = ratio_matches(q, g, ratio)
    if len(qi) < max(3, min_inliers):
        return Verification()
    src = q.xy[qi].astype(np.float64)
    if q.mirrored:
        src[:, 0] = -src[:, 0]
    dst = g.xy[gi].astype(np.float64)
    cv2.setRNGSeed(seed)
    fit = cv2.estimateAffinePartial2D if transform == "similarity" else cv2.estimateAffine2D
    model, mask = fit(src, dst, method=cv2.RANSAC, ransacReprojThreshold=tolerance * g.extent,
                      maxIters=RANSAC_ITERS, confidence=0.995)
    if model is None or mask is None or not np.all(np.isfinite(model)):  # a degenerate affine fit can be NaN
        return Verification()
    inl = mask.ravel().astype(bool)
    n = int(inl.sum())
    scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))
    expected = g.extent / q.extent
    if n < min_inliers or not (expected / MAX_SCALE_CHANGE <= scale <= expected * MAX_SCALE_CHANGE):
        return Verification()
    if q.mirrored:
        model = model.copy()
        model[:, 0] = -model[:, 0]
    sel = np.flatnonzero(inl)  # already strongest first (ratio_matches sorts by ratio)
    pairs = np.concatenate([q.xy[qi[sel]], g.xy[gi[sel]]], axis=1).astype(np.float32)
    return Verification(n, pairs, model)
