"""What the bench scripts share: paths, process set-up, the machine line, fragments, data, and scoring.

Each bench script writes its section of docs/BENCHMARKS.md to docs/bench/<name>.md (bench.assemble
joins them with the hand-written notes in docs/bench/notes/). The right-whale scripts embed a
training run's checkpoint and score it through :func:`embed_run` and :func:`score_split` here.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.cli import configure_process  # noqa: F401  (the bench scripts call it first in main(), before torch loads)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # the real photos (read only; never committed)
WORK = Path("/tmp/flukeid_table1")  # training runs and generated data of the experiments


def machine() -> str:
    """``2-core CPU (x86_64), no GPU``: the machine a figure was measured on."""
    return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU"


def utc_now() -> str:
    """The time a figure was measured, as the fragments write it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def write_fragment(name: str, md: str) -> Path:
    """Write ``md`` to docs/bench/<name>.md and say so; returns the path."""
    out = ROOT / "docs" / "bench" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(f"wrote {out}")
    return out


# ------------------------------------------------------------------------------------------ data


def load_dataset(spec: dict, *, labels: str | Path | None = None, images: str | Path | None = None) -> list:
    """The identified records of a data set described by a ``[datasets.NAME]`` table of experiments.toml.

    ``spec``: ``labels`` (a labels.csv under ../shared/data) with an optional id ``prefix`` and a random
    subset of ``individuals`` with 2+ photos (seeded by ``subset_seed``), or ``synthetic`` (the
    arguments of model.data.synthetic.generate_dataset, drawn once under /tmp). ``labels``/``images``
    replace the file and its photo folder (a device machine without ../shared).
    """
    from model.api import generate_dataset, read_labels

    if "synthetic" in spec:
        syn = dict(spec["synthetic"])
        out = WORK / f"synth_s{syn['seed']}_n{syn['individuals']}"
        if not (out / "labels.csv").is_file():
            generate_dataset(out, syn.pop("individuals"), seed=syn.pop("seed"), size=tuple(syn.pop("size")), **syn)
        return read_labels(out / "labels.csv").records
    path = Path(labels) if labels else SHARED / spec["labels"]
    recs = read_labels(path, images).records if images else read_labels(path).records
    prefix = spec.get("prefix", "")
    recs = [r for r in recs if r.id_known and r.individual and str(r.individual).startswith(prefix)]
    if spec.get("individuals"):
        counts: dict[str, int] = {}
        for r in recs:
            counts[str(r.individual)] = counts.get(str(r.individual), 0) + 1
        multi = sorted(k for k, n in counts.items() if n >= 2)
        rng = np.random.default_rng(spec.get("subset_seed", 0))
        keep = set(rng.choice(multi, min(spec["individuals"], len(multi)), replace=False))
        recs = [r for r in recs if str(r.individual) in keep]
    return recs


# --------------------------------------------------------------------------------- a run's embeddings


@dataclass
class RunEmbeddings:
    """One embedding pass of a training run over some photos (rows ``rows`` of the records)."""

    model: object  # model.nets.siamese.Siamese, eval mode, on the scoring device
    checkpoint: dict
    rows: list[int]
    plain: object  # torch.Tensor [N, D]
    flip: object | None = None  # [N, D]: the plain embedding averaged with the mirrored crop's
    maps: object | None = None  # [N, D, h, w]: the branch's last feature maps (plain crops)

    def take(self, which: str, indices: Sequence[int]):
        """The ``plain``/``flip``/``maps`` rows of the given record indices, in their order."""
        pos = {i: k for k, i in enumerate(self.rows)}
        return getattr(self, which)[[pos[i] for i in indices]]


