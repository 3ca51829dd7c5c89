"""The surface the app uses: the only module of ``model`` that ``app`` may import.

Importing this module is cheap: only the error classes (``model.errors``) load eagerly. Every other
name is listed in ``_LAZY`` (name -> (module, attribute)) and its module is imported the first time
the name is used (PEP 562 module ``__getattr__``), so ``import model.api`` loads none of
onnxruntime, OpenCV, Pillow, faiss or torch. ``from model.api import Engine`` works as before; it
loads ``model.inference`` at that moment.

The same names are imported under ``TYPE_CHECKING`` so that type checkers see their real types and
import-linter sees every module that model.api reaches (tests/model/test_api_lazy.py checks that
the table and those imports agree). Torch is never imported at module level: training entry
points import it when called, so the GUI process (bundles + onnxruntime) never holds torch.

Each area keeps its section below; add to your own section only (the name to ``_LAZY`` and the
``TYPE_CHECKING`` import beside it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model.errors import (  # noqa: F401  (eager: stdlib only, a few ms)
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    FlukeidError,
    ImageError,
    Interrupted,
)

_EAGER = ["BundleError", "CheckpointError", "ConfigError", "DataError", "FlukeidError", "ImageError",
          "Interrupted"]

# name -> (module, attribute path inside it); filled section by section below.
_LAZY: dict[str, tuple[str, str]] = {}


def _lazy(module: str, *names: str, **renamed: str) -> None:
    """Register ``names`` (and ``alias=attribute`` pairs) of ``module`` for loading on first use."""
    for name in names:
        _LAZY[name] = (module, name)
    for alias, attribute in renamed.items():
        _LAZY[alias] = (module, attribute)


# --- section: errors and shared primitives -------------------------------------------------
if TYPE_CHECKING:
    from model.bundle import (  # noqa: F401
        FORMAT_VERSION,
        finalize_bundle,
        new_version_name,
        read_manifest,
        sha256_file,
        staging_dir,
        verify_bundle,
    )
    from model.preprocess import (  # noqa: F401
        Box,
        Preprocessing,
        crop_to_input,
        load_image,
        normalise,
        prepare_batch,
    )
    from model.safe_io import (  # noqa: F401
        MAX_LABELS_BYTES,
        MAX_PHOTO_BYTES,
        InputError,
        OutputError,
        check_input,
        check_output,
        copy_pipe_bounded,
        open_input,
        replace_empty_folder,
        replace_text_file,
        resolve_inside,
        sha256_bounded,
    )
_lazy("model.bundle", "FORMAT_VERSION", "finalize_bundle", "new_version_name", "read_manifest",
      "sha256_file", "staging_dir", "verify_bundle")
_lazy("model.preprocess", "Box", "Preprocessing", "crop_to_input", "load_image", "normalise", "prepare_batch")
_lazy("model.safe_io", "MAX_LABELS_BYTES", "MAX_PHOTO_BYTES", "InputError", "OutputError", "check_input",
      "check_output", "copy_pipe_bounded", "open_input", "replace_empty_folder", "replace_text_file",
      "resolve_inside", "sha256_bounded")

# --- section: data (records, synthetic flukes) ----------------------------------------------
if TYPE_CHECKING:
    from model.data.records import (  # noqa: F401
        FORMULA_PREFIXES,
        LabelIssue,
        LabelledPhoto,
        LabelledSet,
        LabelRows,
        box_problem,
        count_lines,
        escape_cell,
        open_labels,
        read_labels,
        unescape_cell,
        write_csv_atomic,
        write_labels,
    )
    from model.data.synthetic import (  # noqa: F401
        FlukeIdentity,
        generate_dataset,
        make_identity,
        render_fluke_photo,
        render_sea,
    )
_lazy("model.data.records", "FORMULA_PREFIXES", "LabelIssue", "LabelledPhoto", "LabelledSet", "LabelRows",
      "box_problem", "count_lines", "escape_cell", "open_labels", "read_labels", "unescape_cell",
      "write_csv_atomic", "write_labels")
_lazy("model.data.synthetic", "FlukeIdentity", "generate_dataset", "make_identity", "render_fluke_photo",
      "render_sea")

# --- section: training, evaluation, export (torch, imported lazily) --------------------------
if TYPE_CHECKING:
    from model.evaluate import (  # noqa: F401  (torch-free; the classifier imports torch lazily)
        METHODS,
        PROTOCOLS,
        EvalResult,
        Metrics,
        Split,
        evaluate_bundle,
        evaluate_methods,
        evaluate_random,
        evaluate_scores,
        format_comparison,
        format_result,
        make_split,
    )
_lazy("model.evaluate", "METHODS", "PROTOCOLS", "EvalResult", "Metrics", "Split", "evaluate_bundle",
      "evaluate_methods", "evaluate_random", "evaluate_scores", "format_comparison", "format_result",
      "make_split")


def evaluate_classifier(records, cfg, seed: int = 0, **kwargs):
    """The paper's classifier baseline on the seed protocol (imports torch; see model.training.classifier)."""
    from model.training.classifier import evaluate_classifier as _evaluate_classifier

    return _evaluate_classifier(records, cfg, seed, **kwargs)


