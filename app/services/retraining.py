"""Retrain the networks on the catalog's confirmed identifications (Qt-free).

Training never runs in the calling process: :func:`run_training_process` starts the model
package's training entry point (``python -m app train ... --progress-json``) as a separate
process, reads its JSON-lines progress, and turns a crash (non-zero exit, no ``done`` event)
into a :class:`TrainingFailed` error. The GUI therefore never holds torch or GPU memory, and a
crash of training cannot take the app down.

The pipeline (:func:`retrain`):

1. :func:`prepare_training_data` writes ``labels.csv`` (confirmed identifications with their
   current boxes) and ``heldout.csv`` (a held-out share of confirmed photos, used only to
   compare models).
2. the training process writes a run folder (checkpoints; a cancelled run can be resumed).
3. ``flukeid export RUN --out <catalog>/models/<version>`` writes the bundle (staging folder,
   verified, renamed into place); it is verified again here.
4. the new and the active bundle are evaluated on the same held-out photos (top-1, top-5, MAP@5).

:func:`activate` then verifies the chosen bundle, embeds the catalog's photos with it while the
old model still serves, and only then moves the catalog's active-model pointer.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.api import FlukeidError, Interrupted

# The environment variable that overrides the Python used for training (packaged apps have no torch).
TRAINING_PYTHON_ENV = "FLUKEID_TRAINING_PYTHON"
# How long a stopped training process gets to save and exit after SIGINT, then after SIGTERM.
STOP_GRACE_S = (15.0, 5.0)

EventFn = Callable[["TrainingEvent"], None]
StopFn = Callable[[], bool]


class TrainingFailed(FlukeidError):
    """The training (or export/evaluation) process failed; the active model is unchanged."""


class TrainingPythonError(FlukeidError):
    """The configured training Python cannot run training (missing, or no PyTorch)."""


# --- the JSON-lines protocol -------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingEvent:
    """One progress event of the training process.

    ``kind`` is ``start``, ``epoch``, ``done``, ``error`` or ``log`` (a non-JSON output line,
    kept so the user can see what the process said). ``data`` is the JSON object as sent.
    """

    kind: str
    data: dict = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))

    def fraction(self) -> float | None:
        """Fraction of training done after an ``epoch`` event (None for other events)."""
        if self.kind != "epoch":
            return None
        try:
            return max(0.0, min(1.0, float(self.data["epoch"]) / float(self.data["epochs"])))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None


def parse_event_line(line: str) -> TrainingEvent | None:
    """Parse one output line of ``flukeid train --progress-json``.

    Returns None for a blank line, a ``log`` event for any line that is not a JSON object with
    an event name (``event``, or ``type``/``kind``), else the event.
    """
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            kind = obj.get("event", obj.get("type", obj.get("kind")))
            if isinstance(kind, str) and kind:
                return TrainingEvent(kind, {k: v for k, v in obj.items() if k not in ("event", "type", "kind")})
    return TrainingEvent("log", {"message": text})


# --- the training Python ------------------------------------------------------------------------


def _frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def default_training_python() -> str | None:
    """The Python that runs training: $FLUKEID_TRAINING_PYTHON, else this interpreter.

    A packaged (frozen) app carries no torch, so it returns None there unless the variable is set.
    """
    env = os.environ.get(TRAINING_PYTHON_ENV)
    if env:
        return env
    return None if _frozen() else sys.executable


_PROBE = (
    "import json, sys\n"
    "try:\n"
    "    import torch\n"
    "except Exception as exc:\n"
    "    print(json.dumps({'torch': None, 'error': repr(exc)})); sys.exit(3)\n"
    "cuda = torch.cuda.is_available()\n"
    "gpus = []\n"
    "if cuda:\n"
    "    for i in range(torch.cuda.device_count()):\n"
    "        p = torch.cuda.get_device_properties(i)\n"
    "        gpus.append({'name': p.name, 'memory_gb': round(p.total_memory / 2**30, 1)})\n"
    "try:\n"
    "    import app, model  # noqa\n"
    "    flukeid = True\n"
    "except Exception:\n"
    "    flukeid = False\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': cuda, 'gpus': gpus, 'flukeid': flukeid}))\n"
)


@dataclass(frozen=True)
class TrainingEnvironment:
    """What the training Python offers: torch version, CUDA, the GPUs (name, memory in GiB)."""

    python: str
    torch_version: str
    cuda: bool
    gpus: tuple[tuple[str, float], ...] = ()
    flukeid: bool = True

    def describe(self) -> str:
        if self.gpus:
            gpu = ", ".join(f"{name} ({mem:.0f} GB)" for name, mem in self.gpus)
            return f"PyTorch {self.torch_version}, GPU: {gpu}"
        return f"PyTorch {self.torch_version}, no CUDA GPU (training runs on the CPU)"


def probe_training_python(python: str | None, timeout: float = 120.0) -> TrainingEnvironment:
    """Run ``python`` once to find torch, CUDA and the GPUs (torch is never imported here).

    Raises:
        TrainingPythonError: naming the Python and the problem (not configured, not found,
            not runnable, no PyTorch, no flukeid package).
    """
    if not python:
        raise TrainingPythonError(
            "no training Python is configured: this program carries no PyTorch. Create a Python "
            "environment with `pip install flukeid` and set it as the training Python "
            f"(or set {TRAINING_PYTHON_ENV})"
        )
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, cwd=_repo_root()
        )
    except FileNotFoundError:
        raise TrainingPythonError(f"{python}: training Python not found") from None
    except PermissionError:
        raise TrainingPythonError(f"{python}: training Python is not executable") from None
    except OSError as exc:
        raise TrainingPythonError(f"{python}: cannot run the training Python ({exc})") from None
    except subprocess.TimeoutExpired:
        raise TrainingPythonError(f"{python}: the training Python did not answer within {timeout:.0f} s") from None
    info = None
    for line in reversed(proc.stdout.splitlines()):
        try:
            info = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(info, dict):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise TrainingPythonError(f"{python}: not a usable Python ({tail[0]})")
    if not info.get("torch"):
        raise TrainingPythonError(
            f"{python}: PyTorch is not installed in this Python ({info.get('error', 'import torch failed')}); "
            "install it with `pip install flukeid` (which brings torch) in that environment"
        )
    env = TrainingEnvironment(
        python=python,
        torch_version=str(info["torch"]),
        cuda=bool(info.get("cuda")),
        gpus=tuple((str(g["name"]), float(g["memory_gb"])) for g in info.get("gpus", [])),
        flukeid=bool(info.get("flukeid", True)),
    )
    if not env.flukeid:
        raise TrainingPythonError(
            f"{python}: has PyTorch {env.torch_version} but not the flukeid package; "
            "install it there with `pip install flukeid`"
        )
    return env


def check_training_python(path: str | None) -> tuple[bool, str]:
    """Check that ``path`` is a Python that can train: returns (ok, message for the user)."""
    try:
        env = probe_training_python(path)
    except TrainingPythonError as exc:
        return False, str(exc)
    return True, env.describe()


def _repo_root() -> str:
    """Where ``python -m app`` finds this checkout's packages (harmless when installed)."""
    return str(Path(__file__).resolve().parents[2])


