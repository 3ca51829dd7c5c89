"""Fixtures for catalog/service tests: a fresh catalog and small synthetic photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.catalog import Catalog


def write_photo(path: Path, seed: int, size: tuple[int, int] = (96, 64), *, exif: dict | None = None,
                fmt: str | None = None) -> Path:
    """A small noisy photo (distinct content per seed) with optional EXIF tags."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    arr[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = 30  # a dark "fluke"
    im = Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {}
    if exif:
        ex = Image.Exif()
        for k, v in exif.items():
            if isinstance(v, dict):
                ex.get_ifd(k).update(v)
            else:
                ex[k] = v
        kw["exif"] = ex
    im.save(path, fmt, **kw)
    return path


@dataclass
class FakeDetection:
    box: tuple
    confidence: float
    source: str = "model"


class FakeDetector:
    """Boxes the middle half of the photo (pixels of the image it is given)."""

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        return FakeDetection((w * 0.25, h * 0.25, w * 0.75, h * 0.75), 0.9)


class FakeEngine:
    """Embeds a photo as the mean colour of its box, repeated (deterministic, D = 8)."""

    version = "fake-1"
    provider = "CPU"
    new_individual_threshold = 0.5

    def embed(self, images, boxes):
        out = []
        for im, b in zip(images, boxes):
            if b is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in b)
                im = im[y0:y1, x0:x1]
            m = im.reshape(-1, 3).mean(0) / 255.0
            out.append(np.concatenate([m, m, m[:2]]).astype(np.float32))
        return np.stack(out)

    def score(self, q, g):
        d = np.linalg.norm(np.asarray(g, np.float32) - np.asarray(q, np.float32)[None], axis=1)
        return np.exp(-d * 5)


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.create(tmp_path / "cat")
    yield cat
    cat.close()


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Five distinct JPEGs in a folder with a subfolder."""
    d = tmp_path / "field"
    return [write_photo(d / ("sub" if i % 2 else "") / f"img_{i}.jpg", i) for i in range(5)]
