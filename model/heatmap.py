"""Torch-free heatmaps from the branch's last batch-norm feature map (numpy + OpenCV).

- :func:`std_map`: the paper's standard-deviation map, the standard deviation across channels at
  each location of the feature map, normalised to 0-255.
- :func:`max_location_map`: the paper's max-location map, how often each location holds a
  channel's maximum (the cell that global max pooling picks), normalised to 0-255.
- :func:`to_photo`: a feature-map-sized map back into photo coordinates through the inverse of
  the crop's affine (:func:`model.preprocess.crop_matrix`), photo-sized; zero outside the crop.
- :func:`figure5_overlay`: the paper's Figure 5, green where the standard deviation is high,
  magenta where maxima fall most often, white where both.
- :func:`agreement_overlay`: with no model, where two photos agree by local features: a glow
  around each verified correspondence (its position on one crop, weighted by its strength).
- :func:`pair_evidence`: for a query and a candidate, which channels raise the head's score most
  (each channel replaced by a reference value on one side at a time, all in one head batch), where those channels peak
  on each photo, and lines joining corresponding peaks.

Everything takes arrays the engine already produced (embeddings, feature maps, boxes): no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from model.preprocess import Box, Preprocessing, crop_matrix, to_gray
from model.separable import SeparableHead


def _to_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def std_map(feature_map: np.ndarray) -> np.ndarray:
    """Standard deviation across channels at each location of a [C, h, w] map, as uint8 [h, w]."""
    return _to_uint8(np.asarray(feature_map, np.float32).std(axis=0))


def max_location_map(feature_map: np.ndarray) -> np.ndarray:
    """How often each location of a [C, h, w] map holds a channel's maximum, as uint8 [h, w] (0-255)."""
    fm = np.asarray(feature_map, np.float32)
    c, h, w = fm.shape
    counts = np.bincount(fm.reshape(c, -1).argmax(axis=1), minlength=h * w).reshape(h, w)
    return np.round(counts * (255.0 / max(int(counts.max()), 1))).astype(np.uint8)


