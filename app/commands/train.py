"""``flukeid train`` (train a Siamese network on labelled photos) and ``flukeid export-model RUN --out BUNDLE``.

With ``--progress-json`` training prints one JSON object per line on stdout (events ``start``,
``epoch``, ``done``, ``error``), which the app's retraining service reads.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the Siamese network on labelled photos",
        description=(
            "Train the Siamese network (branch CNN + pair head, BCE, Adam, hard-pair mining) on a labels.csv "
            "(image, individual_id, optional id_known, x0,y0,x1,y1). The run folder gets config.json, "
            "checkpoint.pt (every epoch), history.jsonl and summary.json. Runs under torchrun for several GPUs."
        ),
    )
    p.add_argument("--data", required=True, metavar="CSV", help="labels.csv (or Kaggle train.csv)")
    p.add_argument("--images", default=None, metavar="DIR", help="image folder (default: next to the CSV)")
    p.add_argument("--config", default="tiny", metavar="PRESET|FILE",
                   help="preset tiny|cpu|paper, or a JSON config file (default: tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set branch.kind=resnet50 --set lr=1e-4 (repeatable)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--progress-json", action="store_true", help="JSON-lines progress events on stdout")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="training device")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (overrides the config)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("export-model", help="export a training run as a model bundle (ONNX, checked against torch)",
                       description="Export a training run's checkpoint as a verified model bundle folder.")
    e.add_argument("run", metavar="RUN", help="training run folder (with checkpoint.pt)")
    e.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create (must not exist)")
    e.add_argument("--detector", default=None, metavar="ONNX", help="a detector.onnx to include")
    e.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from app.cli import interruptible

    interruptible()  # Retrain's Cancel sends SIGINT: save the checkpoint even if SIGINT was inherited ignored
    from model.api import DataError, FlukeidError, load_train_config, read_labels, train_siamese

    def emit(event: dict) -> None:
        if args.progress_json:
            print(json.dumps(event), flush=True)
        elif event.get("event") == "epoch":
            val = f"  val top-5 {event['val_top5']:.1%}" if "val_top5" in event else ""
            print(f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}{val}  "
                  f"{event['images_per_s']:.0f} images/s  eta {event['eta_s']:.0f} s", flush=True)

    def progress(fraction: float, message: str) -> None:
        if not args.progress_json and sys.stderr.isatty():
            sys.stderr.write(f"\r{message} ({fraction:.0%})   ")
            sys.stderr.flush()

    try:
        overrides = list(args.overrides)
        if args.device:
            overrides.append(f"device={args.device}")
        if args.epochs is not None:
            overrides.append(f"epochs={args.epochs}")
        cfg = load_train_config(args.config, overrides)
        labelled = read_labels(args.data, args.images)
        for problem in labelled.problems[:10]:
            print(f"flukeid: skipped: {problem}", file=sys.stderr)
        if len(labelled.problems) > 10:
            print(f"flukeid: ... and {len(labelled.problems) - 10} more skipped rows", file=sys.stderr)
        if not labelled.records and labelled.problems:
            raise DataError(f"{args.data}: none of its {len(labelled.problems)} rows can be used "
                            f"(first problem: {labelled.problems[0]})")
        result = train_siamese(cfg, labelled.records, args.out, progress=progress, resume=args.resume,
                               events=emit)
    except FlukeidError as exc:
        if args.progress_json:
            print(json.dumps({"event": "error", "message": str(exc)}), flush=True)
        print(f"flukeid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.progress_json:
            print(json.dumps({"event": "error", "message": "interrupted"}), flush=True)
        print("\nflukeid: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    for problem in result.problems[:10]:
        print(f"flukeid: skipped photo: {problem}", file=sys.stderr)
    if not args.progress_json:
        val = f", validation top-5 {result.val_top5:.1%}" if result.val_top5 is not None else ""
        print(f"trained {result.epochs_done}/{result.epochs} epochs in {result.seconds:.0f} s{val}; "
              f"run folder {result.run_dir}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from model.api import export_run

    bundle = export_run(args.run, args.out, detector_onnx=args.detector)
    print(f"bundle written: {bundle}")
    return 0
