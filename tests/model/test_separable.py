"""Separable heads and table scoring: read from head.onnx, exact on quantised embeddings, and the
matcher's table path gives the same top-5 as the head over every photo."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model.inference import Engine
from model.matching import GalleryIndex, match
from model.separable import CodedGallery, SeparableHead, from_onnx
from tests.model.test_matching import clustered

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "models" / "demo"


def _onnx_head_fn(path: Path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda a, b: sess.run(["probability"], {"embedding_a": a, "embedding_b": b})[0].reshape(-1)


def _export(module: torch.nn.Module, path: Path, dim: int) -> Path:
    from model.export import export_head  # the bundles' own export (sigmoid applied)

    export_head(module, path, dim)
    return path


def test_reads_the_tiny_bundles_head_and_matches_head_onnx(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    head = eng.separable_head()
    assert isinstance(head, SeparableHead) and head.kind == "nn" and head.dim == 32
    rng = np.random.default_rng(3)
    a = rng.normal(size=(50, 32)).astype(np.float32)
    b = (a + rng.normal(0, 0.5, size=a.shape)).astype(np.float32)
    np.testing.assert_allclose(head.probabilities(a, b), eng.score_pairs(a, b), atol=1e-5)


@pytest.mark.skipif(not (DEMO / "head.onnx").is_file(), reason="the shipped demo bundle is part of the repo")
def test_reads_the_paper_head_exported_by_model_export():
    """The shipped demo bundle's head is model.nets.heads.NNHead (Conv1d layout) exported by model.export."""
    eng = Engine.load(DEMO, device="cpu")
    head = eng.separable_head()
    assert head is not None and head.kind == "nn" and head.w1.shape == (32, 4)
    rng = np.random.default_rng(4)
    a = np.abs(rng.normal(size=(40, eng.embedding_dim))).astype(np.float32)
    b = np.abs(a + rng.normal(0, 0.3, size=a.shape)).astype(np.float32)
    np.testing.assert_allclose(head.probabilities(a, b), eng.score_pairs(a, b), atol=1e-5)


def test_reads_an_l1_head(tmp_path):
    from model.nets.heads import L1Head

    torch.manual_seed(0)
    net = L1Head(24)
    with torch.no_grad():
        net.out.weight.copy_(-torch.rand(1, 24) * 0.5)
        net.out.bias.fill_(2.0)
    path = _export(net, tmp_path / "head.onnx", 24)
    head = from_onnx(path, 24, "l1", _onnx_head_fn(path))
    assert head is not None and head.kind == "l1"
    np.testing.assert_allclose(head.weight, net.out.weight.detach().numpy().reshape(-1), atol=1e-7)


class ConcatHead(torch.nn.Module):
    """Not separable: an MLP over both whole embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2 * dim, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def forward(self, a, b):
        return self.net(torch.cat([a, b], dim=1)).squeeze(-1)


def test_a_head_of_another_form_is_not_read(tmp_path):
    torch.manual_seed(1)
    path = _export(ConcatHead(16), tmp_path / "head.onnx", 16)
    assert from_onnx(path, 16, "nn", _onnx_head_fn(path)) is None
    assert from_onnx(path, 16, "siamese-v2", _onnx_head_fn(path)) is None  # unknown kinds: not even tried


def test_table_search_is_the_head_on_the_quantised_gallery(tiny_bundle):
    head = Engine.load(tiny_bundle, device="cpu").separable_head()
    emb, _, queries = clustered(40, 5, 32, seed=2)
    coded = CodedGallery.build(emb)
    dec = coded.decoded()
    assert np.abs(dec - emb).max() <= (emb.max(0) - emb.min(0)).max() / 255 / 2 + 1e-5  # half a level at most
    for q in queries[:5]:
        want = head.logits(q, dec)
        rows, got = coded.search(head, q, 20)
        order = np.argsort(-want, kind="stable")[:20]
        np.testing.assert_allclose(got, want[rows], atol=1e-3)
        np.testing.assert_allclose(np.sort(got)[::-1], want[order], atol=1e-3)
    assert len(coded.search(head, queries[0], 10_000)[0]) == len(emb)  # k past M: every photo once


def test_match_by_table_gives_the_heads_top5(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    emb, ind, queries = clustered(600, 4, 32, seed=5, latent=8)  # 2,400 photos: past table_from
    gal = GalleryIndex.build(emb, np.arange(len(ind)), ind)
    for q in queries[:25]:
        fast = match(eng, q, gal)
        slow = match(eng, q, gal, table=False)
        assert fast.method == "table" and slow.method == "head" and fast.n_scored == len(ind)
        assert [c.individual for c in fast.candidates] == [c.individual for c in slow.candidates]
        assert [c.best_photo_id for c in fast.candidates] == [c.best_photo_id for c in slow.candidates]
        np.testing.assert_allclose([c.score for c in fast.candidates], [c.score for c in slow.candidates],
                                   atol=1e-6)  # the shown scores are head.onnx's own


def test_excluded_photos_are_never_returned(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    emb, ind, _ = clustered(400, 4, 32, seed=6)
    gal = GalleryIndex.build(emb, np.arange(len(ind)) + 10, ind)
    for row in (0, 7, 801):
        q = emb[row].astype(np.float32)
        for kw in ({}, {"table": False}, {"exact": False}):
            res = match(eng, q, gal, exclude={row + 10}, **kw)
            assert res.candidates and all(c.best_photo_id != row + 10 for c in res.candidates)
            alone = GalleryIndex.build(np.delete(emb, row, 0), np.delete(np.arange(len(ind)) + 10, row),
                                       np.delete(ind, row))
            ref = match(eng, q, alone, table=False)
            assert [c.individual for c in res.candidates][:1] == [c.individual for c in ref.candidates][:1]
    everything = match(eng, emb[0], gal, exclude=set(range(10, 10 + len(ind))))
    assert everything.candidates == [] and everything.suggest_new


def test_concurrent_queries_do_not_share_a_table(tiny_bundle):
    eng = Engine.load(tiny_bundle, device="cpu")
    emb, ind, queries = clustered(500, 3, 32, seed=7)
    gal = GalleryIndex.build(emb, np.arange(len(ind)), ind)
    want = [[c.individual for c in match(eng, q, gal).candidates] for q in queries[:40]]
    got: dict[int, list] = {}

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            got[i] = [c.individual for c in match(eng, queries[i], gal).candidates]

    threads = [threading.Thread(target=run, args=(lo, lo + 20)) for lo in (0, 20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(40)] == want
