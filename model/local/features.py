"""Local features of one fluke photo: RootSIFT keypoints on the contrast-equalised grayscale box crop.

The recipe (HotSpotter's, with OpenCV doing the work):

1. the box crop in grayscale (the whole photo when there is no box), resized so its longer side
   is about ``long_side`` pixels (a fluke is then described at one scale whatever the camera);
2. CLAHE (contrast-limited adaptive histogram equalisation), so the marks on a dark or
   back-lit fluke give keypoints too;
3. SIFT (``cv2.SIFT_create``), keeping the ``max_keypoints`` strongest;
4. RootSIFT: each descriptor L1-normalised, then its square root (Euclidean distance between
   RootSIFT vectors is the Hellinger kernel on SIFT, which matches better than plain SIFT);
5. quantised to uint8 (``DESC_SCALE``; RootSIFT components stay below 0.33 on real flukes, so
   255/700 = 0.364 leaves room and the rounding error is a quarter of a percent of a component).

Measured on humpback_kaggle2019_v2 (bench/bench_local.py): 19.6 ms median a photo on this 2-core
CPU (decoded photo given). Leave-one-out top-1/top-5 over its 111 multi-photo queries for other
settings: long side 320: 56.8/66.7%, 384: 67.6/69.4%, 448: 61.3/66.7%, 512: 65.8/68.5%; 1,000
keypoints at 512 changed nothing on the 46 protocol queries, 1,000 at 768 lost a query. The
differences are within a few queries (noise); 512 stays, 384 would be 1.6x faster. Variations of
CLAHE (off, clip 1 or 4) and SIFT's thresholds did not raise the share of same-whale pairs verified.

Positions are returned in the ORIGINAL photo's pixel coordinates (box offset and resize undone), so
the catalog, the evidence drawing and spatial verification all speak one coordinate system.

Storage (:meth:`LocalFeatures.to_bytes`): a 36-byte header (magic, format version, feature
version, flags, keypoint count, box, CRC-32 of the payload), then per keypoint x, y (float32),
scale (float16) and the 128-byte descriptor: 138 bytes a keypoint, about 69 KB for 500.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from model.errors import DataError

# Bump when extraction changes (recipe, parameters, quantisation): stored features of another
# version are refused by from_bytes and recomputed by the app.
FEATURE_VERSION = 1
# Layout of to_bytes (independent of the extraction recipe).
FORMAT_VERSION = 1
MAGIC = b"FKLF"
DESC_DIM = 128
DESC_SCALE = 700.0
DEFAULT_MAX_KEYPOINTS = 500
DEFAULT_LONG_SIDE = 512
# A crop narrower or shorter than this (in photo pixels) has nothing to describe: empty features.
MIN_CROP_SIDE = 8
CLAHE_CLIP = 2.0
CLAHE_TILES = (8, 8)

_HEADER = struct.Struct("<4sHHHHI4fI")  # magic, format, feature version, flags, reserved, K, box, crc
_FLAG_MIRRORED = 1
_PER_KEYPOINT = 4 * 2 + 2 + DESC_DIM


def _empty_xy() -> np.ndarray:
    return np.zeros((0, 2), np.float32)


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and RootSIFT descriptors of one photo, strongest keypoint first.

    Attributes:
        xy: float32 [K, 2] keypoint positions (x, y) in the original photo's pixels.
        desc: uint8 [K, 128] RootSIFT descriptors, quantised (``DESC_SCALE``).
        scale: float16 [K] keypoint diameter in the original photo's pixels.
        box: the region that was described (x0, y0, x1, y1) in photo pixels, clipped to the photo;
            (0, 0, 0, 0) when nothing could be described.
        mirrored: True when the crop was mirrored left-right before extraction (the flip-aware
            query); positions are still in the unmirrored photo's coordinates.
        version: the FEATURE_VERSION that computed them.
    """

    xy: np.ndarray = field(default_factory=_empty_xy)
    desc: np.ndarray = field(default_factory=lambda: np.zeros((0, DESC_DIM), np.uint8))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mirrored: bool = False
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        k = len(self.xy)
        if self.xy.shape != (k, 2) or self.xy.dtype != np.float32:
            raise ValueError(f"xy must be float32 [K, 2], got {self.xy.dtype} {self.xy.shape}")
        if self.desc.shape != (k, DESC_DIM) or self.desc.dtype != np.uint8:
            raise ValueError(f"desc must be uint8 [{k}, {DESC_DIM}], got {self.desc.dtype} {self.desc.shape}")
        if self.scale.shape != (k,) or self.scale.dtype != np.float16:
            raise ValueError(f"scale must be float16 [{k}], got {self.scale.dtype} {self.scale.shape}")

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def extent(self) -> float:
        """The longer side of the described region in photo pixels (1.0 when empty)."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0, 1.0)

    def descriptors_f32(self) -> np.ndarray:
        """Descriptors as float32 (what faiss and OpenCV's matcher take), same quantised units."""
        return self.desc.astype(np.float32)

    def to_bytes(self) -> bytes:
        """Compact, versioned, checksummed bytes (see the module docstring for the layout)."""
        payload = (np.ascontiguousarray(self.xy, "<f4").tobytes()
                   + np.ascontiguousarray(self.scale, "<f2").tobytes()
                   + np.ascontiguousarray(self.desc).tobytes())
        flags = _FLAG_MIRRORED if self.mirrored else 0
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, self.version, flags, 0, len(self), *self.box,
                              zlib.crc32(payload))
        return header + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_version: int | None = FEATURE_VERSION) -> LocalFeatures:
        """Decode :meth:`to_bytes` output.

        Args:
            data: the stored bytes.
            expected_version: refuse features computed by another FEATURE_VERSION (stale: the app
                recomputes them); None accepts any.

        Raises:
            DataError: not local features, truncated, corrupt (checksum), or of another version.
        """
        data = bytes(data) if not isinstance(data, bytes) else data
        if len(data) < _HEADER.size:
            raise DataError(f"local features are truncated: {len(data)} bytes, the header alone is {_HEADER.size}")
        magic, fmt, version, flags, _reserved, k, x0, y0, x1, y1, crc = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DataError(f"not local features (starts with {magic!r}, expected {MAGIC!r})")
        if fmt != FORMAT_VERSION:
            raise DataError(f"local features are stored in format {fmt}; this program reads format {FORMAT_VERSION}")
        if expected_version is not None and version != expected_version:
            raise DataError(f"local features were computed by version {version}; this program computes "
                            f"version {expected_version} (recompute them)")
        expected = _HEADER.size + k * _PER_KEYPOINT
        if len(data) != expected:
            raise DataError(f"local features are {'truncated' if len(data) < expected else 'too long'}: "
                            f"{len(data)} bytes for {k} keypoints, expected {expected}")
        payload = memoryview(data)[_HEADER.size:]
        if zlib.crc32(payload) != crc:
            raise DataError(f"local features are corrupt (checksum mismatch over {k} keypoints)")
        o = 0
        xy = np.frombuffer(payload, "<f4", 2 * k, o).reshape(k, 2).astype(np.float32)
        o += 8 * k
        scale = np.frombuffer(payload, "<f2", k, o).astype(np.float16)
        o += 2 * k
        desc = np.frombuffer(payload, np.uint8, DESC_DIM * k, o).reshape(k, DESC_DIM).copy()
        return cls(xy, desc, scale, (x0, y0, x1, y1), bool(flags & _FLAG_MIRRORED), version)


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise ValueError(f"image must be HxW or HxWx3 (RGB), got shape {image.shape}")


