"""What scoring can add to a trained right-whale embedding, and what colour input could add.

Part 1 (re-ranking): one finished rw_recipe run of bench.experiments (default: the `cpu` preset's recipe with a
1,500 s budget, `erase_224_long`) embeds the seed protocol's queries and gallery once (plus
mirrored crops, and the last BN feature maps), then ranks individuals several ways from those
same numbers, so every difference is the scoring's alone:

- ``max``: an individual's best photo (what the app and every other table do);
- ``top2``: the mean of its two best photos; ``proto``: the cosine to its mean embedding, and
  ``max + proto``; ``centres``: the ArcFace stage's class centres (seed protocol only, the
  training individuals are the gallery's), and ``max + centres``;
- ``dba``: each gallery embedding replaced by a weighted mean with its nearest gallery photos
  (database-side augmentation); ``qe``: the query expanded with its nearest gallery photo;
- ``+ local``: the cosine plus the mean cosine of the 7x7 feature map's local descriptors at the same
  position (the crops are aligned), or plus their mutual-nearest-neighbour score on each query's 50
  cosine-nearest gallery photos (spatially tolerant).

Part 2 (colour): the ImageNet EfficientNet-Lite0, frozen, with no training at all, embeds the same
photos once in colour and once as gray (R = G = B), average- and max-pooled, and is scored by cosine;
the pipeline is grayscale (the paper's choice, and flukes are black and white), so this bounds what
colour input would add on the right whales before anyone builds it.

    python -m bench.experiments run rw_recipe.erase_224_long --protocol seed   # the run it reads
    python -m bench.bench_rw_rerank [--run rw_full_recipe_erase_224_long_seed] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

import numpy as np

from bench.common import ROOT, WORK, configure_process, embed_run, load_dataset, machine, write_fragment

RESULTS = ROOT / "docs" / "bench" / "rw_rerank.json"


def _unit(x: np.ndarray, axis: int = 1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)


def embed_split(run_dir, records, split) -> dict:
    """Plain and flip-averaged embeddings and plain feature maps of the split's queries and gallery, from one run."""
    emb = embed_run(run_dir, records, [*split.queries, *split.gallery], flip=True, maps=True)
    arc = (emb.checkpoint.get("metric") or {}).get("arcface", {}).get("weight")

    def part(which, idx):
        return emb.take(which, idx).numpy()

    return {"q": part("plain", split.queries), "g": part("plain", split.gallery),
            "qf": part("flip", split.queries), "gf": part("flip", split.gallery),
            "mq": part("maps", split.queries), "mg": part("maps", split.gallery),
            "centres": None if arc is None else arc.numpy()}


def mean_of_two_best(photo_scores: np.ndarray, gcol: np.ndarray, k: int) -> np.ndarray:
    """[Q, K] individual scores from [Q, G] photo scores: the mean of each individual's two best photos."""
    out = np.empty((photo_scores.shape[0], k))
    for j in range(k):
        out[:, j] = np.sort(photo_scores[:, gcol == j], axis=1)[:, -2:].mean(1)
    return out


def local_scores(mq: np.ndarray, mg: np.ndarray, cos: np.ndarray, shortlist: int = 50):
    """Aligned local cosine [Q, G] (every pair) and mutual-NN local score [Q, G] (shortlist; NaN elsewhere)."""
    nq, ng = len(mq), len(mg)
    d, h, w = mq.shape[1:]
    lq = _unit(mq.reshape(nq, d, h * w), 1)
    lg = _unit(mg.reshape(ng, d, h * w), 1)
    aligned = lq.transpose(0, 2, 1).reshape(nq, -1) @ lg.transpose(0, 2, 1).reshape(ng, -1).T / (h * w)
    mutual = np.full_like(cos, np.nan)
    top = np.argsort(-cos, 1)[:, :shortlist]
    for i in range(nq):
        s = np.einsum("dp,kdq->kpq", lq[i], lg[top[i]])  # [K, hw, hw]
        a, b = s.argmax(2), s.argmax(1)
        is_mutual = np.take_along_axis(b, a, 1) == np.arange(h * w)[None]
        mutual[i, top[i]] = (is_mutual * s.max(2)).sum(1) / (h * w)
    return aligned, mutual


