"""Per-user places (app.paths): the default catalog folder and the settings folder are used."""

from __future__ import annotations

import json

from app import paths
from app.catalog import Catalog
from app.cli import main
from app.services import retraining


def test_new_without_a_folder_creates_the_default_catalog(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "data_dir", lambda: tmp_path / "data")
    monkeypatch.setattr(paths, "default_bundle_dir", lambda: None)  # the catalog starts without a model
    folder = tmp_path / "data" / "catalogs" / "default"
    assert paths.default_catalog_dir() == folder
    assert main(["new"]) == 0
    out = capsys.readouterr().out
    assert f"created catalog {folder}" in out
    assert f"`flukeid model add {folder} BUNDLE --activate`" in out  # the folder it made, in the hint
    with Catalog.open(folder) as cat:
        assert cat.photos() == [] and cat.active_model() is None
    assert main(["new"]) == 2  # made once: the second time it is already there
    assert "a catalog already exists here" in capsys.readouterr().err


def test_settings_are_kept_in_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.CONFIG_DIR_ENV, raising=False)
    monkeypatch.delenv(retraining.TRAINING_PYTHON_ENV, raising=False)
    monkeypatch.setattr(paths, "user_config_dir", lambda name, appauthor: str(tmp_path / "config" / name))
    assert paths.config_dir() == tmp_path / "config" / "flukeid"
    retraining.save_training_python("/opt/train/bin/python")
    saved = tmp_path / "config" / "flukeid" / "retraining.json"
    assert json.loads(saved.read_text())["training_python"] == "/opt/train/bin/python"
    assert retraining.load_training_python() == "/opt/train/bin/python"
    # $FLUKEID_CONFIG_DIR moves every setting (the tests use it to stay out of the user's folder)
    monkeypatch.setenv(paths.CONFIG_DIR_ENV, str(tmp_path / "elsewhere"))
    assert retraining.settings_path() == tmp_path / "elsewhere" / "retraining.json"
    assert retraining.load_training_python() is None
