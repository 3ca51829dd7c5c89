"""Local features: extraction (shape, dtype, original-pixel positions), storage, verification."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from model.errors import DataError
from model.local.features import FEATURE_VERSION, LocalFeatures, extract
from model.local.verify import MIN_INLIERS, verify
from tests.model.local_images import embed, pattern, transformed


@pytest.fixture(scope="module")
def base():
    return pattern(1)


def test_extract_shapes_and_types(base):
    f = extract(base, None, max_keypoints=200)
    assert 50 <= len(f) <= 200
    assert f.xy.dtype == np.float32 and f.xy.shape == (len(f), 2)
    assert f.desc.dtype == np.uint8 and f.desc.shape == (len(f), 128)
    assert f.scale.dtype == np.float16 and f.scale.shape == (len(f),)
    assert f.version == FEATURE_VERSION and not f.mirrored
    # RootSIFT: every descriptor is (up to quantisation) a unit vector
    norms = np.linalg.norm(f.desc.astype(np.float64) / 700.0, axis=1)
    assert np.allclose(norms, 1.0, atol=0.02)


def test_positions_are_in_original_photo_pixels(base):
    """The same marks inside a larger photo, described through a box: positions shift by the offset."""
    photo = embed(base, (150, 200))
    alone = extract(base, None)
    boxed = extract(photo, (150, 200, 150 + base.shape[1], 200 + base.shape[0]))
    assert len(boxed) > 50
    assert boxed.box == (150.0, 200.0, 150.0 + base.shape[1], 200.0 + base.shape[0])
    # every boxed keypoint lies inside the box, and the strongest ones sit where they sit alone + offset
    assert np.all(boxed.xy[:, 0] >= 150) and np.all(boxed.xy[:, 0] <= 150 + base.shape[1])
    v = verify(alone, boxed)
    assert v.inliers >= 50
    assert np.allclose(v.model, [[1, 0, 150], [0, 1, 200]], atol=[[0.02, 0.02, 2.0], [0.02, 0.02, 2.0]])
    # a resized crop (long side 512 of a 560-px pattern) still lands within a pixel or two
    d = v.pairs[:, 2:] - v.pairs[:, :2] - (150, 200)
    assert np.median(np.abs(d)) < 1.0


def test_mirrored_extraction_keeps_photo_coordinates(base):
    m = extract(base, None, mirror=True)
    assert m.mirrored and len(m) > 50
    assert np.all((m.xy[:, 0] >= 0) & (m.xy[:, 0] <= base.shape[1]))
    # the mirrored photo's features match the mirrored query without a flip of their own
    flipped = np.ascontiguousarray(base[:, ::-1])
    v = verify(m, extract(flipped, None))
    assert v.inliers >= 50
    # the model maps query pixels x -> W - 1 - x (a reflection)
    assert v.model[0, 0] == pytest.approx(-1.0, abs=0.03) and v.model[1, 1] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("box", [(10, 10, 10, 50), (5, 5, 9, 9), (-100, -100, -10, -10), (2000, 0, 3000, 10),
                                 (float("nan"), 0, 10, 10)])
def test_degenerate_boxes_give_empty_features(base, box):
    f = extract(base, box)
    assert len(f) == 0 and f.desc.shape == (0, 128) and f.xy.shape == (0, 2)
    assert verify(f, extract(base, None)).inliers == 0


def test_flat_image_gives_empty_features():
    assert len(extract(np.full((300, 300), 128, np.uint8), None)) == 0


def test_grayscale_and_rgb_agree(base):
    a = extract(base, None)
    b = extract(np.ascontiguousarray(base[:, :, 0]), None)
    assert np.array_equal(a.desc, b.desc) and np.array_equal(a.xy, b.xy)


def test_bad_image_type_is_refused(base):
    with pytest.raises(ValueError, match="uint8"):
        extract(base.astype(np.float32), None)


def test_bytes_round_trip(base):
    f = extract(base, (3, 4, 500, 350), mirror=True)
    b = f.to_bytes()
    assert len(b) == 36 + 138 * len(f)
    g = LocalFeatures.from_bytes(b)
    assert np.array_equal(f.xy, g.xy) and np.array_equal(f.desc, g.desc) and np.array_equal(f.scale, g.scale)
    assert g.box == f.box and g.mirrored and len(g) == len(f)
    empty = LocalFeatures.from_bytes(LocalFeatures().to_bytes())
    assert len(empty) == 0


def test_corrupt_bytes_raise_data_error(base):
    b = bytearray(extract(base, None, max_keypoints=50).to_bytes())
    with pytest.raises(DataError, match="truncated"):
        LocalFeatures.from_bytes(bytes(b[:-10]))
    with pytest.raises(DataError, match="truncated"):
        LocalFeatures.from_bytes(bytes(b[:10]))
    with pytest.raises(DataError, match="too long"):
        LocalFeatures.from_bytes(bytes(b) + b"\0")
    flipped = bytearray(b)
    flipped[-5] ^= 0xFF
    with pytest.raises(DataError, match="checksum"):
        LocalFeatures.from_bytes(bytes(flipped))
    with pytest.raises(DataError, match="not local features"):
        LocalFeatures.from_bytes(b"PNG\0" + bytes(b[4:]))
    stale = bytearray(b)
    stale[6:8] = (FEATURE_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(DataError, match="recompute"):
        LocalFeatures.from_bytes(bytes(stale))
    assert len(LocalFeatures.from_bytes(bytes(stale), expected_version=None)) == 50
    wrong_format = bytearray(b)
    wrong_format[4:6] = (99).to_bytes(2, "little")
    with pytest.raises(DataError, match="format 99"):
        LocalFeatures.from_bytes(bytes(wrong_format))


@pytest.mark.parametrize("angle,scale,noise", [(25.0, 0.7, None), (-40.0, 1.3, 3), (180.0, 0.5, 4)])
def test_rotated_scaled_cropped_copy_matches(base, angle, scale, noise):
    copy, m = transformed(base, angle=angle, scale=scale, noise_seed=noise)
    v = verify(extract(base, None), extract(copy, None))
    assert v.inliers >= 30
    # the recovered pose is the one applied, and every pair obeys it within a few pixels
    assert np.allclose(v.model[:, :2], m[:, :2], atol=0.03)
    proj = v.pairs[:, :2] @ m[:, :2].T + m[:, 2]
    assert np.median(np.linalg.norm(proj - v.pairs[:, 2:], axis=1)) < 2.0
    assert v.pairs.dtype == np.float32 and v.pairs.shape == (v.inliers, 4)


def test_different_patterns_do_not_match(base):
    fa = extract(base, None)
    inliers = [verify(fa, extract(pattern(s), None)).inliers for s in range(2, 12)]
    assert all(n == 0 for n in inliers), inliers
    assert MIN_INLIERS >= 6


def test_local_modules_do_not_import_torch():
    code = ("import sys, model.local, model.local.features, model.local.verify, model.local.index, "
            "model.local.calibration; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threads_extract_the_same_features(base):
    """Extraction in worker threads (as the app's import job does) gives what it gives serially."""
    from concurrent.futures import ThreadPoolExecutor

    images = [pattern(s) for s in range(20, 26)]
    serial = [extract(im, None, max_keypoints=200) for im in images]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda im: extract(im, None, max_keypoints=200), images * 2))
    for a, b in zip(serial * 2, threaded):
        assert np.array_equal(a.desc, b.desc) and np.array_equal(a.xy, b.xy)
