"""ONNX export that checks itself against torch, written as a verified model bundle.

``export_run(run_dir, out_bundle)`` loads a training run's checkpoint.pt, exports

- ``branch.onnx``: "image" [N,1,H,W] -> "embedding" [N,D], "feature_map" [N,D,h,w]
- ``head.onnx``: "embedding_a" [N,D], "embedding_b" [N,D] -> "probability" [N] (sigmoid applied)

with a dynamic batch, runs ``onnx.checker``, compares onnxruntime with torch on the same random
inputs (max abs difference < ``tolerance`` or :class:`~model.errors.BundleError`), and writes the
bundle through :func:`model.bundle.staging_dir` / :func:`model.bundle.finalize_bundle`.

``export_detector(net, path, input_size)`` does the same for the fluke detector (model.nets.detector):

- ``detector.onnx``: "image" [N,1,S,S] -> "box" [N,4] (fractions), "confidence" [N] (sigmoid applied)

Every network goes through the same exporter, checker and onnxruntime session here, and every
failure is a :class:`~model.errors.BundleError`.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.bundle import finalize_bundle, staging_dir
from model.errors import BundleError, CheckpointError
from model.preprocess import Preprocessing
from model.safe_io import check_output
from model.training.siamese import CHECKPOINT, load_checkpoint, model_from_checkpoint

OPSET = 17
TOLERANCE = 1e-4


class BranchExport(nn.Module):
    """The branch with the contract's outputs (embedding, feature_map), float32."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, image: torch.Tensor):
        emb, fmap = self.branch(image)
        return emb.float(), fmap.float()


class HeadExport(nn.Module):
    """The head's score: probability [N]: its ``probability`` method where it has one (model.nets.heads:
    the sigmoid of a learnt head's logit, a fixed map for the cosine head), else the sigmoid of its output."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, embedding_a: torch.Tensor, embedding_b: torch.Tensor) -> torch.Tensor:
        probability = getattr(self.head, "probability", None)
        if callable(probability):
            return probability(embedding_a, embedding_b)
        return torch.sigmoid(self.head(embedding_a, embedding_b))


def _legacy_export(*args, **kwargs) -> None:
    """torch.onnx.export with the TorchScript exporter (dynamic_axes, no onnxscript rewrite), quietly.

    The dynamo exporter is the default in this torch, but the TorchScript one gives stable,
    small graphs for these plain conv nets; its deprecation warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(*args, **kwargs, dynamo=False)


def export_branch(branch: nn.Module, path: Path, input_hw: tuple[int, int]) -> None:
    x = torch.randn(2, 1, *input_hw)
    _legacy_export(BranchExport(branch).eval(), (x,), str(path), input_names=["image"],
                   output_names=["embedding", "feature_map"],
                   dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}, "feature_map": {0: "n"}},
                   opset_version=OPSET)


def export_head(head: nn.Module, path: Path, dim: int) -> None:
    a, b = torch.randn(2, dim), torch.randn(2, dim)
    _legacy_export(HeadExport(head).eval(), (a, b), str(path), input_names=["embedding_a", "embedding_b"],
                   output_names=["probability"],
                   dynamic_axes={"embedding_a": {0: "n"}, "embedding_b": {0: "n"}, "probability": {0: "n"}},
                   opset_version=OPSET)


class DetectorExport(nn.Module):
    """The fluke detector with the contract's outputs: "box" [N, 4] and "confidence" [N] (sigmoid applied)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        box, logit = self.net(image)
        return box, torch.sigmoid(logit)


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _check_onnx(path: Path) -> None:
    """onnx.checker (full check) on a file; :class:`BundleError` naming the file when it fails."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise BundleError(f"{path}: fails the ONNX checker ({exc})") from None


