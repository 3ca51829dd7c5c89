"""Export of a training run: ONNX contract names, dynamic batch, parity with torch, a verified bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.bundle import verify_bundle
from model.config import preset
from model.errors import BundleError, CheckpointError
from model.export import (
    TOLERANCE,
    check_detector_parity,
    check_parity,
    export_branch,
    export_detector,
    export_head,
    export_run,
)
from model.nets.siamese import build_siamese
from model.training.siamese import CHECKPOINT_FORMAT


def _fake_run(tmp_path, threshold=0.73):
    """A run folder as training leaves it (weights randomised so BN statistics are not trivial)."""
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = build_siamese(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": {}, "scheduler": {},
                "epoch": 3, "config": cfg.to_dict(), "rng": {}, "history": [{"loss": 0.4}],
                "individuals": ["a", "b"]}, run / "checkpoint.pt")
    (run / "summary.json").write_text(json.dumps({"new_individual_threshold": threshold, "val_top5": 0.5}))
    return run, model.eval(), cfg


def test_export_run_writes_a_verified_bundle_with_the_contract(tmp_path):
    import onnxruntime as ort

    run, model, cfg = _fake_run(tmp_path)
    bundle = export_run(run, tmp_path / "bundle", metrics={"top5": 0.9})
    manifest = verify_bundle(bundle)
    assert manifest["branch"] == {"kind": "plain", "embedding_dim": 32, "feature_channels": 32}
    assert manifest["head"] == {"kind": cfg.head.kind}
    assert manifest["preprocessing"]["input_width"] == cfg.input_width
    assert manifest["new_individual_threshold"] == pytest.approx(0.73)
    assert manifest["metrics"]["top5"] == 0.9
    assert manifest["metrics"]["export_parity"]["branch_max_abs_diff"] < TOLERANCE
    assert manifest["training"]["epochs_done"] == 3
    assert manifest["config"]["preset"] == "tiny"
    so = ort.SessionOptions()
    so.log_severity_level = 3
    br = ort.InferenceSession(str(bundle / "branch.onnx"), so, providers=["CPUExecutionProvider"])
    hd = ort.InferenceSession(str(bundle / "head.onnx"), so, providers=["CPUExecutionProvider"])
    assert [i.name for i in br.get_inputs()] == ["image"]
    assert [o.name for o in br.get_outputs()] == ["embedding", "feature_map"]
    assert [i.name for i in hd.get_inputs()] == ["embedding_a", "embedding_b"]
    for n in (1, 5):  # dynamic batch; same numbers as torch
        x = np.random.default_rng(n).standard_normal((n, 1, cfg.input_height, cfg.input_width)).astype(np.float32)
        emb, fmap = br.run(None, {"image": x})
        with torch.no_grad():
            t_emb, t_fmap = model.branch(torch.from_numpy(x))
            t_prob = torch.sigmoid(model.head(t_emb, t_emb.flip(0)))
        assert emb.shape == (n, 32) and fmap.shape[:2] == (n, 32)
        assert np.abs(emb - t_emb.numpy()).max() < TOLERANCE
        (prob,) = hd.run(None, {"embedding_a": emb, "embedding_b": emb[::-1].copy()})
        assert prob.shape == (n,) and np.abs(prob - t_prob.numpy()).max() < TOLERANCE


def test_parity_check_catches_a_wrong_file(tmp_path):
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = build_siamese(cfg).eval()
    other = build_siamese(cfg).eval()  # different random weights
    hw = (cfg.input_height, cfg.input_width)
    export_branch(other.branch, tmp_path / "branch.onnx", hw)
    export_head(model.head, tmp_path / "head.onnx", 32)
    with pytest.raises(BundleError, match="branch.onnx: onnxruntime differs"):
        check_parity(model.branch, model.head, tmp_path / "branch.onnx", tmp_path / "head.onnx", hw, 32)
    (tmp_path / "head.onnx").write_bytes(b"not onnx")
    export_branch(model.branch, tmp_path / "branch.onnx", hw)
    with pytest.raises(BundleError, match="head.onnx"):
        check_parity(model.branch, model.head, tmp_path / "branch.onnx", tmp_path / "head.onnx", hw, 32)


def test_export_parity_of_untrained_detector(tmp_path):
    from model.detection import Detector
    from model.nets.detector import FlukeDetectorNet

    diffs = export_detector(FlukeDetectorNet(4).eval(), tmp_path / "x.onnx", 32)
    assert max(diffs["max_abs_diff_box"], diffs["max_abs_diff_confidence"]) < 1e-4
    det = Detector.load(tmp_path / "x.onnx")
    boxes, conf = det.predict_batch(np.zeros((3, 1, 32, 32), np.float32))
    assert boxes.shape == (3, 4) and conf.shape == (3,)
    assert ((boxes >= 0) & (boxes <= 1)).all() and ((conf >= 0) & (conf <= 1)).all()


def test_detector_parity_failures_are_bundle_errors(tmp_path):
    """A detector file that is not the network, or not ONNX, fails as every other network's export does."""
    from model.nets.detector import FlukeDetectorNet

    torch.manual_seed(0)
    net, other = FlukeDetectorNet(4).eval(), FlukeDetectorNet(4).eval()  # different random weights
    export_detector(other, tmp_path / "d.onnx", 32)
    with pytest.raises(BundleError, match="d.onnx: ONNX parity failed"):
        check_detector_parity(net, tmp_path / "d.onnx", 32)
    (tmp_path / "d.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="d.onnx: fails the ONNX checker"):
        check_detector_parity(net, tmp_path / "d.onnx", 32)


def test_export_refuses_bad_runs_and_existing_bundles(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        export_run(tmp_path / "nope", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_run(tmp_path / "empty", tmp_path / "b")
    run, _, _ = _fake_run(tmp_path)
    (tmp_path / "exists").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        export_run(run, tmp_path / "exists")
    assert not list(tmp_path.glob(".exists.partial-*"))
