"""Fluke detector benchmark: box accuracy on real humpback photos and synthetic frames, CPU speed.

Writes docs/bench/detector.md (then run ``python -m bench.assemble``).

    python -m bench.bench_detector [--folds 5] [--epochs 12] [--out docs/bench/detector.md]

Methods compared on the same photos:
- whole: the whole photo as the box (trivial baseline);
- classical: :func:`model.detection.classical_detect` (no network);
- model, synthetic only: the shipped default detector (resources/models/detector), run from ONNX;
- model, synthetic + real (CV): the default detector fine-tuned on synthetic frames plus the real
  photos of k-1 folds, tested on the held-out fold (so every real photo is tested exactly once by
  a model that never saw it).

Real photos: every humpback full frame with a box in ../shared/data (cetacean_photoid_eval_v1 and
humpback_flukes_v1, duplicates removed by file name). Their boxes come from the Kaggle-2019
first-place solution's box file, i.e. they are themselves a model's output checked by eye.
"""

from __future__ import annotations

import argparse
import faulthandler
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import ROOT, SHARED, configure_process, machine
from model.detection import (
    DEFAULT_DETECTOR_DIR,
    Detector,
    box_iou,
    classical_detect,
    detector_input,
    fractions_to_box,
)
from model.training.detector import (
    BoxSample,
    DetectorTrainConfig,
    load_box_samples,
    load_detector_state,
    predict_samples,
    read_box_labels,
    synthetic_samples,
    train_detector,
)

REAL_SETS = ["cetacean_photoid_eval_v1", "humpback_flukes_v1"]


def real_rows(csv_paths: list[Path] | None = None) -> list:
    """Humpback full frames with boxes from the shared data, duplicates (same file name) removed."""
    rows, seen = [], set()
    for csv_path in csv_paths or [SHARED / name / "labels.csv" for name in REAL_SETS]:
        if not csv_path.is_file():
            continue
        for path, box in read_box_labels(csv_path):
            if path.name in seen:
                continue
            seen.add(path.name)
            rows.append((path, box))
    return rows


def ious_of(boxes_px: list, samples: list[BoxSample]) -> np.ndarray:
    out = []
    for b, s in zip(boxes_px, samples, strict=True):
        w, h = s.meta["width"], s.meta["height"]
        truth = tuple(s.box * np.array([w, h, w, h]))
        out.append(box_iou(b, truth))
    return np.array(out)


def summary(ious: np.ndarray) -> str:
    return f"{ious.mean():.3f} | {(ious >= 0.75).mean() * 100:.0f}%"


def frac_to_px(fr: np.ndarray, samples: list[BoxSample]) -> list:
    return [fractions_to_box(f, s.meta["width"], s.meta["height"]) for f, s in zip(fr, samples, strict=True)]


