"""Adding a model bundle to a catalog (app.services.models, ``flukeid model add|list|activate``).

Every test uses tiny exported bundles (tests/model/tiny_models.py, built once per module) and a
catalog of a few small photos imported without a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.catalog import Catalog, ReadOnlyError
from app.cli import main
from app.services import models
from app.services.importing import import_photos
from model.api import BundleError, Interrupted, sha256_file, verify_bundle
from tests.app.conftest import write_photo


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from tests.model.tiny_models import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-v1", dim=16, size=48)


def _variant(src: Path, dst: Path, **manifest_changes) -> Path:
    """A copy of a bundle with manifest fields changed (the manifest is not among the checksummed files)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture
def bundle(built, tmp_path) -> Path:
    """A private copy of the tiny bundle (version tiny-v1) that a test may damage."""
    return _variant(built, tmp_path / "bundle")


@pytest.fixture
def old_bundle(built, tmp_path) -> Path:
    """The same networks under another version (tiny-v0): the catalog's previous model."""
    return _variant(built, tmp_path / "old", version="tiny-v0")


@pytest.fixture
def cat(tmp_path):
    photos = [write_photo(tmp_path / "field" / f"p{i}.jpg", i, size=(120, 90)) for i in range(3)]
    with Catalog.create(tmp_path / "cat") as c:
        rep = import_photos(c, photos)
        assert len(rep.imported) == 3
        yield c


def _leftovers(catalog) -> list[str]:
    return sorted(p.name for p in catalog.models_dir.iterdir() if p.name.startswith(".")) \
        if catalog.models_dir.is_dir() else []


def _embedded(catalog, version: str) -> int:
    return sum(catalog.embedding(p.id, version) is not None for p in catalog.photos())


def test_add_copies_verifies_and_registers_without_activating(cat, bundle):
    result = models.add_bundle(cat, bundle)
    assert (result.version, result.copied, result.active) == ("tiny-v1", True, False)
    assert result.path == cat.models_dir / "tiny-v1"
    manifest = verify_bundle(result.path)
    for name, digest in manifest["files"].items():
        assert sha256_file(bundle / name) == digest == sha256_file(result.path / name)
    assert [m.version for m in cat.models()] == ["tiny-v1"]
    assert cat.active_model() is None
    assert _embedded(cat, "tiny-v1") == 0
    assert _leftovers(cat) == []
    # registered relative to the catalog, so the catalog folder can move
    assert not Path(cat.models()[0].path).is_absolute()


def test_add_and_activate_embeds_every_photo_first(cat, bundle, old_bundle):
    models.add_bundle(cat, old_bundle, activate=True)
    seen = []
    result = models.add_bundle(cat, bundle, activate=True, progress=lambda f, m: seen.append((f, m)))
    assert result.active and cat.active_model().version == "tiny-v1"
    assert result.embedded == 3 and _embedded(cat, "tiny-v1") == 3
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("Embedding photo" in m for _, m in seen)


def test_add_with_embed_keeps_the_active_model(cat, bundle, old_bundle):
    models.add_bundle(cat, old_bundle, activate=True)
    result = models.add_bundle(cat, bundle, embed=True)
    assert not result.active and cat.active_model().version == "tiny-v0"
    assert result.embedded == 3 and _embedded(cat, "tiny-v1") == 3


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage_with_good_checksum(bundle: Path) -> None:
    (bundle / "head.onnx").write_bytes(b"not an onnx model at all")
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["head.onnx"] = sha256_file(bundle / "head.onnx")
    (bundle / "manifest.json").write_text(json.dumps(m))