def check_parity(branch: nn.Module, head: nn.Module, branch_onnx: Path, head_onnx: Path,
                 input_hw: tuple[int, int], dim: int, *, batch: int = 3, seed: int = 0,
                 tolerance: float = TOLERANCE) -> dict:
    """onnx.checker on both files, then onnxruntime vs torch on the same random inputs.

    Returns:
        {"branch_max_abs_diff": ..., "head_max_abs_diff": ...}.

    Raises:
        BundleError: a file fails the checker, or a difference is at least ``tolerance`` (for the
            branch, per unit of its largest output magnitude).
    """
    for p in (branch_onnx, head_onnx):
        _check_onnx(p)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, *input_hw, generator=g)
    a, b = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    with torch.no_grad():
        t_emb, t_fmap = BranchExport(branch).eval()(x)
        t_prob = HeadExport(head).eval()(a, b)
    o_emb, o_fmap = _session(branch_onnx).run(["embedding", "feature_map"], {"image": x.numpy()})
    (o_prob,) = _session(head_onnx).run(["probability"], {"embedding_a": a.numpy(), "embedding_b": b.numpy()})
    if o_prob.shape != (batch,):
        raise BundleError(f"{head_onnx}: probability has shape {o_prob.shape}, expected ({batch},)")
    d_branch = max(float(np.abs(o_emb - t_emb.numpy()).max()), float(np.abs(o_fmap - t_fmap.numpy()).max()))
    d_head = float(np.abs(o_prob - t_prob.numpy()).max())
    # Branch outputs are unbounded (a trained BN map can reach tens), and float32 rounding grows with
    # the magnitude: the branch limit is ``tolerance`` per unit of the largest output, never below it.
    # Head outputs are probabilities in 0..1, so their limit stays absolute.
    scale = max(1.0, float(t_emb.abs().max()), float(t_fmap.abs().max()))
    for name, d, limit in ((branch_onnx, d_branch, tolerance * scale), (head_onnx, d_head, tolerance)):
        if not d < limit:
            raise BundleError(f"{name}: onnxruntime differs from torch by {d:.3g} (limit {limit:.3g})")
    return {"branch_max_abs_diff": d_branch, "head_max_abs_diff": d_head}


def export_detector(net: nn.Module, path: str | Path, input_size: int, tolerance: float = TOLERANCE) -> dict:
    """Export a fluke detector to ONNX (contract names, dynamic batch) and check it against torch.

    Returns:
        {"max_abs_diff_box", "max_abs_diff_confidence", "opset"} (recorded in the detector's manifest).

    Raises:
        BundleError: the file fails the checker, or onnxruntime and torch differ by more than ``tolerance``.
    """
    path = Path(path)
    dummy = torch.randn(2, 1, input_size, input_size)
    _legacy_export(DetectorExport(net.eval()).eval(), (dummy,), str(path), input_names=["image"],
                   output_names=["box", "confidence"],
                   dynamic_axes={"image": {0: "N"}, "box": {0: "N"}, "confidence": {0: "N"}},
                   opset_version=OPSET)
    return check_detector_parity(net, path, input_size, tolerance=tolerance)


def check_detector_parity(net: nn.Module, path: str | Path, input_size: int, *, batch: int = 3,
                          tolerance: float = TOLERANCE) -> dict:
    """onnx.checker on ``path``, then onnxruntime vs torch on the same random images.

    Returns:
        {"max_abs_diff_box", "max_abs_diff_confidence", "opset"}.

    Raises:
        BundleError: the file fails the checker, or a difference exceeds ``tolerance`` (boxes are
            fractions and confidences probabilities, so the limit is absolute).
    """
    path = Path(path)
    _check_onnx(path)
    x = torch.randn(batch, 1, input_size, input_size)
    with torch.no_grad():
        tb, tc = DetectorExport(net.eval()).eval()(x)
    ob, oc = _session(path).run(["box", "confidence"], {"image": x.numpy()})
    diffs = {"max_abs_diff_box": float(np.abs(ob - tb.numpy()).max()),
             "max_abs_diff_confidence": float(np.abs(oc - tc.numpy()).max()), "opset": OPSET}
    if max(diffs["max_abs_diff_box"], diffs["max_abs_diff_confidence"]) > tolerance:
        raise BundleError(f"{path}: ONNX parity failed ({diffs})")
    return diffs