def to_photo(small: np.ndarray, photo_hw: tuple[int, int], box: Box | None, prep: Preprocessing) -> np.ndarray:
    """Map an [h, w] map over the network input back onto the photo ([H, W], same dtype).

    The map is resized to the input size, then warped through the inverse of the crop's affine;
    photo pixels outside the crop are 0.
    """
    inp = cv2.resize(small, (prep.input_width, prep.input_height), interpolation=cv2.INTER_LINEAR)
    m = crop_matrix(box, photo_hw, prep)
    h, w = photo_hw
    return cv2.warpAffine(inp, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def cell_to_photo(cells: np.ndarray, fmap_hw: tuple[int, int], photo_hw: tuple[int, int], box: Box | None,
                  prep: Preprocessing) -> np.ndarray:
    """Feature-map cells [K, 2] (row, col) to photo pixel coordinates [K, 2] (x, y) of their centres."""
    fh, fw = fmap_hw
    cells = np.asarray(cells, np.float64).reshape(-1, 2)
    xi = (cells[:, 1] + 0.5) * prep.input_width / fw - 0.5
    yi = (cells[:, 0] + 0.5) * prep.input_height / fh - 0.5
    m = crop_matrix(box, photo_hw, prep)
    s = m[0, 0]
    return np.stack([(xi - m[0, 2]) / s, (yi - m[1, 2]) / s], axis=1)


def photo_heatmaps(feature_map: np.ndarray, photo_hw: tuple[int, int], box: Box | None,
                   prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The standard-deviation and max-location maps of one photo, photo-sized uint8 [H, W] each."""
    return (to_photo(std_map(feature_map), photo_hw, box, prep),
            to_photo(max_location_map(feature_map), photo_hw, box, prep))


def figure5_overlay(photo: np.ndarray, std_photo: np.ndarray, max_photo: np.ndarray,
                    opacity: float = 0.6) -> np.ndarray:
    """The paper's Figure 5 over the photo: green = high std, magenta = frequent maxima, white = both.

    Args:
        photo: RGB uint8 [H, W, 3] (or gray [H, W]).
        std_photo: photo-sized uint8 std map (:func:`photo_heatmaps`).
        max_photo: photo-sized uint8 max-location map.
        opacity: 0 shows the photo only, 1 the maps at full strength.

    Returns:
        RGB uint8 [H, W, 3].
    """
    gray = to_gray(photo)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    color = cv2.merge([max_photo, std_photo, max_photo])  # R, G, B: green alone, magenta alone, white both
    # per-pixel weight of the colour layer: the stronger of the two maps, times the opacity
    w = cv2.max(std_photo, max_photo).astype(np.float32) * (float(np.clip(opacity, 0.0, 1.0)) / 255.0)
    return cv2.blendLinear(color, base, w, 1.0 - w)  # OpenCV: about 10x faster than numpy floats here


AGREEMENT_RGB = (255, 196, 0)  # amber: apart from the evidence lines' colours and from Figure 5's


def agreement_overlay(points: np.ndarray, weights: np.ndarray | None, hw: tuple[int, int],
                      sigma: float = 0.035) -> np.ndarray:
    """Where two photos agree, as an RGBA overlay [h, w, 4] (amber; alpha is the agreement).

    Each verified correspondence adds a Gaussian at its position on this crop; the sum is
    normalised so the densest place is opaque. With no points the overlay is fully transparent.

    Args:
        points: [N, 2] (x, y) positions as fractions 0..1 of the crop's width and height.
        weights: [N] strengths (e.g. the lines' weights); None weighs each point 1.
        hw: the overlay's size (height, width); the view scales it onto the crop.
        sigma: the Gaussian's standard deviation as a fraction of the crop's longer side.
    """
    h, w = hw
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = AGREEMENT_RGB
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return out
    wts = np.ones(len(pts)) if weights is None else np.clip(np.asarray(weights, np.float64), 0.0, None)
    density = np.zeros((h, w), np.float32)
    xs = np.clip(np.round(pts[:, 0] * (w - 1)).astype(int), 0, w - 1)
    ys = np.clip(np.round(pts[:, 1] * (h - 1)).astype(int), 0, h - 1)
    np.add.at(density, (ys, xs), wts.astype(np.float32))
    s = max(sigma * max(h, w), 0.5)
    density = cv2.GaussianBlur(density, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_CONSTANT)
    top = float(density.max())
    if top > 0:
        out[..., 3] = np.round(np.sqrt(density / top) * 255).astype(np.uint8)  # sqrt: a single match still shows
    return out


@dataclass(frozen=True)
class PairEvidence:
    """Where a query and a candidate agree, as the head sees it.

    Attributes:
        map_a, map_b: photo-sized uint8 maps of the evidence on photo a and photo b.
        peaks_a, peaks_b: [K, 2] float (x, y) photo coordinates of the top channels' maxima.
        lines: K pairs ((xa, ya), (xb, yb)) joining corresponding peaks, strongest first.
        weights: [K] the score (logit) each line's channel contributes.
        channels: [K] the channel indices.
        score: the head's probability for the pair.
    """

    map_a: np.ndarray
    map_b: np.ndarray
    peaks_a: np.ndarray
    peaks_b: np.ndarray
    lines: list[tuple[tuple[float, float], tuple[float, float]]]
    weights: np.ndarray
    channels: np.ndarray
    score: float


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1.0 - p))


def channel_contributions(score_pairs: Callable[[np.ndarray, np.ndarray], np.ndarray], emb_a: np.ndarray,
                          emb_b: np.ndarray, reference: np.ndarray | None = None, *,
                          head: SeparableHead | None = None) -> tuple[np.ndarray, float]:
    """How much each channel raises the head's logit for the pair (a, b).

    A channel is ablated by replacing it, on one side at a time, with a reference value (what a
    typical other photo would show; default 0, the batch-norm mean): if a and b agree on a
    distinctive value, losing it on either side lowers the score. The contribution is the mean
    logit drop over the two sides. The intact pair and all 2*D ablations go through the head in
    one batch. With ``head`` (the head as a sum of per-position terms, ``Engine.separable_head()``)
    each ablation changes one term only, so the drops are computed from the terms directly: the
    same numbers without 2*D+1 head evaluations, and without the clipping of saturated
    probabilities.

    Args:
        score_pairs: the head over row-aligned pairs (``Engine.score_pairs``).
        emb_a, emb_b: the two embeddings [D].
        reference: per-channel replacement values [D] (e.g. the gallery's mean embedding).
        head: the separable form of the same head, when it has one.

    Returns:
        ([D] contributions in logit units, the intact pair's probability).
    """
    a = np.asarray(emb_a, np.float32).reshape(-1)
    b = np.asarray(emb_b, np.float32).reshape(-1)
    d = len(a)
    ref = np.zeros(d, np.float32) if reference is None else np.asarray(reference, np.float32).reshape(-1)
    if head is not None and head.dim == d:
        w = head.weight.astype(np.float64)
        intact = head.terms(a, b).astype(np.float64)
        drop_a = w * (intact - head.terms(ref, b))
        drop_b = w * (intact - head.terms(a, ref))
        logit = float(w @ intact + head.bias)
        return (0.5 * (drop_a + drop_b)).astype(np.float32), float(1.0 / (1.0 + np.exp(-logit)))
    A = np.repeat(a[None], 2 * d + 1, axis=0)
    B = np.repeat(b[None], 2 * d + 1, axis=0)
    idx = np.arange(d)
    A[idx + 1, idx] = ref
    B[idx + 1 + d, idx] = ref
    p = np.asarray(score_pairs(A, B), np.float64).reshape(-1)
    lg = _logit(p)
    contrib = lg[0] - 0.5 * (lg[1:d + 1] + lg[d + 1:])
    return contrib.astype(np.float32), float(p[0])


def pair_evidence(score_pairs: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  emb_a: np.ndarray, fmap_a: np.ndarray, photo_a_hw: tuple[int, int], box_a: Box | None,
                  emb_b: np.ndarray, fmap_b: np.ndarray, photo_b_hw: tuple[int, int], box_b: Box | None,
                  prep: Preprocessing, n_peaks: int = 8, reference: np.ndarray | None = None,
                  head: SeparableHead | None = None) -> PairEvidence:
    """Which locations carry the channels that raise the head's score most, on both photos.

    Args:
        score_pairs: the head over row-aligned pairs (``Engine.score_pairs``).
        emb_a, fmap_a: the query's embedding [D] and feature map [C, h, w] (D == C: the
            embedding is the map's global max pool).
        photo_a_hw, box_a: the query photo's (height, width) and crop box.
        emb_b, fmap_b, photo_b_hw, box_b: the same for the candidate photo.
        prep: the bundle's preprocessing.
        n_peaks: how many channels (lines) to keep at most.
        reference: per-channel "typical photo" values for the ablation (default 0; the
            gallery's mean embedding is a good choice, see :func:`channel_contributions`).
        head: the head's separable form (``Engine.separable_head()``): same result, faster.

    Returns:
        A :class:`PairEvidence`; only channels with a positive contribution make peaks and lines.
    """
    fa = np.asarray(fmap_a, np.float32)
    fb = np.asarray(fmap_b, np.float32)
    if fa.shape[0] != len(np.ravel(emb_a)) or fb.shape[0] != len(np.ravel(emb_b)):
        raise ValueError(f"pair evidence needs one feature-map channel per embedding entry "
                         f"(maps {fa.shape[0]}/{fb.shape[0]}, embeddings {len(np.ravel(emb_a))})")
    contrib, prob = channel_contributions(score_pairs, emb_a, emb_b, reference, head=head)
    w = np.maximum(contrib, 0.0)
    order = np.argsort(-contrib, kind="stable")
    top = order[: max(n_peaks, 0)]
    top = top[contrib[top] > 0]

    def evidence_map(fm: np.ndarray, hw, box) -> np.ndarray:
        if not w.any():
            return np.zeros(hw, np.uint8)
        small = np.tensordot(w, np.maximum(fm, 0.0), axes=1)
        return to_photo(_to_uint8(small), hw, box, prep)

    def peaks(fm: np.ndarray, hw, box) -> np.ndarray:
        c, h, wd = fm.shape
        if len(top) == 0:
            return np.zeros((0, 2), np.float64)
        flat = fm[top].reshape(len(top), h * wd).argmax(axis=1)
        cells = np.stack([flat // wd, flat % wd], axis=1)
        return cell_to_photo(cells, (h, wd), hw, box, prep)

    pa = peaks(fa, photo_a_hw, box_a)
    pb = peaks(fb, photo_b_hw, box_b)
    lines = [((float(x0), float(y0)), (float(x1), float(y1))) for (x0, y0), (x1, y1) in zip(pa, pb)]
    return PairEvidence(evidence_map(fa, photo_a_hw, box_a), evidence_map(fb, photo_b_hw, box_b),
                        pa, pb, lines, contrib[top].astype(np.float32), top.astype(np.int64), prob)


def draw_pair_evidence(photo_a: np.ndarray, photo_b: np.ndarray, ev: PairEvidence, opacity: float = 0.5,
                       height: int = 480) -> np.ndarray:
    """Both photos side by side (same height) with their evidence maps and the lines joining peaks.

    Returns:
        RGB uint8 [height, Wa' + Wb', 3].
    """
    panels, scales = [], []
    for photo, emap in ((photo_a, ev.map_a), (photo_b, ev.map_b)):
        s = height / photo.shape[0]
        size = (max(1, round(photo.shape[1] * s)), height)
        gray = cv2.resize(to_gray(photo), size, interpolation=cv2.INTER_AREA)
        heat = cv2.applyColorMap(cv2.resize(emap, size), cv2.COLORMAP_INFERNO)[..., ::-1]
        alpha = (cv2.resize(emap, size).astype(np.float32) / 255.0)[..., None] * opacity
        base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
        panels.append(np.clip(base * (1 - alpha) + heat * alpha, 0, 255).astype(np.uint8))
        scales.append(s)
    out = np.ascontiguousarray(np.concatenate(panels, axis=1))
    offset = panels[0].shape[1]
    for i, ((xa, ya), (xb, yb)) in enumerate(ev.lines):
        pa = (round(xa * scales[0]), round(ya * scales[0]))
        pb = (round(xb * scales[1]) + offset, round(yb * scales[1]))
        color = (0, 255, 0) if i < 3 else (255, 255, 0)
        cv2.line(out, pa, pb, color, 1, cv2.LINE_AA)
        cv2.circle(out, pa, 4, color, 1, cv2.LINE_AA)
        cv2.circle(out, pb, 4, color, 1, cv2.LINE_AA)
    return out
