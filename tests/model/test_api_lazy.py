"""model.api loads its areas on first use (PEP 562) and still offers every name it offered before."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

import model.api as api
from tests.conftest import REPO

# The public names of model.api before it became lazy (dir(model.api) at ee0a5c8, less
# "annotations"): every one must keep working with "from model.api import X".
OLD_PUBLIC_NAMES = [
    "Box", "BundleError", "CalibrationPairs", "Calibrator", "Candidate", "CheckpointError",
    "ClassicalDetector", "ConfigError", "DEFAULT_DETECTOR_DIR", "DataError", "Detection", "Detector",
    "DetectorTrainConfig", "Engine", "EvalResult", "FEATURE_VERSION", "FORMAT_VERSION",
    "FORMULA_PREFIXES", "FUSION_SHORTLIST", "FlukeIdentity", "FlukeidError", "FusedCandidate",
    "GalleryIndex", "ImageError", "InputError", "Interrupted", "LabelIssue", "LabelRows",
    "LabelledPhoto", "LabelledSet", "LocalCandidate", "LocalFeatures", "LocalIndex", "LocalResult",
    "MAX_LABELS_BYTES", "MAX_PHOTO_BYTES", "METHODS", "MatchResult", "Metrics", "OutputError",
    "PROTOCOLS", "PairEvidence", "Preprocessing", "Split", "Verification", "add_detector_to_bundle",
    "box_iou", "box_problem", "build_detector", "calibrate_threshold", "calibration_pairs",
    "candidate_features", "check_input", "check_output", "classical_detect", "copy_pipe_bounded",
    "count_lines", "crop_to_input", "cuda_available", "default_calibrator", "default_detector",
    "detect_file", "detector_input", "draw_pair_evidence", "escape_cell", "evaluate_bundle",
    "evaluate_classifier", "evaluate_methods", "evaluate_random", "evaluate_scores",
    "expected_calibration_error", "export_run", "extract_local_features", "figure5_overlay",
    "finalize_bundle", "format_comparison", "format_result", "fuse_plain", "fuse_shortlist",
    "generate_dataset", "load_calibrator", "load_detector", "load_image", "load_train_config",
    "make_identity", "make_split", "match", "max_location_map", "new_version_name", "normalise",
    "open_input", "open_labels", "pair_evidence", "photo_heatmaps", "prepare_batch", "read_labels",
    "read_manifest", "render_fluke_photo", "render_sea", "replace_empty_folder", "replace_text_file",
    "resolve_inside", "save_calibrator", "sha256_bounded", "sha256_file", "staging_dir", "std_map",
    "train_presets", "train_siamese", "unescape_cell", "verify_bundle", "verify_pair",
    "whole_image_box", "write_csv_atomic", "write_labels", "write_reliability_diagram",
]
# Public names added since; each must import the same way.
NEW_PUBLIC_NAMES = ["agreement_overlay"]

HEAVY = ("onnxruntime", "cv2", "faiss", "torch", "PIL")


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_alone_loads_no_heavy_library():
    loaded = _python(f"import sys, model.api; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert loaded == "[]"


def test_first_use_loads_only_that_area():
    code = ("import sys, model.api; from model.api import Engine, read_labels; "
            "print(Engine.__module__, 'onnxruntime' in sys.modules, 'torch' in sys.modules)")
    assert _python(code) == "model.inference True False"


@pytest.mark.parametrize("name", OLD_PUBLIC_NAMES + NEW_PUBLIC_NAMES)
def test_every_old_name_still_imports(name):
    namespace: dict = {}
    exec(f"from model.api import {name}", namespace)  # noqa: S102  (the statement app code writes)
    assert namespace[name] is not None
    assert name in dir(api)
    assert name in api.__all__


def test_all_lists_exactly_the_old_names_and_the_new_ones():
    assert sorted(api.__all__) == sorted(OLD_PUBLIC_NAMES + NEW_PUBLIC_NAMES)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        api.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from model.api import no_such_name", {})  # noqa: S102


def test_renamed_and_nested_names_resolve_to_the_model_objects():
    from model.detection import Detector
    from model.fusion import SHORTLIST
    from model.local.features import extract
    from model.local.verify import verify

    assert api.FUSION_SHORTLIST == SHORTLIST
    assert api.extract_local_features is extract
    assert api.verify_pair is verify
    assert api.load_detector == Detector.load


def _type_checking_imports() -> tuple[dict[str, tuple[str, str]], set[str]]:
    """(alias -> (module, name)) imported, and names assigned, under if TYPE_CHECKING: in api.py."""
    tree = ast.parse((REPO / "model" / "api.py").read_text())
    imported: dict[str, tuple[str, str]] = {}
    assigned: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    for alias in stmt.names:
                        imported[alias.asname or alias.name] = (stmt.module, alias.name)
                elif isinstance(stmt, ast.Assign):
                    assigned.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
    return imported, assigned


def test_lazy_table_and_type_checking_imports_agree():
    # lint-imports and type checkers read the TYPE_CHECKING imports; the runtime reads _LAZY.
    imported, assigned = _type_checking_imports()
    for name, (module, attribute) in api._LAZY.items():
        head, _, rest = attribute.partition(".")
        if rest:
            assert name in assigned, name
            assert imported[head][0] == module, name
        else:
            assert imported[name] == (module, attribute), name
        value = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
        assert getattr(api, name) == value, name
    assert set(imported) <= set(api._LAZY), set(imported) - set(api._LAZY)
