"""What a default model costs a new catalog on this CPU: import and match time per photo, loading.

    python -m bench.bench_default_model --bundle resources/models/imagenet [--bundle resources/models/demo]
        [--labels labels.csv --images DIR] [--queries 20]

One catalog imports the labelled photos without a model (app.services.importing.import_labelled,
as ``flukeid import --labels``: decode, thumbnail, local features, one transaction per photo; the
seconds between successive progress calls give each photo's import time), then every photo is
embedded with each bundle (matching.embed_missing, what activating a model does). ``--queries`` of
its photos are matched (app.services.matching.match_photo, as the review does: local features,
and with a model its embedding gallery and the fusion) with no model and with each bundle, in
blocks per model repeated three times (the machine's load changes minute by minute), each block
after one untimed match that fills that model's caches. A model's share of importing one photo is
its embedding (Engine.embed on the decoded photo and box), timed round-robin with the photo's local
features. Engine.load (checksums, onnxruntime sessions) is what opening a catalog with that model
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


def _engines(bundles: list[Path]) -> tuple[list, list[list[float]]]:
    from model.api import Engine

    engines, loads = [None], [[]]
    for bundle in bundles:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            engine = Engine.load(bundle, device="cpu")
            times.append(time.perf_counter() - t0)
        engines.append(engine)
        loads.append(times)
    return engines, loads


def measure(bundles: list[Path], labels: Path, images: Path | None, queries: int, work: Path,
            rounds: int = 3) -> list[dict]:
    """One catalog: imported without a model, then every photo embedded with each bundle (as activating it
    does); matches timed per model in blocks (ABC, ABC, ...: the machine's load changes minute by minute),
    and one photo's embedding timed round-robin across the models next to its local features."""
    from app.catalog import Catalog
    from app.services import matching
    from app.services.importing import import_labelled
    from model.api import extract_local_features, load_image, read_labels

    engines, loads = _engines(bundles)
    names = ["no model", *(b.name for b in bundles)]
    root = work / "catalog"
    shutil.rmtree(root, ignore_errors=True)
    cat = Catalog.create(root)
    stamps: list[float] = []
    t0 = time.perf_counter()
    rep = import_labelled(cat, labels, images, progress=lambda f, m: stamps.append(time.perf_counter()))
    import_total, per_photo = time.perf_counter() - t0, np.diff([t0, *stamps])
    activation = [0.0]
    for bundle, engine in zip(bundles, engines[1:], strict=True):
        cat.add_model(engine.version, bundle, metrics={})
        t0 = time.perf_counter()
        matching.embed_missing(cat, engine, engine.version)
        activation.append(time.perf_counter() - t0)
    ids = sorted(rep.imported)
    picks = [ids[i] for i in np.linspace(0, len(ids) - 1, min(queries, len(ids))).astype(int)]
    match_times: list[list[float]] = [[] for _ in engines]
    for _ in range(rounds):
        for m, engine in enumerate(engines):
            matching.match_photo(cat, picks[-1], engine)  # warm: this model's gallery cache
            for pid in picks:
                t0 = time.perf_counter()
                matching.match_photo(cat, pid, engine)
                match_times[m].append(time.perf_counter() - t0)
    recs = read_labels(labels, images).records[:queries]
    embed_times: list[list[float]] = [[] for _ in engines]
    for r in recs:
        img = load_image(r.path, max_side=1024)  # the synthetic photos are 1024 px wide: boxes stay as they are
        for m, engine in enumerate(engines):
            t0 = time.perf_counter()
            if engine is None:
                extract_local_features(img, r.box)
            else:
                engine.embed([img], [r.box])
            embed_times[m].append(time.perf_counter() - t0)
    cat.close()
    rows = []
    for m, name in enumerate(names):
        bundle = bundles[m - 1] if m else None
        row = {"model": name, "photos": len(ids), "queries": len(picks) * rounds,
               "match_ms_median": round(1e3 * float(np.median(match_times[m])), 1),
               "match_ms_p90": round(1e3 * float(np.percentile(match_times[m], 90)), 1)}
        if m == 0:
            row.update({"import_ms_median": round(1e3 * float(np.median(per_photo)), 1),
                        "import_s_total": round(import_total, 1),
                        "local_features_ms_median": round(1e3 * float(np.median(embed_times[0])), 1)})
        else:
            row.update({"embed_ms_median": round(1e3 * float(np.median(embed_times[m])), 1),
                        "embed_all_photos_s": round(activation[m], 1),
                        "engine_load_ms_median": round(1e3 * float(np.median(loads[m])), 1),
                        "bundle_mb": round(sum(p.stat().st_size for p in bundle.iterdir()) / 2**20, 1)})
        rows.append(row)
    return rows


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
    rows = measure(a.bundle, labels, images, a.queries, WORK)
    for row in rows:
        print(json.dumps(row), flush=True)
    res = {"rows": rows, "labels": str(labels), "measured": utc_now(), "machine": machine(), "load": load_avg()}
    a.json.write_text(json.dumps(res, indent=1))
    print(f"{res['machine']}, {res['measured']}, load average {res['load']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
