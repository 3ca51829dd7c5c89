"""Data for the local-feature benchmarks: the shared sets' records, their features cached in /tmp.

Features are cached per (set, FEATURE_VERSION, extraction parameters, mirror) as one file of
:meth:`LocalFeatures.to_bytes` blobs, so reruns of bench_local skip the minutes of extraction.
:func:`features_for` decodes photos at full size; :func:`eval_features_for` decodes them as
``flukeid evaluate`` does (model.evaluate.local_features_of), so a table made from its features is
the one that command prints. The synthetic set is written by model.data.synthetic.generate_dataset,
the function behind ``flukeid synth``.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path

import numpy as np

from model.data.records import read_labels
from model.evaluate import LOCAL_MAX_SIDE, decode_record
from model.local.features import FEATURE_VERSION, LocalFeatures, extract
from model.preprocess import load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HUMPBACK = SHARED / "humpback_kaggle2019_v2"
CETACEAN = SHARED / "cetacean_photoid_eval_v1"
CACHE = Path("/tmp/flukeid_local_cache")
# The synthetic set of the accuracy tables and the scoring sweep: `flukeid synth --individuals 500
# --seed 1 --out DIR` (long-tailed 1-30 photos an individual: 1,752 photos).
SYNTH_INDIVIDUALS = 500
SYNTH_SEED = 1
SYNTH_DIR = CACHE / f"synth_{SYNTH_INDIVIDUALS}_s{SYNTH_SEED}"
RW_LABELS = CACHE / "rightwhale_labels.csv"


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


def right_whale_labels() -> Path:
    """The right-whale rows of cetacean_photoid_eval_v1/labels.csv in a CSV of their own (for
    ``flukeid evaluate --data``): ``grep -E '^image,|,rw:' labels.csv``; its records are
    :func:`right_whale_records`, in the same order (so the same splits)."""
    lines = (CETACEAN / "labels.csv").read_text().splitlines(keepends=True)
    text = "".join(ln for ln in lines if ln.startswith("image,") or ",rw:" in ln)
    if not RW_LABELS.is_file() or RW_LABELS.read_text() != text:
        RW_LABELS.parent.mkdir(parents=True, exist_ok=True)
        RW_LABELS.write_text(text)
    return RW_LABELS


def synthetic_records():
    """The synthetic set's records (written on first use by generate_dataset, as ``flukeid synth``)."""
    from model.data.synthetic import generate_dataset

    labels = SYNTH_DIR / "labels.csv"
    if not labels.is_file():
        t0 = time.perf_counter()
        generate_dataset(SYNTH_DIR, SYNTH_INDIVIDUALS, seed=SYNTH_SEED)
        print(f"synthetic set: {SYNTH_INDIVIDUALS} individuals written in {time.perf_counter() - t0:.0f} s")
    ls = read_labels(labels, SYNTH_DIR / "images")
    return ls.records


def _extract_cached(records, name: str, path, decode, describe) -> tuple[list[LocalFeatures], float]:
    """Extract every record's features (``describe(*decode(record))``, only the describing timed),
    store them with the median time in ms at ``path``, and return both."""
    feats, times = [], []
    t_start = time.perf_counter()
    for i, r in enumerate(records):
        img, box = decode(r)
        t0 = time.perf_counter()
        feats.append(describe(img, box))
        times.append(time.perf_counter() - t0)
        if (i + 1) % 200 == 0:
            print(f"  {name}: {i + 1}/{len(records)} photos, {time.perf_counter() - t_start:.0f} s")
    ms = float(np.median(times) * 1e3)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(([f.to_bytes() for f in feats], ms)))
    return feats, ms


def eval_features_for(records, name: str) -> tuple[dict[int, LocalFeatures], float]:
    """Every record's features as ``flukeid evaluate`` computes them (model.evaluate.local_features_of:
    decoded at most LOCAL_MAX_SIDE, box scaled with it; cached); record index -> features, and the
    median extraction time in ms (decoded photo given)."""
    key = hashlib.sha1(repr((name, "evaluate", len(records), FEATURE_VERSION, LOCAL_MAX_SIDE)).encode()).hexdigest()[:12]
    path = CACHE / f"{name}_eval_{key}.pkl"
    if path.is_file():
        blobs, ms = pickle.loads(path.read_bytes())
        return {i: LocalFeatures.from_bytes(b) for i, b in enumerate(blobs)}, ms
    feats, ms = _extract_cached(records, name, path, lambda r: decode_record(r, LOCAL_MAX_SIDE), extract)
    return dict(enumerate(feats)), ms


def features_for(records, name: str, *, mirror: bool = False, **params) -> tuple[list[LocalFeatures], float]:
    """Every record's features (cached); returns them and the median extraction time in ms
    (measured on this run, or stored with the cache)."""
    key = hashlib.sha1(repr((name, len(records), FEATURE_VERSION, mirror, sorted(params.items()))).encode()).hexdigest()[:12]
    path = CACHE / f"{name}_{key}.pkl"
    if path.is_file():
        blobs, ms = pickle.loads(path.read_bytes())
        return [LocalFeatures.from_bytes(b) for b in blobs], ms
    return _extract_cached(records, name, path, lambda r: (load_image(r.path), r.box),
                           lambda img, box: extract(img, box, mirror=mirror, **params))
