"""What a default model costs a new catalog on this CPU: import and match time per photo, loading.

    python -m bench.bench_default_model --bundle resources/models/imagenet [--bundle resources/models/demo]
        [--labels labels.csv --images DIR] [--queries 20]

For no model and for each bundle: a fresh catalog imports the same labelled photos
(app.services.importing.import_labelled, as ``flukeid import --labels``: decode, thumbnail, local
features and, with a model, the embedding, in one transaction per photo); the seconds between
successive progress calls give each photo's import time. Then ``--queries`` of its photos are
matched one at a time (app.services.matching.match_photo, as the review does: local features,
the embedding's gallery and the fusion; the first match, which builds the indexes, is reported
apart). Engine.load (checksums, onnxruntime sessions) is what opening a catalog with that model
adds. Medians; the machine is shared, so the load average is printed with them.

Default photos: a synthetic labelled set (60 individuals, 1024x683, drawn once under /tmp), so
the script runs without ../shared/data. Writes nothing into docs/: the figures go into the
hand-written notes (docs/bench/notes/imagenet.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import configure_process, load_avg, machine, utc_now

WORK = Path("/tmp/flukeid_default_model")


def _synthetic(work: Path) -> tuple[Path, Path | None]:
    from model.api import generate_dataset

    d = work / "synth60_s21"
    if not (d / "labels.csv").is_file():
        generate_dataset(d, 60, seed=21, size=(1024, 683), min_photos=2, max_photos=6)
    return d / "labels.csv", None


def measure(bundle: Path | None, labels: Path, images: Path | None, queries: int, work: Path) -> dict:
    from app.catalog import Catalog
    from app.services import matching
    from app.services.importing import import_labelled
    from model.api import Engine

    name = bundle.name if bundle is not None else "no model"
    loads, engine = [], None
    if bundle is not None:
        for _ in range(3):
            t0 = time.perf_counter()
            engine = Engine.load(bundle, device="cpu")
            loads.append(time.perf_counter() - t0)
    root = work / f"cat_{name.replace(' ', '_')}"
    shutil.rmtree(root, ignore_errors=True)
    stamps: list[float] = []
    with Catalog.create(root) as cat:
        if engine is not None:
            cat.add_model(engine.version, bundle, metrics={})
            cat.set_active_model(engine.version)
        t0 = time.perf_counter()
        rep = import_labelled(cat, labels, images, engine=engine,
                              progress=lambda f, m: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
        per_photo = np.diff([t0, *stamps]) if stamps else np.zeros(0)
        ids = sorted(rep.imported)
        picks = [ids[i] for i in np.linspace(0, len(ids) - 1, min(queries, len(ids))).astype(int)]
        times = []
        for pid in picks:
            t0 = time.perf_counter()
            matching.match_photo(cat, pid, engine)
            times.append(time.perf_counter() - t0)
        matching.forget_local_index()
    return {"model": name, "photos": len(ids), "import_s_total": round(total, 1),
            "import_ms_median": round(1e3 * float(np.median(per_photo)), 1) if len(per_photo) else None,
            "first_match_ms": round(1e3 * times[0], 1),
            "match_ms_median": round(1e3 * float(np.median(times[1:])), 1) if len(times) > 1 else None,
            "engine_load_ms_median": round(1e3 * float(np.median(loads)), 1) if loads else None,
            "bundle_mb": round(sum(p.stat().st_size for p in bundle.iterdir()) / 2**20, 1) if bundle else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", action="append", type=Path, default=[], help="a model bundle (repeatable)")
    p.add_argument("--labels", type=Path, default=None, help="labels.csv to import (default: a synthetic set)")
    p.add_argument("--images", type=Path, default=None)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--json", type=Path, default=WORK / "results.json")
    a = p.parse_args(argv)
    configure_process()
    WORK.mkdir(parents=True, exist_ok=True)
    labels, images = (a.labels, a.images) if a.labels else _synthetic(WORK)
    rows = []
    for bundle in [None, *a.bundle]:
        rows.append(measure(bundle, labels, images, a.queries, WORK))
        print(json.dumps(rows[-1]), flush=True)
    res = {"rows": rows, "labels": str(labels), "measured": utc_now(), "machine": machine(), "load": load_avg()}
    a.json.write_text(json.dumps(res, indent=1))
    print(f"{res['machine']}, {res['measured']}, load average {res['load']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
