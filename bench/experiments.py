"""The experiment runner: trains and scores the rows that bench/experiments.toml describes.

Every right-whale and Table 1 row is data (experiments.toml: preset, recipes, overrides, input,
budget, data sets, protocols, scorings); this module turns a row into a config, trains it with
model.training (or the classifier / random baseline), scores it through bench.common, merges the
result into docs/bench/<table>.json and rewrites the table's fragment docs/bench/<table>.md. The
prose around the tables is written by hand in docs/bench/notes/<table>.md (bench.assemble joins them).

    python -m bench.experiments list [TABLE]
    python -m bench.experiments run TARGET [TARGET ...] [--datasets rw,synth] [--protocol seed|open]
                                [--scale 1.0] [--threads 2] [--device cpu] [--reuse-runs | --resume-runs]
                                [--labels L.csv --images DIR] [--results PATH]
    python -m bench.experiments render [TABLE ...]
    python -m bench.experiments attach EXPERIMENT --json EVAL.json --command "flukeid evaluate ..."
                                [--dataset D] [--protocol seed]

TARGET is a table (every row of it) or TABLE.ROW. Runs go under /tmp/flukeid_table1/runs (trained on
../shared/data: never committed).

On a lent GPU (the ``gpu`` table): the device machine has no ../shared, so first copy the right-whale
photos and rows into an ignored folder that the device tool carries (``carry=[".gpudata/rw"]``, 34 MB)::

    mkdir -p .gpudata/rw/images && cp -r ../shared/data/cetacean_photoid_eval_v1/images/right_whale_head .gpudata/rw/images/
    grep -E '^image,|,rw:' ../shared/data/cetacean_photoid_eval_v1/labels.csv | cut -d, -f1-3,8-11 > .gpudata/rw/labels.csv
    python -m bench.experiments run gpu --device cuda --labels .gpudata/rw/labels.csv --images .gpudata/rw/images \
        --results $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.common import ROOT, WORK, configure_process, load_avg, load_dataset, machine, score_split, utc_now

DATA = Path(__file__).with_name("experiments.toml")
RESULTS = ROOT / "docs" / "bench"
PROTOCOLS = ("seed", "open")
KINDS = ("random", "classifier", "siamese", "metric")
SCORINGS = ("cosine", "head", "head_all")
LAYOUTS = ("by_dataset", "scorings", "variants")
BUCKETS = ("1-2", "3-5", "6+")
DEFAULT_THREADS = 2


# ----------------------------------------------------------------------------------------- the data


@dataclass
class Experiment:
    """One row of experiments.toml (``[TABLE.experiments.NAME]`` over the table's ``defaults``)."""

    table: str
    name: str
    label: str
    kind: str
    preset: str
    input: int = 96
    epochs: int = 200
    workers: int = 2
    budget_s: float | dict = 0.0
    recipes: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=lambda: ["seed"])
    scorings: list[str] = field(default_factory=lambda: ["head"])
    shortlist: int = 100
    flip: list[str] = field(default_factory=list)
    rate: float | None = None

    @property
    def id(self) -> str:
        return f"{self.table}.{self.name}"

    def budget(self, dataset: str) -> float:
        return float(self.budget_s[dataset] if isinstance(self.budget_s, dict) else self.budget_s)

    def flips(self, protocol: str) -> bool:
        return protocol in self.flip


@dataclass
class Plan:
    """experiments.toml, checked: override sets, data sets, tables and their rows."""

    recipes: dict[str, dict]
    datasets: dict[str, dict]
    tables: dict[str, dict]  # name -> {"title", "layout", "defaults", "run_prefix"}
    experiments: dict[str, Experiment]

    def overrides(self, exp: Experiment) -> dict:
        """Everything applied on top of the preset, in order: the recipes, then the row's overrides."""
        out: dict = {}
        for r in exp.recipes:
            out.update(self.recipes[r])
        out.update(exp.overrides)
        return out

    def runs(self, exp: Experiment, datasets: set[str] | None = None, protocol: str | None = None) -> list:
        """(data set, protocol) pairs the row runs on: its protocols on the data sets that allow them."""
        return [(d, p) for d in exp.datasets if not datasets or d in datasets
                for p in exp.protocols if p in self.datasets[d]["protocols"] and (protocol in (None, p))]

    def select(self, targets: list[str]) -> list[Experiment]:
        out = []
        for t in targets:
            if t in self.tables:
                out += [e for e in self.experiments.values() if e.table == t]
            elif t in self.experiments:
                out.append(self.experiments[t])
            else:
                raise ValueError(f"unknown experiment or table {t!r} (tables: {', '.join(self.tables)}; "
                                 "`python -m bench.experiments list` names the rows)")
        return out


