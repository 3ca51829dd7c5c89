"""Catalog benchmark: import rate for synthetic photos and catalog size on disk per 1,000 photos.

    python -m bench.bench_catalog [--n 1000] [--size 1024x683]

Writes docs/bench/catalog.md (run ``python -m bench.assemble`` to refresh docs/BENCHMARKS.md).
Runs: import without a model; a labelled import (labels.csv); with the detector (the shipped
ONNX detector, or the classical fallback when none is shipped); with detector and engine when a
model bundle is available (resources/models/demo or --bundle).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from app.catalog import Catalog
from app.paths import demo_bundle_dir
from app.services.importing import import_labelled, import_photos
from bench.common import ROOT, configure_process, machine


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _run(name: str, data: Path, work: Path, fn) -> dict:
    folder = work / name.replace(" ", "_").replace("+", "")
    with Catalog.create(folder) as cat:
        t0, c0 = time.perf_counter(), time.process_time()
        rep = fn(cat)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        cat._query("PRAGMA wal_checkpoint(TRUNCATE)")
        n = len(rep.imported)
    db = sum(p.stat().st_size for p in folder.glob("catalog.sqlite*"))
    thumbs = _du(folder / "thumbnails")
    row = {"name": name, "n": n, "errors": len(rep.errors), "seconds": secs, "rate": n / secs if secs else 0.0,
           "cpu_ms": cpu / max(n, 1) * 1000,
           "db_per_1000": db / max(n, 1) * 1000 / 2**20, "thumbs_per_1000": thumbs / max(n, 1) * 1000 / 2**20}
    print(f"{name:<40} {n} photos in {secs:6.1f} s = {row['rate']:6.1f} photos/s, {row['cpu_ms']:.0f} ms CPU each; "
          f"db {row['db_per_1000']:.2f} MiB, thumbnails {row['thumbs_per_1000']:.2f} MiB per 1,000")
    shutil.rmtree(folder)
    return row


def main(argv: list[str] | None = None) -> None:
    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="photos (default 1000)")
    ap.add_argument("--size", default="1024x683", help="photo size WxH (default 1024x683)")
    ap.add_argument("--bundle", default=None, help="model bundle for the engine run (default: the demo bundle)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "catalog.md"))
    ap.add_argument("--data", default=None,
                    help="keep the synthetic photos in this folder and reuse them on the next run")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    from model.api import Engine, default_detector, generate_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_catalog_"))
    try:
        t0 = time.perf_counter()
        data = Path(args.data) if args.data else work / "data"
        reused = (data / "labels.csv").is_file()
        if not reused:
            generate_dataset(data, individuals=args.n // 4, photos=4, size=(w, h), seed=1)
        images = data / "images"
        n_files = len(list(images.glob("*.jpg")))
        photo_mb = _du(images) / n_files / 2**20
        print(f"{'reused' if reused else 'generated'} {n_files} photos ({w}x{h}, {photo_mb:.2f} MiB each) in {time.perf_counter() - t0:.0f} s")

        rows = [
            _run("no model", data, work, lambda c: import_photos(c, [images])),
            _run("labelled (labels.csv, boxes given)", data, work,
                 lambda c: import_labelled(c, data / "labels.csv")),
        ]
        det = default_detector()
        det_name = "ONNX detector" if type(det).__name__ == "Detector" else "classical detector (no model shipped)"
        rows.append(_run(f"with {det_name}", data, work, lambda c: import_photos(c, [images], detector=det)))
        bundle = Path(args.bundle) if args.bundle else demo_bundle_dir()
        engine_note = ""
        if (bundle / "manifest.json").is_file():
            eng = Engine.load(bundle, "cpu")
            rows.append(_run(f"with {det_name} + engine ({bundle.name}, D={eng.embedding_dim})", data, work,
                             lambda c: import_photos(c, [images], detector=det, engine=eng)))
        else:
            engine_note = f"\nNo model bundle at `{bundle}` when this ran, so there is no engine row.\n"
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## Catalog: import rate and size on disk",
        "",
        f"Command: `python -m bench.bench_catalog --n {args.n} --size {w}x{h}`  ",
        f"Machine: {machine()}, Python {platform.python_version()}  ",
        f"Date: {dt.date.today().isoformat()}",
        "",
        f"{n_files} synthetic fluke photos (JPEG, {w}x{h}, {photo_mb:.2f} MiB each on average), imported "
        "into a fresh catalog each time: hash, decode (at most 1024 px), EXIF, thumbnail, detect and embed "
        "when given, one transaction per photo. Size on disk is the SQLite database (after a WAL checkpoint) "
        "and the thumbnails, per 1,000 photos; photos themselves stay where they are unless `--copy`. "
        "The machine is shared with other jobs, so wall-clock rates vary from run to run; CPU ms per photo "
        "(all threads of the process) is the steadier figure. Load average when this ran: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| run | photos | errors | seconds | photos/s | CPU ms / photo | database MiB / 1,000 | thumbnails MiB / 1,000 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['n']} | {r['errors']} | {r['seconds']:.1f} | {r['rate']:.1f} | "
                     f"{r['cpu_ms']:.0f} | "
                     f"{r['db_per_1000']:.2f} | {r['thumbs_per_1000']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n" + engine_note)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
