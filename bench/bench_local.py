"""Training-free identification by local features (model.local): accuracy, calibration and speed.

    .venv/bin/python -m bench.bench_local [--skip-humpback] [--skip-rw] [--skip-tables] [--skip-sweep]
                                          [--sets humpback,rightwhale,synthetic] [--skip-speed]
                                          [--sizes 1000,10000,100000]

(--skip-humpback skips the humpback section with its calibration; --sets chooses the sets of the
accuracy tables and the sweep; --skip-rw drops the right whales from them.)

Accuracy (../shared/data; skipped when absent):

- humpback_kaggle2019_v2, protocol "all" (training-free matchers): one photo of each individual
  with 2+ photos is the query (seeded choice), every other photo is in the gallery; each unmatched
  (``id_known=0``) photo is a gallery individual of its own, as a catalog would hold it, so
  unmatched photos and singletons are distractors that can take a top-5 place.

Local features alone on every set (tables): humpback protocol "all", right whales
(cetacean_photoid_eval_v1, ``rw:``) and a synthetic set (``flukeid synth --individuals 500 --seed 1``)
on the seed, open and all protocols, by model.evaluate.evaluate_local on the features flukeid
evaluate computes (cached in /tmp): the numbers ``flukeid evaluate`` prints for that set and protocol.

Scoring sweep: how many individuals and photos are verified, the pose RANSAC fits (similarity or
affine), the inlier minimum and the rank score (inliers or votes), on humpback "all", right whales
"seed" and synthetic "seed"; each (query, photo, pose) is verified once and the settings read the
same verifications (_MemoVerifyIndex), with the measured seconds of the verifications each setting
runs as its verification time a query.

Calibration (humpback): every photo of the multi-photo individuals as a query (leave-one-out)
and every unmatched photo as a query (its individual is not in the gallery), split in two halves
by individual; a Calibrator fitted on one half (thresholds by its own cross-validation) scores the
other, and the held-out probabilities of both halves are pooled for the ECE, the reliability
diagram (docs/local_reliability.png), the banner's precision/recall and the new-individual rates.

Speed (this CPU): extraction per photo (median over the humpback photos), query latency (index
search + LNBNN + verification of 10 individuals x 2 photos) at 1k photos on the real humpback
index, and at 1k/10k/100k photos on synthetic indexes: the faiss index LocalIndex would build at
that size (same kind, nlist, nprobe) filled with random codes over cells whose sizes follow the
real humpback index's cell-size distribution (k-means and assigning 5-50M descriptors take hours on
two cores; the search cost depends on the cells scanned, not on what the codes say). Each size runs
in its own process for its peak memory.

Writes docs/bench/local.md (+ local.json) and docs/local_reliability.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

import model.local.index as li
from bench.common import ROOT, machine, write_fragment
from bench.local_data import (
    CACHE,
    HUMPBACK,
    SYNTH_INDIVIDUALS,
    SYNTH_SEED,
    eval_features_for,
    features_for,
    humpback_records,
    right_whale_records,
    synthetic_records,
)
from model.evaluate import (
    evaluate_local,
    evaluate_scores,
    fill_local_index,
    format_result,
    make_split,
    photo_counts,
)
from model.local.calibration import (
    DEFAULT_CALIBRATION_FILE,
    Calibrator,
    calibration_pairs,
    expected_calibration_error,
    save_calibrator,
    write_reliability_diagram,
)
from model.local.features import LocalFeatures
from model.local.index import KP_BITS, LocalIndex
from model.local.verify import MIN_INLIERS, Verification, verify

RELIABILITY_PNG = ROOT / "docs" / "local_reliability.png"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


# --- accuracy --------------------------------------------------------------------------------

def _ind_score_matrix(results_scores: list[dict], gallery_ids: list[str]) -> np.ndarray:
    """[Q, G]: each gallery photo gets its individual's score for the query (-inf if unranked)."""
    out = np.full((len(results_scores), len(gallery_ids)), -np.inf)
    for q, sc in enumerate(results_scores):
        for g, gid in enumerate(gallery_ids):
            v = sc.get(gid)
            if v is not None:
                out[q, g] = v
    return out


def _evaluate(vote_scores, final_scores, query_ids, gallery_ids, counts) -> dict:
    out = {}
    for name, sc in (("votes", vote_scores), ("verified", final_scores)):
        res = evaluate_scores(_ind_score_matrix(sc, gallery_ids), query_ids, gallery_ids, counts)
        out[name] = {"overall": res.overall.to_dict(), "by_photos": {k: m.to_dict() for k, m in res.by_photos.items()}}
    return out


def _scores(idx: LocalIndex, votes, results, names_of) -> tuple[list[dict], list[dict]]:
    """Per query: individual name -> votes (every voted individual) and -> final score (votes
    below the verified candidates for the rest)."""
    vote_sc, final_sc = [], []
    for (_, per_ind), res in zip(votes, results):
        v = {names_of[i]: s for i, s in per_ind.items()}
        f = dict(v)
        for c in res.candidates:
            f[names_of[c.individual_id]] = c.score
        vote_sc.append(v)
        final_sc.append(f)
    return vote_sc, final_sc


