"""Training and evaluation of the fluke detector (torch imported lazily; ONNX export in model.export).

Samples are whole photos kept small in memory (gray uint8, longer side ``store_side``) with their
box as fractions of the photo, or ``None`` for a photo without a fluke (plain sea). Each epoch
draws a random crop/zoom (which always keeps the whole fluke in view), a horizontal flip, and
gamma/contrast/blur/noise changes, then prepares the input exactly as the app does
(:func:`model.detection.detector_input`).

Loss: smooth L1 + GIoU on the boxes of photos with a fluke, binary cross-entropy on presence.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from model.data.records import open_labels
from model.detection import DETECTOR_FILE, box_iou, detector_input
from model.errors import ConfigError, DataError, ImageError, Interrupted
from model.preprocess import load_image, normalise, to_gray

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]


def _no_progress(fraction: float, message: str) -> None:
    pass


def _never() -> bool:
    return False


@dataclass
class DetectorTrainConfig:
    """Settings of one detector training run (saved in the detector's manifest)."""

    input_size: int = 128
    width: int = 16
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    presence_weight: float = 1.0
    store_side: int = 256
    seed: int = 0
    threads: int = 2
    workers: int = 0  # data-loader processes for augmentation (0: in the training process)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.input_size % 32:
            raise ConfigError(f"input_size must be a multiple of 32 and >= 32, got {self.input_size}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.width < 4:
            raise ConfigError("epochs >= 1, batch_size >= 2, lr > 0 and width >= 4 are required")


@dataclass
class BoxSample:
    """One training/evaluation photo: gray uint8 (reduced), box fractions or None (no fluke)."""

    gray: np.ndarray
    box: np.ndarray | None
    name: str = ""
    meta: dict = field(default_factory=dict)


def make_sample(image: np.ndarray, box_pixels: Sequence[float] | None, name: str = "",
                store_side: int = 256) -> BoxSample:
    """Reduce a photo (RGB or gray) to a :class:`BoxSample`; ``box_pixels`` in photo pixels or None."""
    gray = to_gray(image)
    h, w = gray.shape[:2]
    s = min(1.0, store_side / max(h, w))
    if s < 1.0:
        gray = cv2.resize(gray, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
    box = None
    if box_pixels is not None:
        x0, y0, x1, y1 = (float(v) for v in box_pixels)
        box = np.clip(np.array([x0 / w, y0 / h, x1 / w, y1 / h], dtype=np.float32), 0.0, 1.0)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{name}: empty box {tuple(box_pixels)}")
    return BoxSample(np.ascontiguousarray(gray), box, name, {"width": w, "height": h})


def read_box_labels(labels_csv: str | Path, images_dir: str | Path | None = None,
                    only_full_frames: bool = True, issues: list | None = None
                    ) -> list[tuple[Path, tuple[float, float, float, float]]]:
    """Rows of a labels CSV that have a box: (photo path, box in pixels), read by :func:`model.data.records.open_labels`.

    Args:
        labels_csv: the shared labels format (image, individual_id, ..., x0, y0, x1, y1).
        images_dir: folder the ``image`` column is relative to (default: ``images/`` beside the CSV
            when it exists; see :func:`model.data.records.default_images_dir`).
        only_full_frames: leave out rows whose ``crop`` column says they are crops; rows whose
            ``species`` column names another species are always left out.
        issues: when given, the skipped bad rows (:class:`model.data.records.LabelIssue`) are added.

    Raises:
        DataError: when the file cannot be read as a labels file.
    """
    keep = {"species": ["humpback_whale"], **({"crop": ["full_frame"]} if only_full_frames else {})}
    with open_labels(labels_csv, images_dir, keep=keep) as rows:
        out = [(r.path, r.box) for r in rows if r.box is not None]
    if issues is not None:
        issues += rows.issues
    return out


def load_box_samples(rows: Iterable[tuple[Path, Sequence[float] | None]], store_side: int = 256,
                     on_error: Callable[[ImageError], None] | None = None) -> list[BoxSample]:
    """Load photos into :class:`BoxSample` s; unreadable photos are reported to ``on_error`` and skipped."""
    out = []
    for path, box in rows:
        try:
            image = load_image(path)
            out.append(make_sample(image, box, str(path), store_side))
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return out


def _synthetic_chunk(args: tuple) -> list[BoxSample]:
    """Frames ``start..start+count`` of a synthetic set (positives first, then plain sea)."""
    from model.data.synthetic import make_identity, render_fluke_photo, render_sea

    seed, chunk, start, count, n_positive, store_side, individuals, width_range = args
    rng = np.random.default_rng([seed, chunk])
    out = []

    def size() -> tuple[int, int]:
        w = int(rng.integers(*width_range))
        return w, int(w * rng.uniform(0.45, 0.85))

    for i in range(start, start + count):
        if i < n_positive:
            identity = make_identity(seed * 100_003 + i % max(1, individuals))
            for attempt in range(10):  # the renderer rejects a few placements: draw another scene
                try:
                    rgb, box = render_fluke_photo(identity, rng, size())
                    break
                except (DataError, ValueError):
                    if attempt == 9:
                        raise
            out.append(make_sample(rgb, box, f"synthetic-{i}", store_side))
        else:
            out.append(make_sample(render_sea(rng, size()), None, f"sea-{i - n_positive}", store_side))
    return out


def synthetic_samples(n_positive: int, n_negative: int, seed: int = 0, store_side: int = 256,
                      individuals: int = 40, should_stop: ShouldStop = _never, workers: int = 0,
                      progress: Progress = _no_progress, width_range: tuple[int, int] = (320, 640)
                      ) -> list[BoxSample]:
    """Synthetic full-frame fluke photos with exact boxes, plus plain-sea photos without a fluke.

    Frames are drawn in chunks of 50, each from its own seed, so the set is the same whatever
    ``workers`` (processes) is. Frame widths are drawn from ``width_range``, heights 0.45-0.85 of that.

    Raises:
        Interrupted: when ``should_stop`` asked to stop.
    """
    total = n_positive + n_negative
    chunk = 50
    jobs = [(seed, k, start, min(chunk, total - start), n_positive, store_side, individuals, width_range)
            for k, start in enumerate(range(0, total, chunk))]
    out: list[BoxSample] = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for part in pool.imap(_synthetic_chunk, jobs):
                if should_stop():
                    pool.terminate()
                    raise Interrupted("synthetic detector data: stopped")
                out += part
                progress(len(out) / total, f"synthetic frames {len(out)}/{total}")
        return out
    for job in jobs:
        if should_stop():
            raise Interrupted("synthetic detector data: stopped")
        out += _synthetic_chunk(job)
        progress(len(out) / total, f"synthetic frames {len(out)}/{total}")
    return out


# --------------------------------------------------------------------------------------------
# augmentation


def augment(sample: BoxSample, rng: np.random.Generator, size: int, strength: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """A random view of a sample: (input [1, S, S] float32, box fractions [4], presence 0/1).

    The view is a crop/zoom of the photo (stretched to S x S like the app's input) that keeps the
    whole box in view; ``strength`` 0 gives the plain, unaugmented input.
    """
    g = sample.gray
    h, w = g.shape[:2]
    if sample.box is not None:
        bx0, by0, bx1, by1 = sample.box * np.array([w, h, w, h], dtype=np.float32)
    else:
        bx0 = by0 = bx1 = by1 = None
    if strength > 0:
        cw = w * rng.uniform(1 - 0.45 * strength, 1 + 0.25 * strength)
        ch = h * rng.uniform(1 - 0.45 * strength, 1 + 0.25 * strength)
        if bx0 is not None:
            cw, ch = max(cw, bx1 - bx0), max(ch, by1 - by0)
            lo_x, hi_x = bx1 - cw, bx0
            lo_y, hi_y = by1 - ch, by0
        else:
            lo_x, hi_x, lo_y, hi_y = 0.0, max(0.0, w - cw), 0.0, max(0.0, h - ch)
        # stay mostly within the photo: a little reflected border at most
        lo_x2, hi_x2 = max(lo_x, -0.1 * cw), min(hi_x, w - 0.9 * cw)
        lo_y2, hi_y2 = max(lo_y, -0.1 * ch), min(hi_y, h - 0.9 * ch)
        if lo_x2 <= hi_x2:
            lo_x, hi_x = lo_x2, hi_x2
        if lo_y2 <= hi_y2:
            lo_y, hi_y = lo_y2, hi_y2
        cx0 = rng.uniform(lo_x, hi_x) if hi_x > lo_x else lo_x
        cy0 = rng.uniform(lo_y, hi_y) if hi_y > lo_y else lo_y
    else:
        cx0, cy0, cw, ch = 0.0, 0.0, float(w), float(h)
    sx, sy = size / cw, size / ch
    m = np.array([[sx, 0, -sx * cx0], [0, sy, -sy * cy0]], dtype=np.float64)
    interp = cv2.INTER_AREA if min(sx, sy) < 1.0 else cv2.INTER_LINEAR
    out = cv2.warpAffine(g, m, (size, size), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    if sample.box is not None:
        box = np.array([(bx0 - cx0) / cw, (by0 - cy0) / ch, (bx1 - cx0) / cw, (by1 - cy0) / ch], dtype=np.float32)
        box = np.clip(box, 0.0, 1.0)
    else:
        box = np.zeros(4, dtype=np.float32)
    x = out.astype(np.float32) / 255.0
    if strength > 0:
        if rng.random() < 0.5:
            x = x[:, ::-1]
            box = np.array([1 - box[2], box[1], 1 - box[0], box[3]], dtype=np.float32) if sample.box is not None else box
        x = np.clip(x, 0, 1) ** rng.uniform(0.6, 1.6)
        if rng.random() < 0.3:
            x = cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), rng.uniform(0.3, 1.5))
        if rng.random() < 0.5:
            x = x + rng.normal(0, rng.uniform(0.005, 0.04), x.shape).astype(np.float32)
        if rng.random() < 0.3:  # uneven light across the frame
            ramp = np.linspace(-1, 1, size, dtype=np.float32)
            x = x + rng.uniform(-0.15, 0.15) * (ramp[None, :] if rng.random() < 0.5 else ramp[:, None])
    return normalise(np.ascontiguousarray(x, dtype=np.float32))[None], box, float(sample.box is not None)


def plain_input(sample: BoxSample, size: int) -> np.ndarray:
    """The unaugmented input [1, S, S] of a sample (what the app computes from the photo)."""
    return detector_input(sample.gray, size)


# --------------------------------------------------------------------------------------------
# training


class _Views:
    """Map-style dataset of augmented views; view i of epoch e has its own seed (same with any workers)."""

    def __init__(self, samples: Sequence[BoxSample], size: int, seed: int):
        self.samples, self.size, self.seed = samples, size, seed
        self.order = np.arange(len(samples))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        x, box, present = augment(self.samples[int(self.order[i])], rng, self.size)
        return x, box, np.float32(present)


def _giou_loss(pred, target):
    import torch

    ix0, iy0 = torch.maximum(pred[:, 0], target[:, 0]), torch.maximum(pred[:, 1], target[:, 1])
    ix1, iy1 = torch.minimum(pred[:, 2], target[:, 2]), torch.minimum(pred[:, 3], target[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    ap = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    at = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = ap + at - inter + 1e-7
    iou = inter / union
    cx0, cy0 = torch.minimum(pred[:, 0], target[:, 0]), torch.minimum(pred[:, 1], target[:, 1])
    cx1, cy1 = torch.maximum(pred[:, 2], target[:, 2]), torch.maximum(pred[:, 3], target[:, 3])
    hull = (cx1 - cx0) * (cy1 - cy0) + 1e-7
    return (1 - iou + (hull - union) / hull).mean()


def train_detector(samples: Sequence[BoxSample], config: DetectorTrainConfig | None = None, *,
                   init_state: dict | None = None, progress: Progress = _no_progress,
                   should_stop: ShouldStop = _never, sample_weights: Sequence[float] | None = None):
    """Train a :class:`model.nets.detector.FlukeDetectorNet` on box samples.

    Args:
        samples: photos with boxes and (ideally) some without a fluke.
        config: settings; defaults to :class:`DetectorTrainConfig`.
        init_state: a state dict to start from (fine-tuning), e.g. the default detector's.
        progress: called with (fraction done, message) after each epoch.
        should_stop: polled between batches; when it returns True, :class:`Interrupted` is raised.
        sample_weights: relative drawing weights of the samples (default: uniform).

    Returns:
        The trained network in eval mode (CPU).

    Raises:
        DataError: when no sample has a box.
        Interrupted: when ``should_stop`` asked to stop.
    """
    import torch
    import torch.nn.functional as F

    from model.nets.detector import FlukeDetectorNet

    config = config or DetectorTrainConfig()
    if not any(s.box is not None for s in samples):
        raise DataError("detector training needs at least one photo with a box")
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    net = FlukeDetectorNet(config.width)
    if init_state is not None:
        net.load_state_dict(init_state)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(samples)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    k = steps_per_epoch * config.batch_size
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.15)
    p = None
    if sample_weights is not None:
        p = np.asarray(sample_weights, dtype=np.float64)
        p = p / p.sum()
    order_rng = np.random.default_rng(config.seed)
    views = _Views(samples, config.input_size, config.seed)
    t0 = time.monotonic()
    for epoch in range(config.epochs):
        net.train()
        if p is not None:
            views.order = order_rng.choice(n, size=k, p=p)
        else:
            views.order = np.concatenate([order_rng.permutation(n) for _ in range(math.ceil(k / n))])[:k]
        views.epoch = epoch
        loader = torch.utils.data.DataLoader(views, batch_size=config.batch_size, shuffle=False,
                                             num_workers=config.workers, drop_last=True,
                                             persistent_workers=False)
        losses = []
        for x, tb, tp in loader:
            if should_stop():
                raise Interrupted("detector training: stopped")
            x, tb, tp = x.to(device, non_blocking=True), tb.to(device), tp.to(device)
            box, logit = net(x)
            loss = config.presence_weight * F.binary_cross_entropy_with_logits(logit, tp)
            pos = tp > 0.5
            if pos.any():
                loss = loss + config.l1_weight * F.smooth_l1_loss(box[pos], tb[pos], beta=0.05) \
                    + config.giou_weight * _giou_loss(box[pos], tb[pos])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        progress((epoch + 1) / config.epochs,
                 f"epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.4f} ({time.monotonic() - t0:.0f} s)")
    net.to("cpu")
    return net.eval()


def predict_samples(net, samples: Sequence[BoxSample], size: int, batch_size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Torch predictions on the plain inputs: boxes [N, 4] (fractions) and confidences [N]."""
    import torch

    boxes, confs = [], []
    net.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            x = torch.from_numpy(np.stack([plain_input(s, size) for s in samples[i:i + batch_size]]))
            b, logit = net(x)
            boxes.append(b.numpy())
            confs.append(torch.sigmoid(logit).numpy())
    return np.concatenate(boxes), np.concatenate(confs)


def box_metrics(pred_fractions: np.ndarray, samples: Sequence[BoxSample], threshold: float = 0.75) -> dict:
    """Mean IoU and the share with IoU >= ``threshold`` over the samples that have a box."""
    ious = [box_iou(tuple(p), tuple(s.box)) for p, s in zip(pred_fractions, samples, strict=True) if s.box is not None]
    if not ious:
        return {"n": 0, "mean_iou": float("nan"), "share_iou_ge_075": float("nan")}
    a = np.array(ious)
    return {"n": len(a), "mean_iou": float(a.mean()), "share_iou_ge_075": float((a >= threshold).mean())}


# --------------------------------------------------------------------------------------------
# saving (the ONNX file is written and checked by model.export)


def _replace_detector_folder(path: Path) -> str | None:
    """Replace rule of a detector output: only an earlier detector folder (or an empty one) is replaced."""
    try:
        entries = [e.name for e in os.scandir(path)]
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    if not entries:
        return None
    try:
        kind = json.loads((path / "manifest.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "fluke-detector":
        return ("already exists and is not a detector folder (no manifest.json of kind fluke-detector); "
                "flukeid replaces only an earlier detector (choose a new folder)")
    return None


def check_detector_output(out_dir: str | Path) -> Path:
    """The detector output folder, refused when it is a catalog's, a file, or a folder that is not a detector.

    Raises:
        OutputError: naming the folder and why.
    """
    from model.safe_io import check_output

    return check_output(out_dir, folder=True, replace=_replace_detector_folder, what="detector folder")


def save_detector(net, out_dir: str | Path, config: DetectorTrainConfig, *, trained_on: dict,
                  metrics: dict | None = None) -> Path:
    """Write ``detector.onnx`` (checked by model.export), ``detector.pt`` (state dict + config) and ``manifest.json``.

    The folder is written beside its final name and renamed into place; an existing folder of
    that name is replaced only after the new one is complete.
    """
    import torch

    from model.bundle import sha256_file
    from model.export import export_detector

    out_dir = check_detector_output(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        parity = export_detector(net, tmp / DETECTOR_FILE, config.input_size)
        torch.save({"state_dict": net.state_dict(), "config": asdict(config)}, tmp / "detector.pt")
        manifest = {
            "kind": "fluke-detector",
            "detector": {"input_size": config.input_size, "kind": "cnn-box-regressor", "width": config.width,
                         "input": "gray photo stretched to input_size x input_size, per-image normalised",
                         "outputs": {"box": "x0,y0,x1,y1 fractions of the photo", "confidence": "0..1"}},
            "trained_on": trained_on,
            "config": asdict(config),
            "metrics": metrics or {},
            "export": parity,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {DETECTOR_FILE: sha256_file(tmp / DETECTOR_FILE), "detector.pt": sha256_file(tmp / "detector.pt")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_detector_state(folder: str | Path) -> tuple[dict, dict]:
    """(state_dict, config dict) from a folder written by :func:`save_detector`.

    Raises:
        CheckpointError: when ``detector.pt`` is missing or unreadable.
    """
    import torch

    from model.errors import CheckpointError

    p = Path(folder) / "detector.pt"
    if not p.is_file():
        raise CheckpointError(f"{p}: detector checkpoint not found")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p}: cannot load ({exc})") from None
    return ck["state_dict"], ck["config"]


# --------------------------------------------------------------------------------------------
# the whole job: data -> training -> checked export


def build_detector(out_dir: str | Path, *, synthetic: int = 2000, negatives: int | None = None,
                   data: Sequence[tuple[str | Path, str | Path | None]] = (),
                   rows: Sequence[tuple[str | Path, Sequence[float]]] = (),
                   config: DetectorTrainConfig | None = None, init: str | Path | None = None,
                   progress: Progress = _no_progress, should_stop: ShouldStop = _never,
                   on_error: Callable[[ImageError], None] | None = None) -> Path:
    """Train a detector from synthetic frames and/or labelled photos and save it (checked ONNX).

    Args:
        out_dir: folder to write (``detector.onnx``, ``detector.pt``, ``manifest.json``).
        synthetic: number of synthetic fluke frames (0 for none).
        negatives: number of plain-sea frames (default: a fifth of ``synthetic``, at least 20).
        data: (labels CSV, images folder or None) pairs; their rows with a box are used.
        rows: extra (photo path, box in pixels) pairs, e.g. the boxes users confirmed in a catalog.
        config: training settings.
        init: a detector folder to start from (fine-tuning), e.g. the shipped default.
        progress, should_stop: the long-job callbacks.
        on_error: called with each unreadable photo, which is then skipped (default: raise).

    Returns:
        ``out_dir``.

    Raises:
        DataError: when there is nothing to train on.
        Interrupted: when ``should_stop`` asked to stop.
        OutputError: ``out_dir`` is a catalog's folder, a file, or a folder that is not a detector
            (checked before training).
    """
    check_detector_output(out_dir)
    config = config or DetectorTrainConfig()
    if init is not None:
        state, init_cfg = load_detector_state(init)
        config.width = int(init_cfg.get("width", config.width))
    else:
        state = None
    negatives = max(20, synthetic // 5) if negatives is None else negatives
    samples: list[BoxSample] = []
    trained_on: dict = {"synthetic_frames": 0, "plain_sea_frames": 0, "real_photos": 0, "sources": []}
    progress(0.0, "preparing training photos")
    if synthetic > 0 or negatives > 0:
        samples += synthetic_samples(synthetic, negatives, seed=config.seed, store_side=config.store_side,
                                     should_stop=should_stop, workers=config.workers,
                                     progress=lambda f, m: progress(0.05 * f, m))
        trained_on.update(synthetic_frames=synthetic, plain_sea_frames=negatives)
        trained_on["sources"].append(f"model.data.synthetic (seed {config.seed})")
    real_rows: list[tuple[Path, Sequence[float]]] = []
    for labels_csv, images_dir in data:
        bad: list = []
        got = read_box_labels(labels_csv, images_dir, issues=bad)
        real_rows += got
        trained_on["sources"].append(f"{labels_csv} ({len(got)} photos with boxes"
                                     + (f", {len(bad)} bad rows skipped)" if bad else ")"))
        for issue in bad[:20]:
            progress(0.0, f"skipped: {issue}")
    real_rows += [(Path(p), b) for p, b in rows]
    if rows:
        trained_on["sources"].append(f"{len(rows)} photos with boxes given directly")
    real = load_box_samples(real_rows, config.store_side, on_error=on_error)
    trained_on["real_photos"] = len(real)
    samples += real
    if not any(s.box is not None for s in samples):
        raise DataError("nothing to train the detector on: no synthetic frames and no photos with boxes")
    weights = None
    if real and synthetic:  # real photos are few: draw them about as often as all synthetic frames together
        w_real = max(1.0, synthetic / max(1, len(real)) * 0.5)
        weights = [1.0] * (len(samples) - len(real)) + [w_real] * len(real)
    net = train_detector(samples, config, init_state=state, should_stop=should_stop, sample_weights=weights,
                         progress=lambda f, m: progress(0.05 + 0.85 * f, m))
    progress(0.9, "checking the detector on fresh synthetic frames")
    metrics: dict = {}
    if synthetic > 0:
        held = synthetic_samples(min(200, max(20, synthetic // 4)), 0, seed=config.seed + 10_007, store_side=config.store_side,
                                 workers=config.workers)
        boxes, _ = predict_samples(net, held, config.input_size)
        metrics["synthetic_heldout"] = box_metrics(boxes, held)
    progress(0.95, "exporting to ONNX")
    out = save_detector(net, out_dir, config, trained_on=trained_on, metrics=metrics)
    progress(1.0, f"detector written to {out}")
    return out
