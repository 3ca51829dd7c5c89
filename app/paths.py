"""Where flukeid keeps things: per-user folders (platformdirs) and the bundled resources."""

from __future__ import annotations

import sys
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir, user_log_dir

APP_NAME = "flukeid"


def resources_dir() -> Path:
    """The ``resources/`` folder (icons, demo model): next to the package, or inside a frozen build."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def demo_bundle_dir() -> Path:
    """The demo model bundle shipped with the program (trained on synthetic flukes only)."""
    return resources_dir() / "models" / "demo"


def data_dir() -> Path:
    """Per-user data folder (the default place for catalogs); not created here."""
    return Path(user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """Per-user settings folder; not created here."""
    return Path(user_config_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    """Per-user log folder; not created here."""
    return Path(user_log_dir(APP_NAME, appauthor=False))


def default_catalog_dir() -> Path:
    """Where a new catalog goes when the user does not choose: ``<data dir>/catalogs/default``."""
    return data_dir() / "catalogs" / "default"


def demo_catalog_dir() -> Path:
    """The demo catalog built by ``flukeid demo``."""
    return data_dir() / "catalogs" / "demo"