def load(path: Path = DATA) -> Plan:
    """Read and check experiments.toml.

    Raises:
        ValueError: naming the file and the row, for an unknown key, kind, recipe, data set, protocol,
            scoring or layout.
    """
    data = tomllib.loads(Path(path).read_text())
    recipes, datasets = data.pop("recipes", {}), data.pop("datasets", {})
    known = set(Experiment.__dataclass_fields__) - {"table", "name"}
    tables, experiments = {}, {}
    for tname, t in data.items():
        rows = t.pop("experiments", {})
        defaults = t.pop("defaults", {})
        if t.get("layout") not in LAYOUTS:
            raise ValueError(f"{path}: [{tname}] layout must be one of {', '.join(LAYOUTS)}")
        tables[tname] = {"title": t.get("title", tname), "layout": t["layout"], "defaults": defaults,
                         "run_prefix": t.get("run_prefix", "")}
        for name, row in rows.items():
            where = f"{path}: [{tname}.experiments.{name}]"
            spec = {**defaults, **row}
            unknown = set(spec) - known
            if unknown:
                raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            exp = Experiment(table=tname, name=name, **spec)
            problems = ([f"kind {exp.kind!r}"] * (exp.kind not in KINDS)
                        + [f"recipe {r!r}" for r in exp.recipes if r not in recipes]
                        + [f"data set {d!r}" for d in exp.datasets if d not in datasets]
                        + [f"protocol {p!r}" for p in [*exp.protocols, *exp.flip] if p not in PROTOCOLS]
                        + [f"scoring {s!r}" for s in exp.scorings if s not in SCORINGS])
            if problems:
                raise ValueError(f"{where}: unknown {', '.join(problems)}")
            experiments[exp.id] = exp
    return Plan(recipes, datasets, tables, experiments)


def make_config(plan: Plan, exp: Experiment, dataset: str, *, scale: float = 1.0, device: str = "cpu"):
    """The row's training config: its preset, the runner's fixed fields, its recipes, its overrides."""
    from model.config import apply_overrides, preset, validate

    cfg = preset(exp.preset)
    cfg.input_height = cfg.input_width = exp.input
    cfg.time_budget_s = exp.budget(dataset) * scale
    cfg.epochs = exp.epochs
    cfg.val_fraction = 0.0  # the protocol's split is the evaluation; no held-out individuals inside training
    cfg.num_workers = exp.workers
    cfg.device = device
    apply_overrides(cfg, plan.overrides(exp), where=f"{DATA.name} {exp.id}")
    validate(cfg)
    return cfg


def run_dir(plan: Plan, exp: Experiment, dataset: str, protocol: str) -> Path:
    return WORK / "runs" / f"{dataset}_{plan.tables[exp.table]['run_prefix']}{exp.name}_{protocol}"


# -------------------------------------------------------------------------------------------- running


def training_subset(records: list, idx, cap: int, seed: int = 0) -> list[int]:
    """At most about ``cap`` of the indexed photos, whole individuals at a time (random, seeded).

    A Siamese epoch sees about four images per training photo (a matched and an unmatched pair each)
    and the time budget is checked between epochs, so rows with a ``rate`` train on a subset that one
    epoch of the budget can cover; the gallery stays the whole training split.
    """
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(str(records[i].individual), []).append(i)
    keys = sorted(k for k, v in groups.items() if len(v) >= 2)
    order = np.random.default_rng(seed).permutation(len(keys))
    out: list[int] = []
    for k in order:
        if len(out) >= cap and len(out) > 0:
            break
        out += groups[keys[k]]
    return sorted(out)


@dataclass
class Options:
    scale: float = 1.0
    threads: int = DEFAULT_THREADS
    device: str = "cpu"
    reuse: bool = False  # score a finished run again (its summary.json) instead of training
    resume: bool = False  # continue an interrupted run from its checkpoint
    command: str = ""


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA), {os.cpu_count()} CPU cores"
    return machine()


def _metrics(res) -> dict:
    return {**res.overall.to_dict(), "by_photos": {k: m.to_dict() for k, m in res.by_photos.items()}}