# --- running a child process with progress -------------------------------------------------------


def _reader(stream, lines: queue.Queue) -> None:
    try:
        for line in iter(stream.readline, ""):
            lines.put(line)
    finally:
        lines.put(None)


def _stop_process(proc: subprocess.Popen, grace: tuple[float, float] = STOP_GRACE_S) -> None:
    """Ask ``proc`` (and its process group) to stop: SIGINT, then SIGTERM, then kill."""
    if proc.poll() is not None:
        return
    if os.name == "posix":
        steps = [(signal.SIGINT, grace[0]), (signal.SIGTERM, grace[1]), (signal.SIGKILL, 5.0)]
        for sig, wait in steps:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
    else:  # Windows: CTRL_BREAK to the new process group, then terminate
        try:
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            proc.wait(grace[0])
            return
        except (subprocess.TimeoutExpired, OSError, ValueError):
            proc.kill()
            proc.wait(5.0)


def run_training_process(
    cmd: Sequence[str],
    *,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
    log_path: str | Path | None = None,
    env: dict | None = None,
    cwd: str | Path | None = None,
    require_done: bool = True,
    what: str = "training",
) -> TrainingEvent | None:
    """Run ``cmd`` (a process that prints JSON-lines events) to its end.

    Args:
        cmd: the command line (first item: the Python).
        on_event: called in this thread for every event, ``log`` lines included.
        should_stop: polled about ten times a second; when true the process is asked to stop
            (SIGINT so it can keep its last checkpoint; then SIGTERM; then killed) and
            :class:`Interrupted` is raised.
        log_path: the process's stderr goes there (and its stdout lines are appended too).
        require_done: a process that exits 0 without a ``done`` event is a failure.
        what: names the step in error messages ("training", "export").

    Returns:
        The ``done`` event (None when ``require_done`` is false and there was none).

    Raises:
        TrainingFailed: the process could not start, exited non-zero, or reported an error.
        Interrupted: ``should_stop`` became true.
    """
    log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
    stderr_tail: deque[str] = deque(maxlen=20)
    popen_kw: dict = {"start_new_session": True} if os.name == "posix" else {
        "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    }
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=full_env,
                cwd=str(cwd) if cwd else _repo_root(),
                **popen_kw,
            )
        except OSError as exc:
            raise TrainingFailed(f"{cmd[0]}: cannot start the {what} process ({exc})") from None
        lines: queue.Queue = queue.Queue()
        err_lines: queue.Queue = queue.Queue()
        threads = [
            threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True),
            threading.Thread(target=_reader, args=(proc.stderr, err_lines), daemon=True),
        ]
        for t in threads:
            t.start()
        done: TrainingEvent | None = None
        error: TrainingEvent | None = None
        open_streams = 1
        last_log = ""
        try:
            while open_streams:
                if should_stop is not None and should_stop():
                    _stop_process(proc)
                    raise Interrupted(f"{what} cancelled")
                _drain_stderr(err_lines, stderr_tail, log_file)
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line is None:
                    open_streams -= 1
                    continue
                if log_file:
                    log_file.write(line if line.endswith("\n") else line + "\n")
                ev = parse_event_line(line)
                if ev is None:
                    continue
                if ev.kind == "log":
                    last_log = ev.message
                elif ev.kind == "done":
                    done = ev
                elif ev.kind == "error":
                    error = ev
                if on_event is not None:
                    on_event(ev)
            while proc.poll() is None:
                if should_stop is not None and should_stop():
                    _stop_process(proc)
                    raise Interrupted(f"{what} cancelled")
                time.sleep(0.05)
        except BaseException:
            _stop_process(proc, (2.0, 2.0))
            raise
        for t in threads:
            t.join(timeout=2.0)
        _drain_stderr(err_lines, stderr_tail, log_file)
        rc = proc.returncode
    finally:
        if log_file:
            log_file.close()
    if error is not None or rc != 0 or (require_done and done is None):
        if error is not None and error.message:
            reason = error.message
        elif stderr_tail:
            reason = stderr_tail[-1]
        elif last_log:
            reason = last_log
        else:
            reason = "no output"
        how = f"exited with code {rc}" if rc != 0 else "ended without finishing"
        where = f"; full log: {log_path}" if log_path else ""
        raise TrainingFailed(f"the {what} process {how}: {reason}{where}. The active model is unchanged.")
    return done


