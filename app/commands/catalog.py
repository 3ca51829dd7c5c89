"""``flukeid new|import|match|calibrate|export|stats``: the catalog from the command line."""

from __future__ import annotations

import argparse
import contextlib
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("new", help="create an empty catalog folder")
    p.add_argument("catalog", nargs="?",
                   help="folder to create the catalog in (default: catalogs/default in the per-user data folder)")
    p.set_defaults(func=_new)

    p = subparsers.add_parser("import", help="import photos (folders are searched recursively)")
    p.add_argument("catalog", help="catalog folder")
    p.add_argument("paths", nargs="*", metavar="PATH", help="photo files or folders")
    p.add_argument("--copy", action="store_true", help="copy the photos into the catalog")
    p.add_argument("--labels", metavar="CSV",
                   help="a labelled catalog: labels.csv (image,individual_id[,x0,y0,x1,y1]) or Kaggle train.csv")
    p.add_argument("--images", metavar="DIR", help="folder the --labels image names are relative to")
    p.add_argument("--allow-absolute-paths", action="store_true",
                   help="accept --labels rows that name a photo by absolute path (by default every photo "
                        "must be inside the images folder; such rows are reported and skipped)")
    p.add_argument("--no-detect", action="store_true", help="do not run the fluke detector")
    p.add_argument("--no-embed", action="store_true", help="do not embed with the active model")
    p.set_defaults(func=_import)

    p = subparsers.add_parser("match", help="print the 5 most likely individuals for a photo")
    p.add_argument("catalog", help="catalog folder")
    p.add_argument("photo", help="a photo file (in the catalog or not) or a catalog photo id")
    p.add_argument("--model", metavar="BUNDLE", help="model bundle folder (default: the catalog's active model)")
    p.add_argument("--local-only", action="store_true",
                   help="match with local features alone, even when the catalog has an active model")
    p.add_argument("-k", type=int, default=5, help="how many individuals (default 5)")
    p.set_defaults(func=_match)

    p = subparsers.add_parser(
        "calibrate", help="fit the match confidence on this catalog's own identified photos and decisions")
    p.add_argument("catalog", help="catalog folder")
    p.add_argument("--model", metavar="BUNDLE",
                   help="calibrate the fusion with this model bundle (default: the catalog's active model)")
    p.add_argument("--local-only", action="store_true", help="calibrate local-feature matching alone")
    p.add_argument("--max-queries", type=int, default=None, metavar="N",
                   help="match at most N identified photos (default: all, up to 2,000)")
    p.set_defaults(func=_calibrate)

    p = subparsers.add_parser("export", help="export identifications, Kaggle Image,Id or sightings as CSV")
    p.add_argument("catalog", help="catalog folder")
    p.add_argument("--format", choices=["identifications", "kaggle", "sightings"],
                   help="what to export (required)")
    p.add_argument("--out", required=True, metavar="FILE", help="CSV file to write")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("stats", help="counts of photos, individuals, decisions, models")
    p.add_argument("catalog", help="catalog folder")
    p.set_defaults(func=_stats)


def _open_for_reading(folder: str):
    """Open a catalog in auto mode; say on stderr when it is read-only, and why."""
    from app.catalog import Catalog

    cat = Catalog.open(folder, mode="auto")
    if cat.readonly:
        print(f"note: catalog {folder} is open read-only ({cat.readonly_reason})", file=sys.stderr)
    return cat


def _new(args: argparse.Namespace) -> int:
    from app.paths import default_catalog_dir
    from app.services import models

    folder = args.catalog or str(default_catalog_dir())
    new = models.create_catalog(folder)
    with new.catalog as cat:
        print(f"created catalog {cat.root}")
        if new.model:
            print(f"active model: {new.model} (the program's default)")
        else:
            if new.problem:
                print(f"warning: {new.problem}", file=sys.stderr)
            print("no model yet: photos are matched by their local features, which need none")
            print(f"a model adds a learned second opinion and heatmaps: `flukeid model add {folder} BUNDLE "
                  f"--activate`, or `flukeid retrain {folder}` once you have confirmed identifications")
    return 0


