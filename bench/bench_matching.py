"""Query latency of matching against 1k-1M gallery embeddings, exact and with the prefilter.

    .venv/bin/python -m bench.bench_matching [--sizes 1000,10000,100000,1000000] [--quick]

Each gallery size runs in a fresh process (so its peak RSS is its own): synthetic float16
embeddings (D=512, 5 photos per individual, individuals' centres near a 32-d subspace, photo
noise 0.3 per dimension), a paper-structured head (x*y, x+y, |x-y|, (x-y)^2 -> 4->32->1 per
position -> dense -> sigmoid, D=512, weights set so it scores like an L1 distance) exported to
ONNX and run by model.inference.Engine on the CPU. Queries are fresh noisy photos of gallery
individuals. "Exact" scores every gallery photo with the head; "prefilter" is the faiss
IVF + 8-bit SQ index (nprobe 256) retrieving 512 photos that the head re-ranks. recall@5 = overlap of the
prefilter's top-5 individuals with the exact top-5. Writes docs/bench/matching.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D = 512
PER = 5
LATENT = 32
BUNDLE = Path("/tmp/flukeid-bench/head512")
# queries timed exactly / with the prefilter per size (exact at 1M costs ~20 s a query on 2 cores)
N_EXACT = {1_000: 20, 10_000: 10, 100_000: 3, 1_000_000: 0}
N_PREFILTER = 30
N_PROXY = {1_000: 30, 10_000: 30, 100_000: 20, 1_000_000: 8}
RESULTS = Path("/tmp/flukeid-bench/matching")


def ensure_bundle() -> Path:
    if (BUNDLE / "manifest.json").is_file():
        return BUNDLE
    sys.path.insert(0, str(ROOT))
    from tests.model.tiny_models import TinyBranch, build_tiny_bundle

    return build_tiny_bundle(BUNDLE, dim=D, mid=32, size=64, branch=TinyBranch(D))


def synthetic_gallery(n: int, seed: int = 0):
    """float16 [n, D] embeddings, individual ids, and a function making fresh query photos."""
    rng = np.random.default_rng(seed)
    n_ind = n // PER
    proj = (rng.normal(size=(LATENT, D)) / np.sqrt(LATENT)).astype(np.float32)
    z = rng.normal(size=(n_ind, LATENT)).astype(np.float32)
    own = np.empty((n_ind, D), np.float16)  # each individual's own offset from the subspace
    for i in range(0, n_ind, 65_536):
        own[i:i + 65_536] = 0.3 * rng.normal(size=(min(65_536, n_ind - i), D))
    ind = np.repeat(np.arange(n_ind), PER)
    emb = np.empty((n, D), np.float16)
    for i in range(0, n, 65_536):
        rows = ind[i:i + 65_536]
        emb[i:i + len(rows)] = z[rows] @ proj + own[rows] + 0.3 * rng.normal(size=(len(rows), D)).astype(np.float32)

    def queries(m: int, qseed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(qseed)
        who = r.choice(n_ind, m, replace=False)
        q = z[who] @ proj + own[who] + 0.3 * r.normal(size=(m, D)).astype(np.float32)
        return q.astype(np.float32), who

    return emb, ind, queries


def l1_proxy(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """What the bench head computes, minus its small noise units: a falling function of mean |q - g|.

    Used only to measure the prefilter's recall where the head over every photo is too slow to
    run for enough queries on a shared 2-core machine (1M photos: ~20 CPU-s per query).
    """
    out = np.empty(len(g), np.float32)
    for i in range(0, len(g), 16_384):
        d = np.abs(g[i:i + 16_384].astype(np.float32) - q).mean(axis=1)
        out[i:i + 16_384] = 1.0 / (1.0 + np.exp(10.0 * (d - 0.76)))
    return out


def stats(times_s: list[float], cpu_s: list[float]) -> dict:
    if not times_s:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "n": 0, "cpu_median_ms": float("nan")}
    a = np.array(times_s) * 1000.0
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "n": len(a),
            "cpu_median_ms": float(np.median(cpu_s) * 1000.0)}


def worker(n: int) -> dict:
    out = _worker(n)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{n}.json").write_text(json.dumps(out))
    return out


def _worker(n: int) -> dict:
    """Everything for one gallery size, in this (fresh) process."""
    from model.inference import Engine
    from model.matching import GalleryIndex, match

    eng = Engine.load(BUNDLE, device="cpu")
    t0 = time.perf_counter()
    emb, ind, make_queries = synthetic_gallery(n)
    gen_s = time.perf_counter() - t0
    gal = GalleryIndex.build(emb, np.arange(n), ind, dtype="float16")
    del emb
    queries, _ = make_queries(max(N_PREFILTER, N_EXACT.get(n, 3), N_PROXY.get(n, 8)))
    out: dict = {"n": n, "gen_s": gen_s, "gallery_mb": gal.embeddings.nbytes / 2**20}
    n_exact = N_EXACT.get(n, 3)
    if n_exact:
        match(eng, queries[0], gal, exact=True)  # warm-up
    exact_t, exact_c, exact_top = [], [], []
    out["loadavg_start"] = os.getloadavg()[0]
    for q in queries[:n_exact]:
        t, c = time.perf_counter(), time.process_time()
        r = match(eng, q, gal, k=5, exact=True)
        exact_t.append(time.perf_counter() - t)
        exact_c.append(time.process_time() - c)
        exact_top.append({c.individual for c in r.candidates})
    out["exact"] = stats(exact_t, exact_c)
    rss_exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    gal.build_prefilter()
    out["index_build_s"] = time.perf_counter() - t
    ann = gal._ann
    out["index_mb"] = (ann.ntotal * (ann.code_size + 8) + ann.quantizer.ntotal * D * 4) / 2**20
    out["nlist"], out["nprobe"], out["prefilter_k"] = int(ann.nlist), int(ann.nprobe), gal.prefilter_k
    pre_t, pre_c, hits = [], [], 0
    for i, q in enumerate(queries[:N_PREFILTER]):
        t, c = time.perf_counter(), time.process_time()
        r = match(eng, q, gal, k=5, exact=False)
        pre_t.append(time.perf_counter() - t)
        pre_c.append(time.process_time() - c)
        if i < n_exact:
            hits += len({c.individual for c in r.candidates} & exact_top[i])
    out["prefilter"] = stats(pre_t, pre_c)
    out["loadavg_end"] = os.getloadavg()[0]
    out["recall_at_5"] = hits / (5 * n_exact) if n_exact else float("nan")
    out["recall_queries"] = n_exact
    n_proxy = N_PROXY.get(n, 8)
    hits = 0
    for q in queries[:n_proxy]:
        ex = {c.individual for c in match(l1_proxy, q, gal, k=5, exact=True).candidates}
        hits += len({c.individual for c in match(l1_proxy, q, gal, k=5, exact=False).candidates} & ex)
    out["proxy_recall_at_5"] = hits / (5 * n_proxy)
    out["proxy_queries"] = n_proxy
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_exact_only_mb"] = rss_exact
    return out


def machine() -> str:
    return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU"


def _ms(v: float) -> str:
    return "not run" if v != v else f"{v:.1f} ms"  # NaN: not measured


def _recall(v: float, n: int) -> str:
    return "not run" if v != v else f"{v:.3f} ({n})"


def write_markdown(results: list[dict], cmd: str) -> str:
    lines = [
        "## Matching: query latency, prefilter recall, memory",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {machine()}, onnxruntime CPU provider, faiss-cpu; date: "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "Synthetic float16 embeddings, D=512, 5 photos per individual (centres near a 32-d subspace,",
        "photo noise 0.3/dim); paper-structured head (4->32->1 per position, D=512) via onnxruntime,",
        "chunks of 128 pairs. Exact = the head over every gallery photo. Prefilter = faiss IVF",
        "(nlist = sqrt(M)) with 8-bit scalar quantiser, nprobe 256, 512 photos re-ranked by the head",
        "(the app uses it from 20,000 photos up; here it is measured at every size for comparison).",
        "recall@5 = overlap of the prefilter's top-5 individuals with the exact top-5, with the head",
        "(few queries: the head over every photo is slow) and with an L1 stand-in for the head",
        "(the bench head without its small noise units; more queries, and the only one at 1M).",
        "Latencies are wall-clock medians; \"CPU\" is the process CPU time (both threads summed), which",
        "shared-machine load inflates less. The load average (1 min) during each run is given: this",
        "machine was shared with other jobs, so wall times are pessimistic.",
        "",
        "| gallery | exact median | exact p95 | exact CPU | prefilter median | prefilter p95 | prefilter CPU "
        "| recall@5 head (queries) | recall@5 L1 stand-in (queries) | index build | peak RSS | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {_ms(r['exact']['median_ms'])} | {_ms(r['exact']['p95_ms'])} "
            f"| {_ms(r['exact']['cpu_median_ms'])} "
            f"| {r['prefilter']['median_ms']:.1f} ms | {r['prefilter']['p95_ms']:.1f} ms "
            f"| {r['prefilter']['cpu_median_ms']:.1f} ms "
            f"| {_recall(r['recall_at_5'], r['recall_queries'])} "
            f"| {r['proxy_recall_at_5']:.3f} ({r['proxy_queries']}) | {r['index_build_s']:.1f} s "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['loadavg_start']:.1f}-{r['loadavg_end']:.1f} |")
    lines += ["", "Memory: gallery (float16) and index sizes per size:", ""]
    for r in results:
        lines.append(f"- {r['n']:,}: embeddings {r['gallery_mb']:,.0f} MB, IVF-SQ8 index {r['index_mb']:,.0f} MB, "
                     f"peak RSS of the whole process {r['peak_rss_mb']:,.0f} MB "
                     f"(before the index: {r['peak_rss_exact_only_mb']:,.0f} MB)")
    per_pair = [r["exact"]["cpu_median_ms"] / r["n"] * 1000 for r in results
                if r["n"] >= 10_000 and r["exact"]["n"]]
    if per_pair:
        lines += ["", f"The exact path costs about {np.median(per_pair):.1f} CPU-µs per gallery photo (so about "
                  f"{np.median(per_pair):.0f} CPU-s per query at 1M, not run there): the head's "
                  "per-position network is 512 x (4x32 + 32) multiply-adds per pair, so its cost grows "
                  "linearly with the gallery. Targets: 10k exact <= 30 ms, 100k exact <= 150 ms, 1M "
                  "prefilter <= 100 ms at recall@5 >= 0.99, 1M in <= 2.5 GB. On an idle 2-core machine the two "
                  "threads overlap, so wall time is roughly between half the CPU time and the CPU time."]
    by_n = {r["n"]: r for r in results}
    verdict = []
    for n, target in ((10_000, 30.0), (100_000, 150.0)):
        if n in by_n and by_n[n]["exact"]["n"]:
            c = by_n[n]["exact"]["cpu_median_ms"]
            verdict.append(f"- exact at {n:,}: {c:.0f} CPU-ms per query (>= {c / 2:.0f} ms wall even idle) against "
                           f"a {target:.0f} ms target: **missed**; the head over every photo is the cost.")
    if 1_000_000 in by_n:
        r = by_n[1_000_000]
        verdict.append(f"- prefilter at 1M: {r['prefilter']['cpu_median_ms']:.0f} CPU-ms per query "
                       f"({r['prefilter']['median_ms']:.0f} ms wall at load {r['loadavg_start']:.0f}); the 100 ms wall "
                       f"target is met if the idle machine gives the CPU time or better, not shown on this loaded one; "
                       f"recall@5 {r['proxy_recall_at_5']:.3f} against the exact L1 stand-in.")
        verdict.append(f"- memory at 1M: peak RSS {r['peak_rss_mb']:,.0f} MB including synthetic-data generation "
                       f"(target 2,560 MB): **met**.")
    if verdict:
        lines += ["", "Against the targets:", "", *verdict,
                  "- Below 20,000 photos the app scores every photo exactly; the prefilter (512 photos re-ranked) "
                  "costs about the same at every size, so lowering `prefilter_from` (GalleryIndex) is the lever "
                  "if exact matching is too slow for a catalog."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only, do not write docs/bench/matching.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from the last results")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    ensure_bundle()
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        if args.render:
            results.append(json.loads((RESULTS / f"{n}.json").read_text()))
            continue
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.bench_matching", "--worker", str(n)], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{n:>9,}: exact {r['exact']['median_ms']:8.1f} ms (p95 {r['exact']['p95_ms']:.1f}), "
              f"prefilter {r['prefilter']['median_ms']:6.1f} ms (p95 {r['prefilter']['p95_ms']:.1f}), "
              f"recall@5 {r['recall_at_5']:.3f} (L1 stand-in {r['proxy_recall_at_5']:.3f}), build {r['index_build_s']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB  [{time.perf_counter() - t:.0f} s]", flush=True)
    md = write_markdown(results, "python -m bench.bench_matching" + (f" --sizes {args.sizes}"
                                                                      if args.sizes != ap.get_default("sizes") else ""))
    if not args.no_write:
        out = ROOT / "docs" / "bench" / "matching.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
