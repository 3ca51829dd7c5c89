"""The surface the app uses: the only module of ``model`` that ``app`` may import.

Torch is never imported at module level here: training entry points import it lazily, so the
GUI process (which only loads bundles and runs onnxruntime) never holds torch.

Each area keeps its section below; add to your own section only.
"""

from __future__ import annotations

# --- section: errors and shared primitives -------------------------------------------------
from model.bundle import (  # noqa: F401
    FORMAT_VERSION,
    finalize_bundle,
    new_version_name,
    read_manifest,
    sha256_file,
    staging_dir,
    verify_bundle,
)
from model.errors import (  # noqa: F401
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    FlukeidError,
    ImageError,
    Interrupted,
)
from model.preprocess import Box, Preprocessing, crop_to_input, load_image, normalise, prepare_batch  # noqa: F401
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

# --- section: data (records, synthetic flukes) ----------------------------------------------
# isort: split
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

# --- section: training, evaluation, export (torch, imported lazily) --------------------------
# isort: split
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


# --- section: inference, matching, heatmaps (torch-free) -------------------------------------
# isort: split
from model.heatmap import (  # noqa: E402, F401
    PairEvidence,
    draw_pair_evidence,
    figure5_overlay,
    max_location_map,
    pair_evidence,
    photo_heatmaps,
    std_map,
)
from model.inference import Engine, cuda_available  # noqa: E402, F401
from model.matching import (  # noqa: E402, F401
    Candidate,
    GalleryIndex,
    MatchResult,
    calibrate_threshold,
    match,
)

# --- section: detector -----------------------------------------------------------------------
# isort: split
from model.detection import (  # noqa: E402, F401
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
from model.training.detector import DetectorTrainConfig, build_detector  # noqa: E402, F401  (torch imported lazily)

load_detector = Detector.load

# --- section: local features -----------------------------------------------------------------
# isort: split
from model.local.calibration import (  # noqa: E402, F401
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
from model.local.features import FEATURE_VERSION, LocalFeatures  # noqa: E402, F401
from model.local.features import extract as extract_local_features  # noqa: E402, F401
from model.local.index import LocalCandidate, LocalIndex, LocalResult, Verification  # noqa: E402, F401
from model.local.verify import verify as verify_pair  # noqa: E402, F401

# --- section: fusion of local features and the embedding (torch-free) ------------------------
# isort: split
from model.fusion import SHORTLIST as FUSION_SHORTLIST  # noqa: E402, F401
from model.fusion import FusedCandidate, fuse_plain, fuse_shortlist  # noqa: E402, F401