def _drain_stderr(err_lines: queue.Queue, tail: deque, log_file) -> None:
    while True:
        try:
            line = err_lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            continue
        text = line.rstrip("\n")
        if text.strip():
            tail.append(text.strip())
        if log_file:
            log_file.write(text + "\n")


# --- settings -----------------------------------------------------------------------------------


def settings_path() -> Path:
    """The per-user settings file holding ``training_python``."""
    override = os.environ.get("FLUKEID_CONFIG_DIR")
    if override:
        return Path(override) / "retraining.json"
    from platformdirs import user_config_dir

    return Path(user_config_dir("flukeid", appauthor=False)) / "retraining.json"


def load_training_python() -> str | None:
    """The configured training Python (setting ``training_python``), or None."""
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("training_python") if isinstance(data, dict) else None
    return str(value) if value else None


def save_training_python(path: str | None) -> None:
    """Remember the training Python (None forgets it). Written atomically."""
    p = settings_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data["training_python"] = path
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, p)


def resolve_training_python(explicit: str | None = None) -> str | None:
    """The Python to train with: ``explicit``, $FLUKEID_TRAINING_PYTHON, the setting, this Python."""
    return explicit or os.environ.get(TRAINING_PYTHON_ENV) or load_training_python() or default_training_python()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds")


