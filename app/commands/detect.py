"""``flukeid detect PHOTO...`` (print each photo's fluke box) and ``flukeid train-detector``."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("detect", help="find the fluke box in photos",
                              description="Print the fluke box (x0 y0 x1 y1 in photo pixels) and confidence of each photo.")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--model", help="detector.onnx or a folder holding it (default: the shipped detector)")
    p.add_argument("--classical", action="store_true", help="use the classical detector (no network)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_detect)

    t = subparsers.add_parser("train-detector", help="train the fluke detector and export it to ONNX",
                              description="Train the fluke box detector on synthetic frames and/or labelled "
                                          "photos (labels CSV with x0,y0,x1,y1) and write detector.onnx + manifest.json.")
    t.add_argument("--out", required=True, help="output folder (an earlier detector folder there is replaced)")
    t.add_argument("--synthetic", type=int, default=2000, help="synthetic fluke frames (default 2000; 0 for none)")
    t.add_argument("--negatives", type=int, default=None, help="plain-sea frames (default: synthetic/5)")
    t.add_argument("--data", action="append", default=[], metavar="LABELS_CSV",
                   help="labels CSV with boxes (repeatable)")
    t.add_argument("--images", action="append", default=[], metavar="DIR",
                   help="images folder of the matching --data (default: images/ beside the CSV)")
    t.add_argument("--init", help="start from this detector folder (fine-tune)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--input-size", type=int, default=128)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train_detector)


def run_detect(args: argparse.Namespace) -> int:
    from model.api import ClassicalDetector, FlukeidError, default_detector, detect_file, load_detector

    if args.classical:
        detector = ClassicalDetector()
    elif args.model:
        detector = load_detector(args.model)
    else:
        detector = default_detector()
    failures = 0
    for photo in args.photos:
        try:
            d = detect_file(photo, detector)
        except FlukeidError as exc:
            failures += 1
            print(f"flukeid: error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"photo": photo, **d.to_dict()}))
        else:
            x0, y0, x1, y1 = d.box
            print(f"{photo}\t{x0:.0f} {y0:.0f} {x1:.0f} {y1:.0f}\tconfidence {d.confidence:.3f}\t{d.source}")
    return 1 if failures else 0


def run_train_detector(args: argparse.Namespace) -> int:
    from app.cli import interruptible

    interruptible()  # stoppable by SIGINT even when started with SIGINT ignored
    from model.api import DetectorTrainConfig, build_detector

    if args.images and len(args.images) != len(args.data):
        print("flukeid: error: give one --images per --data (or none)", file=sys.stderr)
        return 2
    images = args.images or [None] * len(args.data)
    config = DetectorTrainConfig(epochs=args.epochs, input_size=args.input_size, width=args.width, seed=args.seed)

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction * 100:5.1f}%] {message}", flush=True)

    def skipped(exc) -> None:
        print(f"flukeid: skipped: {exc}", file=sys.stderr)

    out = build_detector(args.out, synthetic=args.synthetic, negatives=args.negatives,
                         data=list(zip(args.data, images, strict=True)), config=config, init=args.init,
                         progress=progress, on_error=skipped)
    print(f"wrote {out}")
    return 0
