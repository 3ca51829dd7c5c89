"""``flukeid retrain CATALOG``: train on the catalog's confirmed photos, compare, optionally activate."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="retrain the model on the catalog's confirmed identifications",
        description=(
            "Train a new model on the catalog's confirmed identifications (in a separate process), "
            "export it into CATALOG/models/, and compare it with the active model on held-out confirmed "
            "photos. The active model changes only with --activate (or --activate-if-better)."
        ),
    )
    p.add_argument("catalog", metavar="CATALOG", help="the catalog folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default auto)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the configuration's)")
    p.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu", help="training configuration (default cpu)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop after the last epoch that fits in this many minutes and use it")
    p.add_argument("--resume", action="store_true", help="resume the last cancelled run")
    p.add_argument("--gpus", type=int, default=1, help="GPUs to train on (more than 1: DDP through torchrun)")
    p.add_argument("--training-python", default=None, help="the Python with PyTorch to train with")
    p.add_argument("--no-detector", action="store_true", help="do not retrain the detector")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--activate", action="store_true", help="activate the new model when training succeeds")
    act.add_argument("--activate-if-better", action="store_true", help="activate it only if its MAP@5 is higher")
    p.set_defaults(func=run)


class _ProgressLine:
    """One terminal line that rewrites itself (a plain line per event when not a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream = stream if stream is not None else sys.stderr  # the stderr of now, not of import time
        self.tty = stream.isatty()
        self.width = 0

    def show(self, text: str) -> None:
        if self.tty:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
        self.width = 0


def _bar(fraction: float, width: int = 24) -> str:
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * n + "-" * (width - n) + "]"


def run(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import models, retraining
    from model.api import Interrupted

    line = _ProgressLine()

    def on_event(ev) -> None:
        if ev.kind == "epoch":
            print(retraining.describe_epoch(ev), file=sys.stderr) if not line.tty else line.show(
                f"{_bar(ev.fraction() or 0.0)} {retraining.describe_epoch(ev)}"
            )
        elif ev.kind in ("stage", "start"):
            line.end()
            print(ev.message or f"training started ({ev.data})", file=sys.stderr)
        elif ev.kind == "log" and not line.tty:
            pass

    options = retraining.RetrainOptions(
        device=args.device,
        epochs=args.epochs,
        config=args.config,
        resume=args.resume,
        gpus=args.gpus,
        training_python=args.training_python,
        detector=False if args.no_detector else None,
        time_budget_s=args.time_budget * 60 if args.time_budget else None,
    )
    catalog = Catalog.open(args.catalog)
    try:
        summary = retraining.training_set_summary(catalog)
        print(summary.describe(), file=sys.stderr)
        if not args.resume and retraining.find_resumable_run(catalog) is not None:
            print("a cancelled run can be resumed: add --resume", file=sys.stderr)
        try:
            result = retraining.retrain(catalog, options, on_event=on_event)
        except Interrupted:
            line.end()
            print("cancelled: the active model is unchanged; resume with --resume", file=sys.stderr)
            return 130
        finally:
            line.end()
        print(f"new model {result.version} in {result.bundle}")
        for name, old, new in result.comparison_rows():
            print(f"  {name:<18} {old:>14} {new:>14}")
        print(result.verdict())
        if args.activate or (args.activate_if_better and result.is_better()):

            def progress(fraction: float, message: str) -> None:
                line.show(f"{_bar(fraction)} {message}")

            models.activate(catalog, result.version, progress=progress)
            line.end()
            print(f"activated {result.version}")
        else:
            print("not activated; activate later from Model > Model versions or with --activate")
    finally:
        close = getattr(catalog, "close", None)
        if close:
            close()
    return 0