def export_run(run_dir: str | Path, out_bundle: str | Path, *, detector_onnx: str | Path | None = None,
               metrics: dict | None = None, detector_input_size: int | None = None) -> Path:
    """Export a training run as a verified model bundle folder at ``out_bundle``.

    Args:
        run_dir: the training run (checkpoint.pt; summary.json gives the calibrated
            new-individual threshold and the training summary when present).
        out_bundle: the bundle folder to create (must not exist).
        detector_onnx: an optional detector.onnx to include.
        metrics: evaluation metrics to record in the manifest.
        detector_input_size: the detector's input size S (read from the detector's ONNX input
            when not given).

    Returns:
        The bundle folder.

    Raises:
        CheckpointError: the run has no usable checkpoint.
        BundleError: export, checker or parity failed, or the bundle exists already.
    """
    run_dir, out_bundle = Path(run_dir), Path(out_bundle)
    check_output(out_bundle, folder=True, replace=True, what="model bundle")  # an existing one: BundleError below
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: training run folder not found")
    ck = load_checkpoint(run_dir / CHECKPOINT)
    model, cfg = model_from_checkpoint(ck, where=str(run_dir / CHECKPOINT))
    model = model.float().eval()
    summary = {}
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            summary = {}
    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    manifest = {
        "branch": {"kind": cfg.branch.kind},
        "head": {"kind": cfg.head.kind},
        "training": {
            "epochs_done": int(ck["epoch"]), "epochs": cfg.epochs,
            "individuals": len(ck.get("individuals", [])),
            **{k: summary[k] for k in ("train_images", "train_individuals", "val_individuals", "val_top1",
                                       "val_top5", "seconds", "device") if k in summary},
            "final_loss": ck["history"][-1]["loss"] if ck.get("history") else None,
        },
        "config": cfg.to_dict(),
        "metrics": dict(metrics or {}),
        "new_individual_threshold": float(summary.get("new_individual_threshold", 0.5)),
    }
    return export_modules(model.branch, model.head, out_bundle, prep, manifest, detector_onnx=detector_onnx,
                          detector_input_size=detector_input_size)


def export_modules(branch: nn.Module, head: nn.Module, out_bundle: str | Path, prep: Preprocessing,
                   manifest: dict, *, detector_onnx: str | Path | None = None,
                   detector_input_size: int | None = None) -> Path:
    """Export a branch and a head (torch modules, float32) as a verified model bundle at ``out_bundle``.

    Both are exported, checked (:func:`check_parity`) and written with ``manifest``, to which this
    adds ``preprocessing``, the branch's ``embedding_dim`` and ``feature_channels``,
    ``metrics.export_parity`` and the detector's section. :func:`export_run` calls it for a training
    run; a bundle nobody trained (tools/build_imagenet_model.py) calls it directly.

    Raises:
        BundleError: export, checker or parity failed, or the bundle exists already.
    """
    out_bundle = Path(out_bundle)
    check_output(out_bundle, folder=True, replace=True, what="model bundle")  # an existing one: BundleError below
    branch, head = branch.float().eval(), head.float().eval()
    hw = (prep.input_height, prep.input_width)
    dim = int(branch.embedding_dim)
    if out_bundle.exists():
        raise BundleError(f"{out_bundle}: a bundle with this version already exists (bundles are never overwritten)")
    stage = staging_dir(out_bundle)
    try:
        export_branch(branch, stage / "branch.onnx", hw)
        export_head(head, stage / "head.onnx", dim)
        parity = check_parity(branch, head, stage / "branch.onnx", stage / "head.onnx", hw, dim)
        detector = None
        if detector_onnx is not None:
            shutil.copyfile(detector_onnx, stage / "detector.onnx")
            detector = {"input_size": detector_input_size or _onnx_input_size(stage / "detector.onnx")}
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    manifest = {**manifest, "preprocessing": prep.to_dict(),
                "branch": {**manifest.get("branch", {}), "embedding_dim": dim,
                           "feature_channels": int(getattr(branch, "feature_channels", dim))},
                "metrics": {**manifest.get("metrics", {}), "export_parity": parity}}
    if detector is not None:
        manifest["detector"] = detector
    return finalize_bundle(stage, out_bundle, manifest)


def _onnx_input_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    size = dims[-1].dim_value if len(dims) == 4 else 0
    if not size:
        raise BundleError(f"{path}: cannot read the detector's input size; pass detector_input_size")
    return int(size)