def _train(plan: Plan, exp: Experiment, dataset: str, records: list, split, protocol: str, opt: Options):
    """Train (or reuse / resume) the row's run; returns (run folder, training summary, photos trained on)."""
    from model.training.siamese import train

    cfg = make_config(plan, exp, dataset, scale=opt.scale, device=opt.device)
    folder = run_dir(plan, exp, dataset, protocol)
    subset = list(split.train)
    if exp.rate:
        subset = training_subset(records, split.train, max(40, int(exp.budget(dataset) * opt.scale * exp.rate / 4)))
    log = lambda e: print(json.dumps({k: v for k, v in e.items() if k != "problems"}), flush=True)  # noqa: E731
    if opt.reuse and (folder / "summary.json").is_file():
        return folder, SimpleNamespace(**json.loads((folder / "summary.json").read_text())), subset
    if opt.resume and (folder / "checkpoint.pt").is_file():
        return folder, train(cfg, [records[i] for i in subset], folder, resume=True, events=log), subset
    shutil.rmtree(folder, ignore_errors=True)
    return folder, train(cfg, [records[i] for i in subset], folder, events=log), subset


def run(plan: Plan, exp: Experiment, dataset: str, records: list, protocol: str, opt: Options) -> dict:
    """Train and score one row on one data set and protocol; returns its result row (docs/bench/<table>.json)."""
    from model import evaluate as ev

    t0 = time.perf_counter()
    split = ev.make_split(records, protocol, 0)
    row: dict = {"dataset": dataset, "protocol": protocol, "row": exp.name, "experiment": exp.id,
                 "label": exp.label, "budget_s": round(exp.budget(dataset) * opt.scale), "threads": opt.threads,
                 "overrides": plan.overrides(exp), "command": opt.command}
    if exp.kind == "random":
        res = {"random": ev.evaluate_split_scores(records, split, ev.random_scores(len(split.queries),
                                                                                    len(split.gallery), 0))}
        headline = "random"
        row.update(train_s=0.0, epochs="-", input="-")
    elif exp.kind == "classifier":
        from model.training.classifier import evaluate_classifier

        cfg = make_config(plan, exp, dataset, scale=opt.scale, device=opt.device)
        c = evaluate_classifier(records, cfg, 0, flip=exp.flips(protocol))
        res, headline = {"classifier": c}, "classifier"
        row.update(train_s=c.info["train_s"], epochs=c.info["epochs"], input=f"{exp.input}x{exp.input}",
                   images_per_s=c.info["images_per_s"])
    else:
        folder, tr, subset = _train(plan, exp, dataset, records, split, protocol, opt)
        t_eval = time.perf_counter()
        flip = exp.flips(protocol)
        res = score_split(folder, records, split, exp.scorings, flip=flip, shortlist=exp.shortlist,
                          device=opt.device, workers=exp.workers)
        headline = exp.scorings[0] + ("_flip" if flip else "")
        mh = getattr(tr, "metric_history", []) or []
        # a resumed run's seconds cover only its last part: add the metric epochs' own times
        train_s = tr.seconds + (sum(h["epoch_s"] for h in mh) if opt.resume else 0.0)
        row.update(train_s=round(train_s, 1), epochs=tr.epochs_done, input=f"{exp.input}x{exp.input}",
                   run_dir=str(folder), trained_on=f"{len(subset)} of {len(split.train)} photos",
                   eval_s=round(time.perf_counter() - t_eval, 1))
        if mh:
            row.update(metric_epochs=len(mh), metric_epochs_planned=mh[-1]["epochs"],
                       metric_images_per_s=round(float(np.mean([h["images_per_s"] for h in mh])), 1))
        if flip:
            plain = res[exp.scorings[0]].overall
            row["without_flip"] = {"top1": plain.top1, "top5": plain.top5, "map5": plain.map5}
    main = res[headline]
    row.update({k: getattr(main.overall, k) for k in ("top1", "top5", "map5")}, queries=main.overall.n,
               flip=exp.flips(protocol), by_photos=_metrics(main)["by_photos"],
               split={k: v for k, v in main.info.items() if k.endswith(("photos", "individuals", "queries"))},
               variants={k: _metrics(r) for k, r in res.items()}, load_avg=load_avg(), measured=utc_now(),
               machine=_machine(opt.device), wall_s=round(time.perf_counter() - t0, 1))
    return row