def embed_run(run_dir: str | Path, records: list, indices: Sequence[int], *, flip: bool = False,
              maps: bool = False, device: str = "cpu", workers: int = 2) -> RunEmbeddings:
    """Embed the photos ``records[i]`` for ``i`` in ``indices`` with a run's checkpoint.pt.

    The crops are prepared as the run was trained (its config's input size and margin); with ``flip``
    the mirrored crops are embedded too and averaged in (test-time augmentation), with ``maps`` the
    branch's feature maps are kept. Raises RuntimeError when a photo cannot be read (the rows would
    no longer line up with the split).
    """
    import torch

    from model.data.dataset import dataset_from_crops, load_records
    from model.preprocess import Preprocessing
    from model.training.common import EMBED_BATCH, autocast, embed_all, to_input
    from model.training.siamese import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    model, cfg = model_from_checkpoint(ck)
    dev = torch.device(device)
    model.to(dev).eval()
    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    rows = sorted(set(indices))
    ok, crops, report = load_records([records[i] for i in rows], prep, workers=workers)
    if report.problems:
        raise RuntimeError(report.problems[0])
    ds = dataset_from_crops(ok, crops, prep, [0] * len(ok))
    out = RunEmbeddings(model, ck, rows, embed_all(model, ds, dev, cfg))
    if flip:
        mirrored = dataset_from_crops(ok, [np.ascontiguousarray(c[:, ::-1]) for c in crops], prep, [0] * len(ok))
        out.flip = (out.plain + embed_all(model, mirrored, dev, cfg)) / 2
    if maps:
        parts = []
        with torch.no_grad():
            for i in range(0, len(ds), EMBED_BATCH):
                x = to_input(ds.uint8_batch(range(i, min(len(ds), i + EMBED_BATCH))), dev, cfg, None)
                with autocast(dev, cfg):
                    parts.append(model.branch(x)[1].float())
        out.maps = torch.cat(parts)
    return out


# ------------------------------------------------------------------------------------------ scoring


def head_scores(model, q, g, shortlist: int = 0):
    """Pair-head probabilities [Q, G] (numpy) on each query's ``shortlist`` cosine-nearest gallery photos
    (-1 elsewhere; 0: every photo), as the app's matcher shortlists; computed on the tensors' device."""
    import torch
    import torch.nn.functional as F

    cos = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    k = min(shortlist or len(g), len(g))
    near = torch.topk(cos, k, dim=1).indices
    sc = torch.full((len(q), len(g)), -1.0, device=q.device)
    block = max(1, (262_144 if q.device.type == "cuda" else 8192) // k)  # pairs per head call
    with torch.no_grad():
        for s in range(0, len(q), block):
            idx = near[s:s + block]
            a = q[s:s + block][:, None, :].expand(-1, k, -1).reshape(-1, q.shape[1])
            p = torch.sigmoid(model.head(a, g[idx.reshape(-1)]).float()).reshape(len(idx), k)
            sc[s:s + len(idx)].scatter_(1, idx, p)
    return sc.cpu().numpy()


def photo_scores(emb: RunEmbeddings, which: str, q_idx: Sequence[int], g_idx: Sequence[int], scoring: str,
                 shortlist: int = 100) -> np.ndarray:
    """[Q, G] scores of the queries against the gallery photos: ``cosine`` of the embeddings, ``head`` on
    a cosine shortlist, or ``head_all`` on every pair; ``which`` is ``plain`` or ``flip``."""
    import torch.nn.functional as F

    q, g = emb.take(which, q_idx), emb.take(which, g_idx)
    if scoring == "cosine":
        return (F.normalize(q, dim=1) @ F.normalize(g, dim=1).T).cpu().numpy()
    if scoring in ("head", "head_all"):
        return head_scores(emb.model, q, g, shortlist if scoring == "head" else 0)
    raise ValueError(f"unknown scoring {scoring!r} (cosine, head, head_all)")


def score_split(run_dir: str | Path, records: list, split, scorings: Sequence[str], *, flip: bool,
                shortlist: int = 100, device: str = "cpu", workers: int = 2) -> dict:
    """Evaluate a run on a protocol split every way asked, from one embedding pass (plus the mirrored one).

    Returns ``{name: model.evaluate.EvalResult}`` for each scoring, and ``name + "_flip"`` when ``flip``.
    """
    from model import evaluate as ev

    emb = embed_run(run_dir, records, [*split.queries, *split.gallery], flip=flip, device=device, workers=workers)
    out = {}
    for which, suffix in (("plain", ""), ("flip", "_flip"))[:1 + bool(flip)]:
        for s in scorings:
            sc = photo_scores(emb, which, split.queries, split.gallery, s, shortlist)
            out[s + suffix] = ev.evaluate_split_scores(records, split, sc)
    return out
