"""Training throughput (images/s) of each branch on this machine's CPU at a small input size.

One training step = a batch of pairs (2 images each) through augmentation, the branch, the head,
BCE, backward and Adam: the inner loop of model.training.siamese. Writes
docs/bench/train_throughput.md (command, machine, date, figures).

    python -m bench.bench_train_throughput [--size 64x128] [--pairs 8] [--steps 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, configure_process, machine

BRANCHES = [
    ("cnn", {"branch.width": 32, "branch.blocks": [1, 2, 2, 1], "branch.embedding_dim": 256}, "self-designed CNN, width 32"),
    ("resnet50", {"branch.embedding_dim": 512}, "torchvision ResNet50 (from scratch), neck to 512"),
    ("resnet50", {"branch.embedding_dim": 512, "branch.freeze": True}, "ResNet50 frozen backbone (neck and head train)"),
    ("efficientnet_lite0", {"branch.embedding_dim": 256, "branch.weights": "imagenet"},
     "timm EfficientNet-Lite0, ImageNet weights"),
    ("efficientnet_lite0", {"branch.embedding_dim": 256, "branch.weights": "imagenet", "branch.frozen_stages": 2},
     "timm EfficientNet-Lite0, ImageNet weights, stem + 2 stages frozen (the cpu preset)"),
]


def measure(kind: str, overrides: dict, hw: tuple[int, int], pairs: int, steps: int, device: str = "cpu",
            bf16: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from model.config import apply_overrides, preset
    from model.data.dataset import normalise_tensor
    from model.nets.siamese import build_siamese
    from model.training.augment import augment_batch

    cfg = preset("paper")
    apply_overrides(cfg, {"branch.kind": kind, "input_height": hw[0], "input_width": hw[1], **overrides})
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_siamese(cfg).to(dev).train()
    if cfg.channels_last:  # as the training loop does, on CUDA and CPU alike
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2 * pairs, 1, *hw), dtype=torch.uint8)
    y = (torch.arange(pairs) % 2).float().to(dev)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = normalise_tensor(augment_batch(u8.to(dev).float().div_(255), cfg.augment, g))
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[:pairs], x[pairs:])
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    return {"kind": kind, "images_per_s": 2 * pairs / step, "step_s": step, "params": params}


def machine_detail() -> str:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{machine()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
            f"load average at start {load[0]:.1f}")


def _worker_row(index: int, hw, pairs: int, steps: int) -> dict:
    kind, over, label = BRANCHES[index]
    r = measure(kind, over, hw, pairs, steps)
    r["label"] = label
    return r


def wait_policy_rows(hw, pairs: int, steps: int, indices=(0, 3)) -> list[dict]:
    """The same rows in fresh processes with OpenMP threads spinning (ACTIVE) or waiting (PASSIVE),
    on their own and next to one or two busy processes (a pure-Python loop holding one core, as the GUI, an
    import or another job would)."""
    import json
    import subprocess

    out = []
    for neighbour in (0, 1, 2):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(neighbour)]
        try:
            for index in indices:
                for policy in ("default", "ACTIVE", "PASSIVE"):
                    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                    if policy != "default":  # default: GNU OpenMP spins a while, then sleeps
                        env["OMP_WAIT_POLICY"] = policy
                    proc = subprocess.run(
                        [sys.executable, "-m", "bench.bench_train_throughput", "--worker", str(index),
                         "--size", f"{hw[0]}x{hw[1]}", "--pairs", str(pairs), "--steps", str(steps)],
                        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    r.update(policy=policy, neighbour=neighbour)
                    out.append(r)
                    print(f"  {r['label']}, {policy}, busy neighbours {neighbour}: {r['images_per_s']:.1f} images/s",
                          flush=True)
        finally:
            for b in busy:
                b.kill()
                b.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64x128", help="input HxW (default 64x128)")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per step (default 8 = 16 images)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per branch (median reported)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "train_throughput.md"))
    ap.add_argument("--no-wait-policy", action="store_true", help="skip the OpenMP wait-policy comparison")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    hw = tuple(int(v) for v in args.size.lower().split("x"))
    if args.worker is not None:
        import json

        print(json.dumps(_worker_row(args.worker, hw, args.pairs, args.steps)))
        return 0
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine_detail()
    rows = []
    for kind, over, label in BRANCHES:
        r = measure(kind, over, hw, args.pairs, args.steps)
        r["label"] = label
        rows.append(r)
        print(f"{label}: {r['images_per_s']:.1f} images/s ({r['step_s'] * 1000:.0f} ms per step)", flush=True)
    cmd = "python -m bench.bench_train_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Training throughput on the development CPU",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {mach}  ",
        f"Date: {started}",
        "",
        f"One step = {args.pairs} pairs ({2 * args.pairs} images) at {hw[0]}x{hw[1]} through batch augmentation, "
        "branch, head, BCE, backward and Adam (the inner loop of `model.training.siamese`); median of "
        f"{args.steps} steps after 2 warm-up steps, float32. The per-epoch embedding pass and pair mining "
        "come on top. The machine is shared: the load average above says how busy it was.",
        "",
        "| branch | parameters | images/s | ms per step |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.1f} M | {r['images_per_s']:.1f} | {r['step_s'] * 1000:.0f} |")
    if not args.no_wait_policy:
        pol = wait_policy_rows(hw, args.pairs, args.steps)
        lines += ["", "OpenMP wait policy, each figure from a fresh process, side by side in this run "
                  "(flukeid, the benchmarks and the tests set `OMP_WAIT_POLICY=PASSIVE`; unset, GNU "
                  "OpenMP spins for a while before sleeping; ACTIVE spins always). \"Busy neighbours\": other "
                  "processes each holding a core (a Python loop), as an import or a second job does:", "",
                  "| branch | busy neighbours | default images/s | ACTIVE images/s | PASSIVE images/s "
                  "| PASSIVE / default |",
                  "|---|---|---:|---:|---:|---:|"]
        for label in dict.fromkeys(r["label"] for r in pol):
            for neighbour in (0, 1, 2):
                d, a, b = (next(r for r in pol if r["label"] == label and r["neighbour"] == neighbour
                                 and r["policy"] == policy) for policy in ("default", "ACTIVE", "PASSIVE"))
                lines.append(f"| {label} | {neighbour or 'none'} "
                             f"| {d['images_per_s']:.1f} | {a['images_per_s']:.1f} | {b['images_per_s']:.1f} "
                             f"| {b['images_per_s'] / d['images_per_s']:.2f}x |")
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"Load average at the end: {end_load:.1f} (on {os.cpu_count()} CPUs; above that, figures are "
              "proportionally lower than on an idle machine)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
