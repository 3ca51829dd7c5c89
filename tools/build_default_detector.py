"""Build the default fluke detector shipped in resources/models/detector (synthetic frames only).

    make detector-model        # = python -m tools.build_default_detector
    python -m tools.build_default_detector [--synthetic 3000] [--epochs 30] [--out resources/models/detector]

No real photo is used: the shipped model may be redistributed with the app. Its manifest.json
says what it was trained on; bench/bench_detector.py measures it on the real photos. The shipped one was
built on a lent GPU with the command docs/BENCHMARKS.md gives next to its figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from app.cli import configure_process
from model.detection import DEFAULT_DETECTOR_DIR
from model.training.detector import DetectorTrainConfig, build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=3000)
    ap.add_argument("--negatives", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workers", type=int, default=0, help="processes for data generation and augmentation")
    ap.add_argument("--out", default=str(DEFAULT_DETECTOR_DIR))
    args = ap.parse_args()
    configure_process()
    config = DetectorTrainConfig(epochs=args.epochs, width=args.width, input_size=args.input_size, seed=args.seed,
                                 lr=args.lr, batch_size=args.batch_size, device=args.device, workers=args.workers)
    t0 = time.monotonic()
    out = build_detector(Path(args.out), synthetic=args.synthetic, negatives=args.negatives, config=config,
                         progress=lambda f, m: print(f"[{f * 100:5.1f}%] {m} ({time.monotonic() - t0:.0f} s)", flush=True))
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.2f} MB) in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
