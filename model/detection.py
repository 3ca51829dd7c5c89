"""Torch-free fluke detection: the ONNX detector, a classical fallback and the whole-photo box.

The detector network sees the whole photo in gray, resized (stretched) to a square of
``input_size`` pixels and normalised per image with :func:`model.preprocess.normalise`
(:func:`detector_input`); training uses the same function, so both see the same pixels. Its
ONNX graph follows the shared contract: input ``"image"`` float32 [N, 1, S, S]; outputs ``"box"``
[N, 4] (x0, y0, x1, y1 as fractions of the photo's width and height) and ``"confidence"`` [N]
(probability that a fluke is in the photo). Because the photo is stretched, not letterboxed, a
fraction of the input is the same fraction of the photo.

When no model is available, :func:`classical_detect` finds the region that differs most from the
photo's border (sea and sky) and boxes its largest connected component; :func:`whole_image_box`
is the trivial baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.bundle import manifest_number
from model.errors import BundleError, ImageError
from model.preprocess import MAX_PIXELS, Box, load_image, normalise, to_gray

DEFAULT_INPUT_SIZE = 128
DETECTOR_FILE = "detector.onnx"
SOURCES = ("model", "classical", "whole")
# resources/models/detector: the default detector shipped with the app (synthetic-only training).
DEFAULT_DETECTOR_DIR = Path(__file__).resolve().parents[1] / "resources" / "models" / "detector"


@dataclass(frozen=True)
class Detection:
    """One fluke box found in a photo.

    Attributes:
        box: x0, y0, x1, y1 in photo pixels (x1 > x0, y1 > y0, inside the photo).
        confidence: 0..1, how sure the detector is that a fluke is in the box (for the
            classical detector a contrast score; 0.0 for the whole-photo box).
        source: "model", "classical" or "whole".
    """

    box: Box
    confidence: float
    source: str

    def to_dict(self) -> dict:
        return {"box": [float(v) for v in self.box], "confidence": float(self.confidence),
                "source": self.source}


def check_image(image: np.ndarray, name: str = "<image>") -> np.ndarray:
    """Validate a photo array and return it as uint8 RGB or gray.

    Raises:
        ImageError: naming ``name`` when the array is not a 2-D gray or 3-channel photo, is
            smaller than 2x2 pixels, larger than :data:`model.preprocess.MAX_PIXELS`, or empty.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(name, f"not an image array ({type(image).__name__})")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(name, f"expected an HxW or HxWx3 image, got shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise ImageError(name, f"image is too small ({w}x{h} pixels)")
    if h * w > MAX_PIXELS:
        raise ImageError(name, f"image is too large ({w}x{h} pixels; limit {MAX_PIXELS:,})")
    if image.dtype != np.uint8:
        a = np.nan_to_num(image.astype(np.float64))
        if a.max() <= 1.0:
            a = a * 255.0
        image = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def detector_input(image: np.ndarray, size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """A photo (RGB or gray uint8) to the detector's input [1, S, S] float32, normalised."""
    gray = to_gray(image)
    h, w = gray.shape[:2]
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    small = cv2.resize(gray, (size, size), interpolation=interp).astype(np.float32) / 255.0
    return normalise(small)[None]


def fractions_to_box(frac: np.ndarray, width: int, height: int) -> Box:
    """A box as fractions (x0, y0, x1, y1) to photo pixels, ordered, clipped and at least 1 px."""
    x0, y0, x1, y1 = (float(v) for v in np.clip(np.nan_to_num(frac, nan=0.5), 0.0, 1.0))
    x0, x1 = sorted((x0 * width, x1 * width))
    y0, y1 = sorted((y0 * height, y1 * height))
    if x1 - x0 < 1.0:
        x1 = min(float(width), x0 + 1.0)
        x0 = x1 - 1.0
    if y1 - y0 < 1.0:
        y1 = min(float(height), y0 + 1.0)
        y0 = y1 - 1.0
    return (x0, y0, x1, y1)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes (0.0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def whole_image_box(image: np.ndarray) -> Detection:
    """The trivial baseline: the whole photo, confidence 0."""
    image = check_image(image)
    h, w = image.shape[:2]
    return Detection((0.0, 0.0, float(w), float(h)), 0.0, "whole")


def classical_detect(image: np.ndarray, *, work_size: int = 256) -> Detection:
    """Find the fluke without a network: the largest region unlike the photo's border.

    The gray photo is reduced to ``work_size`` on its longer side and smoothed; each pixel's
    difference from the border's median (the sea or sky around the fluke) is thresholded with
    Otsu's method, closed morphologically, and the largest connected component (weighted by its
    contrast) is boxed together with the components scoring
    at least a tenth of it. When nothing stands out, the whole photo is returned.

    Args:
        image: RGB or gray uint8 photo.
        work_size: longer side, in pixels, of the working copy.

    Returns:
        A :class:`Detection` with source "classical" (or "whole" when nothing was found); its
        confidence is the component's contrast to the border, scaled to 0..1.

    Raises:
        ImageError: when the array is not a usable photo.
    """
    image = check_image(image)
    h, w = image.shape[:2]
    gray = to_gray(image)
    s = min(1.0, work_size / max(h, w))
    sw, sh = max(2, round(w * s)), max(2, round(h * s))
    small = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_AREA) if s < 1.0 else gray.copy()
    small = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.01 * max(sw, sh)))
    f = small.astype(np.float32)
    bw = max(1, round(0.04 * min(sw, sh)))
    border = np.concatenate([f[:bw].ravel(), f[-bw:].ravel(), f[:, :bw].ravel(), f[:, -bw:].ravel()])
    med = float(np.median(border))
    spread = float(np.percentile(np.abs(border - med), 75)) + 1.0
    diff = np.abs(f - med)
    diff8 = np.clip(diff * (255.0 / max(diff.max(), 1e-3)), 0, 255).astype(np.uint8)
    thr, mask = cv2.threshold(diff8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, (round(0.03 * max(sw, sh)) | 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return Detection((0.0, 0.0, float(w), float(h)), 0.0, "whole")
    scores = np.zeros(n)
    contrasts = np.zeros(n)
    for i in range(1, n):
        contrasts[i] = float(diff[labels == i].mean()) / spread
        scores[i] = stats[i, cv2.CC_STAT_AREA] * contrasts[i]
    best = int(np.argmax(scores))
    if stats[best, cv2.CC_STAT_AREA] < 0.002 * sw * sh:
        return Detection((0.0, 0.0, float(w), float(h)), 0.0, "whole")
    # a fluke often breaks into pieces (white underside, dark edges, spray): keep every component
    # that scores at least a tenth of the best one
    keep = [i for i in range(1, n) if scores[i] >= 0.1 * scores[best]]
    x0 = min(stats[i, 0] for i in keep)
    y0 = min(stats[i, 1] for i in keep)
    x1 = max(stats[i, 0] + stats[i, 2] for i in keep)
    y1 = max(stats[i, 1] + stats[i, 3] for i in keep)
    box = fractions_to_box(np.array([x0 / sw, y0 / sh, x1 / sw, y1 / sh]), w, h)
    best_contrast = contrasts[best]
    confidence = float(1.0 - np.exp(-best_contrast / 4.0))
    return Detection(box, confidence, "classical")


class Detector:
    """The ONNX fluke detector run with onnxruntime (CPU or whatever provider is present)."""

    def __init__(self, session, path: Path, input_size: int, manifest: dict | None = None):
        self.session = session
        self.path = path
        self.input_size = input_size
        self.manifest = manifest or {}

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Load ``detector.onnx``, or a folder holding it (a model bundle or the default detector).

        Raises:
            BundleError: when the file is missing, not a loadable ONNX model, or lacks the
                contract's input "image" and outputs "box" and "confidence".
        """
        import onnxruntime as ort

        path = Path(path)
        onnx_path = path / DETECTOR_FILE if path.is_dir() else path
        if not onnx_path.is_file():
            raise BundleError(f"{onnx_path}: detector model not found")
        manifest = None
        mpath = onnx_path.parent / "manifest.json"
        if mpath.is_file():
            try:
                manifest = json.loads(mpath.read_text())
            except (OSError, ValueError) as exc:
                raise BundleError(f"{mpath}: unreadable manifest ({exc})") from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 2
        ort.set_default_logger_severity(3)
        try:
            # The detector is tiny (a few ms on a CPU): a GPU provider would cost more in copies
            # and start-up than it saves, so it always runs on the CPU.
            session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{onnx_path}: cannot load detector ({exc})") from None
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if "image" not in inputs or not {"box", "confidence"} <= outputs:
            raise BundleError(f"{onnx_path}: not a detector (needs input 'image', outputs 'box', 'confidence')")
        shape = inputs["image"].shape
        size = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else None
        if size is None:
            size = None
            if isinstance(manifest, dict):
                size = manifest_number(manifest, "detector", "input_size", mpath)
            size = DEFAULT_INPUT_SIZE if size is None else size
        return cls(session, onnx_path, int(size), manifest)

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers the session uses."""
        return self.session.get_providers()

    def predict_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on a prepared batch [N, 1, S, S]; returns boxes [N, 4] (fractions), confidences [N]."""
        box, conf = self.session.run(["box", "confidence"], {"image": np.ascontiguousarray(batch, np.float32)})
        return box, conf.reshape(-1)

    def detect(self, image: np.ndarray, name: str = "<image>") -> Detection:
        """The fluke box in one photo (RGB or gray uint8), in photo pixels.

        Raises:
            ImageError: when the array is not a usable photo.
        """
        image = check_image(image, name)
        h, w = image.shape[:2]
        box, conf = self.predict_batch(detector_input(image, self.input_size)[None])
        return Detection(fractions_to_box(box[0], w, h), float(conf[0]), "model")

    def detect_many(self, images: list[np.ndarray], batch_size: int = 16) -> list[Detection]:
        """:meth:`detect` for several photos, batched."""
        out: list[Detection] = []
        for i in range(0, len(images), batch_size):
            chunk = [check_image(im) for im in images[i:i + batch_size]]
            batch = np.stack([detector_input(im, self.input_size) for im in chunk])
            boxes, confs = self.predict_batch(batch)
            for im, b, c in zip(chunk, boxes, confs, strict=True):
                out.append(Detection(fractions_to_box(b, im.shape[1], im.shape[0]), float(c), "model"))
        return out


class ClassicalDetector:
    """The fallback with the same ``detect`` method as :class:`Detector`, no model needed."""

    input_size = None
    path = None
    manifest: dict = {}

    def detect(self, image: np.ndarray, name: str = "<image>") -> Detection:
        """See :func:`classical_detect`."""
        return classical_detect(check_image(image, name))

    def detect_many(self, images: list[np.ndarray], batch_size: int = 16) -> list[Detection]:
        """:meth:`detect` for several photos."""
        return [self.detect(im) for im in images]


def default_detector(path: str | Path | None = None) -> Detector | ClassicalDetector:
    """The detector the app uses: the model at ``path`` (default: the one shipped in
    resources/models/detector), or the classical fallback when no model is there or it cannot load."""
    path = Path(path) if path is not None else DEFAULT_DETECTOR_DIR
    try:
        return Detector.load(path)
    except BundleError:
        return ClassicalDetector()


def detect_file(path: str | Path, detector: Detector | ClassicalDetector | None = None) -> Detection:
    """Load a photo file and detect its fluke (box in the photo's own pixels, EXIF-rotated).

    Raises:
        ImageError: naming the file when it cannot be read or used.
    """
    detector = detector if detector is not None else default_detector()
    image = load_image(path)
    return detector.detect(image, str(path))


def add_detector_to_bundle(staging: str | Path, detector: str | Path | None = None) -> dict:
    """Copy a detector (default: the shipped one) into a bundle being built; return its manifest entry.

    Use it between :func:`model.bundle.staging_dir` and :func:`model.bundle.finalize_bundle`, and
    put the returned dict under the manifest's ``"detector"`` key.

    Raises:
        BundleError: when the detector cannot be loaded.
    """
    import shutil

    det = Detector.load(detector if detector is not None else DEFAULT_DETECTOR_DIR)
    shutil.copyfile(det.path, Path(staging) / DETECTOR_FILE)
    entry = {"input_size": det.input_size}
    if det.manifest.get("trained_on"):
        entry["trained_on"] = det.manifest["trained_on"]
    return entry