def rerank(data: dict, qids: list[str], gids: list[str]) -> list[dict]:
    from model import evaluate as ev

    names = sorted(set(gids))
    col = {n: j for j, n in enumerate(names)}
    gcol = np.array([col[g] for g in gids])
    rows = []

    def best(photo_scores):  # the best photo per individual, as every table scores
        return ev.individual_scores(photo_scores, gids)[0]

    def add(name, ind, what):
        m = ev._metrics(ev.ranks_of_truth(ind, names, qids))
        rows.append({"scoring": name, "what": what, "top1": round(m.top1, 4), "top5": round(m.top5, 4),
                     "map5": round(m.map5, 4), "n": m.n})

    for tag, (q, g) in (("", (data["q"], data["g"])), (" (flip)", (data["qf"], data["gf"]))):
        qn, gn = _unit(q), _unit(g)
        cos = qn @ gn.T
        mx = best(cos)
        add("max" + tag, mx, "best photo per individual (the app's)")
        add("top2" + tag, mean_of_two_best(cos, gcol, len(names)), "mean of the two best photos")
        proto = np.zeros((len(names), g.shape[1]))
        np.add.at(proto, gcol, gn)
        pc = qn @ _unit(proto).T
        add("proto" + tag, pc, "cosine to the individual's mean embedding")
        add("max + 0.3 proto" + tag, 0.7 * mx + 0.3 * pc, "")
        if data["centres"] is not None:
            w = _unit(data["centres"])
            cen = (qn @ w.T).reshape(len(qn), len(names), -1).max(2)
            add("centres" + tag, cen, "ArcFace class centres (best sub-centre)")
            add("max + 0.3 centres" + tag, 0.7 * mx + 0.3 * cen, "")
        s = gn @ gn.T
        nn = np.argsort(-s, 1)[:, :3]
        wt = np.take_along_axis(s, nn, 1).clip(0) ** 3
        dba = _unit((gn[nn] * wt[..., None]).sum(1))
        add("dba k3" + tag, best(qn @ dba.T), "gallery averaged with its 3 nearest")
        nn1 = cos.argmax(1)
        qe = _unit(qn + gn[nn1] * cos.max(1, keepdims=True).clip(0) ** 3)
        add("qe k1" + tag, best(qe @ gn.T), "query expanded with its nearest")
        if not tag:
            aligned, mutual = local_scores(data["mq"], data["mg"], cos)
            add("local aligned", best(aligned), "feature-map descriptors alone")
            for wgt in (0.5, 1.0):
                add(f"max + {wgt} local aligned", best(cos + wgt * aligned), "")
                comb = np.where(np.isnan(mutual), cos - 10.0, cos + wgt * np.nan_to_num(mutual))
                add(f"max + {wgt} local mutual-NN", best(comb),
                    "on the 50 cosine-nearest photos")
    return rows


