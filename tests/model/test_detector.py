"""Fluke detector: training on synthetic frames, ONNX parity, plain sea, classical fallback, bad input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from model import detection
from model.detection import (
    ClassicalDetector,
    Detector,
    box_iou,
    check_image,
    classical_detect,
    default_detector,
    detect_file,
    whole_image_box,
)
from model.errors import BundleError, ConfigError, ImageError
from model.export import export_detector
from model.training.detector import (
    DetectorTrainConfig,
    augment,
    box_metrics,
    make_sample,
    predict_samples,
    read_box_labels,
    save_detector,
    synthetic_samples,
    train_detector,
)

TINY = DetectorTrainConfig(input_size=64, width=8, epochs=16, batch_size=32, lr=4e-3, store_side=128, threads=1,
                           presence_weight=2.0)
SMALL = (200, 280)  # frame widths of the test's synthetic photos (small: fast to draw)


@pytest.fixture(scope="module")
def tiny_trained():
    """A tiny detector trained for a few seconds on synthetic frames, plus fresh test frames."""
    train = synthetic_samples(200, 80, seed=1, store_side=TINY.store_side, width_range=SMALL)
    net = train_detector(train, TINY)
    test = synthetic_samples(40, 0, seed=2, store_side=TINY.store_side, width_range=SMALL)
    sea = synthetic_samples(0, 20, seed=3, store_side=TINY.store_side, width_range=SMALL)
    return net, test, sea


def _dark_ellipse_photo(w=320, h=200, box=(80, 60, 240, 130), seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(150, 8, (h, w)).clip(0, 255).astype(np.uint8)
    x0, y0, x1, y1 = box
    cv2.ellipse(img, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 30, -1)
    return np.stack([img] * 3, -1)


@pytest.mark.slow
def test_tiny_detector_beats_whole_image_box(tiny_trained):
    net, test, _ = tiny_trained
    boxes, _ = predict_samples(net, test, TINY.input_size)
    model_iou = box_metrics(boxes, test)["mean_iou"]
    whole_iou = box_metrics(np.tile([0.0, 0.0, 1.0, 1.0], (len(test), 1)), test)["mean_iou"]
    assert model_iou > whole_iou + 0.15, (model_iou, whole_iou)


@pytest.mark.slow
def test_plain_sea_gets_low_confidence(tiny_trained):
    net, test, sea = tiny_trained
    _, conf_sea = predict_samples(net, sea, TINY.input_size)
    _, conf_fluke = predict_samples(net, test, TINY.input_size)
    assert conf_sea.mean() < 0.35, conf_sea
    assert conf_fluke.mean() > 0.65, conf_fluke
    assert conf_fluke.mean() - conf_sea.mean() > 0.35


@pytest.mark.slow
def test_onnx_export_parity_and_detector_from_folder(tiny_trained, tmp_path):
    net, test, sea = tiny_trained
    diffs = export_detector(net, tmp_path / "d.onnx", TINY.input_size)
    assert diffs["max_abs_diff_box"] < 1e-4 and diffs["max_abs_diff_confidence"] < 1e-4
    out = save_detector(net, tmp_path / "det", TINY, trained_on={"synthetic_frames": 200})
    det = Detector.load(out)
    assert det.input_size == TINY.input_size
    assert det.manifest["trained_on"]["synthetic_frames"] == 200
    # ONNX run on the photos gives the torch boxes, in photo pixels
    torch_boxes, torch_conf = predict_samples(net, test[:5], TINY.input_size)
    dets = det.detect_many([s.gray for s in test[:5]])
    for d, tb, tc, s in zip(dets, torch_boxes, torch_conf, test[:5], strict=True):
        h, w = s.gray.shape
        assert d.source == "model"
        assert np.allclose(d.box, tb * [w, h, w, h], atol=0.05)
        assert abs(d.confidence - tc) < 1e-4
    one = det.detect(np.stack([test[0].gray] * 3, -1))
    assert one.box == pytest.approx(dets[0].box, abs=1e-3)


def test_augment_keeps_the_box_on_the_fluke():
    img = _dark_ellipse_photo(box=(80, 60, 240, 130))
    s = make_sample(img, (80, 60, 240, 130), store_side=320)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, box, present = augment(s, rng, 64, strength=0.0 if _ == 0 else 1.0)
        assert x.shape == (1, 64, 64) and present == 1.0
        # the dark pixels of the view lie inside the transformed box
        dark = np.argwhere(x[0] < x[0].mean() - 1.0)
        ys, xs = dark[:, 0] / 64, dark[:, 1] / 64
        assert xs.min() >= box[0] - 0.05 and xs.max() <= box[2] + 0.05
        assert ys.min() >= box[1] - 0.05 and ys.max() <= box[3] + 0.05


def test_classical_detector_finds_a_contrasting_fluke():
    img = _dark_ellipse_photo(box=(80, 60, 240, 130))
    d = classical_detect(img)
    assert d.source == "classical"
    assert box_iou(d.box, (80, 60, 240, 130)) > 0.8
    assert box_iou(whole_image_box(img).box, (80, 60, 240, 130)) < 0.4


def test_classical_detector_on_plain_image_returns_whole_photo():
    img = np.full((100, 150, 3), 128, np.uint8)
    d = classical_detect(img)
    assert d.box == (0.0, 0.0, 150.0, 100.0) and d.confidence == 0.0


def test_default_detector_falls_back_to_classical(tmp_path):
    assert isinstance(default_detector(tmp_path / "nothing"), ClassicalDetector)
    bad = tmp_path / "detector.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(BundleError, match="detector.onnx"):
        Detector.load(tmp_path)
    assert isinstance(default_detector(tmp_path), ClassicalDetector)


def test_shipped_default_detector_loads_and_detects():
    det = default_detector()
    if not isinstance(det, Detector):
        pytest.skip("no shipped detector in resources/models/detector")
    assert "synthetic" in str(det.manifest["trained_on"]).lower()
    assert det.manifest["trained_on"]["real_photos"] == 0
    d = det.detect(_dark_ellipse_photo())
    x0, y0, x1, y1 = d.box
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 200 and 0 <= d.confidence <= 1


def _png_with_size(path: Path, w: int, h: int) -> None:
    """A PNG whose header declares w x h (the pixel data is that of 1x1: enough to test the size check)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
                     + chunk(b"IEND", b""))