def humpback(report: dict, with_fusion: bool = False) -> None:
    recs = humpback_records()
    t0 = time.perf_counter()
    feats, ms = features_for(recs, "humpback")
    print(f"humpback: {len(recs)} photos, features in {time.perf_counter() - t0:.0f} s (median {ms:.1f} ms)")
    names = [str(r.individual) if r.id_known else f"unmatched:{i}" for i, r in enumerate(recs)]
    code = {n: j for j, n in enumerate(sorted(set(names)))}
    names_of = {j: n for n, j in code.items()}
    groups = defaultdict(list)
    for i, r in enumerate(recs):
        if r.id_known:
            groups[str(r.individual)].append(i)
    multi = {k: v for k, v in sorted(groups.items()) if len(v) >= 2}
    rng = np.random.default_rng(0)
    protocol_q = sorted(int(rng.choice(v)) for v in multi.values())
    loo_q = sorted(i for v in multi.values() for i in v)
    unmatched_q = [i for i, r in enumerate(recs) if not r.id_known]
    counts = photo_counts(recs)

    idx = LocalIndex()
    idx.add_many((i, code[names[i]], feats[i]) for i in range(len(recs)))
    t0 = time.perf_counter()
    kind = idx.kind
    build_s = time.perf_counter() - t0
    print(f"index: {kind}, {idx.n_descriptors} descriptors, built in {build_s:.1f} s")

    all_q = loo_q + unmatched_q
    t0 = time.perf_counter()
    votes = idx.votes_many([feats[q] for q in all_q], [[q] for q in all_q])
    t_votes = (time.perf_counter() - t0) / len(all_q)
    t0 = time.perf_counter()
    results = [idx.rank(feats[q], v) for q, v in zip(all_q, votes)]
    t_rank = (time.perf_counter() - t0) / len(all_q)
    print(f"{len(all_q)} queries: votes {1e3 * t_votes:.0f} ms, ranking + verification {1e3 * t_rank:.0f} ms a query")
    pos = {q: j for j, q in enumerate(all_q)}

    # protocol "all"
    sel = [pos[q] for q in protocol_q]
    gallery_ids = names  # the query itself is excluded by the search; its own column never scores
    vote_sc, final_sc = _scores(idx, [votes[j] for j in sel], [results[j] for j in sel], names_of)
    # a query's own photo must not count: evaluate against the gallery minus the query, per query
    acc = {"votes": defaultdict(list), "verified": defaultdict(list)}
    for qi, q in enumerate(protocol_q):
        g_ids = [n for i, n in enumerate(gallery_ids) if i != q]
        for name, sc in (("votes", vote_sc[qi]), ("verified", final_sc[qi])):
            res = evaluate_scores(_ind_score_matrix([sc], g_ids), [names[q]], g_ids, counts)
            acc[name]["rank"].append(float(res.ranks[0]))
    proto = {}
    for name in ("votes", "verified"):
        ranks = np.array(acc[name]["rank"])
        by = defaultdict(list)
        for q, r in zip(protocol_q, ranks):
            by[str(counts[names[q]])].append(r)
        proto[name] = {"n": len(ranks), "top1": float(np.mean(ranks <= 1)), "top5": float(np.mean(ranks <= 5)),
                       "by_photos": {k: {"n": len(v), "top1": float(np.mean(np.array(v) <= 1)),
                                         "top5": float(np.mean(np.array(v) <= 5))} for k, v in sorted(by.items())}}
    top = [results[j].candidates[0] if results[j].candidates else None for j in sel]
    verified_top = [c for c in top if c is not None and c.inliers >= MIN_INLIERS]
    right = [c for c, q in zip(top, protocol_q) if c is not None and c.inliers >= MIN_INLIERS
             and names_of[c.individual_id] == names[q]]
    proto["verified_top1"] = {"n": len(verified_top), "correct": len(right)}

    # flip-aware: mirrored query features too
    mfeats, _ = features_for([recs[q] for q in protocol_q], "humpback_protocol_mirrored", mirror=True)
    m_votes = idx.votes_many(mfeats, [[q] for q in protocol_q])
    flip_res = [idx.rank(feats[q], votes[pos[q]], mirrored=mf, m_votes=mv)
                for q, mf, mv in zip(protocol_q, mfeats, m_votes)]
    flip_ranks = []
    for q, res in zip(protocol_q, flip_res):
        order = [names_of[c.individual_id] for c in res.candidates]
        flip_ranks.append(order.index(names[q]) + 1 if names[q] in order else math.inf)
    flip_ranks = np.array(flip_ranks)
    proto["flip_aware"] = {"top1": float(np.mean(flip_ranks <= 1)), "top5": float(np.mean(flip_ranks <= 5))}
    report["humpback"] = {"photos": len(recs), "individuals_known": len(groups), "multi_individuals": len(multi),
                          "unmatched": len(unmatched_q), "descriptors": idx.n_descriptors, "index": kind,
                          "extract_ms_median": ms, "protocol_all": proto,
                          "query_ms": {"votes": 1e3 * t_votes, "rank_verify": 1e3 * t_rank},
                          "bytes_per_photo_mean": float(np.mean([len(f.to_bytes()) for f in feats])),
                          "keypoints_median": float(np.median([len(f) for f in feats]))}
    print(json.dumps(proto, indent=1))

    if with_fusion:
        report["humpback"]["fusion_demo"] = fusion(recs, names, protocol_q,
                                                   {q: votes[pos[q]][1] for q in protocol_q}, names_of)
        print(json.dumps(report["humpback"]["fusion_demo"], indent=1))

    # calibration: two halves by individual
    truths = [names[q] if recs[q].id_known else None for q in all_q]
    inds = list(multi)
    order = np.random.default_rng(1).permutation(len(inds))
    half_of = {inds[j]: int(h % 2) for h, j in enumerate(order)}
    u_half = {q: int(h % 2) for h, q in enumerate(np.random.default_rng(2).permutation(unmatched_q))}
    half = np.array([half_of[names[q]] if recs[q].id_known else u_half[q] for q in all_q])
    truth_codes = [code[t] if t is not None else None for t in truths]
    matchable = [t is not None for t in truths]
    pairs = calibration_pairs(results, truth_codes, matchable=matchable)
    held_p = np.zeros(len(pairs.y))
    held_thr = {}
    for h in (0, 1):
        fit_rows = half[pairs.query] == h
        cal = Calibrator().fit(pairs.X[fit_rows], pairs.y[fit_rows], pairs.feature_names,
                               groups=pairs.query[fit_rows], top=pairs.top[fit_rows],
                               matchable=pairs.matchable[fit_rows], source="humpback half")
        test_rows = ~fit_rows
        held_p[test_rows] = cal.predict_proba(pairs.X[test_rows])
        held_thr[1 - h] = (cal.best_match_threshold, cal.new_individual_threshold, cal.to_dict())
    top_rows = np.flatnonzero(pairs.top)
    p_top = held_p[top_rows]
    y_top = pairs.y[top_rows]
    q_top = pairs.query[top_rows]
    m_top = pairs.matchable[top_rows]
    banner = np.array([held_thr[half[q]][0] is not None and p >= held_thr[half[q]][0] for p, q in zip(p_top, q_top)])
    new = np.array([held_thr[half[q]][1] is not None and p < held_thr[half[q]][1] for p, q in zip(p_top, q_top)])
    # queries whose individual is in the gallery: every leave-one-out query is (2+ photos)
    cal_report = {
        "pairs": int(len(pairs.y)), "positives": int(pairs.y.sum()), "queries_matchable": int(m_top.sum()),
        "queries_unmatched": int((~m_top).sum()),
        "ece_all_pairs": expected_calibration_error(held_p, pairs.y),
        "ece_top1": expected_calibration_error(p_top, y_top),
        "thresholds": {str(h): {"best_match": t[0], "new_individual": t[1]} for h, t in held_thr.items()},
        "banner_shown": int(banner.sum()),
        "banner_precision": float(y_top[banner].mean()) if banner.any() else None,
        "banner_recall_matchable": float(np.sum(banner & (y_top == 1)) / max(1, m_top.sum())),
        "top1_correct_matchable": float(np.sum(y_top[m_top]) / max(1, m_top.sum())),
        "new_rate_unmatched": float(new[~m_top].mean()) if (~m_top).any() else None,
        "new_rate_matchable": float(new[m_top].mean()) if m_top.any() else None,
        "new_matchable_top1_right": int(np.sum(new & m_top & (y_top == 1))),
        "coef_half0": held_thr[1][2]["coef"], "feature_names": pairs.feature_names,
    }
    write_reliability_diagram(RELIABILITY_PNG, held_p, pairs.y,
                              title="humpback, local features, held-out halves")
    report["humpback"]["calibration"] = cal_report
    # the calibration shipped now (resources/), on these pairs: does it still hold after a scoring change?
    from model.local.calibration import default_calibrator

    shipped = default_calibrator()
    if shipped is not None:
        report["humpback"]["shipped_calibration"] = {"created": shipped.created, "on_humpback": _apply(shipped, pairs)}
    # the synthetic-only calibration, measured on the real humpback pairs
    syn, syn_info = synthetic_calibrator()
    report["humpback"]["synthetic_calibration"] = {**syn_info, "on_humpback": _apply(syn, pairs)}
    report["_synthetic_calibrator"] = syn.to_dict()
    print(json.dumps(report["humpback"]["synthetic_calibration"], indent=1))
    print(json.dumps({k: v for k, v in cal_report.items() if k != "coef_half0"}, indent=1))


SYNTH_MATCHABLE = 120
SYNTH_NEW = 120


