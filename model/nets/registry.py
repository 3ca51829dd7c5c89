"""Registries of branch and head constructors by name (no if-chains): ``@register_branch("cnn")``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model.errors import ConfigError

BRANCHES: dict[str, Callable[..., Any]] = {}
HEADS: dict[str, Callable[..., Any]] = {}


def register_branch(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        BRANCHES[name] = fn
        return fn
    return deco


def register_head(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        HEADS[name] = fn
        return fn
    return deco


def _ensure_loaded() -> None:
    import model.nets.branches  # noqa: F401  (registers the branches)
    import model.nets.heads  # noqa: F401  (registers the heads)


def create_branch(cfg, input_hw: tuple[int, int] = (384, 384)):
    """Build the branch named by ``cfg.kind`` (a :class:`model.config.BranchConfig`).

    Raises:
        ConfigError: unknown kind (naming the known ones) or unusable weights.
    """
    _ensure_loaded()
    try:
        ctor = BRANCHES[cfg.kind]
    except KeyError:
        raise ConfigError(f"unknown branch kind {cfg.kind!r} (known: {', '.join(sorted(BRANCHES))})") from None
    return ctor(cfg)


def create_head(cfg, embedding_dim: int):
    """Build the head named by ``cfg.kind`` (a :class:`model.config.HeadConfig`)."""
    _ensure_loaded()
    try:
        ctor = HEADS[cfg.kind]
    except KeyError:
        raise ConfigError(f"unknown head kind {cfg.kind!r} (known: {', '.join(sorted(HEADS))})") from None
    return ctor(cfg, embedding_dim)