DAMAGE = {
    "checksum": (lambda b: _flip_byte(b / "branch.onnx"), "branch.onnx"),
    "missing file": (lambda b: (b / "head.onnx").unlink(), "head.onnx"),
    "not onnx": (_garbage_with_good_checksum, "head.onnx"),
    "no manifest": (lambda b: (b / "manifest.json").unlink(), "manifest.json"),
    "bad json": (lambda b: (b / "manifest.json").write_text("{ broken"), "manifest.json"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_bundle_is_refused_naming_the_file_and_the_active_model_stays(cat, bundle, old_bundle, damage):
    models.add_bundle(cat, old_bundle, activate=True)
    before = sorted(p.name for p in cat.models_dir.iterdir())
    hurt, name = DAMAGE[damage]
    hurt(bundle)
    with pytest.raises(BundleError) as err:
        models.add_bundle(cat, bundle, activate=True)
    assert str(bundle / name) in str(err.value)
    assert cat.active_model().version == "tiny-v0"
    assert [m.version for m in cat.models()] == ["tiny-v0"]
    assert sorted(p.name for p in cat.models_dir.iterdir()) == before  # nothing copied, no staging left


def test_cli_refuses_a_damaged_bundle_with_exit_2_and_the_file_named(cat, bundle, old_bundle, capsys):
    models.add_bundle(cat, old_bundle, activate=True)
    _flip_byte(bundle / "head.onnx")
    root = str(cat.root)
    cat.close()
    assert main(["model", "add", root, str(bundle), "--activate"]) == 2
    err = capsys.readouterr().err
    assert f"{bundle / 'head.onnx'}: checksum mismatch" in err
    with Catalog.open(root) as again:
        assert again.active_model().version == "tiny-v0"
        assert [m.version for m in again.models()] == ["tiny-v0"]


def test_a_version_already_there_is_never_overwritten(cat, bundle, built, tmp_path):
    first = models.add_bundle(cat, bundle)
    stamp = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    again = models.add_bundle(cat, bundle)  # the same bundle: accepted, nothing copied
    assert again.copied is False and again.path == first.path
    other = _variant(built, tmp_path / "other", new_individual_threshold=0.9)  # same version, other content
    with pytest.raises(BundleError, match="different .*tiny-v1.*never overwritten"):
        models.add_bundle(cat, other)
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == stamp
    assert json.loads((first.path / "manifest.json").read_text())["new_individual_threshold"] == 0.5
    assert _leftovers(cat) == []


def test_an_unregistered_identical_copy_is_registered(cat, bundle):
    """A crash between copying and registering leaves the folder; adding again registers it."""
    shutil.copytree(bundle, cat.models_dir / "tiny-v1")
    result = models.add_bundle(cat, bundle)
    assert result.copied is False and [m.version for m in cat.models()] == ["tiny-v1"]


def test_a_version_that_cannot_name_a_folder_is_refused(cat, built, tmp_path):
    evil = _variant(built, tmp_path / "evil", version="../outside")
    with pytest.raises(BundleError, match="cannot name a folder"):
        models.add_bundle(cat, evil)
    assert not (cat.root / "outside").exists()


def test_cancel_while_embedding_keeps_the_previous_model_active(cat, bundle, old_bundle):
    models.add_bundle(cat, old_bundle, activate=True)
    with pytest.raises(Interrupted):
        models.add_bundle(cat, bundle, activate=True, should_stop=lambda: True)
    assert cat.active_model().version == "tiny-v0"
    assert "tiny-v1" in {m.version for m in cat.models()}  # added, usable later


def test_read_only_catalog_is_refused_before_anything_is_copied(cat, bundle):
    with Catalog.open(cat.root, mode="auto") as ro:
        assert ro.readonly
        with pytest.raises(ReadOnlyError, match="read-only"):
            models.add_bundle(ro, bundle)
    assert not (cat.models_dir / "tiny-v1").exists()


def test_cli_add_list_activate(cat, bundle, old_bundle, capsys):
    root = str(cat.root)
    cat.close()
    assert main(["model", "add", root, str(old_bundle)]) == 0
    out = capsys.readouterr().out
    assert "added model tiny-v0" in out and f"flukeid model activate {root} tiny-v0" in out
    assert main(["model", "add", root, str(bundle), "--activate"]) == 0
    cap = capsys.readouterr()
    assert "active model: tiny-v1" in cap.out and "3 photos embedded" in cap.out
    assert "Embedding photo" in cap.err  # progress on stderr
    assert main(["model", "list", root]) == 0
    listed = capsys.readouterr().out.splitlines()
    rows = {v: next(line for line in listed if v in line) for v in ("tiny-v0", "tiny-v1")}
    assert rows["tiny-v1"].startswith("*") and not rows["tiny-v0"].startswith("*")
    assert rows["tiny-v1"].rstrip().endswith("ok")
    assert main(["model", "activate", root, "tiny-v0"]) == 0
    assert "active model: tiny-v0" in capsys.readouterr().out
    with Catalog.open(root) as again:
        assert again.active_model().version == "tiny-v0" and _embedded(again, "tiny-v0") == 3
    assert main(["model", "activate", root, "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


# --- flukeid match --model BUNDLE on a gallery never embedded with that model ------------------------


def _identify_two(cat) -> tuple[list[int], Path]:
    from app.services import decisions

    ids = [p.id for p in cat.photos()]
    for pid in ids[:2]:
        decisions.new_individual(cat, pid)
    return ids, cat.resolve_path(cat.photo(ids[2]))


def test_match_with_a_bundle_embeds_the_gallery_first(cat, bundle, capsys):
    """It printed "probably a new individual (best score 0.000 ...)" and exited 0: nothing was ranked."""
    ids, query = _identify_two(cat)
    root = str(cat.root)
    cat.close()
    assert main(["match", root, str(query), "--model", str(bundle)]) == 0
    cap = capsys.readouterr()
    assert "1. HW-" in cap.out and "2. HW-" in cap.out, cap.out
    assert "best score 0.000" not in cap.out
    assert "embedding 2 gallery photos with model tiny-v1" in cap.err
    with Catalog.open(root) as again:  # stored: the next match needs no embedding
        assert all(again.embedding(pid, "tiny-v1") is not None for pid in ids[:2])
    assert main(["match", root, str(query), "--model", str(bundle)]) == 0
    cap = capsys.readouterr()
    assert "embedding" not in cap.err and "1. HW-" in cap.out


def test_match_with_a_bundle_on_a_read_only_catalog_says_nothing_was_embedded(cat, bundle, capsys):
    _, query = _identify_two(cat)  # `cat` stays open for writing: the command opens it read-only
    assert main(["match", str(cat.root), str(query), "--model", str(bundle)]) == 2
    cap = capsys.readouterr()
    assert "nothing in the gallery was embedded with model tiny-v1" in cap.err
    assert "read-only" in cap.err and "1. HW-" not in cap.out


# --- `flukeid export` is the catalog's CSV export only ---------------------------------------------


def test_export_on_a_training_run_points_to_export_model(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 2
    assert f"is a training run, not a catalog: export it as a model bundle with `flukeid export-model {run} " \
           "--out BUNDLE`" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_export_without_format_says_which_formats(cat, capsys):
    assert main(["export", str(cat.root), "--out", str(cat.root / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "--format is required (identifications, kaggle or sightings)" in err and "export-model" in err
    assert main(["export", str(cat.root), "--format", "kaggle", "--out", str(cat.root / "x.csv")]) == 0


# --- a new catalog starts with the program's default model, when it declares one -------------------


def use_resources(monkeypatch, root: Path, bundle: Path, default: str | None) -> Path:
    """Point app.paths at a resources folder holding ``bundle`` as models/tiny-v1 and maybe a DEFAULT file."""
    from app import paths

    shutil.copytree(bundle, root / "models" / "tiny-v1")
    if default is not None:
        (root / "models" / paths.DEFAULT_MODEL_FILE).write_text(f"# the bundle new catalogs start with\n\n{default}\n")
    monkeypatch.setattr(paths, "resources_dir", lambda: root)
    return root


def test_the_program_as_shipped_declares_no_default_model():
    """The choice (resources/models/DEFAULT) is off: neither candidate embedding fused with local features beat
    local features alone on real photos (docs/BENCHMARKS.md, "The embedding half of a new catalog")."""
    from app.paths import default_bundle_dir, resources_dir

    assert not (resources_dir() / "models" / "DEFAULT").exists()
    assert default_bundle_dir() is None


def test_new_catalog_without_a_default_model_has_none_and_says_how_to_add_one(tmp_path, built, monkeypatch, capsys):
    use_resources(monkeypatch, tmp_path / "res", built, None)
    assert main(["new", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "no model yet: photos are matched by their local features" in out  # a new catalog can match
    assert f"`flukeid model add {tmp_path / 'c'} BUNDLE --activate`" in out
    with Catalog.open(tmp_path / "c") as c:
        assert c.models() == [] and c.active_model() is None


def test_new_catalog_starts_with_the_declared_default_model(tmp_path, built, monkeypatch, capsys):
    res = use_resources(monkeypatch, tmp_path / "res", built, "tiny-v1")
    assert main(["new", str(tmp_path / "c")]) == 0
    assert "active model: tiny-v1 (the program's default)" in capsys.readouterr().out
    with Catalog.open(tmp_path / "c") as c:
        assert c.active_model().version == "tiny-v1"
        path = c.model_path(c.active_model())
        assert path == c.models_dir / "tiny-v1"  # a copy in the catalog, not the program's folder
        assert verify_bundle(path) == verify_bundle(res / "models" / "tiny-v1")


def test_a_broken_default_model_still_creates_the_catalog_and_says_why(tmp_path, built, monkeypatch, capsys):
    res = use_resources(monkeypatch, tmp_path / "res", built, "missing")
    assert main(["new", str(tmp_path / "c")]) == 0
    cap = capsys.readouterr()
    assert "default model could not be installed" in cap.err and str(res / "models" / "missing") in cap.err
    assert "no model yet" in cap.out
    with Catalog.open(tmp_path / "c") as c:
        assert c.models() == []