class _Bar:
    """A one-line text progress bar on stderr."""

    def __init__(self, width: int = 30):
        self.width = width
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if not self.tty and pct // 10 == self.last // 10 and fraction < 1.0:
            return
        self.last = pct
        fill = int(fraction * self.width)
        line = f"[{'#' * fill}{'.' * (self.width - fill)}] {pct:3d}% {message[:60]}"
        sys.stderr.write(("\r" + line.ljust(100)) if self.tty else line + "\n")
        if fraction >= 1.0 and self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _import(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import importing

    if not args.paths and not args.labels:
        print("flukeid import: give photo files/folders and/or --labels CSV", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        # the labels file is checked (and a pipe read) before the catalog's write lock is taken
        labels = stack.enter_context(importing.readable_labels(args.labels)) if args.labels else None
        cat = stack.enter_context(Catalog.open(args.catalog))
        return _import_into(cat, args, labels)


def _import_into(cat, args: argparse.Namespace, labels) -> int:
    """The import itself, on the open catalog (``labels``: the checked labels file, or None)."""
    from app.services import importing, matching

    detector = engine = None
    if not args.no_detect:
        from model.api import default_detector

        active = cat.active_model()
        bundle = cat.model_path(active) if active is not None else None
        # the active model's own detector when it has one, else the shipped one (or the classical fallback)
        detector = default_detector(bundle if bundle and (bundle / "detector.onnx").is_file() else None)
    if not args.no_embed:
        engine = matching.load_engine(cat)
        if engine is None:
            print("no active model: photos get local features only, which is all matching needs",
                  file=sys.stderr)
    reports = []
    bar = _Bar()
    if args.labels:
        reports.append(importing.import_labelled(cat, labels, args.images, detector=detector,
                                                 engine=engine, copy=args.copy, progress=bar,
                                                 allow_absolute=args.allow_absolute_paths,
                                                 shown_as=args.labels))
    if args.paths:
        reports.append(importing.import_photos(cat, args.paths, detector=detector, engine=engine,
                                               copy=args.copy, progress=bar))
    for rep in reports:
        for path, problem in rep.errors:
            print(f"error: {path}: {problem}", file=sys.stderr)
        if rep.errors_not_listed:
            print(f"error: ... and {rep.errors_not_listed} more", file=sys.stderr)
        for path, existing in rep.duplicates:
            print(f"duplicate: {path} (same as photo {existing})", file=sys.stderr)
        for path, problem in getattr(rep, "feature_errors", []):
            print(f"warning: {path}: {problem} (computed again by flukeid match)", file=sys.stderr)
        print(rep.summary() + f" in {rep.seconds:.1f} s")
    failed = sum(r.error_count for r in reports)
    if failed:
        if args.labels and not args.images and any("file not found" in p for r in reports for _, p in r.errors):
            print("hint: give --images DIR, the folder the labels file's image names are relative to",
                  file=sys.stderr)
        print(f"flukeid import: {failed} file{'s' if failed != 1 else ''} or row{'s' if failed != 1 else ''} "
              "not imported (listed above); exit code 1", file=sys.stderr)
    # 0: everything imported (duplicates are fine); 1: some files or rows skipped; 2: nothing could start
    return 1 if failed else 0


def _engine_for(cat, args):
    """The engine to fuse with: --model, else the active model; None with --local-only or no model."""
    from app.services import matching

    if args.local_only:
        return None
    return matching.load_engine(cat, bundle=args.model)


def _features_before_matching(cat) -> None:
    """Compute the local features the catalog lacks (photos imported before, boxes redrawn)."""
    from app.services import local_features
    from model.api import FEATURE_VERSION

    todo = cat.photos_missing_local_features(FEATURE_VERSION)
    if not todo:
        return
    if cat.readonly:
        print(f"note: {len(todo)} photos have no local features and the catalog is read-only "
              f"({cat.readonly_reason}): they are left out", file=sys.stderr)
        return
    report = local_features.compute_missing_local_features(cat, progress=_Bar())
    for path, problem in report.errors:
        print(f"warning: {path}: {problem}", file=sys.stderr)


def _match(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.services import importing, matching

    with _open_for_reading(args.catalog) as cat:
        engine = _engine_for(cat, args)
        if engine is not None:
            # a model the gallery was never embedded with would find nothing: embed it first (stored, once)
            missing, _ = matching.gallery_missing(cat, engine.version)
            if missing and not cat.readonly:
                print(f"embedding {len(missing)} gallery photos with model {engine.version} (once: they are "
                      "stored in the catalog)", file=sys.stderr)
            prepared = matching.embed_gallery(cat, engine, progress=_Bar())
            for file, problem in prepared["errors"]:
                print(f"error: {file}: {problem} (left out of the gallery)", file=sys.stderr)
            if prepared["left_out"] and cat.readonly:
                print(f"warning: {prepared['left_out']} of {prepared['gallery']} gallery photos have no embedding "
                      f"with model {engine.version} and the catalog is read-only: they are left out",
                      file=sys.stderr)
        _features_before_matching(cat)
        matching.local_index(cat, exact=True)  # one query: an exact search beats training an inverted file
        path = Path(args.photo)
        if path.is_file():
            existing = cat.photo_by_sha(importing.sha256_of(path))
            if existing is not None:
                result, label = matching.match_photo(cat, existing.id, engine, k=args.k), f"photo {existing.id}"
            else:
                from model.api import default_detector

                result = matching.match_file(cat, path, engine, detector=default_detector(), k=args.k)
                label = path.name
        elif args.photo.isdigit():
            result, label = matching.match_photo(cat, int(args.photo), engine, k=args.k), f"photo {args.photo}"
        else:
            print(f"flukeid match: {args.photo}: no such file or catalog photo id", file=sys.stderr)
            return 2
        codes = {i.id: i.code for i in cat.individuals(include_merged=True)}
        how = "local features" + (f" + model {engine.version} ({engine.provider})" if engine is not None else "")
        how += ", calibrated" if result.calibrated else ", uncalibrated: scores rank, they are not probabilities"
        print(f"{label}: {how}")
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        if not result.candidates:
            print("  no identified photos to compare with yet")
        for c in result.candidates:
            inl = f"{c.inliers} inliers" if c.inliers is not None else ""
            score = matching.score_text(c, result) if result.method != "local" or result.calibrated \
                else f"votes {c.votes:.1f}"
            print(f"  {c.rank}. {codes.get(c.individual, c.individual):<16} {score:>12}  "
                  f"{inl:<11} (best photo {c.best_photo_id})")
        print(_verdict_line(result, codes))
    return 0


def _verdict_line(result, codes: dict) -> str:
    from app.services import matching

    v = matching.verdict(result)
    top = result.candidates[0] if result.candidates else None
    name = codes.get(top.individual, top.individual) if top is not None else ""
    if v == "empty":
        return "  -> no candidates: this photo starts a new individual"
    if v == "best_match":
        return (f"  -> best match: {name} ({matching.percent(top.probability)}; called a match from "
                f"{result.best_match_threshold:.0%})")
    if v == "new":
        return f"  -> probably a new individual (best {matching.percent(top.probability)} < {result.threshold:.0%})"
    if v == "unsure" and getattr(top, "inliers", None) == 0:  # local features verified nothing
        return "  -> no confident match, and no candidate shares verified marks with this photo: it may be new"
    if v == "unsure":
        return "  -> no confident match: compare the candidates before deciding"
    if v == "unverified":
        return "  -> no candidate shares verified correspondences with this photo: compare, it may be new"
    return "  -> a ranking, not a verdict: no calibration yet (flukeid calibrate)"


def _calibrate(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import calibration

    with Catalog.open(args.catalog) as cat:
        engine = _engine_for(cat, args)
        _features_before_matching(cat)
        try:
            res = calibration.calibrate(cat, engine, max_queries=args.max_queries, progress=_Bar())
        except calibration.NotEnoughPairs as exc:
            print(f"flukeid calibrate: {exc}", file=sys.stderr)
            return 1
        print(res.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.services import exporting

    if (Path(args.catalog) / "checkpoint.pt").is_file():
        print(f"flukeid export: {args.catalog} is a training run, not a catalog: export it as a model bundle "
              f"with `flukeid export-model {args.catalog} --out BUNDLE`", file=sys.stderr)
        return 2
    if args.format is None:
        print("flukeid export: --format is required (identifications, kaggle or sightings); "
              "to export a training run as a model bundle use `flukeid export-model RUN --out BUNDLE`",
              file=sys.stderr)
        return 2
    notes: list[str] = []
    with _open_for_reading(args.catalog) as cat:
        n = exporting.export(cat, args.format, args.out, notes)
    print(f"wrote {n} rows to {args.out}")
    for note in notes:
        print(f"note: {note}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from app.catalog import Catalog

    with Catalog.open(args.catalog, mode="auto") as cat:
        stats = cat.stats()
        if cat.readonly:
            stats["note"] = cat.readonly_reason
    width = max(len(k) for k in stats)
    for k, v in stats.items():
        print(f"{k.replace('_', ' '):<{width}}  {v if v is not None else '-'}")
    return 0