def synthetic_calibrator() -> tuple[Calibrator, dict]:
    """A Calibrator fitted on synthetic flukes only (model.data.synthetic; never the shared data).

    Gallery: SYNTH_MATCHABLE individuals with 2 photos each; queries: a third photo of each (matchable)
    and one photo of each of SYNTH_NEW individuals that are not in the gallery (new).
    """
    from model.data.synthetic import make_identity, render_fluke_photo
    from model.local.features import extract

    path = CACHE / "synthetic_calibration_feats.pkl"
    if path.is_file():
        import pickle

        blobs = pickle.loads(path.read_bytes())
        feats = {k: LocalFeatures.from_bytes(b) for k, b in blobs.items()}
    else:
        import pickle

        feats = {}
        for i in range(SYNTH_MATCHABLE + SYNTH_NEW):
            ident = make_identity(10_000 + i)
            for j in range(3 if i < SYNTH_MATCHABLE else 1):
                img, box = render_fluke_photo(ident, np.random.default_rng((i, j)))
                feats[(i, j)] = extract(img, box)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({k: f.to_bytes() for k, f in feats.items()}))
    idx = LocalIndex()
    idx.add_many((i * 4 + j, i, feats[(i, j)]) for i in range(SYNTH_MATCHABLE) for j in range(2))
    queries = [feats[(i, 2)] for i in range(SYNTH_MATCHABLE)] + \
        [feats[(i, 0)] for i in range(SYNTH_MATCHABLE, SYNTH_MATCHABLE + SYNTH_NEW)]
    truths = list(range(SYNTH_MATCHABLE)) + [None] * SYNTH_NEW
    results = idx.search_many(queries)
    pairs = calibration_pairs(results, truths, matchable=[t is not None for t in truths])
    cal = Calibrator().fit(pairs.X, pairs.y, pairs.feature_names, groups=pairs.query, top=pairs.top,
                           matchable=pairs.matchable,
                           source=f"synthetic flukes only (model.data.synthetic identities 10000-{10_000 + SYNTH_MATCHABLE + SYNTH_NEW - 1}; "
                                  f"{SYNTH_MATCHABLE} in the gallery with 2 photos, {SYNTH_NEW} new), bench/bench_local.py")
    top = pairs.top
    info = {"pairs": int(len(pairs.y)), "positives": int(pairs.y.sum()),
            "top1_correct_matchable": float(pairs.y[top & pairs.matchable].mean()),
            "ece_top1_cv": expected_calibration_error(cal.cv_proba[top], pairs.y[top]),
            "best_match": cal.best_match_threshold, "new_individual": cal.new_individual_threshold}
    return cal, info


def _apply(cal: Calibrator, pairs, p: np.ndarray | None = None) -> dict:
    """The banner and new-individual figures of a calibrator's thresholds on pairs."""
    p = cal.predict_proba(pairs.X) if p is None else p
    top = pairs.top
    pt, yt, mt = p[top], pairs.y[top], pairs.matchable[top]
    banner = pt >= cal.best_match_threshold if cal.best_match_threshold is not None else np.zeros(len(pt), bool)
    new = pt < cal.new_individual_threshold if cal.new_individual_threshold is not None else np.zeros(len(pt), bool)
    return {"ece_all_pairs": expected_calibration_error(p, pairs.y), "ece_top1": expected_calibration_error(pt, yt),
            "banner_shown": int(banner.sum()),
            "banner_precision": float(yt[banner].mean()) if banner.any() else None,
            "banner_recall_matchable": float(np.sum(banner & (yt == 1)) / max(1, mt.sum())),
            "new_rate_unmatched": float(new[~mt].mean()) if (~mt).any() else None,
            "new_rate_matchable": float(new[mt].mean()) if mt.any() else None,
            "new_matchable_top1_right": int(np.sum(new & mt & (yt == 1))), "matchable": int(mt.sum())}


def _rank_of(scores: dict, truth: str) -> float:
    t = scores.get(truth)
    if t is None or not np.isfinite(t):
        return math.inf
    return 1.0 + sum(1 for v in scores.values() if v >= t) - 1  # ties count against the truth


def _z(scores: dict) -> dict:
    v = np.array(list(scores.values()), float)
    sd = v.std() or 1.0
    return {k: (x - v.mean()) / sd for k, x in scores.items()}


def fusion(recs, names, protocol_q, votes_of: dict, names_of: dict) -> dict:
    """Local votes fused with the shipped demo bundle's embedding (head scores, best photo per
    individual), z-scored per query, on the protocol-"all" queries."""
    from model.inference import Engine
    from model.preprocess import load_image

    bundle = ROOT / "resources" / "models" / "demo"
    path = CACHE / "humpback_demo_embeddings.npy"
    eng = Engine.load(bundle, device="cpu")
    if path.is_file():
        emb = np.load(path)
    else:
        t0 = time.perf_counter()
        parts = []
        for s in range(0, len(recs), 32):
            chunk = recs[s:s + 32]
            parts.append(eng.embed([load_image(r.path) for r in chunk], [r.box for r in chunk]))
        emb = np.concatenate(parts)
        print(f"demo embeddings of {len(recs)} photos in {time.perf_counter() - t0:.0f} s")
        np.save(path, emb)
    out = {"embedding": [], "local": []}
    weights = (0.25, 0.5, 1.0)
    for w in weights:
        out[f"fused_w{w}"] = []
    for q in protocol_q:
        head = eng.score(emb[q], emb)
        e_sc: dict = {}
        for g, n in enumerate(names):
            if g != q:
                e_sc[n] = max(e_sc.get(n, -np.inf), float(head[g]))
        l_sc = {n: 0.0 for n in e_sc}
        for ind, v in votes_of[q].items():
            l_sc[names_of[ind]] = float(np.log1p(v))
        out["embedding"].append(_rank_of(e_sc, names[q]))
        out["local"].append(_rank_of(l_sc, names[q]))
        ze, zl = _z(e_sc), _z(l_sc)
        for w in weights:
            out[f"fused_w{w}"].append(_rank_of({n: zl[n] + w * ze[n] for n in e_sc}, names[q]))
    return {k: {"top1": float(np.mean(np.array(r) <= 1)), "top5": float(np.mean(np.array(r) <= 5))}
            for k, r in out.items()} | {"bundle": str(bundle.relative_to(ROOT))}


# --- local features alone on every set, as `flukeid evaluate` measures them --------------------

HB_CMD = ("flukeid evaluate --data ../shared/data/humpback_kaggle2019_v2/labels.csv "
          "--images ../shared/data/humpback_kaggle2019_v2/images --protocol all")
RW_CMD = ("grep -E '^image,|,rw:' ../shared/data/cetacean_photoid_eval_v1/labels.csv > rw.csv && "
          "flukeid evaluate --data rw.csv --images ../shared/data/cetacean_photoid_eval_v1/images --protocol {p}")
SYN_CMD = (f"flukeid synth --individuals {SYNTH_INDIVIDUALS} --seed {SYNTH_SEED} --out syn && "
           "flukeid evaluate --data syn/labels.csv --protocol {p}")
# (key, title, protocols, target top-1, target top-5) of the accuracy tables
TABLE_SETS = (
    ("humpback", "humpback_kaggle2019_v2 (real; some photos of one individual from one encounter)", ("all",), 0.75, 0.85),
    ("rightwhale", "right whales (cetacean_photoid_eval_v1, `rw:` rows; real 224-px aerial head crops)",
     ("seed", "open", "all"), None, 0.75),
    ("synthetic", f"synthetic flukes (`flukeid synth --individuals {SYNTH_INDIVIDUALS} --seed {SYNTH_SEED}`: "
     "long-tailed 1-30 photos an individual, 768 x 512)", ("seed", "open", "all"), None, None),
)


