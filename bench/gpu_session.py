"""GPU training throughput at the paper's size: one prepared script for a lent GPU session.

Generates a synthetic catalog (default 200 individuals), then trains the ``paper`` preset
(384x384, the self-designed CNN + NN head, curriculum mining, bf16 autocast, channels_last) with
the real training loop for a fixed short time, twice: augmentation on the GPU, and augmentation on
the CPU (then copied). Also a short EfficientNet-Lite0 run. Reports images/s of the training
steps and seconds per epoch (embedding pass + pair scoring + mining + training + validation).
Writes ``gpu_session.json`` and ``gpu_session.md`` under OUT.

    python -m bench.gpu_session OUT                 # on the GPU (torch with CUDA installed)
    python -m bench.gpu_session OUT --tiny          # a seconds-long CPU rehearsal of the same script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import configure_process


def _records(n_individuals: int, photos: int, size: tuple[int, int], work: Path, seed: int):
    from model.data.records import read_labels
    from model.data.synthetic import generate_dataset

    t0 = time.monotonic()
    csv = generate_dataset(work / "synthetic", n_individuals, seed=seed, photos=photos, size=size)
    labelled = read_labels(csv, work / "synthetic" / "images")
    return labelled.records, time.monotonic() - t0


def _phase(name: str, records, work: Path, base: str, overrides: dict, budget_s: float, epochs: int) -> dict:
    from model.config import apply_overrides, preset
    from model.training.siamese import train

    cfg = preset(base)
    apply_overrides(cfg, {"time_budget_s": budget_s, "epochs": epochs, **overrides})
    run = work / f"run_{name}"
    shutil.rmtree(run, ignore_errors=True)  # a rerun starts afresh
    t0 = time.monotonic()
    res = train(cfg, records, run)
    hist = res.history
    later = hist[1:] or hist  # the first epoch includes warm-up (cuDNN autotune, allocator)
    out = {
        "name": name, "preset": base, "overrides": overrides, "epochs_done": res.epochs_done,
        "seconds": time.monotonic() - t0, "device": res.device,
        "input": f"{cfg.input_height}x{cfg.input_width}", "branch": cfg.branch.kind, "batch_pairs": cfg.batch_size,
        "bf16": cfg.bf16, "augment_on_device": cfg.augment.gpu,
        "images_per_s": sum(h["images_per_s"] for h in later) / len(later),
        "epoch_s": sum(h["epoch_s"] for h in later) / len(later),
        "first_epoch_s": hist[0]["epoch_s"] if hist else None,
        "pairs_per_epoch": hist[-1]["pairs"] if hist else 0,
        "final_loss": hist[-1]["loss"] if hist else None,
        "val_top5": res.val_top5, "train_images": res.train_images,
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (the device tool's $OUT)")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: tiny preset, few photos, seconds")
    ap.add_argument("--individuals", type=int, default=200)
    ap.add_argument("--photos", type=int, default=6, help="photos per individual")
    ap.add_argument("--seconds", type=float, default=90.0, help="training time per phase")
    ap.add_argument("--work", default=None, help="scratch folder (default: OUT/../gpu_session_work)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_session_work"
    work.mkdir(parents=True, exist_ok=True)

    import torch

    if args.tiny:
        n_ind, photos, size, base = 8, 3, (192, 128), "tiny"
        phases = [("cnn_gpu_aug", {"device": "cpu"}), ("cnn_cpu_aug", {"device": "cpu", "augment.gpu": False})]
        budget, epochs = 1.0, 1
    else:
        n_ind, photos, size, base = args.individuals, args.photos, (768, 512), "paper"
        phases = [
            ("cnn_gpu_aug", {"device": "cuda", "num_workers": 16}),
            ("cnn_cpu_aug", {"device": "cuda", "num_workers": 16, "augment.gpu": False}),
            ("effnet_gpu_aug", {"device": "cuda", "num_workers": 16, "branch.kind": "efficientnet_lite0",
                                "branch.weights": "imagenet", "lr": 5e-4}),
        ]
        budget, epochs = args.seconds, 1000
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    records, gen_s = _records(n_ind, photos, size, work, seed=5)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    results = {"date": started, "gpu": gpu, "torch": torch.__version__, "cpus": os.cpu_count(),
               "python": platform.python_version(), "individuals": n_ind, "photos": len(records),
               "generate_s": gen_s, "seconds_per_phase": budget, "phases": []}
    for name, over in phases:
        results["phases"].append(_phase(name, records, work, base, over, budget, epochs))
        (out / "gpu_session.json").write_text(json.dumps(results, indent=2))
    lines = [
        "## Training throughput on a GPU (paper preset)" if not args.tiny else "## GPU session rehearsal (tiny, CPU)",
        "",
        f"Command: `python -m bench.gpu_session OUT{' --tiny' if args.tiny else ''}`  ",
        f"Machine: {gpu}, {os.cpu_count()} CPUs, torch {torch.__version__}  ",
        f"Date: {started}",
        "",
        f"Synthetic catalog: {n_ind} individuals, {len(records)} photos ({size[0]}x{size[1]}), generated in "
        f"{gen_s:.0f} s. Each phase trains with `model.training.siamese.train` for about {budget:.0f} s "
        "(stopping after the epoch that passes it). images/s counts the training steps only (augmentation, "
        "branch, head, backward, Adam); s/epoch also holds the embedding pass over all training photos, the "
        "pair scoring with the head, mining and validation. Averages exclude the first (warm-up) epoch.",
        "",
        "| phase | branch | input | bf16 | augmentation | batch (pairs) | images/s | s/epoch | first epoch s | epochs |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in results["phases"]:
        aug = "on device" if p["augment_on_device"] and "cuda" in p["device"] else "CPU"
        lines.append(f"| {p['name']} | {p['branch']} | {p['input']} | {p['bf16'] and 'cuda' in p['device']} | {aug} "
                     f"| {p['batch_pairs']} | {p['images_per_s']:.0f} | {p['epoch_s']:.1f} | "
                     f"{p['first_epoch_s'] or 0:.1f} | {p['epochs_done']} |")
    (out / "gpu_session.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
