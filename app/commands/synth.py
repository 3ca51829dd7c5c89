"""``flukeid synth --individuals N --out DIR``: write a synthetic humpback fluke data set."""

from __future__ import annotations

import argparse
import sys
import time


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 768x512 (got {text!r})") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"size must be at least 64x64 (got {text})")
    return w, h


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (got {text!r})") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {v})")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic humpback fluke photo set (images/ + labels.csv)",
        description=(
            "Draw synthetic humpback fluke photos: each individual has its own outline and "
            "pigmentation; each photo has its own sea, light, pose, splash, blur and noise. "
            "Writes DIR/images/*.jpg and DIR/labels.csv (image, individual_id, id_known, x0, y0, x1, y1). "
            "The same --seed gives identical files."
        ),
    )
    p.add_argument("--individuals", type=_positive, required=True, metavar="N", help="how many individuals")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size", type=_size, default=(768, 512), metavar="WxH", help="photo size (default 768x512)"
    )
    p.add_argument(
        "--min-photos",
        type=_positive,
        default=1,
        metavar="K",
        help="at least K photos per individual (counts are long-tailed above it; default 1)",
    )
    p.add_argument(
        "--max-photos",
        type=_positive,
        default=30,
        metavar="K",
        help="at most K photos per individual (default 30)",
    )
    p.add_argument(
        "--photos", type=_positive, default=None, metavar="K", help="exactly K photos per individual"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import generate_dataset, read_labels

    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if sys.stderr.isatty() and (now - last[0] > 0.2 or fraction >= 1):
            last[0] = now
            sys.stderr.write(f"\r{message} ({fraction:.0%})")
            sys.stderr.flush()

    start = time.perf_counter()
    labels = generate_dataset(
        args.out,
        args.individuals,
        seed=args.seed,
        photos=args.photos,
        size=args.size,
        progress=progress,
        min_photos=args.min_photos,
        max_photos=max(args.max_photos, args.min_photos),
    )
    elapsed = time.perf_counter() - start
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    loaded = read_labels(labels, check_images=False)
    n = len(loaded.records)
    print(
        f"wrote {n} photos of {len(loaded.individuals)} individuals to {labels.parent} "
        f"in {elapsed:.1f} s ({n / max(elapsed, 1e-9):.1f} photos/s)"
    )
    return 0
