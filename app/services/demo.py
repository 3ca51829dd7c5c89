"""The demo catalog: synthetic flukes, imported with the shipped demo model (Qt-free, built once).

About 30 synthetic individuals (long-tailed photo counts) with sighting dates spread over six
seasons. Most photos come in as a labelled catalog (identified, boxes confirmed); the latest
sightings, and a few whales never seen before, come in as new field photos: unidentified, some
with their box still to check. So the app opens with work in every view.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from app.catalog import Catalog, CatalogError
from app.paths import demo_bundle_dir

READY_KEY = "demo_ready"
MARKER = ".flukeid-demo"
NAMES = ["Salt", "Pepper", "Comet", "Nova", "Orion", "Pinnacle", "Talon", "Halo"]

ProgressFn = Callable[[float, str], None]


def is_demo_ready(folder: str | Path) -> bool:
    """True when ``folder`` holds a complete demo catalog."""
    folder = Path(folder)
    if not (folder / "catalog.sqlite").is_file():
        return False
    try:
        with Catalog.open(folder, mode="read") as cat:
            return cat.get_meta(READY_KEY) == "1"
    except CatalogError:
        return False


def _stamp_dates(rows: list, rng: random.Random) -> dict[Path, datetime]:
    """Give each photo an EXIF date: one individual's sightings spread over the seasons 2019-2024."""
    from PIL import Image

    dates: dict[Path, datetime] = {}
    by_ind: dict[str, list] = {}
    for r in rows:
        by_ind.setdefault(r.individual, []).append(r)
    for group in by_ind.values():
        first_season = rng.randint(2019, 2023)
        seasons = sorted(rng.randint(first_season, 2024) for _ in group)
        for r, year in zip(group, seasons):
            when = datetime(year, 6, 15) + timedelta(days=rng.randint(0, 110), hours=rng.randint(7, 17),
                                                     minutes=rng.randint(0, 59))
            dates[r.path] = when
            path = r.path
            with Image.open(path) as im:
                im.load()
                exif = Image.Exif()
                exif[306] = when.strftime("%Y:%m:%d %H:%M:%S")
                exif.get_ifd(0x8769)[36867] = when.strftime("%Y:%m:%d %H:%M:%S")
                exif[271], exif[272] = "flukeid", "synthetic camera"
                im.save(path, quality=92, exif=exif)
    return dates


def create_demo_catalog(folder: str | Path, *, bundle_dir: str | Path | None = None, individuals: int = 30,
                        seed: int = 3, detector=None, progress: ProgressFn | None = None,
                        should_stop: Callable[[], bool] | None = None, calibrate: bool = True) -> Path:
    """Build the demo catalog in ``folder`` unless a complete one is there already.

    Args:
        folder: the catalog folder (created).
        bundle_dir: the model bundle to use (default: the demo bundle shipped in resources/).
        individuals: how many synthetic whales.
        seed: the synthetic data set's seed.
        detector: the fluke detector (default: :func:`model.api.default_detector`).
        progress, should_stop: the usual job callbacks.
        calibrate: fit the match confidence on the catalogued whales (as ``flukeid calibrate``
            does), so the demo shows calibrated probabilities; skipped when there are too few
            pairs (a tiny demo shows ranked scores).

    Returns:
        The catalog folder.

    Raises:
        CatalogError: the folder holds a catalog that is not a demo catalog.
        BundleError: the demo model is missing or damaged.
    """
    from app.services import decisions, importing, models
    from model.api import Engine, default_detector, generate_dataset, read_labels, verify_bundle, write_labels

    folder = Path(folder)
    report = progress or (lambda f, m: None)
    if is_demo_ready(folder):
        return folder
    if (folder / "catalog.sqlite").exists():
        if not (folder / MARKER).exists():
            raise CatalogError(f"{folder}: holds a catalog that is not the demo catalog; choose another folder")
        for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):  # an unfinished demo
            (folder / name).unlink(missing_ok=True)
    bundle_dir = Path(bundle_dir) if bundle_dir else demo_bundle_dir()
    if not (bundle_dir / "manifest.json").is_file():
        from model.api import BundleError

        raise BundleError(f"{bundle_dir}: the demo model is not installed (no manifest.json); "
                          "build it with `make demo-model`")
    verify_bundle(bundle_dir)  # a damaged demo model is refused before any photo is drawn
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("built by flukeid demo\n")

    photos_dir = folder / "field-photos"
    sub = lambda a, b: (lambda f, m: report(a + (b - a) * f, m))  # noqa: E731
    labels = generate_dataset(photos_dir, individuals, seed, progress=sub(0.0, 0.35), should_stop=should_stop,
                              min_photos=2)
    rows = read_labels(labels, check_images=False).records
    rng = random.Random(seed)
    dates = _stamp_dates(rows, rng)

    # who is new: a few whales never catalogued, and the latest sighting of about half the others
    ids = sorted({r.individual for r in rows})
    codes = {iid: f"HW-{n + 1:04d}" for n, iid in enumerate(ids)}
    unseen = set(rng.sample(ids, k=max(1, len(ids) // 10)))
    fresh: list = []
    known: list = []
    for iid in ids:
        group = sorted((r for r in rows if r.individual == iid), key=lambda r: dates[r.path])
        if iid in unseen:
            fresh.extend(group[:1])
            known.extend([])
        elif len(group) >= 2 and rng.random() < 0.6:
            fresh.append(group[-1])
            known.extend(group[:-1])
        else:
            known.extend(group)
    known_csv = folder / "field-photos" / "catalogued.csv"
    write_labels([replace(r, individual=codes[r.individual]) for r in known], known_csv, photos_dir / "images")

    cat = Catalog.create(folder) if not (folder / "catalog.sqlite").exists() else Catalog.open(folder)
    try:
        installed = models.install_bundle(cat, bundle_dir)
        cat.set_active_model(installed.version)
        engine = Engine.load(installed.path)
        detector = detector or default_detector()
        report(0.4, "importing the catalogued photos")
        importing.import_labelled(cat, known_csv, photos_dir / "images", detector=detector, engine=engine,
                                  progress=sub(0.4, 0.75), should_stop=should_stop)
        report(0.75, "importing new field photos")
        new_report = importing.import_photos(cat, [r.path for r in fresh],
                                             detector=detector, engine=engine, progress=sub(0.75, 0.85),
                                             should_stop=should_stop)
        if calibrate:
            from app.services import calibration

            report(0.85, "calibrating the match confidence on the catalogued whales")
            try:
                calibration.calibrate(cat, engine, progress=sub(0.85, 0.99), should_stop=should_stop)
            except calibration.NotEnoughPairs:
                pass  # a tiny demo: the review shows ranked scores, as any uncalibrated catalog does
        # half of the new photos already had their box checked
        for pid in new_report.imported[::2]:
            box = cat.current_box(pid)
            if box is not None and box.box is not None:
                decisions.confirm_box(cat, pid, who="demo")
        for ind, name in zip(cat.individuals()[:: max(1, len(ids) // len(NAMES))], NAMES):
            decisions.rename_individual(cat, ind.id, name=name, who="demo")
        cat.set_meta(READY_KEY, "1")
    finally:
        cat.close()
    report(1.0, "demo catalog ready")
    return folder