def test_bad_photo_files_give_image_errors(tmp_path):
    det = ClassicalDetector()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg" * 10)
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((1, 1), np.uint8))
    _png_with_size(tmp_path / "huge.png", 30_000, 30_000)
    for name, words in [("missing.jpg", "not found"), ("empty.jpg", "empty"), ("junk.jpg", "not a recognised"),
                        ("one.png", "too small"), ("huge.png", "")]:
        with pytest.raises(ImageError) as info:
            detect_file(tmp_path / name, det)
        assert name in str(info.value) and words in str(info.value)


def test_bad_arrays_give_image_errors(monkeypatch):
    for bad in [np.zeros((1, 1, 3), np.uint8), np.zeros((1, 50), np.uint8), np.zeros((10, 10, 5), np.uint8),
                np.zeros((4,), np.uint8), "not an array"]:
        with pytest.raises(ImageError):
            check_image(bad, "photo.jpg")
        with pytest.raises(ImageError):
            classical_detect(bad)
    monkeypatch.setattr(detection, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="too large"):
        classical_detect(np.zeros((200, 200, 3), np.uint8))


def test_float_and_gray_inputs_are_accepted():
    img = _dark_ellipse_photo()
    d1 = classical_detect(img)
    d2 = classical_detect(img[..., 0])
    d3 = classical_detect(img.astype(np.float32) / 255.0)
    assert d1.box == d2.box == d3.box


def test_config_is_checked():
    with pytest.raises(ConfigError):
        DetectorTrainConfig(input_size=100)
    with pytest.raises(ConfigError):
        DetectorTrainConfig(epochs=0)


def test_read_box_labels_skips_rows_without_boxes_and_crops(tmp_path):
    csv_path = tmp_path / "labels.csv"
    (tmp_path / "images").mkdir()
    csv_path.write_text("image,individual_id,crop,x0,y0,x1,y1\n"
                        "a.jpg,w1,full_frame,1,2,30,40\nb.jpg,w2,full_frame,,,,\nc.jpg,w3,fluke_crop,0,0,5,5\n")
    rows = read_box_labels(csv_path)
    assert rows == [(tmp_path / "images" / "a.jpg", (1.0, 2.0, 30.0, 40.0))]


def test_detect_cli_prints_boxes_and_reports_bad_files(tmp_path, capsys):
    from app.cli import main

    photo = tmp_path / "fluke.png"
    cv2.imwrite(str(photo), _dark_ellipse_photo()[..., ::-1])
    (tmp_path / "bad.jpg").write_bytes(b"")
    rc = main(["detect", "--classical", str(photo), str(tmp_path / "bad.jpg")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert str(photo) in out and "classical" in out
    assert "bad.jpg" in err and "empty" in err


def test_classical_and_shipped_detector_on_real_photos(shared_data):
    rows = read_box_labels(shared_data / "cetacean_photoid_eval_v1" / "labels.csv")
    assert len(rows) >= 10
    from model.preprocess import load_image

    photos = [(load_image(p), b) for p, b in rows]
    whole = np.mean([box_iou(whole_image_box(im).box, b) for im, b in photos])
    classical = np.mean([box_iou(classical_detect(im).box, b) for im, b in photos])
    assert classical > whole
    det = default_detector()
    if isinstance(det, Detector):
        model = np.mean([box_iou(det.detect(im).box, b) for im, b in photos])
        assert model > whole


def test_detector_goes_into_a_bundle(tmp_path):
    from model.detection import add_detector_to_bundle
    from model.nets.detector import FlukeDetectorNet

    src = tmp_path / "src"
    src.mkdir()
    export_detector(FlukeDetectorNet(4).eval(), src / "detector.onnx", 32)
    staging = tmp_path / "staging"
    staging.mkdir()
    entry = add_detector_to_bundle(staging, src)
    assert entry == {"input_size": 32}
    assert Detector.load(staging).input_size == 32


@pytest.mark.slow
def test_train_detector_cli_writes_a_loadable_detector(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "det"
    rc = main(["train-detector", "--out", str(out), "--synthetic", "24", "--negatives", "8", "--epochs", "1",
               "--input-size", "64", "--width", "4"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    det = Detector.load(out)
    assert det.input_size == 64
    assert det.manifest["trained_on"]["synthetic_frames"] == 24 and det.manifest["trained_on"]["real_photos"] == 0
    assert main(["detect", "--model", str(out), "--json", str(_write_photo(tmp_path))]) == 0
    assert '"source": "model"' in capsys.readouterr().out


def _write_photo(tmp_path: Path) -> Path:
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), _dark_ellipse_photo()[..., ::-1])
    return photo
