"""Shared helpers for the reliability suite: catalog snapshots and a tiny real model bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import Catalog
from tests.app.conftest import catalog  # noqa: F401  (the fresh-catalog fixture)

SNAPSHOT_TABLES = ("photos", "boxes", "individuals", "identifications", "match_decisions", "actions", "models",
                   "meta")


def snapshot(cat: Catalog) -> dict[str, list[tuple]]:
    """Every row of the tables that hold saved work (to compare before/after a failure)."""
    out = {}
    for table in SNAPSHOT_TABLES:
        if cat._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]):
            out[table] = [tuple(r) for r in cat._query(f"SELECT * FROM {table} ORDER BY 1")]  # noqa: S608
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny untrained branch + head under the bundle contract (64x64 input, D=16); do not modify."""
    from tests.model.tiny_models import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("rel_bundle") / "tiny-v1", size=64, dim=16)
