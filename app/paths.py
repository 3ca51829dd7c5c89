"""Where flukeid keeps things: per-user folders (platformdirs) and the bundled resources."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir

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


DEFAULT_MODEL_FILE = "DEFAULT"


def default_bundle_dir() -> Path | None:
    """The model bundle a new catalog starts with, or None when the program ships no default.

    The choice lives in one place: ``resources/models/DEFAULT``, a text file whose first line
    that is neither blank nor a ``#`` comment names a bundle folder beside it (``demo``, say).
    No such file (as shipped today): new catalogs start without a model. The folder is not
    checked here; installing it does that and says what is wrong.
    """
    models = resources_dir() / "models"
    try:
        lines = (models / DEFAULT_MODEL_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    name = next((s.strip() for s in lines if s.strip() and not s.strip().startswith("#")), None)
    return models / name if name else None


def data_dir() -> Path:
    """Per-user data folder (the default place for catalogs); not created here."""
    return Path(user_data_dir(APP_NAME, appauthor=False))


CONFIG_DIR_ENV = "FLUKEID_CONFIG_DIR"


def config_dir() -> Path:
    """Per-user settings folder ($FLUKEID_CONFIG_DIR when set, e.g. for tests); not created here."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    return Path(user_config_dir(APP_NAME, appauthor=False))


def default_catalog_dir() -> Path:
    """Where a new catalog goes when the user does not choose: ``<data dir>/catalogs/default``.

    ``flukeid new`` without a folder creates it there.
    """
    return data_dir() / "catalogs" / "default"


def demo_catalog_dir() -> Path:
    """The demo catalog built by ``flukeid demo``."""
    return data_dir() / "catalogs" / "demo"
