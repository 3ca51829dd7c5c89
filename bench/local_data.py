"""Data for the local-feature benchmarks: the shared sets' records, their features cached in /tmp.

Features are cached per (set, FEATURE_VERSION, extraction parameters, mirror) as one file of
:meth:`LocalFeatures.to_bytes` blobs, so reruns of bench_local skip the minutes of extraction.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path

import numpy as np

from model.data.records import read_labels
from model.local.features import FEATURE_VERSION, LocalFeatures, extract
from model.preprocess import load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HUMPBACK = SHARED / "humpback_kaggle2019_v2"
CETACEAN = SHARED / "cetacean_photoid_eval_v1"
CACHE = Path("/tmp/flukeid_local_cache")


def humpback_records():
    """humpback_kaggle2019_v2's 978 records (boxes from labels.csv)."""
    ls = read_labels(HUMPBACK / "labels.csv", HUMPBACK / "images")
    if ls.problems:
        print(f"{len(ls.problems)} rows skipped, e.g. {ls.problems[0]}")
    return ls.records


def right_whale_records():
    """The right whales (``rw:`` ids) of cetacean_photoid_eval_v1."""
    ls = read_labels(CETACEAN / "labels.csv", CETACEAN / "images")
    return [r for r in ls.records if r.individual is not None and str(r.individual).startswith("rw:")]


def features_for(records, name: str, *, mirror: bool = False, **params) -> tuple[list[LocalFeatures], float]:
    """Every record's features (cached); returns them and the median extraction time in ms
    (measured on this run, or stored with the cache)."""
    key = hashlib.sha1(repr((name, len(records), FEATURE_VERSION, mirror, sorted(params.items()))).encode()).hexdigest()[:12]
    path = CACHE / f"{name}_{key}.pkl"
    if path.is_file():
        blobs, ms = pickle.loads(path.read_bytes())
        return [LocalFeatures.from_bytes(b) for b in blobs], ms
    feats, times = [], []
    t_start = time.perf_counter()
    for i, r in enumerate(records):
        img = load_image(r.path)
        t0 = time.perf_counter()
        feats.append(extract(img, r.box, mirror=mirror, **params))
        times.append(time.perf_counter() - t0)
        if (i + 1) % 200 == 0:
            print(f"  {name}: {i + 1}/{len(records)} photos, {time.perf_counter() - t_start:.0f} s")
    ms = float(np.median(times) * 1e3)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(([f.to_bytes() for f in feats], ms)))
    return feats, ms
