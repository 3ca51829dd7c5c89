"""Model versions shows what each model was verified with, and local times (issue 17, item 10)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from app.services import retraining
from app.ui.model_versions import COLUMNS, ModelVersionsDialog, local_time
from tests.app.retrain_fakes import (
    catalog_fixture,  # noqa: F401  (the `catalog` fixture)
    fake_training_env,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def local_zone():
    """A fixed local time zone 5 h 30 min east of UTC (no daylight saving), restored afterwards."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ-5:30"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_times_are_local_not_raw_iso(local_zone):
    assert local_time("2026-11-29T01:07:12.123456+00:00") == "2026-11-29 06:37"
    assert local_time("2026-11-29T23:50:00+00:00") == "2026-11-30 05:20"  # the local date, too
    assert local_time(None) == "" and local_time("not a date") == "not a date"


def test_each_model_shows_the_evaluation_it_was_verified_with(qtbot, catalog, tmp_path, monkeypatch, local_zone):
    from app.paths import demo_bundle_dir

    # the shipped demo bundle, registered with its manifest's metrics (as the demo and `model add` do)
    manifest = json.loads((demo_bundle_dir() / "manifest.json").read_text())
    shutil.copytree(demo_bundle_dir(), catalog.models_dir / "demo")
    catalog.add_model("demo", catalog.models_dir / "demo", metrics=manifest["metrics"])
    # a retrained one, with its held-out comparison
    monkeypatch.setenv(retraining.TRAINING_PYTHON_ENV, fake_training_env(tmp_path, monkeypatch))
    result = retraining.retrain(catalog, retraining.RetrainOptions(epochs=1, detector=False))

    dlg = ModelVersionsDialog(catalog)
    qtbot.addWidget(dlg)
    rows = {dlg.table.item(i, 0).text(): [dlg.table.item(i, j).text() for j in range(len(COLUMNS))]
            for i in range(dlg.table.rowCount())}
    col = {name: j for j, name in enumerate(COLUMNS)}
    shipped = manifest["metrics"]["synthetic_heldout_seed"]
    demo = rows["demo"]
    assert demo[col["top-1"]] == f"{shipped['top1']:.1%}" and demo[col["top-5"]] == f"{shipped['top5']:.1%}"
    assert demo[col["MAP@5"]] == f"{shipped['map5']:.3f}" and demo[col["queries"]] == str(shipped["n"])
    assert demo[col["verified on"]].startswith(shipped["what"][:40])
    new = rows[result.version]
    held = result.new_metrics
    assert new[col["top-1"]] == f"{held['top1']:.1%}" and new[col["queries"]] == str(held["n_queries"])
    assert new[col["verified on"]] == "held-out confirmed photos of this catalog"
    assert rows["m-initial"][col["verified on"]] == "no evaluation recorded"
    for cells in rows.values():
        added = cells[col["added"]]
        assert "T" not in added and "+00:00" not in added
    registered = {m.version: m.created_at for m in catalog.models()}
    assert demo[col["added"]] == local_time(registered["demo"])
    dlg.resize(1000, 320)
    dlg.show()
    assert not dlg.grab().isNull()
