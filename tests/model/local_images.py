"""Hand-made test images for the local-feature tests: random marks drawn with OpenCV, and their copies.

Nothing here comes from shared data: a "pattern" is a grey field with random ellipses and lines
(the marks of a made-up fluke); a copy is the same pattern rotated, scaled and cropped.
"""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND = 90


def pattern(seed: int, h: int = 360, w: int = 560) -> np.ndarray:
    """An RGB uint8 image of random marks, the same for the same seed."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), BACKGROUND, np.uint8)
    for _ in range(60):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(4, 30)), int(rng.integers(4, 30)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(0, 256)), -1)
    for _ in range(20):
        p = rng.integers(0, [w, h], size=(2, 2))
        cv2.line(img, (int(p[0, 0]), int(p[0, 1])), (int(p[1, 0]), int(p[1, 1])),
                 int(rng.integers(0, 256)), int(rng.integers(1, 4)))
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.dstack([img] * 3)


def transformed(img: np.ndarray, angle: float = 25.0, scale: float = 0.7,
                crop: tuple[int, int, int, int] = (30, 20, 40, 10), noise_seed: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``img`` rotated by ``angle`` degrees and scaled about its centre, then cropped by
    (left, top, right, bottom) pixels; returns the copy and the 2x3 map from ``img`` to the copy."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(img, m, (w, h), borderValue=(BACKGROUND,) * 3)
    left, top, right, bottom = crop
    out = out[top:h - bottom, left:w - right]
    if noise_seed is not None:
        noise = np.random.default_rng(noise_seed).normal(0, 4, out.shape)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    m = m.copy()
    m[:, 2] -= (left, top)
    return np.ascontiguousarray(out), m


def embed(img: np.ndarray, offset: tuple[int, int], size: tuple[int, int] = (700, 900), fill: int = 30) -> np.ndarray:
    """``img`` placed at (x, y) ``offset`` in a larger (h, w) photo of plain ``fill``."""
    h, w = size
    out = np.full((h, w, 3), fill, np.uint8)
    x, y = offset
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out