def _set_data(key: str):
    """(records, features as flukeid evaluate computes them, median extraction ms) of a bench set."""
    recs = {"humpback": humpback_records, "rightwhale": right_whale_records, "synthetic": synthetic_records}[key]()
    name = {"humpback": "humpback", "rightwhale": "rightwhale", "synthetic": f"synth{SYNTH_INDIVIDUALS}s{SYNTH_SEED}"}[key]
    t0 = time.perf_counter()
    feats, ms = eval_features_for(recs, name)
    print(f"{key}: {len(recs)} photos, features in {time.perf_counter() - t0:.0f} s (median {ms:.1f} ms)")
    return recs, feats, ms


def _command(key: str, protocol: str) -> str:
    return {"humpback": HB_CMD, "rightwhale": RW_CMD, "synthetic": SYN_CMD}[key].format(p=protocol)


def tables(report: dict, keys: list[str]) -> None:
    """Local features alone (no model) on each set and protocol: model.evaluate.evaluate_local on the
    features flukeid evaluate computes, with its shortlist: the numbers that command prints."""
    from model.fusion import SHORTLIST

    out = report.setdefault("tables", {})
    for key, _, protocols, _, _ in TABLE_SETS:
        if key not in keys:
            continue
        recs, feats, ms = _set_data(key)
        rows = {}
        for protocol in protocols:
            split = make_split(recs, protocol, 0)
            t0 = time.perf_counter()
            res, idx, _ = evaluate_local(recs, split, feats, k=SHORTLIST)
            rows[protocol] = {**res.to_dict(), "seconds": round(time.perf_counter() - t0, 1),
                              "command": _command(key, protocol)}
            print(f"{key} {protocol}: {format_result(res)} ({rows[protocol]['seconds']} s, {res.info['index']})")
        out[key] = {"photos": len(recs), "extract_ms_median": ms, "protocols": rows,
                    "keypoints_median": float(np.median([len(f) for f in feats.values()])),
                    "date": datetime.now(UTC).strftime("%Y-%m-%d"), "load_avg_1min": os.getloadavg()[0]}


# --- the scoring sweep: verification depth and kind, inlier minimum, rank score -------------------

# (label, transform, min_inliers, rank_by, verify_top, verify_photos); the first is the previous default.
SWEEP = (
    ("previous default: similarity, >= 7 inliers, rank by inliers, 10 individuals x 2 photos", "similarity", 7,
     "inliers", 10, 2),
    ("LNBNN votes alone (rank by votes; no verification)", "similarity", 7, "votes", 0, 2),
    ("verify 5 individuals", "similarity", 7, "inliers", 5, 2),
    ("verify 20 individuals", "similarity", 7, "inliers", 20, 2),
    ("verify 30 individuals", "similarity", 7, "inliers", 30, 2),
    ("1 photo an individual", "similarity", 7, "inliers", 10, 1),
    ("3 photos an individual", "similarity", 7, "inliers", 10, 3),
    ("verify 20 individuals, 1 photo each (**the default now**)", "similarity", 7, "inliers", 20, 1),
    ("verify 40 individuals, 1 photo each", "similarity", 7, "inliers", 40, 1),
    ("verify 20 individuals, 1 photo each, >= 8 inliers", "similarity", 8, "inliers", 20, 1),
    (">= 5 inliers", "similarity", 5, "inliers", 10, 2),
    (">= 6 inliers", "similarity", 6, "inliers", 10, 2),
    (">= 8 inliers", "similarity", 8, "inliers", 10, 2),
    (">= 9 inliers", "similarity", 9, "inliers", 10, 2),
    (">= 12 inliers", "similarity", 12, "inliers", 10, 2),
    ("affine, >= 7 inliers", "affine", 7, "inliers", 10, 2),
    ("affine, >= 9 inliers", "affine", 9, "inliers", 10, 2),
    ("affine, >= 12 inliers", "affine", 12, "inliers", 10, 2),
)
# (set, protocol) the sweep runs on: both real sets and the synthetic one, never tuned on one alone
SWEEP_SETS = (("humpback", "all"), ("rightwhale", "seed"), ("synthetic", "seed"))
RAW_MIN_INLIERS = 3


class _MemoVerifyIndex(LocalIndex):
    """A LocalIndex whose verifications are computed once per (query, gallery photo, transform) at
    the lowest inlier minimum and thresholded at this index's ``min_inliers`` (what verify() itself
    does), so many settings are measured on one set of verifications; each call's measured seconds
    are summed per setting for the latency."""

    def __init__(self, query_of: dict[int, int], memo: dict, **kw):
        super().__init__(**kw)
        self.query_of = query_of  # id(query features) -> record index
        self.memo = memo
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def _verify(self, query: LocalFeatures, photo_id: int) -> Verification:
        key = (self.query_of[id(query)], int(photo_id), self.transform)
        hit = self.memo.get(key)
        if hit is None:
            t0, c0 = time.perf_counter(), time.process_time()
            v = verify(query, self.features(photo_id), min_inliers=RAW_MIN_INLIERS, transform=self.transform)
            hit = self.memo[key] = (v, time.perf_counter() - t0, time.process_time() - c0)
        v, sec, cpu = hit
        self.calls += 1
        self.seconds += sec
        self.cpu_seconds += cpu
        return v if v.inliers >= self.min_inliers else Verification()