# -------------------------------------------------------------------------------------------- results


def results_path(table: str) -> Path:
    return RESULTS / f"{table}.json"


def read_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def _key(r: dict) -> tuple:
    return r["dataset"], r["row"], r["protocol"]


def save_row(path: Path, row: dict) -> list[dict]:
    """Merge a row into a results file as it is now (another process may have added rows meanwhile)."""
    rows = [r for r in read_results(path) if _key(r) != _key(row)] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)
    return rows


# ------------------------------------------------------------------------------------------ rendering


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) else str(v)


def _by_photos(by: dict) -> str:
    return " / ".join(_pct(by[b]["top5"]) + f" (n={by[b]['n']})" if b in by else "-" for b in BUCKETS)


def reproduce(plan: Plan, exp_or_table: str, *, dataset: str | None = None, protocol: str | None = None,
              rows: list[dict] = ()) -> str:
    """The command that measures a row (or a table's rows on one data set) again with this runner."""
    parts = ["python -m bench.experiments run", exp_or_table]
    exps = plan.select([exp_or_table])
    if dataset and any(len(e.datasets) > 1 for e in exps):
        parts.append(f"--datasets {dataset}")
    if protocol and any(len(e.protocols) > 1 for e in exps):
        parts.append(f"--protocol {protocol}")
    scales = {round(r["budget_s"] / plan.experiments[r["experiment"]].budget(r["dataset"]), 3) for r in rows
              if r.get("experiment") in plan.experiments and plan.experiments[r["experiment"]].budget(r["dataset"])}
    if len(scales) == 1 and scales != {1.0}:
        parts.append(f"--scale {scales.pop():g}")
    threads = {r.get("threads", DEFAULT_THREADS) for r in rows}
    if len(threads) == 1 and threads != {DEFAULT_THREADS}:
        parts.append(f"--threads {threads.pop()}")
    return " ".join(parts)


def _when_where(rows: list[dict]) -> str:
    """When and on which machine the rows were measured (each distinct value once)."""
    when = sorted({r["measured"] for r in rows if r.get("measured")})
    where = sorted({r["machine"] for r in rows if r.get("machine")})
    return (", ".join(when) or "?") + (f" on {'; '.join(where)}" if where else "")


def _bundle_line(b: dict) -> str:
    return f"exported ONNX bundle re-evaluated by `{b['command']}` (the head on every pair, no flip)"


def render_by_dataset(plan: Plan, table: str, results: list[dict]) -> list[str]:
    """One table per data set: a row per experiment and protocol, split by photos per individual."""
    lines = []
    for ds, spec in plan.datasets.items():
        rows = [r for r in results if r["dataset"] == ds]
        if not rows:
            continue
        first = rows[0]["split"]
        lines += [f"### {spec['title']}", "",
                  f"Reproduce: `{reproduce(plan, table, dataset=ds, rows=rows)}` — measured {_when_where(rows)}. "
                  f"Seed split: {first.get('gallery_photos', '?')} gallery/training "
                  f"photos of {first.get('gallery_individuals', '?')} individuals, {first.get('queries', '?')} queries.",
                  "",
                  "| method | protocol | top-1 | top-5 | MAP@5 | top-5 by photos per individual (1-2 / 3-5 / 6+) "
                  "| training time | input | epochs | budget | trained on |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['label']} | {r['protocol']} | failed: {r['error']} | | | | | | | | |")
                continue
            label = r["label"] + (" (flip TTA)" if r.get("flip") and "flip" not in r["label"] else "")
            lines.append(f"| {label} | {r['protocol']} | {_pct(r['top1'])} | {_pct(r['top5'])} | {r['map5']:.3f} "
                         f"| {_by_photos(r['by_photos'])} | {r['train_s']} s | {r['input']} | {r['epochs']} "
                         f"| {r['budget_s']} s | {r.get('trained_on', 'all')} |")
            if r.get("bundle_eval"):
                b = r["bundle_eval"]
                lines.append(f"| {b.get('label') or _bundle_line(b)} | {r['protocol']} | {_pct(b['top1'])} "
                             f"| {_pct(b['top5'])} | {b['map5']:.3f} | {_by_photos(b.get('by_photos', {}))} "
                             f"| (same run) | {r['input']} | {r['epochs']} | {r['budget_s']} s "
                             f"| {r.get('trained_on', 'all')} |")
        seed_ok = [r for r in rows if r["protocol"] == "seed" and "error" not in r]
        if seed_ok:
            top = max(seed_ok, key=lambda r: (r["top5"], r["map5"]))
            lines += ["", f"Highest top-5 on this data set and budget: {top['label']} ({_pct(top['top5'])})."]
        for r in rows:
            if r.get("without_flip"):
                w = r["without_flip"]
                lines += ["", f"Test-time flip averaging ({r['row']}, {r['protocol']}): without it top-1 "
                          f"{_pct(w['top1'])}, top-5 {_pct(w['top5'])}, MAP@5 {w['map5']:.3f} (same model, same "
                          "embeddings pass)."]
        for r in rows:
            if r.get("bundle_eval"):
                lines += ["", f"The exported run ({r['row']}, {r['protocol']}) was evaluated with "
                          f"`{r['bundle_eval']['command']}`."]
        opn = [r for r in rows if r["protocol"] == "open" and "error" not in r]
        if opn:
            s = opn[0]["split"]
            lines += ["", f"Open protocol: trained on {s.get('train_individuals', '?')} individuals; "
                      f"{s.get('queries', '?')} unseen individuals each give one query, against a gallery of "
                      f"{s.get('gallery_photos', '?')} photos (their other photos plus every other photo as "
                      "distractors)."]
        lines.append("")
    return lines


