"""Large and odd real photos (issue 19, class 7, and the weak items on photos).

- Photos up to flukeid's own limit (MAX_PIXELS = 200 MP) open: Pillow's 89.5 MP warning and its
  179 MP refusal no longer pre-empt it; beyond it the message gives the limit.
- Photos are reduced while decoding (JPEG draft) or right after (Pillow BOX resize) before any
  copy or conversion, so a small-looking 16-bit PNG cannot take gigabytes.
- A 20000x10 panorama imports (reduced to 1024x2, not 1024x1) with its real size recorded.
- Pillow's EXIF UserWarnings do not reach the terminal.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.catalog import Catalog
from app.services.importing import MODEL_SIDE, import_photos
from model.api import ImageError, load_image
from model.preprocess import MAX_PIXELS
from tests.app.conftest import FakeDetector, write_photo
from tests.reliability.hostile import cli

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def _jpeg_declaring(path: Path, w: int, h: int) -> Path:
    """A small JPEG whose frame header (SOF0) declares w x h pixels (the data stays small)."""
    Image.new("L", (16, 16), 90).save(path, quality=90)
    data = bytearray(path.read_bytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    # a 102-megapixel photo (a current medium-format camera), gray to keep the test's own memory low
    im = Image.new("L", (12400, 8250), 120)
    im.paste(40, (3000, 2000, 9000, 6000))
    im.save(d / "mf102.jpg", quality=85)
    del im
    # the 194 KB 16-bit 9400 x 9400 PNG
    a = np.full((9400, 9400), 20000, np.uint16)
    a[3000:6000, 2000:7000] = 40000
    Image.fromarray(a).save(d / "sixteen.png")
    del a
    return d


def test_a_102_megapixel_photo_imports(big, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning, no other warning
        arr = load_image(big / "mf102.jpg", max_side=MODEL_SIDE)
    assert arr.shape == (682, 1024, 3)  # decoded at 1/8 (1550 x 1032), then reduced
    with Catalog.create(tmp_path / "cat") as cat:
        rep = import_photos(cat, [big / "mf102.jpg"], detector=FakeDetector())
        assert rep.errors == [] and len(rep.imported) == 1
        ph = cat.photo(rep.imported[0])
        assert (ph.width, ph.height) == (12400, 8250)
        x0, y0, x1, y1 = cat.current_box(ph.id).box
        assert 0 <= x0 < x1 <= 12400 and 0 <= y0 < y1 <= 8250


def test_a_190_megapixel_header_gets_past_pillows_own_refusal(tmp_path):
    """Pillow refuses above 2 x 89.5 MP = 179 MP unless told otherwise; 190 MP is within flukeid's limit.

    (The file is a 16x16 JPEG whose header declares 16000x11900: decoded at 1/8 with the missing
    data filled in, so it loads without needing 190 MP of memory in the test.)
    """
    p = _jpeg_declaring(tmp_path / "190mp.jpg", 16000, 11900)
    assert load_image(p, max_side=MODEL_SIDE).shape == (762, 1024, 3)


@pytest.mark.parametrize("w,h,fragment", [
    (16384, 12300, "too large (16384x12300 pixels; limit 200,000,000)"),  # 201.5 MP: over the limit
    (30000, 30000, "limit 200,000,000"),  # 900 MP: over Pillow's own hard refusal too
    (65535, 65535, "limit 200,000,000"),
])
def test_pixel_limit_is_flukeids_and_the_message_gives_it(tmp_path, w, h, fragment):
    p = _jpeg_declaring(tmp_path / f"{w}x{h}.jpg", w, h)
    with pytest.raises(ImageError) as err:
        load_image(p, max_side=MODEL_SIDE)
    assert fragment in err.value.problem, err.value.problem
    assert "decompression bomb" not in err.value.problem or w * h > 2 * MAX_PIXELS


def _peak_mb(path: Path, max_side: int | None) -> tuple[tuple, float]:
    """(shape, peak resident memory added by load_image in MB), measured in a fresh process."""
    code = (
        "import resource, sys\n"
        "from model.preprocess import load_image\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"a = load_image(sys.argv[1], max_side={max_side!r})\n"
        "print(a.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=90,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout
    shape, mb = out.strip().rsplit(" ", 1)
    return shape, float(mb)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_peak_memory_per_photo_is_bounded(big):
    """Measured on the 2-core machine: 16-bit 9400x9400 PNG 1,688 MB before, ~190 MB now; 102 MP JPEG ~17 MB."""
    shape, mb = _peak_mb(big / "sixteen.png", MODEL_SIDE)
    assert shape == "(1024, 1024, 3)" and mb < 400, mb
    shape, mb = _peak_mb(big / "mf102.jpg", MODEL_SIDE)
    assert shape == "(682, 1024, 3)" and mb < 100, mb


def test_a_20000x10_panorama_imports_with_its_real_size(tmp_path):
    p = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 20000, 3), dtype=np.uint8)).save(p)
    assert load_image(p, max_side=MODEL_SIDE).shape == (2, 1024, 3)
    with Catalog.create(tmp_path / "cat") as cat:
        rep = import_photos(cat, [p], detector=FakeDetector())
        assert rep.errors == [] and len(rep.imported) == 1
        ph = cat.photo(rep.imported[0])
        assert (ph.width, ph.height) == (20000, 10)
        x0, y0, x1, y1 = cat.current_box(ph.id).box
        assert 0 <= x0 < x1 <= 20000 and 0 <= y0 < y1 <= 10  # scaled per axis
    thin = tmp_path / "thin.png"
    Image.new("RGB", (20000, 1)).save(thin)
    with pytest.raises(ImageError, match=r"too small \(20000x1 pixels\)"):
        load_image(thin, max_side=MODEL_SIDE)


def _bad_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF has a tag pointing past its end (Pillow: 'Tag data larger than file')."""
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 0x010F, 2, 100, 200)
            + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 0))
    write_photo(path, 3)
    Image.open(path).save(path, exif=b"Exif\x00\x00" + tiff)
    return path


def test_exif_warnings_do_not_leak(tmp_path):
    p = _bad_exif_jpeg(tmp_path / "photos" / "bad exif.jpg")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Image.open(p) as im:
            im.getexif()
    assert any(issubclass(w.category, UserWarning) for w in seen)  # Pillow does warn on this file
    cat = tmp_path / "cat"
    Catalog.create(cat).close()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = cli("import", cat, tmp_path / "photos", "--no-detect", "--no-embed")
        assert r.rc == 0 and "1 photo imported" in r.out
        load_image(p)
    assert not [w for w in seen if issubclass(w.category, UserWarning)], [str(w.message) for w in seen]
    # and in a real terminal (a fresh process: warnings printed to stderr by default)
    Catalog.create(tmp_path / "cat2").close()
    out = subprocess.run([sys.executable, "-m", "app", "import", str(tmp_path / "cat2"), str(p), "--no-detect",
                          "--no-embed"], capture_output=True, text=True, timeout=90, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0 and "1 photo imported" in out.stdout, out.stderr
    assert "Warning" not in out.stderr, out.stderr