def sweep(report: dict, keys: list[str]) -> None:
    import pickle

    from model.fusion import SHORTLIST

    out = report.setdefault("sweep", {})
    for key, protocol in SWEEP_SETS:
        if key not in keys:
            continue
        recs, feats, _ = _set_data(key)
        split = make_split(recs, protocol, 0)
        memo_path = CACHE / f"sweep_verify2_{key}_{protocol}_{len(recs)}.pkl"  # (verification, wall s, CPU s)
        memo = pickle.loads(memo_path.read_bytes()) if memo_path.is_file() else {}
        n_memo = len(memo)
        idx = _MemoVerifyIndex({id(feats[q]): q for q in split.queries}, memo)
        fill_local_index(idx, recs, split, feats)
        t0 = time.perf_counter()
        votes = idx.votes_many([feats[q] for q in split.queries])
        votes_ms = 1e3 * (time.perf_counter() - t0) / len(split.queries)
        rows = []
        for label, transform, min_inl, rank_by, top, photos in SWEEP:
            idx.transform, idx.min_inliers, idx.rank_by = transform, min_inl, rank_by
            idx.calls, idx.seconds, idx.cpu_seconds = 0, 0.0, 0.0
            t0 = time.perf_counter()
            res, _, results = evaluate_local(recs, split, feats, k=SHORTLIST, index=idx, votes=votes,
                                             verify_top=top, verify_photos=photos)
            tops = [(q, r.candidates[0]) for q, r in zip(split.queries, results) if r.candidates]
            ver = [(q, c) for q, c in tops if c.inliers >= min_inl and c.verified]
            right = sum(1 for q, c in ver if recs[q].id_known and recs[c.best_photo_id].id_known
                        and recs[c.best_photo_id].individual == recs[q].individual)
            row = {"label": label, "transform": transform, "min_inliers": min_inl, "rank_by": rank_by,
                   "verify_top": top, "verify_photos": photos, **res.to_dict()["overall"],
                   "by_photos": {b: m.to_dict() for b, m in res.by_photos.items()},
                   "verified_top": len(ver), "verified_top_wrong": len(ver) - right,
                   "verifications_per_query": idx.calls / len(split.queries),
                   "verify_ms_per_query": 1e3 * idx.seconds / len(split.queries),
                   "verify_cpu_ms_per_query": 1e3 * idx.cpu_seconds / len(split.queries)}
            rows.append(row)
            print(f"{key} {protocol} | {label}: top-1 {_pct(row['top1'])} top-5 {_pct(row['top5'])} "
                  f"verified top {len(ver)} ({len(ver) - right} wrong), {row['verifications_per_query']:.1f} "
                  f"verifications {row['verify_ms_per_query']:.0f} ms ({row['verify_cpu_ms_per_query']:.0f} ms CPU) "
                  f"a query ({time.perf_counter() - t0:.0f} s)")
            if len(memo) > n_memo + 2000:  # keep what was computed if the run is cut short
                memo_path.write_bytes(pickle.dumps(memo))
                n_memo = len(memo)
        if len(memo) > n_memo:
            memo_path.write_bytes(pickle.dumps(memo))
        out[f"{key}_{protocol}"] = {"queries": len(split.queries), "gallery": len(split.gallery),
                                    "descriptors": idx.n_descriptors, "index": idx.kind, "votes_ms": votes_ms,
                                    "rows": rows, "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                                    "load_avg_1min": os.getloadavg()[0]}


# --- speed -----------------------------------------------------------------------------------

def _cell_shares() -> np.ndarray:
    """Relative sizes of the IVF cells LocalIndex builds on the real humpback descriptors (sorted)."""
    path = CACHE / "humpback_cell_shares.npy"
    if path.is_file():
        return np.load(path)
    recs = humpback_records()
    feats, _ = features_for(recs, "humpback")
    idx = LocalIndex(exact_below=1)
    idx.add_many((i, i, f) for i, f in enumerate(feats))
    assert idx.kind == "ivf"  # builds the index
    ivf = idx._index
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], float)
    shares = np.sort(sizes / sizes.sum())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, shares)
    return shares


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent
    that forked it)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_one(n_photos: int, n_queries: int = 20, verify_top: int | None = None, verify_photos: int | None = None) -> dict:
    """In this process: an index of ``n_photos`` synthetic photos, timed on real humpback queries
    (verification depth: LocalIndex.rank's defaults unless given)."""
    import faiss

    kp = 500
    n = n_photos * kp
    recs = humpback_records()
    feats, _ = features_for(recs, "humpback")
    real = np.concatenate([f.desc for f in feats])
    rng = np.random.default_rng(0)
    idx = LocalIndex(loader=lambda pid: feats[pid % len(feats)])
    # the photo table LocalIndex keeps (individuals of 4 photos); features come from the loader
    for pid in range(n_photos):
        idx._photos[pid] = li._Photo(pid // 4, kp, None)
    idx._n_desc = n
    t0 = time.perf_counter()
    if n < idx.exact_below:
        index = faiss.IndexIDMap(faiss.IndexScalarQuantizer(128, faiss.ScalarQuantizer.QT_8bit_direct))
        codes = real[rng.integers(0, len(real), n)]
        ids = (np.repeat(np.arange(n_photos), kp) << KP_BITS) + np.tile(np.arange(kp), n_photos)
        index.add_with_ids(codes.astype(np.float32), ids)
        kind = "exact"
        nlist = 0
    else:
        nlist = int(min(65536, 2 ** round(math.log2(li.NLIST_FACTOR * math.sqrt(n)))))
        quantizer = faiss.IndexFlatL2(128)
        quantizer.add(real[rng.choice(len(real), nlist, replace=False)].astype(np.float32))
        pq = n >= idx.pq_from
        if pq:
            index = faiss.IndexIVFPQ(quantizer, 128, nlist, li.PQ_M, 8)
            code_size = li.PQ_M
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, 128, nlist, faiss.ScalarQuantizer.QT_8bit_direct,
                                                  faiss.METRIC_L2, False)
            code_size = 128
        index.is_trained = True
        if pq:  # PQ codebooks: trained on a real sample (cheap: 256 centroids per sub-vector), then the
            # precomputed distance tables a trained IndexIVFPQ keeps
            index.pq.train(real[rng.choice(len(real), 65_536, replace=False)].astype(np.float32))
            index.precompute_table()
        shares = _cell_shares()
        sizes = np.interp(np.linspace(0, 1, nlist), np.linspace(0, 1, len(shares)), shares)
        sizes = rng.permutation(np.maximum(1, np.round(sizes / sizes.sum() * n))).astype(np.int64)
        start = 0
        for c, s in enumerate(sizes):
            gid = np.arange(start, start + s, dtype=np.int64)
            ids = ((gid // kp) << KP_BITS) + gid % kp
            codes = rng.integers(0, 256, (s, code_size), dtype=np.uint8)  # named: swig_ptr holds no reference
            index.invlists.add_entries(c, int(s), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            start += s
        index.ntotal = int(start)
        kind = "ivfpq" if pq else "ivf"
    idx._index, idx._kind, idx._trained_for = index, kind, n
    fill_s = time.perf_counter() - t0
    q_ids = [int(i) for i in rng.choice(len(feats), n_queries, replace=False)]
    qs = [feats[i] for i in q_ids]
    # What verification costs depends on what is verified: random codes vote for random photos, whose
    # few ratio-test matches end verify() at once, while the app verifies the query's best-voted photos,
    # where RANSAC runs. So the ranking step reads each query's votes on the real humpback photos
    # (photo ids 0..977 of the table, which the loader serves with their real features; the query
    # itself left out), regrouped by the table's individuals (an individual's votes: its best photo's).
    real_idx = LocalIndex()
    real_idx.add_many((i, i, f) for i, f in enumerate(feats))
    real_votes = []
    for per_photo, _ in real_idx.votes_many(qs, [[i] for i in q_ids]):
        per_photo = {p: v for p, v in per_photo.items() if p < n_photos}
        per_ind: dict = {}
        for p, v in per_photo.items():
            per_ind[p // 4] = max(per_ind.get(p // 4, 0.0), v)
        real_votes.append((per_photo, per_ind))
    del real_idx
    top = li.DEFAULT_VERIFY_TOP if verify_top is None else verify_top
    photos = li.DEFAULT_VERIFY_PHOTOS if verify_photos is None else verify_photos
    idx.search(qs[0])  # warm up
    t_search, t_total, cpu_total = [], [], []
    n_verified = 0
    for q, rv in zip(qs, real_votes):
        t0, c0 = time.perf_counter(), time.process_time()
        idx.votes(q)
        t1 = time.perf_counter()
        res = idx.rank(q, rv, verify_top=top, verify_photos=photos)
        t2 = time.perf_counter()
        cpu_total.append(time.process_time() - c0)
        n_verified += sum(c.inliers > 0 for c in res.candidates)
        t_search.append(t1 - t0)
        t_total.append(t2 - t0)
    rss = _peak_rss_mb()
    return {"photos": n_photos, "descriptors": n, "kind": kind, "nlist": nlist, "nprobe": idx.nprobe,
            "votes_ms": 1e3 * float(np.median(t_search)), "query_ms": 1e3 * float(np.median(t_total)),
            "query_ms_max": 1e3 * float(np.max(t_total)), "fill_s": fill_s, "peak_rss_mb": rss,
            "index_bytes_per_descriptor": (128 if kind != "ivfpq" else li.PQ_M) + 8, "queries": n_queries,
            "load_avg_1min": os.getloadavg()[0], "verify_top": top, "verify_photos": photos,
            "query_cpu_ms": 1e3 * float(np.median(cpu_total)), "verified_candidates": n_verified,
            "rank_on": "real humpback votes"}


def _speed_row(cmd: list[str], what: str) -> dict:
    """Run one ``--speed-one`` measurement in its own process; its last output line (JSON)."""
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stderr[-3000:])
        raise SystemExit(f"{what} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed_verify(report: dict, settings: list[tuple[int, int]], n_photos: int = 10_000, n_queries: int = 40) -> None:
    """Query latency at ``n_photos`` for several verification depths (individuals x photos), one
    process each, as the speed section measures it."""
    out = []
    for top, photos in settings:
        cmd = [sys.executable, "-m", "bench.bench_local", "--speed-one", str(n_photos), "--speed-queries", str(n_queries),
               "--speed-verify", f"{top}x{photos}"]
        row = _speed_row(cmd, f"speed at {n_photos} photos, {top}x{photos}")
        print(f"{n_photos} photos, verify {top}x{photos}: {row}")
        out.append(row)
    report["speed_verify"] = out


def speed(report: dict, sizes: list[int]) -> None:
    out = []
    for n in sizes:
        cmd = [sys.executable, "-m", "bench.bench_local", "--speed-one", str(n)]
        t0 = time.perf_counter()
        row = _speed_row(cmd, f"speed at {n} photos")
        print(f"{n} photos: {row} ({time.perf_counter() - t0:.0f} s)")
        out.append(row)
    report["speed"] = out


# --- the fragment ----------------------------------------------------------------------------

def _tables_md(tab: dict) -> list[str]:
    if not tab:
        return []
    lines = ["### Local features alone on every set (`flukeid evaluate`, no model)", "",
             "Each row is what the command beside it prints for local features (the app's ranking: LNBNN votes, "
             "the best verified, verified first); measured by bench_local on the same features, cached. "
             "Top-5 by photos of the query's individual in the whole set.", "",
             "| set | protocol | queries | gallery photos (individuals) | top-1 | top-5 | MAP@5 | top-5, 1-2 photos "
             "| top-5, 3-5 | top-5, 6+ | target | command |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for key, title, protocols, t1, t5 in TABLE_SETS:
        t = tab.get(key)
        if not t:
            continue
        for p in protocols:
            r = t["protocols"].get(p)
            if not r:
                continue
            o, i, b = r["overall"], r["info"], r["by_photos"]
            cells = [f"{_pct(b[k]['top5'])} (n={b[k]['n']})" if k in b else "-" for k in ("1-2", "3-5", "6+")]
            target = []
            if t1 is not None:
                target.append(f"top-1 >= {t1:.0%}: {'met' if o['top1'] >= t1 else '**missed**'}")
            if t5 is not None:
                target.append(f"top-5 >= {t5:.0%}: {'met' if o['top5'] >= t5 else '**missed**'}")
            unid = f", {i['gallery_unidentified']} unidentified" if i.get("gallery_unidentified") else ""
            lines.append(f"| {key} | {p} | {o['n']} | {i['gallery_photos']:,} ({i['gallery_individuals']}{unid}) | "
                         f"{_pct(o['top1'])} | {_pct(o['top5'])} | {o['map5']:.3f} | " + " | ".join(cells)
                         + f" | {'; '.join(target) or '-'} | `{r['command']}` |")
        notes.append(f"- {key}: {title}; {t['photos']:,} photos, median {t['keypoints_median']:.0f} keypoints; "
                     f"measured {t['date']}, "
                     f"1-minute load {t['load_avg_1min']:.1f} on the 2 cores; "
                     + "; ".join(f"{p}: {r['info']['descriptors']:,} descriptors, {r['info']['index']} index, "
                                 f"{r['info']['query_ms']:.0f} ms a query (batch, verification included)"
                                 for p, r in t["protocols"].items()) + ".")
    lines += ["", *notes, "",
              "The right-whale target (issue 16) is for the fused ranking (local + a trained embedding); local "
              "features alone are measured against it here. Protocol \"open\" holds one query per individual of a "
              "seeded 20% of the individuals with 2+ photos, against every other photo (nothing is trained, so "
              "\"unseen\" means nothing more here); \"all\" holds one query per individual with 2+ photos.", ""]
    return lines


def _sweep_md(sw: dict, speed_rows: list | None = None, speed_verify: list | None = None) -> list[str]:
    if not sw:
        return []
    sets = [k for k in (f"{a}_{b}" for a, b in SWEEP_SETS) if k in sw]
    first = sw[sets[0]]["rows"]
    at10k = next((r for r in speed_rows or [] if r["photos"] == 10_000), None)
    lines = ["### Scoring sweep: verification depth and pose, inlier minimum, rank score", "",
             "One setting changed at a time from the previous default (the first row), and deeper single-photo "
             "settings; the same "
             "queries, index and votes for every row of a set. Each cell: top-1 / top-5; the queries whose top "
             "candidate was verified (how many of those were wrong: a different individual, or an unmatched photo); "
             "the CPU time of the verifications a query (process CPU time of the verify() calls, mean over the "
             "queries: the shared VM's load inflates wall time, kept in local.json). The index search and votes are "
             "the same for every row: "
             + "; ".join(f"{k.replace('_', ' ')}: {sw[k]['queries']} queries, {sw[k]['gallery']:,} gallery photos, "
                         f"{sw[k]['descriptors']:,} descriptors" for k in sets) + ".", ""]
    head = "| setting | " + " | ".join(k.replace("_", " ") for k in sets) + " | verifications a query (max) |"
    if at10k:
        head += " query at 10k photos (estimate) |"
    lines += [head, "|---|" + "---|" * len(sets) + "---|" + ("---|" if at10k else "")]
    for j, row in enumerate(first):
        cells = []
        for k in sets:
            r = sw[k]["rows"][j]
            cells.append(f"{_pct(r['top1'])} / {_pct(r['top5'])}; {r['verified_top']} ({r['verified_top_wrong']} "
                         f"wrong); {r['verify_cpu_ms_per_query']:.0f} ms")
        n_ver = max(sw[k]["rows"][j]["verifications_per_query"] for k in sets)
        line = f"| {row['label']} | " + " | ".join(cells) + f" | {n_ver:.1f} |"
        if at10k:
            worst = max(sw[k]["rows"][j]["verify_cpu_ms_per_query"] for k in sets)
            line += f" {at10k['votes_ms'] + worst:.0f} ms |"
        lines.append(line)
    loads = [sw[k]["load_avg_1min"] for k in sets]
    lines += ["", f"1-minute load average at the end of each set: {', '.join(f'{x:.1f}' for x in loads)} (2 cores, "
              "shared)."]
    if at10k:
        lines += ["The estimate at 10k photos: the speed table's search + votes at 10,000 photos "
                  f"({at10k['votes_ms']:.0f} ms, median) plus the setting's largest verification CPU time a query above."]
    if speed_verify:
        r0 = speed_verify[0]
        lines += ["", f"Query latency at {r0['photos']:,} photos by verification depth (the speed section's method: "
                  f"{r0['queries']} real humpback queries, one at a time, each verified against its real best-voted "
                  "photos; one process each, run one after the other):", "",
                  "| verified (individuals x photos) | search + votes (median) | query total (median / max) "
                  "| query CPU time (median) | 1-minute load |", "|---|---|---|---|---|"]
        for r in speed_verify:
            lines.append(f"| {r['verify_top']} x {r['verify_photos']} | {r['votes_ms']:.0f} ms | {r['query_ms']:.0f} / "
                         f"{r['query_ms_max']:.0f} ms | {r['query_cpu_ms']:.0f} ms | {r['load_avg_1min']:.1f} |")
        lines += ["", "CPU time adds up every thread of the process (faiss searches on both cores), so on a quiet "
                  "machine the wall time can be below it; it is the figure the other jobs' load does not inflate."]
    return lines + [""]


def _applied(o: dict) -> str:
    """What a calibration did on the humpback pairs (``_apply``'s figures), as one clause."""
    return (f"ECE {o['ece_all_pairs']:.3f} (all pairs), {o['ece_top1']:.3f} (top candidates); banner shown "
            f"{o['banner_shown']} times, precision {_pct(o['banner_precision'])}, recall "
            f"{_pct(o['banner_recall_matchable'])}; \"probably new\" on {_pct(o['new_rate_unmatched'])} of unmatched "
            f"and {_pct(o['new_rate_matchable'])} of matchable queries")


def fragment(report: dict, command: str) -> str:
    lines = ["## Local features: training-free identification (model.local)", "",
             f"`{command}` on {machine()}, {report['date']}. RootSIFT (OpenCV SIFT, 500 keypoints, "
             "box crop at 512 px, CLAHE), faiss descriptor index, LNBNN votes (k=3), RANSAC-similarity "
             f"verification of the {li.DEFAULT_VERIFY_PHOTOS} best-voted photo{'s' if li.DEFAULT_VERIFY_PHOTOS > 1 else ''} "
             f"of each of the {li.DEFAULT_VERIFY_TOP} best-voted individuals (verified: >= {MIN_INLIERS} inliers). "
             "No training, no model.", ""]
    hb = report.get("humpback")
    if hb:
        p = hb["protocol_all"]
        lines += ["### humpback_kaggle2019_v2, protocol \"all\"", "",
                  f"{p['votes']['n']} queries (one photo of each individual with 2+ photos, seeded), gallery: "
                  f"every other photo of the {hb['photos']} ({hb['unmatched']} unmatched photos each their own "
                  "gallery individual, so unmatched photos and singletons are distractors). Some photos of one "
                  "individual come from one encounter (easier than across years).", "",
                  "| ranking | top-1 | top-5 | 2 photos (top-1 / top-5) | 3 photos | 4 photos |",
                  "|---|---|---|---|---|---|"]
        for name, label in (("votes", "LNBNN votes"), ("verified", "votes + verification")):
            m = p[name]
            cells = [f"{_pct(m['by_photos'][b]['top1'])} / {_pct(m['by_photos'][b]['top5'])} (n={m['by_photos'][b]['n']})"
                     if b in m["by_photos"] else "-" for b in ("2", "3", "4")]
            lines.append(f"| {label} | {_pct(m['top1'])} | {_pct(m['top5'])} | " + " | ".join(cells) + " |")
        f = p["flip_aware"]
        lines.append(f"| flip-aware (mirrored query too) | {_pct(f['top1'])} | {_pct(f['top5'])} | | | |")
        fu = hb.get("fusion_demo")
        if fu:
            lines.append(f"| the demo bundle's embedding alone (synthetic-trained; {fu['bundle']}) | "
                         f"{_pct(fu['embedding']['top1'])} | {_pct(fu['embedding']['top5'])} | | | |")
            for key in sorted(k for k in fu if k.startswith("fused_w")):
                lines.append(f"| votes fused with it (z-scored per query, embedding weight {key[7:]}) | "
                             f"{_pct(fu[key]['top1'])} | {_pct(fu[key]['top5'])} | | | |")
        vt = p["verified_top1"]
        d1 = round((f["top1"] - p["verified"]["top1"]) * p["verified"]["n"])
        d5 = round((f["top5"] - p["verified"]["top5"]) * p["verified"]["n"])
        lines += ["", "The flip-aware search (the mirrored query's votes too, each individual keeping the better "
                  f"orientation) changed top-1 by {d1:+d} and top-5 by {d5:+d} queries, so it stays off by default "
                  "(`mirrored=` in LocalIndex.search). "
                  "ALIKED and LightGlue are measured against RootSIFT in their own section (bench/bench_learned_local.py)."]
        lines += ["", f"Target (issue 16): top-1 >= 75%, top-5 >= 85%: **missed**. The top candidate was verified "
                  f"(>= {MIN_INLIERS} inliers) for {vt['n']} of {p['votes']['n']} queries, and right for "
                  f"{vt['correct']} of those.", ""]
        c = hb.get("calibration")
        if c:
            thr = "; ".join(f"half {h}: best match >= {t['best_match'] if t['best_match'] is None else round(t['best_match'], 3)}, "
                            f"new < {t['new_individual'] if t['new_individual'] is None else round(t['new_individual'], 3)}"
                            for h, t in sorted(c["thresholds"].items()))
            lines += ["### Calibration (humpback, held-out halves)", "",
                      f"Queries: every photo of the multi-photo individuals ({c['queries_matchable']}, leave-one-out) "
                      f"and every unmatched photo ({c['queries_unmatched']}); split in two halves by individual; "
                      "a logistic Calibrator (inputs: " + ", ".join(c["feature_names"]) + ") fitted on one half, "
                      "thresholds by its own 5-fold cross-validation, scores the other half. "
                      f"{c['pairs']} (query, top-5 candidate) pairs, {c['positives']} matching.", "",
                      "| measure | value |", "|---|---|",
                      f"| ECE, all held-out pairs (mostly easy non-matches near 0) | {c['ece_all_pairs']:.3f} |",
                      f"| ECE, top candidates only | {c['ece_top1']:.3f} |",
                      f"| thresholds | {thr} |",
                      f"| \"Best match\" banner shown | {c['banner_shown']} queries |",
                      f"| banner precision (target >= 95%) | {'-' if c['banner_precision'] is None else _pct(c['banner_precision'])} |",
                      f"| banner recall (right banners / matchable queries) | {_pct(c['banner_recall_matchable'])} "
                      f"(top-1 right for {_pct(c['top1_correct_matchable'])}) |",
                      f"| \"probably new\" on unmatched photos (target >= 50%) | {_pct(c['new_rate_unmatched'])} |",
                      f"| \"probably new\" on matchable queries (target <= 5%) | {_pct(c['new_rate_matchable'])} "
                      f"({c['new_matchable_top1_right']} of them had the right top candidate) |",
                      "", "![reliability diagram](local_reliability.png)", ""]
            sc = hb.get("synthetic_calibration")
            if sc:
                o = sc["on_humpback"]
                lines += [f"A calibration fitted on synthetic flukes only ({sc['pairs']} pairs from "
                          f"{SYNTH_MATCHABLE} gallery individuals and {SYNTH_NEW} new ones; top-1 right for "
                          f"{_pct(sc['top1_correct_matchable'])} of its matchable queries; thresholds: best match >= "
                          f"{'-' if sc['best_match'] is None else round(sc['best_match'], 3)}, new < "
                          f"{'-' if sc['new_individual'] is None else round(sc['new_individual'], 3)}), "
                          f"applied to every humpback query above: {_applied(o)} ({o['new_matchable_top1_right']} of "
                          f"the {o['matchable']} matchable queries had the right top candidate and were still called "
                          "probably new).", ""]
            shp = hb.get("shipped_calibration")
            if shp:
                lines += [f"The calibration shipped when this ran (created {shp['created']}), applied to the same "
                          f"pairs: {_applied(shp['on_humpback'])}.", ""]
            lines += [
                      "Unmatched photos (Kaggle's new_whale) may show a whale that another unmatched photo also "
                      "shows; they are counted as never matching.", ""]
    lines += _tables_md(report.get("tables") or {})
    lines += _sweep_md(report.get("sweep") or {}, report.get("speed"), report.get("speed_verify"))
    sp = report.get("speed")
    if sp or hb:
        lines += ["### Speed and size (this CPU)", ""]
        if hb:
            rw = (report.get("tables") or {}).get("rightwhale")
            rw_ms = f"{rw['extract_ms_median']:.1f} ms" if rw else "not measured"
            lines += [f"- Extraction: median {hb['extract_ms_median']:.1f} ms a humpback photo (box crop to features, decoded "
                      f"photo given; target <= 50 ms; a fluke box is wide, about 512 x 170 px after resizing), "
                      f"{rw_ms} a right-whale photo (224-px square crops upscaled to 512 x 512: cost grows with the area; "
                      f"measured while other jobs loaded the 2 cores); median {hb['keypoints_median']:.0f} keypoints.",
                      f"- Stored features: {hb['bytes_per_photo_mean'] / 1024:.1f} KB a photo on average "
                      "(138 bytes a keypoint + 36-byte header).",
                      f"- Real humpback index ({hb['photos']} photos, {hb['descriptors']:,} descriptors, {hb['index']}): "
                      f"{hb['query_ms']['votes']:.0f} ms a query for the index search and votes (batch of "
                      f"{hb['protocol_all']['votes']['n']}+ queries), {hb['query_ms']['rank_verify']:.0f} ms for "
                      "ranking and verification.", ""]
        if sp:
            v = sp[0]
            lines += [f"Query latency, one query at a time (index search + LNBNN + verification of "
                      f"{v.get('verify_top', 10)} x {v.get('verify_photos', 2)} photos), "
                      "on indexes of synthetic codes shaped like LocalIndex's at that size (see the script's docstring); "
                      "the verification runs on each query's real best-voted humpback photos. "
                      "Targets: <= 300 ms at 10k photos, <= 1 s at 100k.", "",
                      "| gallery photos | descriptors | index (nlist, nprobe) | search + votes | query total (median / max) "
                      "| index memory | peak RSS of the process |", "|---|---|---|---|---|---|---|"]
            for r in sp:
                mem = r["descriptors"] * r["index_bytes_per_descriptor"] / 2**20
                kind = r["kind"] if r["kind"] == "exact" else f"{r['kind']} ({r['nlist']}, {r['nprobe']})"
                lines.append(f"| {r['photos']:,} | {r['descriptors']:,} | {kind} | {r['votes_ms']:.0f} ms | "
                             f"{r['query_ms']:.0f} / {r['query_ms_max']:.0f} ms | {mem:,.0f} MB | {r['peak_rss_mb']:,.0f} MB |")
            loads = [r["load_avg_1min"] for r in sp if "load_avg_1min" in r]
            if loads:
                lines += ["", f"1-minute load average during these runs: {min(loads):.1f}-{max(loads):.1f} on 2 cores "
                          f"(other jobs); {sp[0]['queries']} queries a size, real humpback query photos. Timings on this shared "
                          "VM follow the other jobs' load: the same 10k-photo search + votes took 81 ms at a load of "
                          "2.2 (an earlier run) and 161-289 ms at loads of 3.7-4.6."]
            pq_rows = [r for r in sp if r["kind"] == "ivfpq"]
            table = (f"; the IVF-PQ index also keeps precomputed distance tables ({pq_rows[-1]['nlist']} cells x 32 x "
                     f"256 floats, {pq_rows[-1]['nlist'] * 32 * 256 * 4 / 2**20:,.0f} MB)") if pq_rows else ""
            lines += ["", f"Index memory is codes + ids{table}; the rest of the peak RSS is the process (Python, "
                      "numpy, the humpback features the script loads). "
                      "Gallery features for verification come from the catalog through LocalIndex's loader; kept "
                      "in memory instead they cost about 66 KB a photo (6.6 GB at 100k photos).", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-rw", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-humpback", action="store_true")
    ap.add_argument("--sets", default="humpback,rightwhale,synthetic",
                    help="sets of the accuracy tables and the sweep (comma-separated)")
    ap.add_argument("--skip-tables", action="store_true", help="skip the local-only accuracy tables")
    ap.add_argument("--skip-sweep", action="store_true", help="skip the scoring sweep")
    ap.add_argument("--sizes", default="100,1000,10000,100000")
    ap.add_argument("--fusion", action="store_true", help="also fuse with the demo bundle's embedding (humpback)")
    ap.add_argument("--write-default-calibration", action="store_true",
                    help="write the synthetic-only calibration to resources/ (model.local.calibration.DEFAULT_CALIBRATION_FILE)")
    ap.add_argument("--speed-verify", default="",
                    help="also time queries at 10k photos for these verification depths, e.g. 10x2,20x1,40x1 "
                         "(individuals x photos)")
    ap.add_argument("--speed-one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--speed-queries", type=int, default=20, help=argparse.SUPPRESS)
    args = ap.parse_args()
    verify_settings = [tuple(int(x) for x in v.split("x")) for v in args.speed_verify.split(",") if v]
    if args.speed_one:
        top, photos = verify_settings[0] if verify_settings else (None, None)
        print(json.dumps(speed_one(args.speed_one, args.speed_queries, top, photos)))
        return
    report: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d")}
    json_path = ROOT / "docs" / "bench" / "local.json"
    if json_path.is_file():  # keep the parts this run skips
        old = json.loads(json_path.read_text())
        report = {**old, "date": report["date"]}
    report.pop("right_whales_seed", None)  # replaced by the tables (rightwhale seed)
    keys = [k for k in args.sets.split(",") if k and not (k == "rightwhale" and args.skip_rw)]
    if unknown := set(keys) - {t[0] for t in TABLE_SETS}:
        raise SystemExit(f"unknown set(s) {', '.join(sorted(unknown))}")
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part, so a run cut short keeps what it measured
        json_path.write_text(json.dumps(report, indent=1))

    if not HUMPBACK.is_dir():
        print("../shared/data is absent: the real sets are skipped")
        keys = [k for k in keys if k == "synthetic"]
    elif not args.skip_humpback:
        humpback(report, args.fusion)
        save()
    if not args.skip_tables:
        tables(report, keys)
        save()
    if not args.skip_sweep:
        sweep(report, keys)
        save()
    if not args.skip_speed:
        speed(report, [int(s) for s in args.sizes.split(",")])
        save()
    if verify_settings:
        speed_verify(report, verify_settings)
    if args.write_default_calibration:
        if "_synthetic_calibrator" not in report:
            raise SystemExit("no synthetic calibration measured yet: run without --skip-humpback first")
        cal = Calibrator.from_dict(report["_synthetic_calibrator"])
        assert "synthetic" in cal.source  # never a calibration fitted on the shared data
        save_calibrator(cal, DEFAULT_CALIBRATION_FILE)
        print(f"wrote {DEFAULT_CALIBRATION_FILE}")
    save()
    write_fragment("local", fragment(report, "python -m bench.bench_local"))


if __name__ == "__main__":
    main()