# --- the training set ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledPhoto:
    """One confirmed photo as the training and evaluation code reads it (duck-typed ``Record``)."""

    photo_id: int
    path: str
    individual: str
    box: tuple[float, float, float, float] | None
    box_source: str | None = None
    box_at: str | None = None
    id_known: bool = True


@dataclass(frozen=True)
class TrainingSetSummary:
    """What a retraining would learn from.

    Attributes:
        individuals: individuals with at least one confirmed photo.
        photos: confirmed photos (current identification to an individual, not marked junk).
        boxes: of those, photos with a box.
        individuals_2plus: individuals with two or more confirmed photos (what pair training needs).
        new_confirmations: identifications recorded since the active model was trained.
        new_boxes: boxes drawn or corrected by hand since the detector was last trained.
        active_version: the active model (None if there is none).
    """

    individuals: int
    photos: int
    boxes: int
    individuals_2plus: int
    new_confirmations: int
    new_boxes: int
    active_version: str | None

    @property
    def trainable(self) -> bool:
        """True when there is enough to train and compare (2+ individuals with 2+ photos)."""
        return self.individuals_2plus >= 2

    def describe(self) -> str:
        since = f"since model {self.active_version} was trained" if self.active_version else "(no active model)"
        text = (
            f"{self.individuals} individuals, {self.photos} confirmed photos, {self.boxes} with a box; "
            f"{self.new_confirmations} confirmations {since}; "
            f"{self.new_boxes} boxes drawn or corrected since the detector was trained."
        )
        if not self.trainable:
            text += (f" Training needs at least 2 individuals with 2 or more confirmed photos "
                     f"(this catalog has {self.individuals_2plus}).")
        return text


def confirmed_photos(catalog) -> list[LabelledPhoto]:
    """The catalog's confirmed photos: current identification to an individual, usable box or none.

    Merged individuals count as the individual they were merged into; photos whose current box
    is marked junk are left out.
    """
    codes: dict[int, str] = {}
    merged: dict[int, int | None] = {}
    for ind in catalog.individuals(include_merged=True):
        codes[ind.id] = ind.code
        merged[ind.id] = ind.merged_into

    def root(iid: int) -> int:
        seen = set()
        while merged.get(iid) is not None and iid not in seen:
            seen.add(iid)
            iid = merged[iid]  # type: ignore[assignment]
        return iid

    out = []
    for ident in catalog.current_identifications():
        if ident.individual_id is None:
            continue
        box = catalog.current_box(ident.photo_id)
        if box is not None and box.junk:
            continue
        photo = catalog.photo(ident.photo_id)
        out.append(LabelledPhoto(
            photo_id=photo.id,
            path=str(catalog.resolve_path(photo)),
            individual=codes[root(ident.individual_id)],
            box=tuple(box.box) if box is not None and box.box is not None else None,  # type: ignore[arg-type]
            box_source=box.source if box is not None else None,
            box_at=box.created_at if box is not None else None,
        ))
    return out


def _active_trained_at(catalog) -> str | None:
    active = catalog.active_model()
    if active is None:
        return None
    return (active.metrics or {}).get("data_until") or active.created_at


def training_set_summary(catalog) -> TrainingSetSummary:
    """Counts of what a retraining would use, and what is new since the last one."""
    photos = confirmed_photos(catalog)
    per_ind: dict[str, int] = {}
    for p in photos:
        per_ind[p.individual] = per_ind.get(p.individual, 0) + 1
    since = _active_trained_at(catalog)
    new_conf = sum(
        1 for i in catalog.current_identifications()
        if i.individual_id is not None and (since is None or i.at > since)
    )
    active = catalog.active_model()
    return TrainingSetSummary(
        individuals=len(per_ind),
        photos=len(photos),
        boxes=sum(1 for p in photos if p.box is not None),
        individuals_2plus=sum(1 for n in per_ind.values() if n >= 2),
        new_confirmations=new_conf,
        new_boxes=len(_new_manual_boxes(catalog, photos)),
        active_version=active.version if active else None,
    )


