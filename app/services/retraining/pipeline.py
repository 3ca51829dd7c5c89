"""The retraining pipeline: train in a child process, export, install, compare (:func:`retrain`).

1. :func:`~app.services.retraining.dataset.prepare_training_data` writes the training and
   held-out files into a new run folder (or a cancelled run's folder is resumed).
2. the training process writes the run folder (checkpoints; a cancelled run can be resumed).
3. the detector is retrained when boxes were drawn or corrected since its last training.
4. ``flukeid export-model RUN --out <run folder>/export`` writes the bundle (staging folder,
   verified, renamed into place); it is verified again and copied into ``models/<version>`` here.
5. the new and the active bundle are evaluated on the same held-out photos (top-1, top-5, MAP@5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.services.models import METRIC_NAMES
from app.services.retraining.dataset import (
    TrainingData,
    _load_data,
    _new_manual_boxes,
    _now,
    _save_data_meta,
    prepare_training_data,
)
from app.services.retraining.process import (
    EventFn,
    StopFn,
    TrainingEvent,
    TrainingFailed,
    run_training_process,
)
from app.services.retraining.training_python import probe_training_python, resolve_training_python
from model.api import FlukeidError, Interrupted, LabelledPhoto, write_labels

RUN_META_KEY = "retrain_run"


@dataclass
class RetrainOptions:
    """What the user chose for a retraining.

    Attributes:
        device: "auto", "cuda" or "cpu" (passed to the training process).
        epochs: epochs to train (None: the configuration's).
        config: training configuration preset: "tiny", "cpu" or "paper".
        resume: continue the last cancelled run from its checkpoint (same training data).
        gpus: GPUs to train on; more than one runs DDP through ``torch.distributed.run``.
        training_python: the Python to train with (None: see :func:`resolve_training_python`).
        detector: retrain the detector (None: when boxes were drawn or corrected since last time).
        heldout_fraction: share of each individual's photos (3+ photos) held out for the comparison.
        seed: the held-out split's seed.
        extra_args: more arguments for ``flukeid train`` (e.g. ``["--set", "batch_size=8"]``).
        time_budget_s: stop training at the end of the last epoch that fits in this many seconds
            (measured from the start of training) and use that checkpoint; None: no limit.
    """

    device: str = "auto"
    epochs: int | None = None
    config: str = "cpu"
    resume: bool = False
    gpus: int = 1
    training_python: str | None = None
    detector: bool | None = None
    heldout_fraction: float = 0.2
    seed: int = 0
    extra_args: list[str] = field(default_factory=list)
    time_budget_s: float | None = None


@dataclass
class RetrainResult:
    """A finished retraining: the new bundle (registered, not active) and the comparison."""

    version: str
    bundle: Path
    run_dir: Path
    new_metrics: dict
    active_version: str | None
    active_metrics: dict | None
    heldout: int
    detector: str = ""
    train_seconds: float = 0.0
    events: int = 0

    def comparison_rows(self) -> list[tuple[str, str, str]]:
        """(metric, active model, new model) rows as display text."""
        rows = [("model", self.active_version or "none", self.version)]
        for key, label in METRIC_NAMES:
            old = "" if self.active_metrics is None else _fmt_metric(key, self.active_metrics.get(key))
            rows.append((label, old, _fmt_metric(key, self.new_metrics.get(key))))
        rows.append(("held-out photos", str(self.heldout), str(self.heldout)))
        return rows

    def is_better(self) -> bool:
        """True when the new model beats the active one on MAP@5 (then top-1), or there is none."""
        if not self.active_metrics:
            return True
        key = lambda m: (float(m.get("map5") or 0.0), float(m.get("top1") or 0.0))  # noqa: E731
        return key(self.new_metrics) > key(self.active_metrics)

    def verdict(self) -> str:
        if not self.heldout:
            return ("No photo could be held out (no individual has 3 or more confirmed photos), so the models "
                    "were not compared; activate the new one only if you have another reason to.")
        if self.active_metrics is None:
            return "There is no active model to compare with; activate the new one to start matching with it."
        if self.is_better():
            return f"The new model {self.version} is better on the held-out photos."
        return (f"The new model {self.version} is not better than {self.active_version} on the held-out photos; "
                "keeping the current model is advised.")


def _fmt_metric(key: str, v) -> str:
    if v is None:
        return ""
    return f"{float(v):.3f}" if key == "map5" else f"{float(v):.1%}"


def describe_epoch(ev: TrainingEvent) -> str:
    """``epoch 3/10, loss 0.412, val top-5 61%, 85 img/s, ETA 2 min 10 s`` for an epoch event."""
    d = ev.data
    parts = [f"epoch {d.get('epoch')}/{d.get('epochs')}"]
    if d.get("loss") is not None:
        parts.append(f"loss {float(d['loss']):.4f}")
    if d.get("val_top5") is not None:
        parts.append(f"val top-5 {float(d['val_top5']):.0%}")
    if d.get("images_per_s"):
        parts.append(f"{float(d['images_per_s']):.0f} img/s")
    if d.get("eta_s") is not None:
        s = int(float(d["eta_s"]))
        parts.append(f"ETA {s // 60} min {s % 60:02d} s" if s >= 60 else f"ETA {s} s")
    return ", ".join(parts)


def _stage(on_event: EventFn | None, message: str, fraction: float | None = None) -> None:
    if on_event is not None:
        data: dict = {"message": message}
        if fraction is not None:
            data["fraction"] = fraction
        on_event(TrainingEvent("stage", data))


def _read_run_state(catalog) -> dict | None:
    raw = catalog.get_meta(RUN_META_KEY)
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _write_run_state(catalog, state: dict | None) -> None:
    catalog.set_meta(RUN_META_KEY, None if state is None else json.dumps(state))


def find_resumable_run(catalog) -> Path | None:
    """The folder of the last cancelled run whose checkpoint can be resumed, or None."""
    state = _read_run_state(catalog)
    if not state or state.get("status") != "cancelled":
        return None
    folder = Path(state.get("dir", ""))
    if not folder.is_absolute():
        folder = catalog.root / folder
    run = folder / "run"
    if not run.is_dir() or not any(run.iterdir()) or not (folder / "data" / "labels.csv").is_file():
        return None
    return folder


def training_command(python: str, data: TrainingData, run_dir: Path, options: RetrainOptions) -> list[str]:
    """The command line that trains (``python -m app train ... --progress-json``)."""
    args = [
        "train", "--data", str(data.labels), "--images", str(data.images), "--config", options.config,
        "--out", str(run_dir), "--progress-json", "--device", options.device,
    ]
    if options.epochs:
        args += ["--epochs", str(int(options.epochs))]
    if options.resume:
        args.append("--resume")
    args += list(options.extra_args)
    if options.gpus and options.gpus > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(options.gpus)}",
                "-m", "app", *args]
    return [python, "-m", "app", *args]


def retrain(catalog, options: RetrainOptions | None = None, *, on_event: EventFn | None = None,
            should_stop: StopFn | None = None) -> RetrainResult:
    """Train a new model on the catalog, export it, and compare it with the active model.

    The training runs in a separate process; the new bundle is written to
    ``<catalog>/models/<version>/`` (staging folder, verified, renamed) and registered, but NOT
    activated: call :func:`activate` for that. On cancel the run folder and its last checkpoint
    are kept (:func:`find_resumable_run`); on any failure the catalog's active model is unchanged.

    Args:
        catalog: an open, writable :class:`app.catalog.Catalog`.
        options: see :class:`RetrainOptions`.
        on_event: receives every :class:`TrainingEvent` (``stage`` events mark the steps).
        should_stop: polled often; True cancels (raises :class:`Interrupted`).

    Raises:
        TrainingPythonError: no usable training Python.
        TrainingFailed: training, export or the detector failed (message says which and why).
        DataError: not enough confirmed photos to train.
        Interrupted: cancelled.
    """
    options = options or RetrainOptions()
    should_stop = should_stop or (lambda: False)
    python = resolve_training_python(options.training_python)
    if not python:
        probe_training_python(None)  # raises the "configure a training Python" message
    t0 = time.monotonic()
    resumed = find_resumable_run(catalog) if options.resume else None
    if options.resume and resumed is None:
        raise FlukeidError(f"{catalog.root}: there is no cancelled run to resume")
    if resumed is not None:
        folder = resumed
        data = _load_data(folder)
    else:
        folder = catalog.root / "training" / time.strftime("run-%Y%m%d-%H%M%S")
        while folder.exists():
            folder = folder.with_name(folder.name + "x")
        _stage(on_event, "Preparing the training data…", 0.0)
        data = prepare_training_data(catalog, folder / "data", heldout_fraction=options.heldout_fraction,
                                     seed=options.seed)
        _save_data_meta(data)
    run_dir = folder / "run"
    log = folder / "train.log"
    state = {"dir": str(folder), "status": "running", "started": _now(), "config": options.config}
    _write_run_state(catalog, state)
    count = [0]
    budget = _Budget(options.time_budget_s)

    def forward(ev: TrainingEvent) -> None:
        count[0] += 1
        budget.seen(ev)
        if on_event is not None:
            on_event(ev)

    try:
        cmd = training_command(python, data, run_dir, options)
        _stage(on_event, f"Training ({len(data.train)} photos, {len(data.held)} held out)…", 0.0)
        try:
            run_training_process(cmd, on_event=forward, should_stop=lambda: should_stop() or budget.spent,
                                 log_path=log, what="training")
        except Interrupted:
            if not budget.spent or should_stop():
                raise
            _stage(on_event, f"Time budget reached after epoch {budget.epoch}: using that checkpoint.")
    except Interrupted:
        state["status"] = "cancelled"
        _write_run_state(catalog, state)
        raise
    except BaseException:
        state["status"] = "failed"
        _write_run_state(catalog, state)
        raise
    state["status"] = "trained"
    _write_run_state(catalog, state)
    train_s = time.monotonic() - t0

    detector_msg, detector_dir = _maybe_train_detector(catalog, python, data, folder, options, on_event, should_stop)

    version = _new_version(catalog)
    _stage(on_event, "Exporting the new model…")
    export_dir = folder / "export"
    if export_dir.exists():
        import shutil

        shutil.rmtree(export_dir)
    run_training_process([python, "-m", "app", "export-model", str(run_dir), "--out", str(export_dir)],
                         should_stop=should_stop, log_path=folder / "export.log", require_done=False, what="export")
    bundle = _install_bundle(catalog, export_dir, version, detector_dir, data, options, train_s)

    _stage(on_event, "Comparing the new and the current model on the held-out photos…")
    active = catalog.active_model()
    new_metrics = evaluate_on_heldout(bundle, data, device=_ort_device(options.device), should_stop=should_stop)
    active_metrics = None
    if active is not None:
        try:
            active_metrics = evaluate_on_heldout(catalog.model_path(active), data,
                                                 device=_ort_device(options.device), should_stop=should_stop)
        except Interrupted:
            raise
        except FlukeidError as exc:  # a damaged active bundle should not hide the new model
            active_metrics = {"error": str(exc)}
    catalog.add_model(version, bundle, metrics={**new_metrics, "data_until": data.data_until,
                                                "compared_with": active.version if active else None,
                                                "compared_with_metrics": active_metrics}, activate=False)
    if detector_dir is not None:
        catalog.set_meta("detector_trained_at", data.data_until)
    _write_run_state(catalog, {**state, "status": "done", "version": version})
    _stage(on_event, f"New model {version} is ready.", 1.0)
    return RetrainResult(version=version, bundle=bundle, run_dir=run_dir, new_metrics=new_metrics,
                         active_version=active.version if active else None, active_metrics=active_metrics,
                         heldout=len(data.held), detector=detector_msg, train_seconds=train_s, events=count[0])


class _Budget:
    """Decides, at each epoch event, whether the next epoch still fits in the time budget."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.spent = False
        self.epoch: int | None = None

    def seen(self, ev: TrainingEvent) -> None:
        if self.seconds is None or ev.kind != "epoch":
            return
        self.epoch = ev.data.get("epoch")
        elapsed = time.monotonic() - self.t0
        last = float(ev.data.get("epoch_s") or 0.0)
        done = ev.fraction() is not None and ev.fraction() >= 1.0
        if not done and elapsed + last > self.seconds:
            self.spent = True


def _ort_device(device: str) -> str:
    return "cpu" if device == "cpu" else "auto"


def _new_version(catalog) -> str:
    from model.api import new_version_name

    base = new_version_name()
    version, n = base, 1
    existing = {m.version for m in catalog.models()}
    while version in existing or (catalog.models_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


# --- detector, bundle, evaluation ----------------------------------------------------------------

def _detector_event(on_event: EventFn | None) -> EventFn:
    """Turn ``[ 12.3%] message`` lines of ``flukeid train-detector`` into stage events."""
    import re

    pat = re.compile(r"^\[\s*([0-9.]+)%\]\s*(.*)$")

    def handle(ev: TrainingEvent) -> None:
        if on_event is None or ev.kind != "log":
            return
        m = pat.match(ev.message)
        if m:
            _stage(on_event, f"Detector: {m.group(2)}", float(m.group(1)) / 100.0)

    return handle


def _maybe_train_detector(catalog, python: str, data: TrainingData, folder: Path, options: RetrainOptions,
                          on_event: EventFn | None, should_stop: StopFn) -> tuple[str, Path | None]:
    """Retrain the detector when boxes were drawn or corrected since its last training.

    Returns (a sentence for the user, the folder holding the new detector.onnx or None).
    """
    boxed = [p for p in (*data.train, *data.held) if p.box is not None and p.box_source in ("manual", "imported")]
    new = _new_manual_boxes(catalog, [*data.train, *data.held])
    wanted = options.detector if options.detector is not None else bool(new)
    if not wanted:
        return "Detector not retrained (no boxes drawn or corrected since it was last trained).", None
    if not boxed:
        return "Detector not retrained (no hand-drawn boxes to learn from).", None
    out = folder / "detector"
    labels = folder / "data" / "boxes.csv"
    write_labels(boxed, labels, data.images)
    cmd = [python, "-m", "app", "train-detector", "--out", str(out), "--data", str(labels),
           "--images", str(data.images)]
    if options.config == "tiny":
        cmd += ["--synthetic", "0", "--epochs", "2"]
    elif options.config == "cpu":
        cmd += ["--synthetic", "200", "--epochs", "10"]
    active = catalog.active_model()
    if active is not None and (catalog.model_path(active) / "detector.pt").is_file():
        cmd += ["--init", str(catalog.model_path(active))]
    _stage(on_event, f"Retraining the detector on {len(boxed)} hand-checked boxes…")
    run_training_process(cmd, on_event=_detector_event(on_event), should_stop=should_stop,
                         log_path=folder / "detector.log", require_done=False, what="detector training")
    if not (out / "detector.onnx").is_file():
        raise TrainingFailed(f"{out}: detector training wrote no detector.onnx. The active model is unchanged.")
    return f"Detector retrained on {len(boxed)} boxes ({len(new)} new or corrected).", out


def _install_bundle(catalog, export_dir: Path, version: str, detector_dir: Path | None, data: TrainingData,
                    options: RetrainOptions, train_s: float) -> Path:
    """Copy the exported bundle (+ detector) into ``models/<version>`` through a verified staging folder."""
    import shutil

    from model.api import finalize_bundle, read_manifest, staging_dir, verify_bundle

    exported = verify_bundle(export_dir)
    final = catalog.models_dir / version
    staging = staging_dir(final)
    try:
        for name in exported["files"]:
            shutil.copy2(export_dir / name, staging / name)
        manifest = {k: v for k, v in exported.items() if k not in ("files", "format_version", "created", "version")}
        det_source = detector_dir
        if det_source is None:  # keep the active model's detector, if it has one
            active = catalog.active_model()
            if active is not None and (catalog.model_path(active) / "detector.onnx").is_file():
                det_source = catalog.model_path(active)
        if det_source is not None:
            shutil.copy2(det_source / "detector.onnx", staging / "detector.onnx")
            if (det_source / "detector.pt").is_file():
                shutil.copy2(det_source / "detector.pt", staging / "detector.pt")
            try:
                det_manifest = read_manifest(det_source) if (det_source / "manifest.json").is_file() else {}
            except FlukeidError:
                det_manifest = {}
            det_section = det_manifest.get("detector") or {}
            manifest["detector"] = {"input_size": int(det_section.get("input_size", 128)),
                                    **{k: v for k, v in det_section.items() if k != "input_size"}}
        per_ind: dict[str, int] = {}
        for p in data.train:
            per_ind[p.individual] = per_ind.get(p.individual, 0) + 1
        training = dict(manifest.get("training") or {})
        training.update({"catalog": str(catalog.root), "photos": len(data.train), "individuals": len(per_ind),
                         "heldout_photos": len(data.held), "data_until": data.data_until,
                         "train_seconds": round(train_s, 1), "device": options.device, "config": options.config,
                         "detector_retrained": detector_dir is not None})
        manifest["training"] = training
        manifest["version"] = version
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return finalize_bundle(staging, final, manifest)


def evaluate_on_heldout(bundle: str | Path, data: TrainingData, *, device: str = "auto",
                        should_stop: StopFn | None = None, batch: int = 32) -> dict:
    """Top-1, top-5 and MAP@5 of a bundle: held-out photos queried against the training photos.

    Returns:
        ``{"top1", "top5", "map5", "n_queries", "gallery"}``; ``n_queries`` 0 when nothing is held out.
    """
    import numpy as np

    from model.api import Engine, evaluate_scores, load_image

    if not data.held:
        return {"top1": None, "top5": None, "map5": None, "n_queries": 0, "gallery": len(data.train)}
    engine = Engine.load(bundle, device)

    def embed(rows: Sequence[LabelledPhoto]) -> np.ndarray:
        out = []
        for i in range(0, len(rows), batch):
            if should_stop is not None and should_stop():
                raise Interrupted("evaluation cancelled")
            chunk = rows[i:i + batch]
            out.append(engine.embed([load_image(r.path) for r in chunk], [r.box for r in chunk]))
        return np.concatenate(out) if out else np.zeros((0, engine.embedding_dim), np.float32)

    g = embed(data.train)
    q = embed(data.held)
    scores = engine.score(q, g)
    res = evaluate_scores(scores, [r.individual for r in data.held], [r.individual for r in data.train])
    o = res.overall
    return {"top1": o.top1, "top5": o.top5, "map5": o.map5, "n_queries": o.n, "gallery": len(data.train)}
