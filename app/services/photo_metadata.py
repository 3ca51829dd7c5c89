"""A photo's EXIF metadata: size after orientation, date taken, GPS position and camera.

Pillow reads the tags; damaged or missing EXIF gives None fields, never an error (only an
unreadable file raises). Split from :mod:`app.services.importing`, which stores what this reads.
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from pathlib import Path

from PIL import Image


def _ratio(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        num, den = v
        return float(num) / float(den)


def _gps(gps: dict) -> tuple[float | None, float | None]:
    try:
        def deg(vals, ref, neg):
            d, m, s = (_ratio(x) for x in vals)
            val = d + m / 60.0 + s / 3600.0
            return -val if str(ref).upper().startswith(neg) else val

        lat = deg(gps[2], gps.get(1, "N"), "S")
        lon = deg(gps[4], gps.get(3, "E"), "W")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None, None
        return round(lat, 7), round(lon, 7)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None, None


_EXIF_DATE = re.compile(r"(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def exif_date(raw) -> str | None:
    """An EXIF date (``2019:08:14 09:30:05``; also with ``-`` or ``/``, without seconds, with
    sub-seconds or a time zone after it) as ISO text; None when blank, zero or malformed."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    m = _EXIF_DATE.match(str(raw).strip("\x00 ").strip())
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(v) if v else 0 for v in m.groups())
    try:
        return datetime(y, mo, d, h, mi, sec).isoformat()
    except ValueError:  # 0000:00:00 and the like
        return None


def _ifd(exif, tag: int) -> dict:
    """A sub-IFD of the EXIF data (empty when missing or damaged)."""
    try:
        return dict(exif.get_ifd(tag))
    except (KeyError, TypeError, ValueError, AttributeError, OSError, SyntaxError):
        return {}


def read_metadata(path: Path) -> dict:
    """Width/height (after EXIF orientation), orientation, date taken, GPS and camera of a photo.

    Missing or malformed EXIF gives None fields; only an unreadable file raises (OSError etc.).
    """
    with warnings.catch_warnings():  # Pillow's EXIF parser warns about damaged tags: not for the user
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            w, h = im.size
            exif = im.getexif()
            exif_ifd, gps_ifd = _ifd(exif, 0x8769), _ifd(exif, 0x8825)
    orientation = exif.get(274)
    try:
        orientation = int(orientation) if orientation is not None else None
    except (TypeError, ValueError):
        orientation = None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    sub = exif_ifd
    # DateTimeOriginal, then DateTimeDigitized, then DateTime: the first that reads as a date
    taken = next((t for t in map(exif_date, (sub.get(36867), sub.get(36868), exif.get(306))) if t), None)
    try:
        lat, lon = _gps(dict(gps_ifd))
    except (KeyError, TypeError, AttributeError):
        lat, lon = None, None
    make = str(exif.get(271, "") or "").strip("\x00 ").strip()
    model = str(exif.get(272, "") or "").strip("\x00 ").strip()
    camera = (model if model.startswith(make) else f"{make} {model}".strip()) or None
    return {"width": w, "height": h, "orientation": orientation, "taken_at": taken,
            "latitude": lat, "longitude": lon, "camera": camera}