def _new_manual_boxes(catalog, photos: Sequence[LabelledPhoto]) -> list[LabelledPhoto]:
    since = catalog.get_meta("detector_trained_at")
    return [p for p in photos if p.box is not None and p.box_source == "manual" and (since is None or (p.box_at or "") > since)]


def split_heldout(photos: Sequence[LabelledPhoto], fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """Split confirmed photos into (training, held-out) for the model comparison.

    From each individual with 3 or more photos about ``fraction`` of its photos (at least one)
    are held out; individuals with fewer photos train only. The choice depends on the photo's id
    and ``seed`` only, so the same photo stays held out as the catalog grows.
    """
    import hashlib

    groups: dict[str, list[LabelledPhoto]] = {}
    for p in photos:
        groups.setdefault(p.individual, []).append(p)
    train: list[LabelledPhoto] = []
    held: list[LabelledPhoto] = []
    for key in sorted(groups):
        items = groups[key]
        if len(items) < 3:
            train += items
            continue
        order = sorted(items, key=lambda p: hashlib.sha256(f"{seed}:{p.photo_id}".encode()).hexdigest())
        n = min(len(items) - 2, max(1, round(len(items) * fraction)))
        held += order[:n]
        train += order[n:]
    return train, held


def _images_root(paths: Sequence[str]) -> Path:
    try:
        return Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    except ValueError:  # different drives (Windows)
        raise FlukeidError("the confirmed photos are on different drives; copy them into the catalog "
                           "(import with 'copy into catalog') to retrain") from None


def _write_labels(path: Path, rows: Sequence[LabelledPhoto], root: Path) -> None:
    import csv

    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "individual_id", "id_known", "x0", "y0", "x1", "y1"])
        for r in rows:
            rel = Path(os.path.relpath(r.path, root)).as_posix()
            box = ["" if r.box is None else f"{v:.2f}" for v in (r.box or (None,) * 4)]
            w.writerow([rel, r.individual, 1, *box])
    os.replace(tmp, path)


@dataclass(frozen=True)
class TrainingData:
    """The files :func:`prepare_training_data` wrote."""

    labels: Path  # training photos (labels.csv)
    heldout: Path  # held-out photos (heldout.csv), never trained on
    images: Path  # the folder ``image`` paths are relative to
    train: tuple[LabelledPhoto, ...]
    held: tuple[LabelledPhoto, ...]
    data_until: str


def prepare_training_data(catalog, out_dir: str | Path, *, heldout_fraction: float = 0.2, seed: int = 0
                          ) -> TrainingData:
    """Write ``labels.csv`` (training) and ``heldout.csv`` (comparison) of confirmed identifications.

    Columns: image (relative to the common folder of the photos), individual_id, id_known,
    x0, y0, x1, y1 (the current box in photo pixels; empty when the photo has none).

    Raises:
        DataError: fewer than 2 individuals with 2 or more confirmed photos.
    """
    from model.api import DataError

    data_until = _now()
    photos = confirmed_photos(catalog)
    train, held = split_heldout(photos, heldout_fraction, seed)
    per_ind: dict[str, int] = {}
    for p in train:
        per_ind[p.individual] = per_ind.get(p.individual, 0) + 1
    if sum(1 for n in per_ind.values() if n >= 2) < 2:
        raise DataError(f"{catalog.root}: training needs at least 2 individuals with 2 or more confirmed photos")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = _images_root([p.path for p in photos])
    _write_labels(out / "labels.csv", train, root)
    _write_labels(out / "heldout.csv", held, root)
    return TrainingData(out / "labels.csv", out / "heldout.csv", root, tuple(train), tuple(held), data_until)


# --- the retraining pipeline --------------------------------------------------------------------

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


METRIC_NAMES = (("top1", "top-1"), ("top5", "top-5"), ("map5", "MAP@5"))


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


def _load_data(folder: Path) -> TrainingData:
    """Re-read the training data of a run folder (for a resumed run)."""
    meta = json.loads((folder / "data" / "data.json").read_text(encoding="utf-8"))
    return TrainingData(folder / "data" / "labels.csv", folder / "data" / "heldout.csv", Path(meta["images"]),
                        tuple(LabelledPhoto(**r) for r in meta["train"]),
                        tuple(LabelledPhoto(**r) for r in meta["held"]), meta["data_until"])