def colour_probe(records, split) -> list[dict]:
    """Frozen ImageNet EfficientNet-Lite0, no training: cosine top-5 with colour vs gray input."""
    import timm
    import torch
    from PIL import Image

    from model import evaluate as ev
    from model.nets.branches import efficientnet_lite0_imagenet_state

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    net.load_state_dict(efficientnet_lite0_imagenet_state(net))
    net.eval()
    need = sorted(set(split.queries) | set(split.gallery))
    rgb = np.stack([np.asarray(Image.open(records[i].path).convert("RGB").resize((224, 224))) for i in need])
    gray = np.repeat((rgb @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1).astype(np.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    pos = {i: k for k, i in enumerate(need)}
    qi, gi = [pos[i] for i in split.queries], [pos[i] for i in split.gallery]
    rows = []
    for name, x in (("colour", rgb), ("gray (R = G = B)", gray)):
        feats = []
        with torch.no_grad():
            for s in range(0, len(x), 64):
                t = torch.from_numpy(x[s:s + 64]).permute(0, 3, 1, 2).float() / 255
                f = net.forward_features((t - mean) / std)
                feats.append(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))
        e = torch.cat(feats).numpy()
        half = e.shape[1] // 2
        for pool, part in (("avg", e[:, :half]), ("max", e[:, half:])):
            z = _unit(part)
            r = ev.evaluate_split_scores(records, split, z[qi] @ z[gi].T).overall
            rows.append({"input": name, "pool": pool, "top1": round(r.top1, 4), "top5": round(r.top5, 4),
                         "map5": round(r.map5, 4), "n": r.n})
    return rows


def reproduce(res: dict) -> str:
    """The commands that measure these rows again: train the rw_recipe run it read, then this script."""
    variant = res["run"].removeprefix("rw_full_recipe_").removesuffix("_seed")
    return (f"python -m bench.experiments run rw_recipe.{variant} --protocol seed && "
            f"python -m bench.bench_rw_rerank --run {res['run']}")


def render(res: dict) -> str:
    base = next(r for r in res["rerank"] if r["scoring"] == "max")
    lines = ["## Right whales: what scoring and colour could add", "",
             f"Written by `bench/bench_rw_rerank.py`; reproduce: `{reproduce(res)}`. Measured {res['measured']} on "
             f"{res.get('machine', machine())}. "
             f"Seed protocol ({base['n']} queries). Part 1 ranks individuals from one embedding pass of the "
             f"`{res['run']}` run (see the previous section) several ways; part 2 embeds the photos with the "
             "ImageNet EfficientNet-Lite0 as it comes (no training) in colour and in gray.", "",
             "| scoring | top-1 | top-5 | MAP@5 | vs max top-5 | what |", "|---|---|---|---|---|---|"]
    for r in res["rerank"]:
        lines.append(f"| {r['scoring']} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['map5']:.3f} | "
                     f"{100 * (r['top5'] - base['top5']):+.1f} | {r['what']} |")
    lines += ["", "| frozen ImageNet EfficientNet-Lite0, input | pool | top-1 | top-5 | MAP@5 |", "|---|---|---|---|---|"]
    for r in res["colour"]:
        lines.append(f"| {r['input']} | {r['pool']} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['map5']:.3f} |")
    best = max(res["rerank"], key=lambda r: r["top5"])
    col = {(r["input"].split()[0], r["pool"]): r["top5"] for r in res["colour"]}
    lines += ["", "Reading:", "",
              f"- the best scoring, {best['scoring']}, moves top-5 by {100 * (best['top5'] - base['top5']):+.1f} "
              "points over the best photo's cosine, and its weight was picked among three on these same queries, so "
              "that gain is an upper bound: the embedding, not the scoring, is what limits these figures (the app "
              "keeps the best photo; the local score would need every gallery photo's feature map stored);",
              f"- colour input lifts the untrained ImageNet features by {100 * (col[('colour', 'avg')] - col[('gray', 'avg')]):+.1f} "
              f"(avg) / {100 * (col[('colour', 'max')] - col[('gray', 'max')]):+.1f} (max) points top-5 on the right "
              "whales.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="rw_full_recipe_erase_224_long_seed",
                   help="a finished run under /tmp/flukeid_table1/runs (made by bench.experiments run rw_recipe.NAME)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    configure_process()
    if not args.render_only:
        import torch

        from model import evaluate as ev

        torch.set_num_threads(args.threads)
        from bench.experiments import load

        run_dir = WORK / "runs" / args.run
        if not (run_dir / "checkpoint.pt").is_file():
            p.error(f"{run_dir}: no checkpoint.pt; train it first (python -m bench.experiments run rw_recipe.NAME "
                    "--protocol seed)")
        records = load_dataset(load().datasets["rw_full"])
        split = ev.make_split(records, "seed", 0)
        t0 = time.perf_counter()
        data = embed_split(run_dir, records, split)
        rows = rerank(data, [str(x) for x in ev.ids_of(records, split.queries)],
                      [str(x) for x in ev.ids_of(records, split.gallery)])
        res = {"run": args.run, "rerank": rows, "colour": colour_probe(records, split),
               "command": "python -m bench.bench_rw_rerank " + " ".join(argv if argv is not None else sys.argv[1:]),
               "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
               "wall_s": round(time.perf_counter() - t0, 1), "load_avg": [round(x, 2) for x in os.getloadavg()]}
        RESULTS.write_text(json.dumps(res, indent=1))
    write_fragment("rw_rerank", render(json.loads(RESULTS.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
