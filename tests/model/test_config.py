"""Training configs: presets, overrides from files and flags, errors that name the key."""

from __future__ import annotations

import json

import pytest

from model.config import CONFIG_VERSION, PRESETS, Config, load_config, preset
from model.errors import ConfigError


def test_presets_are_complete_and_distinct():
    sizes = {name: (preset(name).input_height, preset(name).input_width) for name in PRESETS}
    assert sizes["paper"] == (384, 384)
    assert max(sizes["tiny"]) <= 96
    assert preset("paper").branch.embedding_dim == 512
    assert preset("tiny").version == CONFIG_VERSION


def test_flag_overrides_are_typed_and_dotted():
    cfg = load_config("tiny", ["epochs=3", "branch.kind=resnet50", "lr=0.01", "augment.enabled=false",
                               "branch.blocks=[1,1]"])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.branch.kind == "resnet50"
    assert cfg.lr == 0.01
    assert cfg.augment.enabled is False
    assert cfg.branch.blocks == [1, 1]
    assert preset("tiny").branch.kind == "plain"


def test_json_file_on_a_base_preset(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "tiny", "epochs": 2, "head": {"kind": "l1"}, "mining.kind": "lap"}))
    cfg = load_config(f)
    assert (cfg.epochs, cfg.head.kind, cfg.mining.kind) == (2, "l1", "lap")
    assert cfg.input_height == preset("tiny").input_height


def test_round_trip_through_dict(tmp_path):
    cfg = load_config("cpu", ["seed=7"])
    cfg.save(tmp_path / "config.json")
    again = load_config(tmp_path / "config.json")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(("overrides", "needle"), [
    (["epoch=3"], "'epoch'"),
    (["branch.kindd=cnn"], "'branch.kindd'"),
    (["epochs=3.5"], "'epochs'"),
    (["epochs=abc"], "'epochs'"),
    (["branch.kind=vgg"], "branch.kind"),
    (["mining.r_end=1.5"], "mining.r_end"),
    (["lr"], "key=value"),
    (["branch=3"], "'branch'"),
    (["augment.erase_p=1.5"], "augment.erase_p"),
    (["branch.frozen_stages=-1"], "branch.frozen_stages"),
])
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_config("tiny", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"preset": "tiny", "augment": {"zooom": 0.1}}))
    with pytest.raises(ConfigError, match="augment.zooom"):
        load_config(unknown)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"version": CONFIG_VERSION + 1}))
    with pytest.raises(ConfigError, match="version"):
        load_config(newer)
    with pytest.raises(ConfigError, match="unknown config preset"):
        preset("huge")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="'nope'"):
        Config.from_dict({"nope": 1})
