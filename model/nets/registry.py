"""Branch and head constructors by name (no if-chains): two plain dicts.

``BRANCHES[kind](branch_config)`` builds a branch, ``HEADS[kind](head_config, embedding_dim)`` a head.
A new network is one entry here; code outside the package may add its own entry before building.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model.errors import ConfigError
from model.nets import branches, heads

BRANCHES: dict[str, Callable[..., Any]] = {
    "cnn": branches.cnn,
    "plain": branches.plain,
    "resnet50": branches.resnet50,
    "efficientnet_lite0": branches.efficientnet_lite0,
}
HEADS: dict[str, Callable[..., Any]] = {
    "nn": heads.nn_head,
    "l1": heads.l1_head,
}


def create_branch(cfg):
    """Build the branch named by ``cfg.kind`` (a :class:`model.config.BranchConfig`).

    Raises:
        ConfigError: unknown kind (naming the known ones) or unusable weights.
    """
    try:
        ctor = BRANCHES[cfg.kind]
    except KeyError:
        raise ConfigError(f"unknown branch kind {cfg.kind!r} (known: {', '.join(sorted(BRANCHES))})") from None
    return ctor(cfg)


def create_head(cfg, embedding_dim: int):
    """Build the head named by ``cfg.kind`` (a :class:`model.config.HeadConfig`)."""
    try:
        ctor = HEADS[cfg.kind]
    except KeyError:
        raise ConfigError(f"unknown head kind {cfg.kind!r} (known: {', '.join(sorted(HEADS))})") from None
    return ctor(cfg, embedding_dim)