def main() -> None:
    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs per fold")
    ap.add_argument("--synthetic-train", type=int, default=600, help="synthetic frames mixed into each fold's training")
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR_DIR))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "detector.md"))
    ap.add_argument("--real", action="append", type=Path, default=None,
                    help="labels CSV(s) of the real photos (default: the two sets in ../shared/data)")
    ap.add_argument("--device", default="cpu", help="where the CV fine-tuning runs (cpu or cuda)")
    ap.add_argument("--workers", type=int, default=0, help="augmentation processes for the CV fine-tuning")
    ap.add_argument("--machine", default=machine(), help="machine description for the table")
    ap.add_argument("--speed-only", action="store_true",
                    help="only measure speed on this machine and replace the speed line of --out")
    args = ap.parse_args()
    if args.speed_only:
        speed_only(args)
        return
    t_start = time.monotonic()
    faulthandler.dump_traceback_later(300, repeat=True)  # where it is, every 5 min (shared, busy CPUs)

    det = Detector.load(args.detector)
    manifest = det.manifest
    size = det.input_size
    state, cfg_dict = load_detector_state(args.detector)

    # real photos at full resolution (the app's input) and reduced for training
    rows = real_rows(args.real)
    if not rows:
        raise SystemExit(f"no real photos with boxes under {SHARED}")
    from model.preprocess import load_image

    photos = [load_image(p) for p, _ in rows]
    real = [BoxSample(s.gray, s.box, s.name, s.meta) for s in load_box_samples(rows, cfg_dict.get("store_side", 256))]
    print(f"{len(real)} real photos")

    # synthetic evaluation frames (seed not used by any training) + plain-sea frames
    print("drawing synthetic frames", flush=True)
    synth = synthetic_samples(300, 0, seed=424_242)
    sea = synthetic_samples(0, 100, seed=525_252)
    synth_rgb = [np.stack([s.gray] * 3, -1) for s in synth]
    sea_rgb = [np.stack([s.gray] * 3, -1) for s in sea]

    print("baselines and the shipped detector", flush=True)
    res: dict[str, dict[str, np.ndarray]] = {}
    res["whole photo"] = {
        "real": ious_of([(0.0, 0.0, float(p.shape[1]), float(p.shape[0])) for p in photos], real),
        "synth": ious_of([(0.0, 0.0, float(s.meta["width"]), float(s.meta["height"])) for s in synth], synth),
    }
    cl_real = [classical_detect(p) for p in photos]
    cl_syn = [classical_detect(p) for p in synth_rgb]
    # classical boxes on synthetic frames are in the reduced frame's pixels: scale to the original
    res["classical (Otsu on border difference)"] = {
        "real": ious_of([d.box for d in cl_real], real),
        "synth": ious_of([_scale(d.box, s) for d, s in zip(cl_syn, synth, strict=True)], synth),
    }
    m_real = [det.detect(p) for p in photos]
    m_syn = [det.detect(p) for p in synth_rgb]
    res["model, synthetic only (shipped)"] = {
        "real": ious_of([d.box for d in m_real], real),
        "synth": ious_of([_scale(d.box, s) for d, s in zip(m_syn, synth, strict=True)], synth),
    }
    sea_conf = np.array([d.confidence for d in det.detect_many(sea_rgb)])
    pos_conf_real = np.array([d.confidence for d in m_real])
    pos_conf_syn = np.array([d.confidence for d in m_syn])

    # cross-validation: fine-tune the shipped detector on synthetic + k-1 real folds
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real))
    folds = np.array_split(order, args.folds)
    cv_pred = np.zeros((len(real), 4), dtype=np.float32)
    mix = synthetic_samples(args.synthetic_train, max(20, args.synthetic_train // 5), seed=737)
    known = set(DetectorTrainConfig.__dataclass_fields__)
    cfg = DetectorTrainConfig(**{**{k: v for k, v in cfg_dict.items() if k in known}, "epochs": args.epochs,
                                 "lr": 1e-3, "batch_size": 32, "device": args.device, "workers": args.workers,
                                 "threads": 2})
    t_cv = time.monotonic()
    print("cross-validation", flush=True)
    for k, test_idx in enumerate(folds):
        train_idx = np.setdiff1d(order, test_idx)
        train_real = [real[i] for i in train_idx]
        samples = mix + train_real
        w_real = 0.5 * len(mix) / max(1, len(train_real))
        weights = [1.0] * len(mix) + [w_real] * len(train_real)
        net = train_detector(samples, cfg, init_state=state, sample_weights=weights,
                             progress=lambda f, m, k=k: print(f"fold {k + 1}: {m}", flush=True))
        pred, _ = predict_samples(net, [real[i] for i in test_idx], size)
        cv_pred[test_idx] = pred
        print(f"fold {k + 1}/{args.folds} done ({time.monotonic() - t_cv:.0f} s)")
    cv_ious = ious_of(frac_to_px(cv_pred, real), real)
    res[f"model, synthetic + real ({args.folds}-fold CV, fine-tuned)"] = {"real": cv_ious, "synth": None}

    speed = speed_line(det, photos, args.machine)

    total = time.monotonic() - t_start
    trained = manifest.get("trained_on", {})
    lines = [
        "## Fluke detector",
        "",
        f"Command: `python -m bench.bench_detector --folds {args.folds} --epochs {args.epochs} "
        f"--synthetic-train {args.synthetic_train} --device {args.device}` · machine: {args.machine} "
        f"({platform.machine()}, detector run by onnxruntime on the CPU) · date: "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} · whole run {total / 60:.1f} min.",
        "",
        f"Real photos: {len(real)} humpback full frames with a box (all of them in ../shared/data: "
        "cetacean_photoid_eval_v1 + humpback_flukes_v1, duplicates removed). Their boxes come from the "
        "Kaggle-2019 first-place solution's box file, so they are a model's output checked by eye, not "
        "hand-drawn. Synthetic: 300 fresh frames from model.data.synthetic (seed unused in training). "
        f"The shipped detector ({Path(args.detector).name}/detector.onnx, input {size}x{size} gray) was "
        f"trained on synthetic frames only ({trained.get('synthetic_frames', '?')} fluke frames + "
        f"{trained.get('plain_sea_frames', '?')} plain-sea frames, {trained.get('real_photos', 0)} real photos).",
        "",
        "| method | real: mean IoU | real: IoU ≥ 0.75 | synthetic: mean IoU | synthetic: IoU ≥ 0.75 |",
        "|---|---|---|---|---|",
    ]
    for name, r in res.items():
        rr = r["real"]
        syn = r["synth"]
        syn_cols = f"{syn.mean():.3f} | {(syn >= 0.75).mean() * 100:.0f}%" if syn is not None else "– | –"
        lines.append(f"| {name} | {rr.mean():.3f} | {(rr >= 0.75).mean() * 100:.0f}% | {syn_cols} |")
    lines += [
        "",
        f"The CV rows: each of the {args.folds} folds fine-tunes the shipped detector for {args.epochs} epochs "
        f"on {args.synthetic_train} synthetic frames (+ plain sea) and the other folds' real photos (drawn "
        "about half the time), then predicts the held-out fold; every real photo is scored once by a model "
        "that never saw it. Target: mean IoU ≥ 0.85 on real held-out photos.",
        "",
        "Presence confidence of the shipped detector: "
        f"plain-sea frames (no fluke, n={len(sea_conf)}) mean {sea_conf.mean():.3f}, "
        f"{(sea_conf >= 0.5).mean() * 100:.0f}% ≥ 0.5; real fluke photos mean {pos_conf_real.mean():.3f}, "
        f"{(pos_conf_real >= 0.5).mean() * 100:.0f}% ≥ 0.5; synthetic fluke frames mean {pos_conf_syn.mean():.3f}.",
        "",
        speed,
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


def speed_line(det: Detector, photos: list[np.ndarray], machine: str = "") -> str:
    """Median ms per photo of the detector (with and without preprocessing) and the classical one."""
    photo = max(photos, key=lambda p: p.shape[0] * p.shape[1] if p.shape[1] <= 1100 else 0)
    for _ in range(5):
        det.detect(photo)
    times, net_times = [], []
    x = detector_input(photo, det.input_size)[None]
    for _ in range(100):
        t = time.perf_counter()
        det.detect(photo)
        times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        det.predict_batch(x)
        net_times.append((time.perf_counter() - t) * 1000)
    cl_times = []
    for _ in range(30):
        t = time.perf_counter()
        classical_detect(photo)
        cl_times.append((time.perf_counter() - t) * 1000)
    where = f" on {machine}" if machine else ""
    return (f"Speed{where}, one {photo.shape[1]}x{photo.shape[0]} photo at a time (median of 100, 2 onnxruntime "
            f"threads): **{np.median(times):.1f} ms** per photo including gray conversion and resizing "
            f"({np.median(net_times):.1f} ms for the network alone); classical detector {np.median(cl_times):.1f} ms.")


def speed_only(args) -> None:
    """Measure speed here and replace the speed line of an existing fragment."""
    from model.preprocess import load_image

    det = Detector.load(args.detector)
    photos = [load_image(p) for p, _ in real_rows(args.real)]
    line = speed_line(det, photos, args.machine) + (
        f" Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} with "
        "`python -m bench.bench_detector --speed-only`.")
    out = Path(args.out)
    text = out.read_text().splitlines() if out.is_file() else []
    text = [ln for ln in text if not ln.startswith("Speed")]
    while text and not text[-1].strip():
        text.pop()
    out.write_text("\n".join([*text, "", line, ""]))
    print(line)


def _scale(box, sample: BoxSample):
    """A box found on the reduced frame (``sample.gray``) to the original frame's pixels."""
    h, w = sample.gray.shape[:2]
    sx, sy = sample.meta["width"] / w, sample.meta["height"] / h
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


if __name__ == "__main__":
    main()
