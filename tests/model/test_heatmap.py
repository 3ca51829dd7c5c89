"""Heatmaps: photo-sized, on the object (not the flat background), Figure 5 colours, pair evidence."""

from __future__ import annotations

import numpy as np
import pytest

from model.heatmap import (
    cell_to_photo,
    draw_pair_evidence,
    figure5_overlay,
    max_location_map,
    pair_evidence,
    photo_heatmaps,
    std_map,
    to_photo,
)
from model.inference import Engine
from model.preprocess import Preprocessing, crop_matrix
from tests.model.tiny_models import textured_object_photo

OBJ = (100, 60, 220, 160)  # x0, y0, x1, y1 of the textured object


def inside(m: np.ndarray, box=OBJ) -> np.ndarray:
    mask = np.zeros(m.shape, bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return Engine.load(tiny_bundle, device="cpu")


@pytest.mark.parametrize("box", [None, (40, 20, 300, 230)])
def test_maps_are_photo_sized_and_peak_on_the_object(engine, box):
    photo = textured_object_photo(240, 320, OBJ)
    _, fmap = engine.embed_with_maps([photo], [box])
    s, m = photo_heatmaps(fmap[0], photo.shape[:2], box, engine.preprocessing)
    assert s.shape == m.shape == (240, 320) and s.dtype == np.uint8
    for hm in (s, m):
        obj = inside(hm)
        y, x = np.unravel_index(np.argmax(hm), hm.shape)
        assert OBJ[0] - 8 <= x <= OBJ[2] + 8 and OBJ[1] - 8 <= y <= OBJ[3] + 8
        assert hm[obj].mean() > 3 * hm[~obj].mean() + 1
    if box is not None:  # outside the crop the map is empty
        assert s[:10].max() == 0 and s[:, :30].max() == 0


def test_std_and_max_maps_on_a_known_feature_map():
    fm = np.zeros((4, 3, 5), np.float32)
    fm[:, 1, 2] = [5, -5, 3, -3]  # high spread across channels at (1, 2)
    fm[0, 0, 0] = 9  # every channel's max except channel 0's is... see below
    s = std_map(fm)
    assert s.shape == (3, 5) and s[1, 2] == 255 and s.min() == 0
    m = max_location_map(fm)
    # channel 0 peaks at (0,0); channel 2 at (1,2); channels 1 and 3 are <=0 with max 0 at (0,0)
    assert m[0, 0] == 255 and m[1, 2] == round(255 / 3)


def test_to_photo_puts_a_cell_where_cell_to_photo_says():
    prep = Preprocessing(input_height=64, input_width=64, margin=0.0)
    small = np.zeros((8, 8), np.float32)
    small[2, 5] = 1.0
    box = (50, 40, 250, 200)
    big = to_photo(small, (300, 400), box, prep)
    y, x = np.unravel_index(np.argmax(big), big.shape)
    (px, py), = cell_to_photo(np.array([[2, 5]]), (8, 8), (300, 400), box, prep)
    assert abs(x - px) <= 2 and abs(y - py) <= 2
    assert 50 <= px <= 250 and 40 <= py <= 200


def test_figure5_colours():
    photo = np.full((10, 30, 3), 100, np.uint8)
    std = np.zeros((10, 30), np.uint8)
    mx = np.zeros((10, 30), np.uint8)
    std[:, :10] = 255          # std only -> green
    mx[:, 10:20] = 255         # max only -> magenta
    std[:, 20:] = mx[:, 20:] = 255  # both -> white
    out = figure5_overlay(photo, std, mx, opacity=1.0)
    assert out.shape == (10, 30, 3)
    assert tuple(out[5, 5]) == (0, 255, 0)
    assert tuple(out[5, 15]) == (255, 0, 255)
    assert tuple(out[5, 25]) == (255, 255, 255)
    assert tuple(figure5_overlay(photo, std, mx, opacity=0.0)[5, 5]) == (100, 100, 100)


def test_pair_evidence_links_peaks_on_both_objects(engine):
    a = textured_object_photo(240, 320, OBJ, seed=5)
    b = np.zeros((300, 400, 3), np.uint8) + 90
    b[80:180, 150:270] = a[60:160, 100:220]  # the same object, shifted, in a larger photo
    obj_b = (150, 80, 270, 180)
    box_a, box_b = (85, 45, 235, 175), (135, 65, 285, 195)
    emb, fmaps = engine.embed_with_maps([a, b], [box_a, box_b])
    ev = pair_evidence(engine.score_pairs, emb[0], fmaps[0], a.shape[:2], box_a,
                       emb[1], fmaps[1], b.shape[:2], box_b, engine.preprocessing, n_peaks=6)
    assert ev.map_a.shape == (240, 320) and ev.map_b.shape == (300, 400)
    assert 0 < len(ev.lines) <= 6 and len(ev.peaks_a) == len(ev.peaks_b) == len(ev.lines)
    assert np.all(ev.weights > 0) and np.all(np.diff(ev.weights) <= 0)
    assert 0.0 <= ev.score <= 1.0
    # a peak is a feature-map cell: allow one cell (in photo pixels) around the object
    prep = engine.preprocessing
    tol = prep.input_width / fmaps.shape[-1] / crop_matrix(box_a, a.shape[:2], prep)[0, 0]
    for (xa, ya), (xb, yb) in ev.lines:
        assert OBJ[0] - tol <= xa <= OBJ[2] + tol and OBJ[1] - tol <= ya <= OBJ[3] + tol
        assert obj_b[0] - tol <= xb <= obj_b[2] + tol and obj_b[1] - tol <= yb <= obj_b[3] + tol
    assert ev.map_a[inside(ev.map_a)].mean() > ev.map_a[~inside(ev.map_a)].mean()
    fig = draw_pair_evidence(a, b, ev, height=120)
    assert fig.shape == (120, 160 + 160, 3)


def test_pair_evidence_uses_one_head_batch(engine):
    rng = np.random.default_rng(0)
    fm = rng.normal(size=(32, 4, 4)).astype(np.float32)
    calls = []

    def head(A, B):
        calls.append(len(A))
        return engine.score_pairs(A, B)

    ev = pair_evidence(head, fm.max(axis=(1, 2)), fm, (64, 64), None, fm.max(axis=(1, 2)), fm, (64, 64), None,
                       engine.preprocessing)
    assert calls == [65]  # the intact pair and 2 x 32 ablations, one call
    assert ev.map_a.shape == (64, 64)
    with pytest.raises(ValueError, match="channel"):
        pair_evidence(head, np.zeros(16), fm, (64, 64), None, np.zeros(16), fm, (64, 64), None,
                      engine.preprocessing)


def test_separable_head_gives_the_ablation_numbers_without_calling_the_head(engine):
    from model.heatmap import channel_contributions

    rng = np.random.default_rng(2)
    a = rng.normal(size=32).astype(np.float32)
    b = (a + rng.normal(0, 0.4, size=32)).astype(np.float32)
    ref = rng.normal(0, 0.2, size=32).astype(np.float32)
    slow, p_slow = channel_contributions(engine.score_pairs, a, b, ref)
    assert 0.01 < p_slow < 0.99  # not saturated: the ablation path's logits are exact here

    def no_head(A, B):
        raise AssertionError("the head was called")

    fast, p_fast = channel_contributions(no_head, a, b, ref, head=engine.separable_head())
    np.testing.assert_allclose(fast, slow, atol=2e-3)
    assert abs(p_fast - p_slow) < 1e-5
    assert np.argsort(-fast)[:5].tolist() == np.argsort(-slow)[:5].tolist()


def test_agreement_overlay_glows_at_the_marks_and_nowhere_without_them():
    from model.heatmap import AGREEMENT_RGB, agreement_overlay

    empty = agreement_overlay(np.zeros((0, 2)), None, (50, 100))
    assert empty.shape == (50, 100, 4) and empty[..., 3].max() == 0
    out = agreement_overlay(np.array([[0.2, 0.5], [0.8, 0.5]]), np.array([3.0, 1.0]), (50, 100))
    alpha = out[..., 3]
    assert tuple(out[0, 0, :3]) == AGREEMENT_RGB
    assert alpha[23:27, 19:22].max() == 255  # the stronger mark, fully
    assert 0 < alpha[25, 79] < 255  # the weaker one, less
    assert alpha[25, 50] < alpha[25, 79] and alpha[0, 0] == 0  # between and far from them: little or none
    # a weight of 0 (or below) adds nothing; positions outside 0..1 are clipped to the edge
    assert agreement_overlay(np.array([[0.5, 0.5]]), np.array([0.0]), (20, 20))[..., 3].max() == 0
    assert agreement_overlay(np.array([[1.5, -1.0]]), None, (20, 20))[0, 19, 3] == 255
