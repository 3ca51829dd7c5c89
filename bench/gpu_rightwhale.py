"""Right-whale accuracy on a lent GPU: the best configuration and the paper's CNN rows, seed and open.

One prepared script for the device session. The device machine has no ../shared: first copy the
right-whale photos and rows into an ignored folder that the device tool carries (34 MB), then run
it there with ``carry=[".gpudata/rw"]``::

    mkdir -p .gpudata/rw/images && cp -r ../shared/data/cetacean_photoid_eval_v1/images/right_whale_head .gpudata/rw/images/
    grep -E '^image,|,rw:' ../shared/data/cetacean_photoid_eval_v1/labels.csv | cut -d, -f1-3,8-11 > .gpudata/rw/labels.csv
    python -m bench.gpu_rightwhale --labels .gpudata/rw/labels.csv --images .gpudata/rw/images --out $OUT --rows metric

It trains with the real
training loop (``model.training.siamese.train``) on CUDA, scores every query against every gallery
photo with the trained head on the GPU, and writes results JSON + a markdown fragment to OUT.
Trained models stay on the device machine (never committed: they were trained on real data).

    python -m bench.gpu_rightwhale --labels L.csv --images DIR --out OUT [--scale 1.0] [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

ROWS = [
    # key, label, seconds of training, input side, overrides, flip TTA
    ("metric", "ImageNet EfficientNet-Lite0 + sub-center ArcFace, then the NN head on cached embeddings "
     "(the cpu preset's recipe at 384x384), flip TTA", 300, 384,
     {"branch.kind": "efficientnet_lite0", "branch.weights": "imagenet", "branch.embedding_dim": 512,
      "branch.pool": "avg", "branch.normalize": True, "metric.enabled": True, "metric.epochs": 60,
      "metric.batch_size": 64, "metric.budget_fraction": 0.85, "metric.passes": 2, "mining.r_start": 0.2,
      "mining.r_end": 0.9, "mining.rounds": 2, "epochs": 10, "batch_size": 256, "lr": 1e-3, "warmup_epochs": 0,
      "augment.erase_p": 0.5, "augment.rotation": 15.0, "augment.zoom": 0.15},
     True),
    ("best", "ImageNet EfficientNet-Lite0 fine-tuned + NN head + hard-pair curriculum, flip TTA", 170, 224,
     {"branch.kind": "efficientnet_lite0", "branch.weights": "imagenet", "branch.embedding_dim": 512,
      "lr": 5e-4, "batch_size": 64, "mining.r_start": 0.2, "mining.r_end": 0.9}, True),
    ("cnn_nn", "paper CNN (from scratch) + NN head", 75, 224,
     {"branch.kind": "cnn", "branch.weights": "none", "branch.width": 64, "branch.blocks": [2, 3, 4, 2],
      "lr": 1e-3, "batch_size": 64}, False),
    ("cnn_l1", "paper CNN (from scratch) + L1 head", 45, 224,
     {"branch.kind": "cnn", "branch.weights": "none", "branch.width": 64, "branch.blocks": [2, 3, 4, 2],
      "head.kind": "l1", "lr": 1e-3, "batch_size": 64}, False),
]


def scores_on(run_dir: Path, records: list, q_idx, g_idx, flip: bool, device) -> dict[bool, np.ndarray]:
    import torch

    from model.data.dataset import dataset_from_crops, load_records
    from model.preprocess import Preprocessing
    from model.training.siamese import embed_all, load_checkpoint, model_from_checkpoint

    model, cfg = model_from_checkpoint(load_checkpoint(run_dir / "checkpoint.pt"))
    model.to(device)
    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    need = sorted(set(q_idx) | set(g_idx))
    ok, crops, _ = load_records([records[i] for i in need], prep, workers=8)
    embs = {False: embed_all(model, dataset_from_crops(ok, crops, prep, [0] * len(ok)), device, cfg)}
    if flip:
        fl = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
        embs[True] = (embs[False] + embed_all(model, dataset_from_crops(ok, fl, prep, [0] * len(ok)), device, cfg)) / 2
    pos = {i: k for k, i in enumerate(need)}
    qi = torch.tensor([pos[i] for i in q_idx], device=device)
    gi = torch.tensor([pos[i] for i in g_idx], device=device)
    out = {}
    model.eval()
    with torch.no_grad():
        for key, emb in embs.items():
            q, g = emb[qi], emb[gi]
            sc = torch.empty(len(q), len(g), device=device)
            block = max(1, 262144 // max(len(g), 1))
            for s in range(0, len(q), block):
                qa = q[s:s + block]
                a = qa[:, None, :].expand(-1, len(g), -1).reshape(-1, q.shape[1])
                b = g[None].expand(len(qa), -1, -1).reshape(-1, g.shape[1])
                sc[s:s + len(qa)] = torch.sigmoid(model.head(a, b).float()).reshape(len(qa), len(g))
            out[key] = sc.cpu().numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every training budget")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", default="metric,best,cnn_nn,cnn_l1")
    p.add_argument("--work", default="/tmp/flukeid_gpu_rw")
    args = p.parse_args(argv)
    import torch

    from model import evaluate as ev
    from model.config import apply_overrides, preset, validate
    from model.data.records import read_labels
    from model.training.siamese import train

    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "CPU"
    records = [r for r in read_labels(args.labels, args.images).records if r.id_known and r.individual]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    wanted = args.rows.split(",")
    # seed protocol for every row, then the open protocol for the first (the intended best) wanted row
    chosen = [r for r in ROWS if r[0] in wanted]
    plan = [(r, "seed") for r in chosen] + [(chosen[0], "open")] * bool(chosen)
    for (key, label, budget, side, overrides, flip), protocol in plan:
        t0 = time.perf_counter()
        split = ev.make_split(records, protocol, 0)
        cfg = preset("paper")
        cfg.input_height = cfg.input_width = side
        cfg.time_budget_s = budget * args.scale
        cfg.epochs = 300
        cfg.val_fraction = 0.0
        cfg.device = args.device
        cfg.num_workers = 8
        apply_overrides(cfg, overrides, where=f"row {key}")
        validate(cfg)
        run_dir = Path(args.work) / f"{key}_{protocol}"
        shutil.rmtree(run_dir, ignore_errors=True)
        tr = train(cfg, [records[i] for i in split.train], run_dir)
        use_flip = flip
        sc = scores_on(run_dir, records, split.queries, split.gallery, use_flip, device)
        res = ev.evaluate_split_scores(records, split, sc[use_flip])
        row = {"row": key, "label": label, "protocol": protocol, "top1": res.overall.top1,
               "top5": res.overall.top5, "map5": res.overall.map5, "queries": res.overall.n,
               "by_photos": {k: m.to_dict() for k, m in res.by_photos.items()},
               "train_s": round(tr.seconds, 1), "epochs": tr.epochs_done, "input": f"{side}x{side}",
               "images_per_s": (tr.history[-1].get("images_per_s") if tr.history else None),
               "train_photos": len(split.train), "wall_s": round(time.perf_counter() - t0, 1), "flip": use_flip}
        if use_flip:
            plain = ev.evaluate_split_scores(records, split, sc[False]).overall
            row["without_flip"] = {"top1": plain.top1, "top5": plain.top5, "map5": plain.map5}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "by_photos"}), flush=True)
        (out / "rightwhale.json").write_text(json.dumps({"device": gpu, "torch": torch.__version__,
                                                         "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
                                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
