"""Retrain benchmark: the app's whole retrain path on a synthetic catalog, timed per step.

Builds a catalog of synthetic fluke photos (every photo identified, boxes), registers an
untrained starting model, then runs :func:`app.services.retraining.retrain` exactly as Model >
Retrain... does (training in a separate ``python -m app train --progress-json`` process, export,
held-out comparison) and :func:`~app.services.retraining.activate` (re-embedding). Records each
epoch's images/s and seconds, and the time of every step.

    python -m bench.bench_retrain --config paper --epochs 3 --device cuda --json OUT.json
    python -m bench.bench_retrain --render OUT.json      # writes docs/bench/retrain.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, configure_process


def _machine() -> dict:
    info = {"python": platform.python_version(), "cpu": platform.machine(), "platform": platform.platform()}
    try:  # the benchmark process may hold torch (it is not the GUI); only to name the GPU
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    except ImportError:
        pass
    import os

    info["cpus"] = os.cpu_count()
    return info


def run(args: argparse.Namespace) -> dict:
    import numpy as np  # noqa: F401

    from app.services import retraining
    from tests.app.test_retraining import make_catalog

    tmp = Path(tempfile.mkdtemp(prefix="flukeid-bench-retrain-"))
    t0 = time.monotonic()
    cat = make_catalog(tmp, individuals=args.individuals, photos_each=args.photos, size=(768, 512))
    t_catalog = time.monotonic() - t0
    events: list[dict] = []
    marks: dict[str, float] = {}
    start = time.monotonic()

    def on_event(ev) -> None:
        now = time.monotonic() - start
        events.append({"t": round(now, 2), "kind": ev.kind, **{k: v for k, v in ev.data.items() if k != "problems"}})
        if ev.kind == "stage":
            marks.setdefault(ev.message.split("…")[0].split(" (")[0], now)
        if ev.kind in ("epoch", "start", "done", "error"):
            print(json.dumps(events[-1])[:300], flush=True)

    opts = retraining.RetrainOptions(config=args.config, epochs=args.epochs, device=args.device, detector=False,
                                     gpus=args.gpus)
    result = retraining.retrain(cat, opts, on_event=on_event)
    t_retrain = time.monotonic() - start
    a0 = time.monotonic()
    retraining.activate(cat, result.version)
    t_activate = time.monotonic() - a0
    epochs = [e for e in events if e["kind"] == "epoch"]
    first = next((e["t"] for e in events if e["kind"] == "start"), None)
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "config": args.config, "device": args.device, "gpus": args.gpus,
        "individuals": args.individuals, "photos_each": args.photos,
        "train_photos": len(result.run_dir.parent.joinpath("data", "labels.csv").read_text().splitlines()) - 1,
        "heldout": result.heldout,
        "catalog_build_s": round(t_catalog, 1),
        "process_start_to_first_event_s": first,
        "epochs": [{k: e.get(k) for k in ("epoch", "epochs", "loss", "val_top5", "images_per_s", "epoch_s")}
                   for e in epochs],
        "stages": {k: round(v, 1) for k, v in marks.items()},
        "retrain_total_s": round(t_retrain, 1),
        "activate_s": round(t_activate, 1),
        "new_metrics": result.new_metrics, "active_metrics": result.active_metrics,
        "start_event": next((e for e in events if e["kind"] == "start"), None),
        "input": "{input_width}x{input_height}".format(
            **json.loads((result.bundle / "manifest.json").read_text())["preprocessing"]),
    }
    cat.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def render(res: dict) -> str:
    m = res["machine"]
    ep = res["epochs"]
    steady = ep[1:] or ep
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")  # noqa: E731
    ips = med([e["images_per_s"] for e in steady if e.get("images_per_s")])
    eps = med([e["epoch_s"] for e in steady if e.get("epoch_s")])
    lines = [
        "## Retraining from the app (the whole retrain path)",
        "",
        f"`python -m bench.bench_retrain --config {res['config']} --epochs {len(ep)} --device {res['device']}` · "
        f"machine: {m.get('gpu', 'no GPU')}, {m.get('cpus')} CPU cores, torch {m.get('torch')} · {res['date']}",
        "",
        f"A synthetic catalog ({res['individuals']} individuals x {res['photos_each']} photos, 768x512, boxes) is "
        "retrained exactly as Model > Retrain... does it: `python -m app train --progress-json` in a separate "
        f"process ({res['config']} preset, input {res.get('input', '?')}), export to ONNX, comparison with the active model "
        f"on {res['heldout']} held-out photos, then activation (every photo re-embedded with onnxruntime). "
        f"{res['train_photos']} training photos.",
        "",
        "| epoch | loss | images/s | seconds |",
        "|---:|---:|---:|---:|",
    ]
    for e in ep:
        lines.append(f"| {e['epoch']} | {e['loss']:.4f} | {e['images_per_s']:.0f} | {e['epoch_s']:.1f} |")
    st = res["stages"]
    lines += [
        "",
        f"Steady state (epochs after the first): **{ips:.0f} images/s, {eps:.1f} s per epoch**. The first epoch "
        "includes warm-up (cuDNN autotuning, first pair mining).",
        "",
        "| step | seconds from Start |",
        "|---|---:|",
        f"| training process started, first event | {res['process_start_to_first_event_s']} |",
    ]
    for k, v in st.items():
        if k.startswith("New model"):
            continue
        lines.append(f"| {k} begins | {v} |")
    lines += [
        f"| retrain finished (trained, exported, compared) | {res['retrain_total_s']} |",
        f"| activation (verify + re-embed {res['individuals'] * res['photos_each']} photos) | +{res['activate_s']} |",
        "",
        "Held-out comparison after these few epochs (synthetic data, untrained starting model; not an accuracy "
        f"claim): new top-1 {res['new_metrics']['top1']:.2f} / MAP@5 {res['new_metrics']['map5']:.2f}, "
        f"starting model top-1 {res['active_metrics']['top1']:.2f} / MAP@5 {res['active_metrics']['map5']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--individuals", type=int, default=40)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--render", default=None, metavar="JSON", help="write docs/bench/retrain.md from results")
    args = ap.parse_args()
    if args.render:
        res = json.loads(Path(args.render).read_text())
        out = ROOT / "docs" / "bench" / "retrain.md"
        out.write_text(render(res))
        print(f"wrote {out}")
        return
    res = run(args)
    text = json.dumps(res, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