SCORING_LABELS = {"head_flip": "nn head on the 100 cosine-nearest gallery photos, flip TTA",
                  "head": "nn head on the 100 cosine-nearest gallery photos",
                  "cosine_flip": "cosine of the embeddings, flip TTA",
                  "cosine": "cosine of the embeddings",
                  "head_all_flip": "nn head on every gallery photo, flip TTA",
                  "head_all": "nn head on every gallery photo",
                  "head_first_flip": "first head stage on the same branch (random init, curriculum r 0.2 -> 0.9, "
                                     "lr 1e-3), flip TTA",
                  "head_first": "first head stage on the same branch (random init, curriculum r 0.2 -> 0.9, lr 1e-3)"}


def render_scorings(plan: Plan, table: str, results: list[dict]) -> list[str]:
    """Per row and protocol: how it trained, then one line per way it was scored."""
    lines = []
    for r in sorted(results, key=lambda r: (r["row"], r["protocol"] != "seed")):
        if "error" in r:
            lines += [f"- {r['row']} {r['protocol']}: failed: {r['error']}", ""]
            continue
        s = r["split"]
        if r["protocol"] == "seed":
            where = (f"{s.get('gallery_photos', '?')} gallery/training photos of {s.get('gallery_individuals', '?')} "
                     f"individuals, {s.get('queries', '?')} queries")
        else:
            where = (f"trained on {s.get('train_photos', '?')} photos of {s.get('train_individuals', '?')} "
                     f"individuals; {s.get('queries', '?')} unseen individuals each give one query against "
                     f"{s.get('gallery_photos', '?')} gallery photos")
        load = r.get("load_avg") or ["?"] * 3
        threads = r.get("threads", DEFAULT_THREADS)
        lines += [f"### {r['protocol']} protocol ({where})", "",
                  f"Reproduce: `{reproduce(plan, r['experiment'], dataset=r['dataset'], protocol=r['protocol'], rows=[r])}`"
                  f" — measured {_when_where([r])}; training {r['train_s']} s (budget {r['budget_s']} s), input "
                  f"{r['input']}, {r.get('metric_epochs', '?')} ArcFace epochs (planned {r.get('metric_epochs_planned', '?')}, "
                  f"mean {r.get('metric_images_per_s', '?')} training images/s) + {r['epochs']} head epochs; scoring "
                  f"{r.get('eval_s', '?')} s; {threads} torch thread{'s' * (threads != 1)}, load average at the end "
                  f"{' / '.join(map(str, load))} (1/5/15 min).", "",
                  "| scoring | top-1 | top-5 | MAP@5 | top-5 by photos per individual (1-2 / 3-5 / 6+) |",
                  "|---|---|---|---|---|"]
        for key, label in SCORING_LABELS.items():
            v = r["variants"].get(key)
            if v is not None:
                lines.append(f"| {label} | {_pct(v['top1'])} | {_pct(v['top5'])} | {v['map5']:.3f} | "
                             f"{_by_photos(v['by_photos'])} |")
        if r.get("bundle_eval"):
            v = r["bundle_eval"]
            lines.append(f"| {_bundle_line(v)} | {_pct(v['top1'])} | {_pct(v['top5'])} | {v['map5']:.3f} | - |")
        lines.append("")
    return lines


