"""Numbers read from a model bundle's manifest are finite and in range, and an ONNX external-data
file is checksummed (issue 19, class 5, the manifest half; labels-file boxes are the labels work).

model.bundle.MANIFEST_NUMBERS lists every number a manifest gives the program; verify_bundle
checks each with manifest_number (naming the manifest file and the field), Engine reads them the
same way, and Engine.load compares embedding_dim with the ONNX files' fixed sizes.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.catalog import Catalog
from app.services import matching
from model.api import BundleError, Engine, verify_bundle
from model.bundle import MANIFEST_NUMBERS, sha256_file
from tests.reliability.hostile import cli

pytestmark = pytest.mark.timeout(120)


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def _set(bundle: Path, field: str, value, *, raw: str | None = None) -> None:
    """Set a manifest field (``section.key`` or ``key``); ``raw`` writes a JSON literal such as NaN."""
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    section, _, key = field.rpartition(".")
    where = m.setdefault(section, {}) if section else m
    where[key] = "__RAW__" if raw is not None else value
    text = json.dumps(m)
    if raw is not None:
        text = text.replace('"__RAW__"', raw)
    path.write_text(text)


BAD = [  # (field, value or raw JSON literal, fragment of the message)
    ("new_individual_threshold", "NaN", "finite"),
    ("new_individual_threshold", "Infinity", "finite"),
    ("new_individual_threshold", "-Infinity", "finite"),
    ("new_individual_threshold", -5, "out of range"),
    ("new_individual_threshold", 1.5, "out of range"),
    ("new_individual_threshold", "abc", "must be a number"),
    ("new_individual_threshold", True, "must be a number"),
    ("new_individual_threshold", None, "must be a number"),
    ("new_individual_threshold", [0.5], "must be a number"),
    ("branch.embedding_dim", 7, "embedding_dim is 7"),  # in range, but not what the ONNX gives
    ("branch.embedding_dim", "x", "must be a number"),
    ("branch.embedding_dim", 16.0, "whole number"),
    ("branch.embedding_dim", 0, "out of range"),
    ("branch.embedding_dim", 10**12, "out of range"),
    ("preprocessing.input_height", "128", "must be a number"),
    ("preprocessing.input_height", 64.5, "whole number"),
    ("preprocessing.input_height", -64, "out of range"),
    ("preprocessing.input_width", "NaN", "must be a whole number"),
    ("preprocessing.margin", "NaN", "finite"),
    ("preprocessing.margin", 7, "out of range"),
    ("preprocessing.eps", 0, "out of range"),
    ("preprocessing.eps", "1e-6", "must be a number"),
    ("detector.input_size", "Infinity", "whole number"),
    ("branch.feature_channels", -1, "out of range"),
]


def _literal(value) -> str | None:
    return value if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity") else None


@pytest.mark.parametrize("field,value,fragment", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_manifest_numbers_are_refused_naming_file_and_field(tiny_bundle, tmp_path, field, value, fragment):
    b = _copy(tiny_bundle, tmp_path / "b")
    _set(b, field, value, raw=_literal(value))
    key = field.rpartition(".")[2]
    with pytest.raises(BundleError) as err:
        Engine.load(b, device="cpu")
    msg = str(err.value)
    assert key in msg and fragment in msg, msg
    assert "manifest.json" in msg or ".onnx" in msg, msg


def test_every_listed_number_is_covered_by_the_table():
    fields = {f"{s}.{k}" if s else k for s, k in MANIFEST_NUMBERS}
    assert {f for f, _, _ in BAD} == fields


def test_good_edge_values_load(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path / "b")
    _set(b, "new_individual_threshold", 0)
    _set(b, "preprocessing.margin", 0.0)
    eng = Engine.load(b, device="cpu")
    assert eng.new_individual_threshold == 0.0 and eng.embedding_dim == 16
    emb = eng.embed([np.full((80, 80, 3), 128, np.uint8)])
    assert emb.shape == (1, 16) and np.isfinite(emb).all()


def test_match_with_a_bad_threshold_says_so_through_the_cli(tiny_bundle, tmp_path):
    from tests.app.conftest import write_photo

    b = _copy(tiny_bundle, tmp_path / "b")
    _set(b, "new_individual_threshold", "NaN", raw="NaN")
    cat = tmp_path / "cat"
    Catalog.create(cat).close()
    photo = write_photo(tmp_path / "q.jpg", 5)
    r = cli("match", cat, photo, "--model", b)
    assert r.rc == 2 and "new_individual_threshold must be finite" in r.err and "manifest.json" in r.err, r.err
    assert "Traceback" not in r.err and "score nan" not in r.out


def _external_bundle(tiny_bundle: Path, dest: Path, *, listed: bool) -> Path:
    """The tiny bundle with branch.onnx's weights moved to an external data file ``branch.data``."""
    import onnx

    b = _copy(tiny_bundle, dest)
    model = onnx.load(str(b / "branch.onnx"))
    onnx.save_model(model, str(b / "branch.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="branch.data", size_threshold=0)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["branch.onnx"] = sha256_file(b / "branch.onnx")
    if listed:
        m["files"]["branch.data"] = sha256_file(b / "branch.data")
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def test_unlisted_external_data_file_is_refused(tiny_bundle, tmp_path):
    b = _external_bundle(tiny_bundle, tmp_path / "b", listed=False)
    with pytest.raises(BundleError, match=r"branch\.onnx.*external data from 'branch\.data'.*does not list"):
        verify_bundle(b)
    data = bytearray((b / "branch.data").read_bytes())  # the case: damaged and unlisted
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    (b / "branch.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not list"):
        Engine.load(b, device="cpu")


def test_listed_external_data_is_checksummed_and_loads(tiny_bundle, tmp_path):
    b = _external_bundle(tiny_bundle, tmp_path / "b", listed=True)
    eng = Engine.load(b, device="cpu")
    ref = Engine.load(tiny_bundle, device="cpu")
    im = [np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)]
    assert np.allclose(eng.embed(im), ref.embed(im), atol=1e-5)
    data = bytearray((b / "branch.data").read_bytes())
    data[-8:] = b"\x00\x00\xc0\x7f" * 2  # NaN floats
    (b / "branch.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"branch\.data: checksum mismatch"):
        Engine.load(b, device="cpu")


@pytest.mark.parametrize("value", ["NaN", -5, "abc"])
def test_activating_a_bundle_with_a_bad_threshold_keeps_the_previous_model(catalog, tiny_bundle, value):
    from app.services.retraining import activate
    from tests.reliability.conftest import snapshot

    good = _copy(tiny_bundle, catalog.models_dir / "good")
    catalog.add_model("good", good, activate=True)
    bad = _copy(tiny_bundle, catalog.models_dir / "bad")
    _set(bad, "new_individual_threshold", value, raw=_literal(value))
    catalog.add_model("bad", bad)
    before = snapshot(catalog)
    with pytest.raises(BundleError, match="new_individual_threshold"):
        activate(catalog, "bad")
    assert catalog.active_model().version == "good" and snapshot(catalog) == before
    engine = matching.load_engine(catalog)
    assert engine is not None and math.isfinite(engine.new_individual_threshold)
