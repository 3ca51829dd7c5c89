"""Typed, versioned training configuration: presets plus overrides, saved as config.json in every run.

A configuration is a tree of dataclasses. Presets (``tiny``, ``cpu``, ``paper``) give complete
configs; overrides come from a JSON file (nested or dotted keys) or ``key=value`` flags with dotted
keys (``branch.kind=resnet50``, ``epochs=3``). An unknown key or a value of the wrong type raises
:class:`~model.errors.ConfigError` naming the key. Torch-free.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.errors import ConfigError

CONFIG_VERSION = 1


@dataclass
class BranchConfig:
    """The branch CNN (image -> embedding and last BN feature map)."""

    kind: str = "cnn"  # registry name: cnn | plain | resnet50 | efficientnet_lite0
    width: int = 64  # cnn: channels of the first stage (doubles per stage)
    blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 1])  # cnn: bottleneck blocks per stage
    embedding_dim: int = 512
    weights: str = "none"  # none | imagenet | path to a state-dict file
    freeze: bool = False  # freeze the pretrained backbone (the neck still trains)
    frozen_stages: int = 0  # pretrained backbones: freeze the stem and the first N stages after it (0: none)
    pool: str = "max"  # max (the kernel's global max pooling) | avg (global average pooling)
    normalize: bool = False  # L2-normalise the embedding to norm sqrt(D) (cosine geometry, for the metric stage)


@dataclass
class HeadConfig:
    """The pair head (two embeddings -> same-whale logit)."""

    kind: str = "nn"  # nn (the kernel's head) | l1 (weighted L1 distance)
    hidden: int = 32  # nn: width of the per-position network


@dataclass
class MiningConfig:
    """Pair selection per epoch (see model.training.mining)."""

    kind: str = "curriculum"  # curriculum (paper: r% hardest, rest random) | lap (kernel: assignment + noise)
    r_start: float = 0.0  # curriculum: fraction of hardest pairs in the first epoch
    r_end: float = 0.8  # ... and in the last one
    noise_start: float = 1.0  # lap: noise amplitude (in score units) in the first epoch
    noise_end: float = 0.05
    block: int = 8192  # pairs per head call when scoring all candidate pairs
    rounds: int = 1  # times the miner runs per epoch on the same scores (more pairs per embedding pass)


@dataclass
class AugmentConfig:
    """Batch-wise augmentation of the 0..1 crops (model.training.augment)."""

    enabled: bool = True
    zoom: float = 0.1  # scale in [1-zoom, 1+zoom]
    shift: float = 0.08  # fraction of the image size
    rotation: float = 10.0  # degrees
    shear: float = 5.0  # degrees
    brightness: float = 0.1  # additive, in 0..1 units
    contrast: float = 0.2  # multiplicative around the mean
    blur_p: float = 0.2  # probability of a 3x3 Gaussian blur
    erase_p: float = 0.0  # probability of random erasing (one rectangle set to the photo's mean)
    erase_max: float = 0.25  # largest erased share of the image area
    gpu: bool = True  # augment on the training device (False: on CPU, then copy)


@dataclass
class MetricConfig:
    """Optional metric-learning stage before the pair head (model.training.metric).

    When enabled, the branch is first fine-tuned as an embedding with a sub-center ArcFace loss
    over the training individuals; then the branch is frozen and the pair head trains for
    ``epochs`` (the top-level key) on cached embeddings with the usual miners.
    """

    enabled: bool = False
    epochs: int = 10  # at most this many passes over the training photos
    budget_fraction: float = 0.8  # share of time_budget_s for this stage (when a budget is set)
    margin: float = 0.3  # additive angular margin (radians)
    scale: float = 30.0  # logit scale s
    subcenters: int = 3  # sub-centres per individual (k)
    lr: float = 1e-3  # branch learning rate (Adam + weight_decay, warmup then cosine per step)
    centre_lr_mult: float = 1.0  # the class centres' LR relative to the branch's
    warmup_epochs: float = 0.5
    batch_size: int = 32  # photos per step
    passes: int = 4  # augmented embedding passes cached for the head stage (plus one plain pass)


@dataclass
class Config:
    """A complete training configuration (saved as config.json in every run)."""

    version: int = CONFIG_VERSION
    preset: str = "custom"
    input_height: int = 384
    input_width: int = 384
    margin: float = 0.05
    branch: BranchConfig = field(default_factory=BranchConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    epochs: int = 20
    batch_size: int = 32  # pairs per step (2x images)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant | step
    warmup_epochs: int = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 2  # threads decoding photos on the first load
    time_budget_s: float = 0.0  # stop after the epoch that passes this (0: no limit)
    val_fraction: float = 0.15  # fraction of individuals (with 2+ photos) held out for validation
    val_max_individuals: int = 100
    channels_last: bool = True  # NHWC tensors in training (CUDA and CPU: 1.2-1.4x faster on this CPU)
    bf16: bool = True  # autocast on CUDA

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> Config:
        """Build from a full or partial dict (missing keys take defaults); unknown keys raise."""
        cfg = cls()
        apply_overrides(cfg, d, where=where)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))


def _tiny() -> Config:
    return Config(
        preset="tiny", input_height=48, input_width=96,  # flukes are wide: a wide input wastes less
        branch=BranchConfig(kind="plain", width=8, blocks=[1, 1, 1, 1], embedding_dim=32),
        head=HeadConfig(kind="l1"),  # learns in far fewer steps than the nn head
        mining=MiningConfig(r_start=0.0, r_end=0.5, rounds=4),
        augment=AugmentConfig(rotation=5.0, shear=3.0),
        epochs=6, batch_size=16, lr=3e-3, weight_decay=1e-5, warmup_epochs=0, num_workers=1,
        val_fraction=0.2, val_max_individuals=20,
    )


def _cpu() -> Config:
    """The best this 2-core CPU trains in under an hour: ImageNet EfficientNet-Lite0 at 224x224 with its
    stem and first two stages frozen, fine-tuned with sub-center ArcFace (most of the budget; random
    erasing against over-fitting), then the nn head on cached embeddings. Measured on the right whales
    (bench/experiments.toml's rw_recipe rows, 16 min each): frozen stages 1.9x the training images/s; 224 px +2.5 points
    top-5 over 160 px; erasing + wider rotation/zoom +1.7 points; ArcFace margin 0.5 instead of 0.3 +1.9
    points (13 epochs each, 25 min); 21 epochs instead of 13 +2.3 points (50.4%): the metric stage gets up
    to 24 epochs, as many as its 44 minutes hold at this CPU's pace."""
    return Config(
        preset="cpu", input_height=224, input_width=224,
        branch=BranchConfig(kind="efficientnet_lite0", weights="imagenet", embedding_dim=256, pool="avg",
                            normalize=True, frozen_stages=2),
        head=HeadConfig(kind="nn", hidden=32),
        mining=MiningConfig(r_start=0.0, r_end=0.5, rounds=2),
        augment=AugmentConfig(rotation=15.0, zoom=0.15, erase_p=0.5),
        metric=MetricConfig(enabled=True, epochs=24, budget_fraction=0.8, margin=0.5, scale=30.0, subcenters=3,
                            lr=1e-3, centre_lr_mult=1.0, warmup_epochs=0.5, batch_size=32, passes=1),
        epochs=6, batch_size=64, lr=3e-4, weight_decay=1e-4, warmup_epochs=0, num_workers=2,
        time_budget_s=3300.0,
    )


def _paper() -> Config:
    return Config(
        preset="paper", input_height=384, input_width=384,
        branch=BranchConfig(kind="cnn", width=64, blocks=[2, 3, 4, 2], embedding_dim=512),
        head=HeadConfig(kind="nn", hidden=32),
        mining=MiningConfig(kind="curriculum", r_start=0.0, r_end=0.9),
        epochs=100, batch_size=32, lr=1e-4, weight_decay=2e-4, warmup_epochs=2, num_workers=8,
        device="auto",
    )


PRESETS = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def preset(name: str) -> Config:
    """A fresh copy of a named preset.

    Raises:
        ConfigError: the name is not a preset.
    """
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown config preset {name!r} (choose from {', '.join(PRESETS)})") from None


def load_config(spec: str | Path, overrides: list[str] | dict | None = None) -> Config:
    """A preset name or a JSON file, then ``key=value`` overrides (dotted keys).

    A JSON file may name a base preset with ``"preset": "tiny"``; its other keys override it.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or bad value (naming it).
    """
    spec_s = str(spec)
    if spec_s in PRESETS:
        cfg = preset(spec_s)
    else:
        path = Path(spec_s)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (or use a preset: {', '.join(PRESETS)})")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config must be a JSON object")
        base = data.get("preset")
        cfg = preset(base) if base in PRESETS else Config()
        version = data.get("version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(f"{path}: config version {version!r} is not supported (this flukeid: {CONFIG_VERSION})")
        apply_overrides(cfg, data, where=str(path))
    if isinstance(overrides, dict):
        apply_overrides(cfg, overrides, where="overrides")
    elif overrides:
        apply_overrides(cfg, parse_assignments(overrides), where="--set")
    validate(cfg)
    return cfg


def parse_assignments(items: list[str]) -> dict:
    """``["epochs=3", "branch.kind=cnn"]`` -> ``{"epochs": 3, "branch.kind": "cnn"}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def apply_overrides(cfg: Any, data: dict, *, where: str = "config", prefix: str = "") -> None:
    """Set fields of a config dataclass from a nested/dotted dict, type-checked, in place."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in data.items():
        head, dot, rest = str(key).partition(".")
        full = f"{prefix}{key}"
        if head not in names:
            raise ConfigError(f"{where}: unknown config key {full!r}")
        current = getattr(cfg, head)
        if dataclasses.is_dataclass(current):
            if dot:
                apply_overrides(current, {rest: value}, where=where, prefix=f"{prefix}{head}.")
            elif isinstance(value, dict):
                apply_overrides(current, value, where=where, prefix=f"{prefix}{head}.")
            else:
                raise ConfigError(f"{where}: config key {full!r} is a section; give an object or dotted keys")
            continue
        if dot:
            raise ConfigError(f"{where}: unknown config key {full!r}")
        setattr(cfg, head, _coerce(value, hints[head], full, where))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    bad = ConfigError(f"{where}: config key {key!r} expects {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is list:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad
        return list(value)
    return value


_CHOICES = {
    "branch.kind": ("cnn", "plain", "resnet50", "efficientnet_lite0"),
    "branch.pool": ("max", "avg"),
    "head.kind": ("nn", "l1"),
    "mining.kind": ("curriculum", "lap"),
    "schedule": ("cosine", "constant", "step"),
    "device": ("auto", "cpu", "cuda"),
}


def validate(cfg: Config) -> None:
    """Check value ranges and choices.

    Raises:
        ConfigError: naming the key and the allowed values.
    """
    for key, choices in _CHOICES.items():
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj not in choices:
            raise ConfigError(f"config key {key!r} = {obj!r}: choose from {', '.join(choices)}")
    positive = {"input_height": cfg.input_height, "input_width": cfg.input_width, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "branch.embedding_dim": cfg.branch.embedding_dim,
                "branch.width": cfg.branch.width, "head.hidden": cfg.head.hidden, "mining.block": cfg.mining.block,
                "mining.rounds": cfg.mining.rounds, "metric.epochs": cfg.metric.epochs,
                "metric.scale": cfg.metric.scale, "metric.subcenters": cfg.metric.subcenters,
                "metric.lr": cfg.metric.lr, "metric.centre_lr_mult": cfg.metric.centre_lr_mult,
                "metric.batch_size": cfg.metric.batch_size}
    for key, v in positive.items():
        if v <= 0:
            raise ConfigError(f"config key {key!r} must be positive, got {v}")
    if min(cfg.input_height, cfg.input_width) < 32:
        raise ConfigError(f"input size {cfg.input_height}x{cfg.input_width} is too small (at least 32)")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ConfigError("config keys 'lr' must be > 0 and 'weight_decay' >= 0")
    for key in ("r_start", "r_end"):
        if not 0.0 <= getattr(cfg.mining, key) <= 1.0:
            raise ConfigError(f"config key 'mining.{key}' must be within 0..1")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError("config key 'val_fraction' must be within 0..1 (exclusive of 1)")
    if not 0.0 < cfg.metric.budget_fraction <= 1.0:
        raise ConfigError("config key 'metric.budget_fraction' must be within 0..1 (exclusive of 0)")
    if not 0.0 <= cfg.metric.margin < 1.5:
        raise ConfigError("config key 'metric.margin' must be within 0..1.5 radians")
    if cfg.metric.warmup_epochs < 0 or cfg.metric.passes < 0:
        raise ConfigError("config keys 'metric.warmup_epochs' and 'metric.passes' must be >= 0")
    if not (0.0 <= cfg.augment.erase_p <= 1.0 and 0.0 < cfg.augment.erase_max <= 1.0):
        raise ConfigError("config keys 'augment.erase_p' must be within 0..1 and 'augment.erase_max' within (0, 1]")
    if cfg.branch.frozen_stages < 0:
        raise ConfigError("config key 'branch.frozen_stages' must be >= 0")
    if cfg.branch.frozen_stages and cfg.branch.kind not in ("efficientnet_lite0", "resnet50"):
        raise ConfigError(f"config key 'branch.frozen_stages' applies to pretrained backbones (efficientnet_lite0, "
                          f"resnet50), not {cfg.branch.kind!r}")
    if not cfg.branch.blocks:
        raise ConfigError("config key 'branch.blocks' must list at least one stage")


def config_copy(cfg: Config) -> Config:
    return copy.deepcopy(cfg)