def _save_data_meta(data: TrainingData) -> None:
    from dataclasses import asdict

    meta = {"images": str(data.images), "data_until": data.data_until,
            "train": [asdict(p) for p in data.train], "held": [asdict(p) for p in data.held]}
    (data.labels.parent / "data.json").write_text(json.dumps(meta), encoding="utf-8")


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
    _write_labels(labels, boxed, data.images)
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


# --- activation and versions -----------------------------------------------------------------------


def activate(catalog, version: str, *, progress: Callable[[float, str], None] | None = None,
             should_stop: StopFn | None = None) -> None:
    """Make ``version`` the catalog's active model, safely.

    The bundle is verified first; then every photo is embedded with it while the current model
    keeps serving; only then is the active-model pointer moved (one transaction). A failure or a
    cancel at any step leaves the current model active.

    Raises:
        BundleError: the bundle is missing or damaged (the active model is unchanged).
        Interrupted: cancelled while embedding.
    """
    from model.api import BundleError, Engine, verify_bundle

    progress = progress or (lambda f, m: None)
    record = next((m for m in catalog.models() if m.version == version), None)
    if record is None:
        raise BundleError(f"{catalog.root}: no model {version!r} in this catalog")
    path = catalog.model_path(record)
    progress(0.0, f"Verifying {version}…")
    verify_bundle(path)
    engine = Engine.load(path)
    from app.services.matching import embed_missing

    embed_missing(catalog, engine, version, progress=progress, should_stop=should_stop or (lambda: False))
    if should_stop is not None and should_stop():
        raise Interrupted("activation cancelled")
    catalog.set_active_model(version)
    progress(1.0, f"Model {version} is active.")


@dataclass(frozen=True)
class Verification:
    """The evaluation a model was verified with: identification scores and on what."""

    top1: float | None
    top5: float | None
    map5: float | None
    queries: int | None
    what: str


def verification_of(metrics: dict | None) -> Verification | None:
    """The evaluation recorded with a model, whichever way it was registered (None: none recorded).

    A retrained model records its held-out comparison at the top level (``top1``, ``top5``,
    ``map5``, ``n_queries``); a shipped or added bundle records its manifest's evaluations, one
    dict per protocol (``{"synthetic_heldout_seed": {"top1": .., "n": .., "what": ..}, ...}``):
    the first that is not a baseline is the one it was verified with.
    """
    if not metrics:
        return None

    def scores(d: dict) -> bool:
        return any(d.get(k) is not None for k, _ in METRIC_NAMES)

    if scores(metrics):
        n = metrics.get("n_queries")
        return Verification(metrics.get("top1"), metrics.get("top5"), metrics.get("map5"), n,
                            "held-out confirmed photos of this catalog")
    for key, d in metrics.items():
        if isinstance(d, dict) and scores(d) and "baseline" not in key:
            what = str(d.get("what") or key.replace("_", " "))
            return Verification(d.get("top1"), d.get("top5"), d.get("map5"), d.get("n", d.get("n_queries")), what)
    return None


@dataclass(frozen=True)
class ModelVersion:
    """A bundle registered in the catalog, for the Model versions list."""

    version: str
    path: Path
    created: str | None
    active: bool
    metrics: dict
    problem: str | None = None  # why it cannot be used (damaged, missing), None when fine

    @property
    def verification(self) -> Verification | None:
        """The evaluation the model was verified with (see :func:`verification_of`)."""
        return verification_of(self.metrics)


def list_model_versions(catalog, *, verify: bool = True) -> list[ModelVersion]:
    """Every registered bundle with its metrics; damaged or missing ones say why (newest first)."""
    from model.api import verify_bundle

    out = []
    for m in catalog.models():
        path = catalog.model_path(m)
        problem = None
        if verify:
            try:
                verify_bundle(path)
            except FlukeidError as exc:
                problem = str(exc)
        out.append(ModelVersion(m.version, path, m.created_at, m.active, dict(m.metrics or {}), problem))
    out.sort(key=lambda v: v.created or "", reverse=True)
    return out