def render_variants(plan: Plan, table: str, results: list[dict]) -> list[str]:
    """One line per row and protocol: the overrides that set it apart, its pace, four scorings."""
    d = plan.tables[table]["defaults"]
    base = {"epochs": d.get("epochs")}
    for name in d.get("recipes", []):
        base.update(plan.recipes[name])
    lines = ["| variant | protocol | input | overrides | epochs | train img/s | train s | "
             "cosine top-1 / top-5 / MAP@5 | cosine+flip top-5 | head top-5 | head+flip top-5 | load | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = sorted(results, key=lambda r: (r["protocol"] != "seed", r.get("measured", "")))
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['protocol']} | | failed: {r['error']} | | | | | | | | |")
            continue
        v = r["variants"]
        ov = ", ".join(f"`{k}={x}`" for k, x in r["overrides"].items() if base.get(k, object()) != x) or "(none)"
        c = v["cosine"]
        lines.append(f"| {r['row']} | {r['protocol']} | {r['input']} | {ov} | {r['metric_epochs']} | "
                     f"{r['metric_images_per_s']} | {r['train_s']:.0f} | "
                     f"{100 * c['top1']:.1f}% / **{100 * c['top5']:.1f}%** / {c['map5']:.3f} | "
                     f"{100 * v['cosine_flip']['top5']:.1f}% | {100 * v['head']['top5']:.1f}% | "
                     f"{100 * v['head_flip']['top5']:.1f}% | {(r.get('load_avg') or ['?'])[0]} | {r['measured']} |")
    for r in results:
        if r.get("bundle_eval"):
            b = r["bundle_eval"]
            lines += ["", f"The {r['row']} run ({r['protocol']}) exported as an ONNX bundle and re-evaluated the way "
                      f"the app scores (the pair head on every gallery photo, no flip) with `{b['command']}`: top-1 "
                      f"{100 * b['top1']:.1f}%, top-5 **{100 * b['top5']:.1f}%**, MAP@5 {b['map5']:.3f} ({b['n']} queries)."]
    cmds = sorted({reproduce(plan, r["experiment"], dataset=r["dataset"], protocol=r["protocol"], rows=[r])
                   for r in results if "error" not in r})
    label = {e.name: e.label for e in plan.experiments.values() if e.table == table}
    lines += ["", f"Machine: {'; '.join(sorted({r['machine'] for r in results if r.get('machine')})) or '?'}, "
              f"{' / '.join(str(t) for t in sorted({r.get('threads', DEFAULT_THREADS) for r in results}))} torch threads.",
              "", "Reproduce: " + "; ".join(f"`{c}`" for c in cmds), "",
              "What each variant tests: " + "; ".join(f"**{r['row']}**: {label.get(r['row'], r['label'])}"
                                                      for r in results
                                                      if "error" not in r and r["protocol"] == "seed") + ".", ""]
    return lines


RENDER = {"by_dataset": render_by_dataset, "scorings": render_scorings, "variants": render_variants}


def render(plan: Plan, table: str, results: list[dict]) -> str:
    """The generated part of a table's section (the prose is in docs/bench/notes/<table>.md)."""
    t = plan.tables[table]
    return "\n".join([f"## {t['title']}", "", *RENDER[t["layout"]](plan, table, results)]).rstrip() + "\n"


