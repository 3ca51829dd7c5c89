"""``flukeid evaluate --data labels.csv --images DIR --protocol seed|open|all [--bundle DIR] [--local/--no-local]``.

Prints top-1, top-5 and MAP@5, overall and split by how many photos each individual has (1-2,
3-5, 6+), for each method: local features alone (no model needed), a bundle's embedding, and the
two fused as the app fuses them without calibration; then a compact side-by-side summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

PROTOCOL_CHOICES = ("seed", "open", "all")  # model.api.PROTOCOLS (not imported to keep startup fast)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure local features, a model bundle and their fusion: top-1, top-5 and MAP@5 on labelled photos",
        description=(
            "Evaluate identification on labelled photos (labels.csv: image, individual_id, optional id_known "
            "and x0,y0,x1,y1). Without --bundle, local features alone (no model, no training); with --bundle, "
            "three rows: local features, the bundle's embedding (its head's score of each individual's best "
            "photo) and the two fused as the app fuses them without calibration (z-scored sum over each "
            "query's shortlist). Protocol 'seed' (the paper's): individuals with 2+ photos, about 2/3 of each "
            "one's photos form the gallery (the bundle should have been trained on exactly those), the rest are "
            "queries. Protocol 'open': one query photo per unseen individual against a gallery of every other "
            "photo (the bundle must not have been trained on the unseen individuals). Protocol 'all' "
            "(training-free): one photo of each individual with 2+ photos is the query, every other photo is in "
            "the gallery, each unmatched (id_known=0) photo counting as an individual of its own. Rows with "
            "id_known=0 are never queries."
        ),
    )
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="model bundle folder (adds the embedding and fused rows; default: local features alone)")
    p.add_argument("--data", required=True, metavar="CSV", help="labels.csv (or Kaggle train.csv)")
    p.add_argument("--images", default=None, metavar="DIR", help="image folder (default: next to the CSV)")
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="seed", help="evaluation protocol")
    p.add_argument("--seed", type=int, default=0, help="seed of the query/gallery split (default 0)")
    p.add_argument("--local", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate local features (and, with --bundle, the fusion); --no-local: the bundle alone")
    p.add_argument("--flip", action="store_true", help="embedding test-time augmentation: average with the mirror image")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="inference device")
    p.add_argument("--json", action="store_true",
                   help="print JSON: every method under 'methods'; the top-level keys repeat the bundle's "
                        "embedding result when --bundle is given (as before), else local features'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import evaluate_methods, format_comparison, format_result, read_labels

    if not args.local and args.bundle is None:
        print("flukeid: nothing to evaluate: --no-local needs --bundle DIR", file=sys.stderr)
        return 2

    def progress(fraction: float, message: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{message} ({fraction:.0%})   ")
            sys.stderr.flush()

    # errors and Ctrl+C are reported by app.cli.main, as for every command
    t0 = time.perf_counter()
    labelled = read_labels(args.data, args.images)
    for problem in labelled.problems[:10]:
        print(f"flukeid: skipped: {problem}", file=sys.stderr)
    if len(labelled.problems) > 10:
        print(f"flukeid: ... and {len(labelled.problems) - 10} more skipped rows", file=sys.stderr)
    results = evaluate_methods(labelled.records, args.protocol, args.seed, bundle=args.bundle, local=args.local,
                               flip=args.flip, device=args.device, progress=progress)
    seconds = time.perf_counter() - t0
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        primary = results["embedding"] if "embedding" in results else results["local"]
        print(json.dumps({**primary.to_dict(), "methods": {m: r.to_dict() for m, r in results.items()},
                          "seconds": round(seconds, 1)}, indent=2))
        return 0
    i = next(iter(results.values())).info
    unmatched = f", {i['gallery_unidentified']} of them unidentified" if i.get("gallery_unidentified") else ""
    print(f"{args.data}, protocol {args.protocol} (seed {args.seed}): {i['queries']} queries, gallery "
          f"{i['gallery_photos']} photos of {i['gallery_individuals']} individuals{unmatched}")
    for method, res in results.items():
        print()
        print(format_result(res, f"{method}: {_describe(method, res, args)}"))
    print()
    print(format_comparison(results))
    print(f"({seconds:.0f} s)")
    return 0


def _describe(method: str, res, args: argparse.Namespace) -> str:
    i = res.info
    if method == "local":
        return (f"local features, no model ({i['descriptors']} gallery descriptors, {i['index']} index; "
                f"features {i['features_s']:.0f} s, {i['query_ms']:.0f} ms a query)")
    if method == "embedding":
        return f"{args.bundle}, head score of each individual's best photo{' (flip)' if args.flip else ''}"
    return f"local + embedding, z-scored sum over each query's {i['shortlist']}+{i['shortlist']} shortlist"
