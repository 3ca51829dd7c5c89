"""Engine: bundle verification, provider reporting, embeddings (torch parity) and head scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

import model.inference as inference
from model.errors import BundleError
from model.inference import Engine
from model.preprocess import prepare_batch
from tests.model.tiny_models import TinyBranch, textured_object_photo


def test_loads_and_reports_manifest(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    assert eng.provider == "CPU"
    assert "\n" not in eng.device_note and "CPU" in eng.device_note
    assert eng.version == "tiny-v1"
    assert eng.new_individual_threshold == pytest.approx(0.5)
    assert eng.preprocessing.input_height == 64
    assert eng.embedding_dim == 32


def test_flipped_byte_is_refused_naming_the_file(tiny_bundle_copy):
    p = tiny_bundle_copy / "branch.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"branch\.onnx.*checksum"):
        Engine.load(tiny_bundle_copy)


def test_missing_file_is_refused(tiny_bundle_copy):
    (tiny_bundle_copy / "head.onnx").unlink()
    with pytest.raises(BundleError, match=r"head\.onnx.*missing"):
        Engine.load(tiny_bundle_copy)


def test_newer_manifest_format_is_refused(tiny_bundle_copy):
    mp = tiny_bundle_copy / "manifest.json"
    m = json.loads(mp.read_text())
    m["format_version"] = 99
    mp.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer"):
        Engine.load(tiny_bundle_copy)


def test_contract_names_are_checked(tiny_bundle_copy, tmp_path):
    # A bundle whose head is the branch (wrong inputs) is refused, naming head.onnx.
    from model.bundle import finalize_bundle, staging_dir

    stage = staging_dir(tmp_path / "bad")
    for name in ("branch.onnx", "head.onnx"):
        (stage / name).write_bytes((tiny_bundle_copy / "branch.onnx").read_bytes())
    m = json.loads((tiny_bundle_copy / "manifest.json").read_text())
    for k in ("files", "format_version", "version"):
        m.pop(k)
    bad = finalize_bundle(stage, tmp_path / "bad", m)
    with pytest.raises(BundleError, match=r"head\.onnx.*embedding_a"):
        Engine.load(bad, device="cpu")


class _FakeSession:
    """Wraps a real CPU session but reports the providers a test chooses."""

    reported: list[str] = []

    def __init__(self, path, sess_options=None, providers=None):
        self._real = _REAL_SESSION(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self.requested = providers

    def get_providers(self):
        return list(self.reported)

    def __getattr__(self, name):
        return getattr(self._real, name)


_REAL_SESSION = inference.ort.InferenceSession


@pytest.mark.parametrize(("session_reports", "expected"), [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "GPU (CUDA)"),
    (["CPUExecutionProvider"], "CPU"),
])
def test_provider_comes_from_the_session(tiny_bundle, monkeypatch, session_reports, expected):
    monkeypatch.setattr(inference, "cuda_available", lambda: True)
    monkeypatch.setattr(_FakeSession, "reported", session_reports)
    monkeypatch.setattr(inference.ort, "InferenceSession", _FakeSession)
    eng = Engine.load(tiny_bundle, device="auto")
    assert eng.branch.requested[0] == "CUDAExecutionProvider"  # CUDA was asked for first
    assert eng.provider == expected
    if expected == "CPU":
        assert "could not start CUDA" in eng.device_note
        assert eng.head_chunk == inference.HEAD_CHUNK
    else:
        assert eng.head_chunk == inference.HEAD_CHUNK_GPU


def test_cpu_request_never_asks_for_cuda(tiny_bundle, monkeypatch):
    monkeypatch.setattr(inference, "cuda_available", lambda: True)
    monkeypatch.setattr(_FakeSession, "reported", ["CPUExecutionProvider"])
    monkeypatch.setattr(inference.ort, "InferenceSession", _FakeSession)
    eng = Engine.load(tiny_bundle, device="cpu")
    assert eng.branch.requested == ["CPUExecutionProvider"]
    assert eng.device_note == "Inference runs on the CPU (as requested)."


def test_embeddings_match_torch_on_the_same_photo(tmp_path):
    import torch

    from tests.model.tiny_models import build_tiny_bundle

    net = TinyBranch(32, seed=3)
    bundle = build_tiny_bundle(tmp_path / "parity", branch=net)
    eng = Engine.load(bundle, device="cpu")
    photos = [textured_object_photo(seed=s) for s in range(3)]
    boxes = [(100, 60, 220, 160), None, (90.5, 50.2, 230.7, 170.1)]
    emb, fmap = eng.embed_with_maps(photos, boxes)
    with torch.no_grad():
        t_emb, t_fmap = net(torch.from_numpy(prepare_batch(photos, boxes, eng.preprocessing)))
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, t_emb.numpy(), atol=1e-4)
    np.testing.assert_allclose(fmap, t_fmap.numpy(), atol=1e-4)


def test_embed_batches_give_the_same_result(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu", batch_size=2)
    photos = [textured_object_photo(seed=s) for s in range(5)]
    batched = eng.embed(photos)
    single = np.concatenate([eng.embed([p]) for p in photos])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert eng.embed([]).shape == (0, 32)
    with pytest.raises(ValueError):
        eng.embed(photos, [None])


def test_score_shapes_and_agreement_with_pairs(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    eng.head_chunk = 7  # exercise the chunking
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 32)).astype(np.float32)
    g = rng.normal(size=(20, 32)).astype(np.float16)
    s1 = eng.score(q[0], g)
    sq = eng.score(q, g)
    assert s1.shape == (20,) and sq.shape == (3, 20)
    np.testing.assert_allclose(sq[0], s1, atol=1e-6)
    pairs = eng.score_pairs(np.repeat(q[1:2], 20, axis=0), g.astype(np.float32))
    np.testing.assert_allclose(sq[1], pairs, atol=1e-6)
    near = eng.score(q[0], (q[0] + 0.05 * rng.normal(size=(1, 32))).astype(np.float32))
    assert near[0] > 0.9 > float(np.median(s1))


def test_embed_reports_progress_and_stops(tiny_bundle):
    from model.errors import Interrupted

    eng = Engine.load(tiny_bundle, device="cpu", batch_size=2)
    photos = [textured_object_photo(seed=s) for s in range(5)]
    seen = []
    eng.embed(photos, progress=lambda f, m: seen.append(f))
    assert seen == pytest.approx([0.4, 0.8, 1.0])
    calls = []
    with pytest.raises(Interrupted, match="2 of 5"):
        eng.embed(photos, should_stop=lambda: calls.append(1) or len(calls) > 1)
