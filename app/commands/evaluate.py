"""``flukeid evaluate --bundle DIR --data labels.csv --images DIR --protocol seed|open``.

Prints top-1, top-5 and MAP@5 of a model bundle on a labelled photo set, overall and split by how
many photos each individual has (1-2, 3-5, 6+).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a model bundle: top-1, top-5 and MAP@5 on a labelled photo set",
        description=(
            "Evaluate a model bundle on labelled photos (labels.csv: image, individual_id, optional "
            "id_known and x0,y0,x1,y1). Protocol 'seed' (the paper's): individuals with 2+ photos, about "
            "2/3 of each one's photos form the gallery (the bundle should have been trained on exactly "
            "those), the rest are queries. Protocol 'open': one query photo per unseen individual "
            "against a gallery of every other photo (the bundle must not have been trained on the unseen "
            "individuals). Rows with id_known=0 are never positives."
        ),
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="model bundle folder")
    p.add_argument("--data", required=True, metavar="CSV", help="labels.csv (or Kaggle train.csv)")
    p.add_argument("--images", default=None, metavar="DIR", help="image folder (default: next to the CSV)")
    p.add_argument("--protocol", choices=("seed", "open"), default="seed", help="evaluation protocol")
    p.add_argument("--seed", type=int, default=0, help="seed of the query/gallery split (default 0)")
    p.add_argument("--flip", action="store_true", help="test-time augmentation: average with the mirror image")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="inference device")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import evaluate_bundle, format_result, read_labels

    def progress(fraction: float, message: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{message} ({fraction:.0%})   ")
            sys.stderr.flush()

    # errors and Ctrl+C are reported by app.cli.main, as for every command
    labelled = read_labels(args.data, args.images)
    for problem in labelled.problems[:10]:
        print(f"flukeid: skipped: {problem}", file=sys.stderr)
    if len(labelled.problems) > 10:
        print(f"flukeid: ... and {len(labelled.problems) - 10} more skipped rows", file=sys.stderr)
    res = evaluate_bundle(args.bundle, labelled.records, args.protocol, args.seed, flip=args.flip,
                          device=args.device, progress=progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        i = res.info
        print(format_result(res, f"{args.bundle} on {args.data}, protocol {args.protocol} (seed {args.seed}): "
                                 f"{i['queries']} queries, gallery {i['gallery_photos']} photos of "
                                 f"{i['gallery_individuals']} individuals"))
    return 0
