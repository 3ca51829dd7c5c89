"""Build the demo model bundle shipped in resources/models/demo (synthetic flukes only).

    make demo-model            # = python -m tools.build_demo_model

Steps: draw a synthetic training set and a held-out set of other individuals
(model.data.synthetic), train the Siamese network on the training set (preset ``cpu`` at a
modest input size so the app stays fast on a CPU, with a wall-clock budget), export it to ONNX
(model.export, which checks itself against torch), add the default fluke detector
(resources/models/detector/detector.onnx) when present, evaluate the bundle on the held-out
individuals (seed protocol: individuals the network never saw) next to the random baseline, and
store those metrics in the manifest. Nothing from ../shared/data is used. The bundle must stay
under 20 MB.

The recipe is the ``cpu`` preset with its first metric-learning recipe pinned (``[recipes.first_metric]``
of bench/experiments.toml, the one the right-whale benchmarks measured), read from that file so the
two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import tomllib
from pathlib import Path

from app.cli import configure_process
from app.paths import demo_bundle_dir
from model.detection import DEFAULT_DETECTOR_DIR

DEMO = demo_bundle_dir()
DETECTOR = DEFAULT_DETECTOR_DIR
EXPERIMENTS = Path(__file__).resolve().parents[1] / "bench" / "experiments.toml"
WORK = Path("/tmp/flukeid_demo_model")
MAX_BYTES = 20 * 1024 * 1024


def first_metric_recipe() -> dict:
    """The overrides of ``[recipes.first_metric]`` in bench/experiments.toml (the shipped bundle's recipe)."""
    return tomllib.loads(EXPERIMENTS.read_text())["recipes"]["first_metric"]


def _progress(fraction: float, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {fraction:6.1%} {message}", flush=True)


def build(out: Path = DEMO, *, individuals: int = 60, heldout: int = 30, input_size: int = 128,
          budget_s: float = 1500.0, epochs: int = 4, branch: str = "efficientnet_lite0", seed: int = 5,
          threads: int = 1, work: Path = WORK) -> dict:
    """Train, export, evaluate and install the demo bundle; returns its manifest."""
    import torch

    from model.api import evaluate_bundle, evaluate_random, generate_dataset, read_labels
    from model.bundle import finalize_bundle, new_version_name, read_manifest, staging_dir
    from model.config import apply_overrides, preset
    from model.export import export_run
    from model.training.siamese import train

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_dir, held_dir = work / f"train_s{seed}_n{individuals}", work / f"heldout_s{seed + 1}_n{heldout}"
    for d, n, s in ((train_dir, individuals, seed), (held_dir, heldout, seed + 1)):
        if not (d / "labels.csv").is_file():
            _progress(0.0, f"drawing {n} synthetic individuals into {d}")
            generate_dataset(d, n, seed=s, size=(512, 340), min_photos=2, max_photos=8)
    train_recs = read_labels(train_dir / "labels.csv").records
    held_recs = read_labels(held_dir / "labels.csv").records

    cfg = preset("cpu")
    apply_overrides(cfg, {"input_height": input_size, "input_width": input_size, "epochs": epochs,
                          "time_budget_s": budget_s, "device": "cpu", "seed": seed, "val_fraction": 0.15,
                          "branch.kind": branch,
                          "branch.weights": "imagenet" if branch != "cnn" else "none",
                          **first_metric_recipe()}, where="demo model")  # the shipped bundle's recipe
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = train(cfg, train_recs, run_dir, progress=_progress)
    exported = work / "exported"
    shutil.rmtree(exported, ignore_errors=True)
    export_run(run_dir, exported)

    _progress(0.9, "evaluating on held-out synthetic individuals")
    res = evaluate_bundle(exported, held_recs, "seed", seed=0, device="cpu")
    rnd = evaluate_random(held_recs, "seed", seed=0)
    metrics = {
        "synthetic_heldout_seed": {
            **res.to_dict()["overall"],
            "by_photos": {k: m.to_dict() for k, m in res.by_photos.items()},
            "what": (f"{heldout} synthetic individuals never seen in training (seed {seed + 1}); seed protocol: "
                     "2/3 of each one's photos are the gallery, the rest are queries"),
            "gallery_photos": res.info["gallery_photos"],
        },
        "random_baseline_seed": rnd.to_dict()["overall"],
    }

    manifest = read_manifest(exported)
    for key in ("files", "format_version"):
        manifest.pop(key, None)
    manifest.setdefault("metrics", {}).update(metrics)
    manifest["training"] = {**manifest.get("training", {}),
                            "data": (f"synthetic flukes only: {len(train_recs)} photos of {individuals} individuals "
                                     f"(model.data.synthetic, seed {seed})"
                                     + ("; ImageNet-pretrained EfficientNet-Lite0 backbone" if branch != "cnn" else "")),
                            "built_by": "make demo-model (tools/build_demo_model.py)",
                            "train_seconds": round(result.seconds, 1), "epochs_done": result.epochs_done}
    manifest["version"] = new_version_name("demo-")  # a new name per build: the catalog keys embeddings by it
    staging = staging_dir(out.parent / ".demo-new")
    for name in ("branch.onnx", "head.onnx"):
        shutil.copy2(exported / name, staging / name)
    det = DETECTOR / "detector.onnx"
    if det.is_file():
        shutil.copy2(det, staging / "detector.onnx")
        try:
            det_size = int(json.loads((DETECTOR / "manifest.json").read_text())["detector"]["input_size"])
        except (OSError, KeyError, ValueError):
            det_size = 128
        manifest["detector"] = {"input_size": det_size}
    else:
        manifest.pop("detector", None)
    size = sum(p.stat().st_size for p in staging.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"demo bundle would be {size / 2**20:.1f} MB (limit 20 MB): use a smaller branch or input")
    new = out.parent / ".demo-new"
    shutil.rmtree(new, ignore_errors=True)
    finalize_bundle(staging, new, manifest)
    old = out.parent / ".demo-old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    o = res.overall
    _progress(1.0, f"wrote {out} ({size / 2**20:.1f} MB) in {time.perf_counter() - t0:.0f} s: held-out synthetic "
                   f"top-1 {o.top1:.1%}, top-5 {o.top5:.1%}, MAP@5 {o.map5:.3f} "
                   f"(random top-5 {rnd.overall.top5:.1%})")
    return read_manifest(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEMO)
    p.add_argument("--individuals", type=int, default=60)
    p.add_argument("--heldout", type=int, default=30)
    p.add_argument("--input", type=int, default=128, help="input size (square)")
    p.add_argument("--budget", type=float, default=1500.0, help="training wall-clock budget in seconds")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--branch", default="efficientnet_lite0", choices=("efficientnet_lite0", "cnn"))
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    a = p.parse_args(argv)
    configure_process()
    build(a.out, individuals=a.individuals, heldout=a.heldout, input_size=a.input, budget_s=a.budget,
          epochs=a.epochs, branch=a.branch, seed=a.seed, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