def write_table(plan: Plan, table: str, path: Path | None = None) -> Path:
    path = path or results_path(table)
    out = path.with_suffix(".md")
    out.write_text(render(plan, table, read_results(path)))
    print(f"wrote {out}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------- main


def _run_targets(plan: Plan, args, argv: list[str]) -> int:
    import torch

    torch.set_num_threads(args.threads)
    opt = Options(scale=args.scale, threads=args.threads, device=args.device, reuse=args.reuse_runs,
                  resume=args.resume_runs, command="python -m bench.experiments " + " ".join(argv))
    exps = plan.select(args.targets)
    wanted = set(filter(None, args.datasets.split(","))) or None
    data: dict[str, list] = {}
    WORK.mkdir(parents=True, exist_ok=True)
    for exp in exps:
        path = Path(args.results) if args.results else results_path(exp.table)
        for ds, protocol in plan.runs(exp, wanted, args.protocol):
            if ds not in data:
                try:
                    data[ds] = load_dataset(plan.datasets[ds], labels=args.labels, images=args.images)
                except Exception as exc:  # noqa: BLE001 - report the data set as missing and go on
                    print(f"{ds}: cannot load ({exc})", flush=True)
                    data[ds] = []
            if not data[ds]:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {exp.id} {ds} {protocol} ...", flush=True)
            try:
                row = run(plan, exp, ds, data[ds], protocol, opt)
            except Exception as exc:  # noqa: BLE001 - one failed row must not stop the table
                traceback.print_exc()
                row = {"dataset": ds, "protocol": protocol, "row": exp.name, "experiment": exp.id,
                       "label": exp.label, "error": f"{type(exc).__name__}: {str(exc)[:200]}", "by_photos": {},
                       "split": {}, "measured": utc_now(), "command": opt.command}
            save_row(path, row)
            write_table(plan, exp.table, path)
            print(json.dumps({k: v for k, v in row.items() if k not in ("by_photos", "variants")}), flush=True)
    return 0


def _attach(plan: Plan, args) -> int:
    """Record a `flukeid evaluate --json` result of a row's exported run beside the row."""
    exp = plan.experiments[args.experiment]
    path = results_path(exp.table)
    ev = json.loads(Path(args.json).read_text())
    rows = read_results(path)
    hits = [r for r in rows if r["row"] == exp.name and r["protocol"] == args.protocol
            and (args.dataset is None or r["dataset"] == args.dataset)]
    if len(hits) != 1:
        raise SystemExit(f"{path}: {len(hits)} rows of {exp.id} ({args.protocol}); name one with --dataset")
    hits[0]["bundle_eval"] = {**{k: ev["overall"][k] for k in ("top1", "top5", "map5", "n")},
                              "by_photos": ev.get("by_photos", {}), "command": args.command}
    path.write_text(json.dumps(rows, indent=1))
    write_table(plan, exp.table, path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="the tables and their rows")
    ls.add_argument("tables", nargs="*")
    r = sub.add_parser("run", help="train and score rows, merge them into docs/bench/<table>.json")
    r.add_argument("targets", nargs="+", help="TABLE (every row) or TABLE.ROW")
    r.add_argument("--datasets", default="", help="comma-separated: only these of each row's data sets")
    r.add_argument("--protocol", choices=PROTOCOLS, default=None, help="only this protocol")
    r.add_argument("--scale", type=float, default=1.0, help="multiply every training budget")
    r.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads")
    r.add_argument("--device", default="cpu", help="cpu or cuda")
    r.add_argument("--reuse-runs", action="store_true", help="score finished runs under /tmp again")
    r.add_argument("--resume-runs", action="store_true", help="continue interrupted runs from their checkpoint")
    r.add_argument("--labels", default=None, help="read the data set's photos from this labels.csv instead")
    r.add_argument("--images", default=None, help="with --labels: the folder its image paths are under")
    r.add_argument("--results", default=None, help="merge the rows into this JSON (default docs/bench/<table>.json)")
    rd = sub.add_parser("render", help="rewrite docs/bench/<table>.md from its JSON")
    rd.add_argument("tables", nargs="*")
    a = sub.add_parser("attach", help="record a `flukeid evaluate --json` result of a row's exported run")
    a.add_argument("experiment")
    a.add_argument("--json", required=True)
    a.add_argument("--command", required=True, help="the commands that exported and evaluated the run")
    a.add_argument("--protocol", choices=PROTOCOLS, default="seed")
    a.add_argument("--dataset", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    configure_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args = p.parse_args(argv)
    plan = load()
    if args.cmd == "list":
        for e in plan.experiments.values():
            if not args.tables or e.table in args.tables:
                print(f"{e.id:32} {e.kind:10} {', '.join(f'{d}/{pr}' for d, pr in plan.runs(e))}: {e.label}")
        return 0
    if args.cmd == "render":
        for t in args.tables or [t for t in plan.tables if results_path(t).is_file()]:
            write_table(plan, t)
        return 0
    if args.cmd == "attach":
        return _attach(plan, args)
    try:
        plan.select(args.targets)
    except ValueError as exc:
        p.error(str(exc))
    return _run_targets(plan, args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
