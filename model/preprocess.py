"""Photo decoding and the crop/normalisation shared by training and inference (numpy + OpenCV only).

Training (torch) and the running app (onnxruntime) both call :func:`crop_to_input` and
:func:`normalise`, so the network sees exactly the same pixels in both.
"""

from __future__ import annotations

import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ImageError
from model.safe_io import MAX_PHOTO_BYTES, file_kind

# A photo larger than this many pixels is refused (decompression-bomb guard; 200 MP covers any camera).
MAX_PIXELS = 200_000_000
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a network input. Saved in every bundle manifest."""

    input_height: int = 384
    input_width: int = 384
    margin: float = 0.05  # fraction of the box's width/height added on each side
    eps: float = 1e-6

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{k: d[k] for k in ("input_height", "input_width", "margin", "eps") if k in d})


def load_image(path: str | Path, *, max_side: int | None = None) -> np.ndarray:
    """Decode a photo as RGB uint8 [H, W, 3] with its EXIF orientation applied.

    Args:
        path: the photo file (JPEG, PNG, TIFF; HEIC when pillow-heif is installed).
        max_side: if given, large photos are reduced so the longer side is at most this
            (JPEG draft decoding makes that fast).

    Raises:
        ImageError: naming the file and the problem (missing, empty, not an image, truncated,
            too large, unreadable).
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot access file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder forever, /dev/zero never ends
        raise ImageError(path, f"is {file_kind(st.st_mode)}, not a regular file")
    size = st.st_size
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)")
    if size > MAX_PHOTO_BYTES:
        raise ImageError(path, f"file is too large ({size:,} bytes; limit {MAX_PHOTO_BYTES:,})")
    _use_project_pixel_limit()
    try:
        with warnings.catch_warnings():
            # The header was checked against MAX_PIXELS; Pillow's own warning (89.5 MP) must not pre-empt
            # it, and its EXIF parser's UserWarnings ("Possibly corrupt EXIF data") are not for the user.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w < 2 or h < 2:
                    raise ImageError(path, f"image is too small ({w}x{h} pixels)")
                if w * h > MAX_PIXELS:
                    raise ImageError(path, f"image is too large ({w}x{h} pixels; limit {MAX_PIXELS:,})")
                if max_side and max(w, h) > 2 * max_side and im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))  # the decoder scales by 1/2, 1/4 or 1/8
                im.load()
                if max_side and max(im.size) > max_side:  # reduce before any copy or conversion
                    im = im.resize(reduced_size(im.size, max_side), Image.Resampling.BOX)
                im = ImageOps.exif_transpose(im)
                arr = _to_rgb8(im)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(path, f"image declares huge dimensions (possible decompression bomb; "
                               f"limit {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"cannot decode image ({exc})") from None
    except MemoryError:
        raise ImageError(path, "not enough memory to decode this photo") from None
    if max_side and max(arr.shape[:2]) > max_side:
        arr = cv2.resize(arr, reduced_size((arr.shape[1], arr.shape[0]), max_side), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def reduced_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is ``max_side``, the shorter at least 2 pixels (a 20000x10
    panorama becomes 1024x2, not the 1024x1 that a detector would call too small)."""
    w, h = size
    s = max_side / max(w, h)
    return max(2, min(w, round(w * s))), max(2, min(h, round(h * s)))


def _use_project_pixel_limit() -> None:
    """Let Pillow open photos up to MAX_PIXELS (its default refuses at 2 x 89.5 MP = 179 MP).

    Pillow's limit is a process-wide setting; it is only ever raised to flukeid's own limit, which
    load_image checks from the header before decoding. Above 2 x MAX_PIXELS Pillow still refuses.
    """
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow mode (16-bit, CMYK, palette, alpha, float) to RGB uint8."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        lo, hi = float(a.min()), float(a.max())
        g = np.zeros(a.shape, np.uint8)
        if hi > lo:  # stretched to 0..255, in row blocks: no full-size float copy of a large photo
            scale = 255.0 / (hi - lo)
            step = max(1, (1 << 22) // max(1, a.shape[1]))
            for i in range(0, a.shape[0], step):
                g[i:i + step] = ((a[i:i + step].astype(np.float32) - lo) * scale).astype(np.uint8)
        return np.stack([g, g, g], axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] (or already gray [H, W]) to gray uint8 [H, W]."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def crop_matrix(box: Box | None, image_hw: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    """The 2x3 affine matrix that maps photo pixels into the network input.

    The box (with ``prep.margin`` added) is scaled to fit the input, aspect preserved, centred.
    ``box=None`` uses the whole photo.
    """
    h, w = image_hw
    if box is None:
        x0, y0, x1, y1 = 0.0, 0.0, float(w), float(h)
    else:
        x0, y0, x1, y1 = (float(v) for v in box)
        mx, my = (x1 - x0) * prep.margin, (y1 - y0) * prep.margin
        x0, y0, x1, y1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    s = min(prep.input_width / bw, prep.input_height / bh)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return np.array(
        [[s, 0.0, prep.input_width / 2.0 - s * cx], [0.0, s, prep.input_height / 2.0 - s * cy]],
        dtype=np.float64,
    )


def crop_to_input(image: np.ndarray, box: Box | None, prep: Preprocessing) -> np.ndarray:
    """Crop the box (plus margin) out of a photo into a gray float32 [H, W] in 0..1, not normalised."""
    gray = to_gray(image)
    m = crop_matrix(box, gray.shape[:2], prep)
    interp = cv2.INTER_AREA if m[0, 0] < 1.0 else cv2.INTER_LINEAR
    out = cv2.warpAffine(gray, m, (prep.input_width, prep.input_height), flags=interp,
                         borderMode=cv2.BORDER_REPLICATE)
    return out.astype(np.float32) / 255.0


def normalise(batch: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-image normalisation (zero mean, unit std over each image) of [..., H, W] float32."""
    x = batch.astype(np.float32)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    return (x - mean) / (std + eps)


def prepare_batch(images: list[np.ndarray], boxes: list[Box | None], prep: Preprocessing) -> np.ndarray:
    """Photos and boxes to the network's input batch [N, 1, H, W] float32."""
    crops = np.stack([crop_to_input(im, b, prep) for im, b in zip(images, boxes, strict=True)])
    return normalise(crops, prep.eps)[:, None]
