"""User-facing errors of the model package.

Every error names the file (or setting) and the problem, so the app can show it as it is.
"""

from __future__ import annotations

from pathlib import Path


class FlukeidError(Exception):
    """Base class: a problem the user can act on (the message says what and where)."""


class ImageError(FlukeidError):
    """A photo cannot be read or used."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataError(FlukeidError):
    """A labels file or data set is malformed or unusable."""


class ConfigError(FlukeidError):
    """A training configuration is invalid (unknown key, bad value)."""


class BundleError(FlukeidError):
    """A model bundle is missing, damaged, partial or of an unsupported version."""


class CheckpointError(FlukeidError):
    """A training checkpoint cannot be loaded."""


class Interrupted(FlukeidError):
    """A long job was asked to stop by its ``should_stop`` callback."""
