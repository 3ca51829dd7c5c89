"""Retrain the networks on the catalog's confirmed identifications (Qt-free).

Training never runs in the calling process: :func:`run_training_process` starts the model
package's training entry point (``python -m app train ... --progress-json``) as a separate
process, reads its JSON-lines progress, and turns a crash (non-zero exit, no ``done`` event)
into a :class:`TrainingFailed` error. The GUI therefore never holds torch or GPU memory, and a
crash of training cannot take the app down.

One module per job:

- :mod:`.process`: the JSON-lines protocol (:class:`TrainingEvent`) and the child-process
  runner (:func:`run_training_process`: progress, stop, crash -> :class:`TrainingFailed`).
- :mod:`.training_python`: which Python trains, the probe of its torch/CUDA/GPUs, and the
  saved ``training_python`` setting (under :func:`app.paths.config_dir`).
- :mod:`.dataset`: what a retraining would learn from (:func:`training_set_summary`), the
  held-out split and the ``labels.csv``/``heldout.csv`` it writes (:func:`prepare_training_data`).
- :mod:`.pipeline`: :func:`retrain` (train, retrain the detector, export, install, compare on
  the held-out photos) and resuming a cancelled run.

:func:`app.services.models.activate` (re-exported here) then verifies the chosen bundle, embeds
the catalog's photos with it while the old model still serves, and only then moves the catalog's
active-model pointer. Adding a bundle from elsewhere, listing and switching versions live in
:mod:`app.services.models`. Every name below is importable from ``app.services.retraining``.
"""

from __future__ import annotations

from app.services.models import (
    METRIC_NAMES,
    ModelVersion,
    Verification,
    activate,
    list_model_versions,
    verification_of,
)
from app.services.retraining.dataset import (
    TrainingData,
    TrainingSetSummary,
    confirmed_photos,
    prepare_training_data,
    split_heldout,
    training_set_summary,
)
from app.services.retraining.pipeline import (
    RUN_META_KEY,
    RetrainOptions,
    RetrainResult,
    describe_epoch,
    evaluate_on_heldout,
    find_resumable_run,
    retrain,
    training_command,
)
from app.services.retraining.process import (
    STOP_GRACE_S,
    EventFn,
    StopFn,
    TrainingEvent,
    TrainingFailed,
    parse_event_line,
    run_training_process,
)
from app.services.retraining.training_python import (
    TRAINING_PYTHON_ENV,
    TrainingEnvironment,
    TrainingPythonError,
    check_training_python,
    default_training_python,
    load_training_python,
    probe_training_python,
    resolve_training_python,
    save_training_python,
    settings_path,
)

__all__ = [
    "METRIC_NAMES", "RUN_META_KEY", "STOP_GRACE_S", "TRAINING_PYTHON_ENV",
    "EventFn", "ModelVersion", "RetrainOptions", "RetrainResult", "StopFn", "TrainingData",
    "TrainingEnvironment", "TrainingEvent", "TrainingFailed", "TrainingPythonError", "TrainingSetSummary",
    "Verification", "verification_of",
    "activate", "check_training_python", "confirmed_photos", "default_training_python", "describe_epoch",
    "evaluate_on_heldout", "find_resumable_run", "list_model_versions", "load_training_python",
    "parse_event_line", "prepare_training_data", "probe_training_python", "resolve_training_python",
    "retrain", "run_training_process", "save_training_python", "settings_path", "split_heldout",
    "training_command", "training_set_summary",
]
