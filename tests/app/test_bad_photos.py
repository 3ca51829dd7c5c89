"""Odd but valid photos import; broken ones are reported by name while the rest import."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from app.services.importing import import_photos
from tests.app.conftest import write_photo


def _odd_photos(d):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65535, (40, 60), dtype=np.uint16)).save(d / "sixteen_bit.png")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).convert("P").save(d / "palette.png")
    Image.fromarray(rng.integers(0, 255, (40, 60, 4), dtype=np.uint8), "RGBA").save(d / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(d / "tiff photo.tif")
    write_photo(d / "baleine à bosse é.jpg", 77)
    return d


def test_odd_formats_and_names_import(catalog, tmp_path):
    d = _odd_photos(tmp_path / "odd")
    rep = import_photos(catalog, [d])
    assert not rep.errors, rep.errors
    assert len(rep.imported) == 6
    names = {os.path.basename(catalog.photo(p).path) for p in rep.imported}
    assert "baleine à bosse é.jpg" in names


def test_decompression_bomb_is_refused_by_name(catalog, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (10, 10)).save(bomb)
    data = bytearray(bomb.read_bytes())  # declare 40000 x 40000 pixels in the header (tiny file)
    data[16:24] = struct.pack(">II", 40000, 40000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))
    ok = write_photo(tmp_path / "ok.jpg", 1)
    rep = import_photos(catalog, [bomb, ok])
    assert len(rep.imported) == 1
    assert rep.errors[0][0].endswith("bomb.png")
    assert "large" in rep.errors[0][1] or "bomb" in rep.errors[0][1]


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_reported(catalog, tmp_path):
    p = write_photo(tmp_path / "secret.jpg", 2)
    p.chmod(0)
    rep = import_photos(catalog, [p])
    assert rep.errors and "permission" in rep.errors[0][1]