def load_train_config(spec, overrides=None):
    """A training config from a preset name (tiny|cpu|paper) or a JSON file, plus ``key=value`` overrides.

    Raises ConfigError naming an unknown key or bad value. Torch-free.
    """
    from model.config import load_config

    return load_config(spec, overrides)


def train_presets() -> list[str]:
    """Names of the training config presets."""
    from model.config import PRESETS

    return list(PRESETS)


def train_siamese(config, records, out_dir, *, progress=None, should_stop=None, resume=False, events=None):
    """Train a Siamese network (imports torch); returns a TrainResult. See model.training.siamese.train."""
    from model.training.siamese import train

    return train(config, records, out_dir, progress=progress, should_stop=should_stop, resume=resume,
                 events=events)


def export_run(run_dir, out_bundle, *, detector_onnx=None, metrics=None):
    """Export a training run as a verified bundle (imports torch); see model.export.export_run."""
    from model.export import export_run as _export_run

    return _export_run(run_dir, out_bundle, detector_onnx=detector_onnx, metrics=metrics)


_FUNCTIONS = ["evaluate_classifier", "load_train_config", "train_presets", "train_siamese", "export_run"]

# --- section: inference, matching, heatmaps (torch-free) -------------------------------------
if TYPE_CHECKING:
    from model.heatmap import (  # noqa: F401
        PairEvidence,
        agreement_overlay,
        draw_pair_evidence,
        figure5_overlay,
        max_location_map,
        pair_evidence,
        photo_heatmaps,
        std_map,
    )
    from model.inference import Engine, cuda_available  # noqa: F401
    from model.matching import (  # noqa: F401
        Candidate,
        GalleryIndex,
        MatchResult,
        calibrate_threshold,
        match,
    )
_lazy("model.heatmap", "PairEvidence", "agreement_overlay", "draw_pair_evidence", "figure5_overlay", "max_location_map",
      "pair_evidence", "photo_heatmaps", "std_map")
_lazy("model.inference", "Engine", "cuda_available")
_lazy("model.matching", "Candidate", "GalleryIndex", "MatchResult", "calibrate_threshold", "match")

# --- section: detector -----------------------------------------------------------------------
if TYPE_CHECKING:
    from model.detection import (  # noqa: F401
        DEFAULT_DETECTOR_DIR,
        ClassicalDetector,
        Detection,
        Detector,
        add_detector_to_bundle,
        box_iou,
        classical_detect,
        default_detector,
        detect_file,
        detector_input,
        whole_image_box,
    )
    from model.training.detector import DetectorTrainConfig, build_detector  # noqa: F401  (torch lazily)

    load_detector = Detector.load
_lazy("model.detection", "DEFAULT_DETECTOR_DIR", "ClassicalDetector", "Detection", "Detector",
      "add_detector_to_bundle", "box_iou", "classical_detect", "default_detector", "detect_file",
      "detector_input", "whole_image_box", load_detector="Detector.load")
_lazy("model.training.detector", "DetectorTrainConfig", "build_detector")

# --- section: local features -----------------------------------------------------------------
if TYPE_CHECKING:
    from model.local.calibration import (  # noqa: F401
        CalibrationPairs,
        Calibrator,
        calibration_pairs,
        candidate_features,
        default_calibrator,
        expected_calibration_error,
        load_calibrator,
        save_calibrator,
        write_reliability_diagram,
    )
    from model.local.features import FEATURE_VERSION, LocalFeatures  # noqa: F401
    from model.local.features import extract as extract_local_features  # noqa: F401
    from model.local.index import LocalCandidate, LocalIndex, LocalResult, Verification  # noqa: F401
    from model.local.verify import verify as verify_pair  # noqa: F401
_lazy("model.local.calibration", "CalibrationPairs", "Calibrator", "calibration_pairs", "candidate_features",
      "default_calibrator", "expected_calibration_error", "load_calibrator", "save_calibrator",
      "write_reliability_diagram")
_lazy("model.local.features", "FEATURE_VERSION", "LocalFeatures", extract_local_features="extract")
_lazy("model.local.index", "LocalCandidate", "LocalIndex", "LocalResult", "Verification")
_lazy("model.local.verify", verify_pair="verify")

# --- section: fusion of local features and the embedding (torch-free) ------------------------
if TYPE_CHECKING:
    from model.fusion import SHORTLIST as FUSION_SHORTLIST  # noqa: F401
    from model.fusion import FusedCandidate, fuse_plain, fuse_shortlist  # noqa: F401
_lazy("model.fusion", "FusedCandidate", "fuse_plain", "fuse_shortlist", FUSION_SHORTLIST="SHORTLIST")

# --- the lazy loading itself (PEP 562) ---------------------------------------------------------
__all__ = sorted([*_EAGER, *_FUNCTIONS, *_LAZY])


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