def _clip_box(box, w: int, h: int) -> tuple[int, int, int, int]:
    if box is None:
        return 0, 0, w, h
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        return 0, 0, 0, 0
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    return ix0, iy0, max(ix0, ix1), max(iy0, iy1)


# OpenCV objects per thread (the app extracts in a worker thread; CLAHE keeps buffers between calls)
_LOCAL = threading.local()


def _sift(max_keypoints: int):
    cache = getattr(_LOCAL, "sift", None)
    if cache is None:
        cache = _LOCAL.sift = {}
    sift = cache.get(max_keypoints)
    if sift is None:
        sift = cache[max_keypoints] = cv2.SIFT_create(nfeatures=max_keypoints)
    return sift


def _clahe():
    clahe = getattr(_LOCAL, "clahe", None)
    if clahe is None:
        clahe = _LOCAL.clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)
    return clahe


def root_sift(desc: np.ndarray) -> np.ndarray:
    """SIFT descriptors (float) -> quantised RootSIFT (uint8): L1-normalise, square root, scale."""
    desc = np.asarray(desc, np.float32)
    desc = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + 1e-7))
    return np.clip(np.rint(desc * DESC_SCALE), 0, 255).astype(np.uint8)


def extract(image: np.ndarray, box=None, *, max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
            long_side: int = DEFAULT_LONG_SIDE, mirror: bool = False) -> LocalFeatures:
    """RootSIFT features of a photo's box crop (see the module docstring for the recipe).

    Args:
        image: the photo, uint8 HxW (grayscale) or HxWx3 (RGB).
        box: (x0, y0, x1, y1) in the photo's pixels, clipped to the photo; None for the whole photo.
        max_keypoints: keep at most this many keypoints (the strongest).
        long_side: the crop is resized so its longer side is this many pixels.
        mirror: describe the left-right mirrored crop (the flip-aware query); positions stay in
            the photo's own coordinates.

    Returns:
        The features, strongest first; empty (not an error) for a degenerate box or a crop too
        small or too flat to give keypoints.
    """
    gray = _gray(image)
    h, w = gray.shape
    x0, y0, x1, y1 = _clip_box(box, w, h)
    if x1 - x0 < MIN_CROP_SIDE or y1 - y0 < MIN_CROP_SIDE:
        return LocalFeatures(box=(float(x0), float(y0), float(x1), float(y1)), mirrored=mirror)
    crop = gray[y0:y1, x0:x1]
    s = long_side / max(crop.shape)
    if abs(s - 1.0) > 1e-3:
        crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if mirror:
        crop = cv2.flip(crop, 1)
    crop = _clahe().apply(np.ascontiguousarray(crop))
    kps, desc = _sift(max_keypoints).detectAndCompute(crop, None)
    fbox = (float(x0), float(y0), float(x1), float(y1))
    if desc is None or not kps:
        return LocalFeatures(box=fbox, mirrored=mirror)
    order = np.argsort([-kp.response for kp in kps], kind="stable")[:max_keypoints]
    pts = np.array([kps[i].pt for i in order], np.float32)
    if mirror:
        pts[:, 0] = crop.shape[1] - 1 - pts[:, 0]
    sx, sy = (x1 - x0) / crop.shape[1], (y1 - y0) / crop.shape[0]
    xy = np.empty_like(pts)
    xy[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5 + x0  # pixel centres: resize maps (x + .5) by the scale
    xy[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5 + y0
    size = np.array([kps[i].size for i in order], np.float32) * (sx + sy) / 2
    return LocalFeatures(xy.astype(np.float32), root_sift(desc[order]), size.astype(np.float16), fbox, mirror)
