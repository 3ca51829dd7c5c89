"""The Siamese training loop: BCE on mined pairs, Adam + weight decay, LR schedule, checkpoints.

``train(config, records, out_dir)`` is a plain function with ``progress``/``should_stop``
callbacks (and an ``events`` callback for JSON-lines progress). Each epoch:

1. embed every training image once (eval mode, no augmentation);
2. score all candidate pairs with the head in blocks and mine matched/unmatched pairs
   (model.training.mining), equal numbers, harder as epochs pass;
3. train on those pairs with batch-wise augmentation (on the training device);
4. validate on held-out individuals (top-1/top-5, individuals ranked by their best photo);
5. write checkpoint.pt atomically (model, optimizer, scheduler, epoch, config, RNG, history).

With ``metric.enabled`` a metric-learning stage runs first (model.training.metric: sub-center
ArcFace fine-tuning of the branch, checkpointed per epoch under the checkpoint's ``metric`` key);
then the branch is frozen and the epochs above train only the head, on cached plain and augmented
embeddings instead of re-embedding photos (step 1 is the cached plain pass, step 3 draws each
pair member's pass at random).

All randomness of an epoch is seeded from (seed, epoch), so a resumed run repeats the
uninterrupted one. Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DDP (gloo on CPU,
NCCL on CUDA); every rank mines the same pairs and trains on its share of them; rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.config import Config, validate
from model.data.dataset import dataset_from_crops, load_records
from model.errors import CheckpointError, ConfigError, DataError, Interrupted
from model.matching import calibrate_threshold
from model.nets.siamese import Siamese, build_siamese
from model.preprocess import Preprocessing
from model.safe_io import check_output
from model.training.common import autocast, embed_all, to_input
from model.training.metric import (
    embedding_bank,
    init_head_as_cosine,
    pick_passes,
    shortlist_score_matrix,
    train_metric,
)
from model.training.mining import concat_pairs, create_miner, score_matrix

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What a training run produced (also written as summary.json in the run folder)."""

    run_dir: str
    epochs_done: int
    epochs: int
    history: list[dict] = field(default_factory=list)
    val_top1: float | None = None
    val_top5: float | None = None
    new_individual_threshold: float = 0.5
    train_images: int = 0
    train_individuals: int = 0
    val_individuals: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_budget: bool = False
    device: str = "cpu"
    world_size: int = 1
    weights_sha256: str = ""  # of the final weights and BN statistics (ranks of a DDP run agree)
    metric_history: list[dict] = field(default_factory=list)  # the metric stage's epochs (when enabled)
    # metric stage: validation top-5/top-1 of the head at its cosine start, and whether the trained head
    # did worse on the held-out individuals, so the start was kept
    head_start_val_top5: float | None = None
    head_start_val_top1: float | None = None
    head_kept_at_start: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------- data split


@dataclass
class Split:
    train: list
    val: list


def split_records(records: Sequence, cfg: Config) -> Split:
    """Drop unidentified and duplicate photos, check there is something to learn, hold out individuals.

    Raises:
        DataError: no records, fewer than two individuals, or no individual with two photos.
    """
    seen, rows = set(), []
    for r in records:
        if not getattr(r, "id_known", True) or r.individual is None or not str(r.individual):
            continue
        key = str(r.path)
        if key in seen:
            continue
        seen.add(key)
        rows.append(r)
    if not rows:
        raise DataError("no identified photos to train on (all rows are unidentified or the list is empty)")
    by_ind: dict[str, list] = defaultdict(list)
    for r in rows:
        by_ind[str(r.individual)].append(r)
    if len(by_ind) < 2:
        raise DataError(f"only one individual ({next(iter(by_ind))!r}) in the training data: "
                        "a Siamese network needs at least two individuals")
    multi = sorted(ind for ind, rs in by_ind.items() if len(rs) >= 2)
    if not multi:
        raise DataError("no individual has two or more photos: there are no matched pairs to train on")
    n_val = min(int(round(cfg.val_fraction * len(multi))), cfg.val_max_individuals)
    if n_val < 2 or len(multi) - n_val < 2:
        return Split(rows, [])
    rng = random.Random(cfg.seed)
    val_ids = set(rng.sample(multi, n_val))
    return Split([r for r in rows if str(r.individual) not in val_ids],
                 [r for r in rows if str(r.individual) in val_ids])


# ---------------------------------------------------------------------------------- devices, DDP


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA GPU is available (use --device cpu or auto)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(f"cuda:{local}")


def _dist_init(device: torch.device) -> tuple[int, int]:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _sync_buffers(model: Siamese, world: int) -> None:
    """Give every rank rank 0's BN statistics, so embeddings (and mined pairs) agree."""
    if world > 1:
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b.data, 0)


# ------------------------------------------------------------------------------------ helpers


def _lr_lambda(cfg: Config) -> Callable[[int], float]:
    def f(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return 0.1 ** (epoch * 3 // max(cfg.epochs, 1))
        t = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))
    return f


@torch.no_grad()
def validate_split(model: Siamese, train_ds, val_ds, device: torch.device, cfg: Config,
                   train_emb: torch.Tensor | None = None, val_emb: torch.Tensor | None = None) -> dict:
    """Top-1/top-5 on held-out individuals, and scores to calibrate the new-individual threshold.

    For each held-out individual, its first photo is the query; the gallery is its other photos,
    the other held-out photos and every training photo. Individuals are ranked by their best
    photo's head score.
    """
    te = train_emb if train_emb is not None else embed_all(model, train_ds, device, cfg)
    ve = val_emb if val_emb is not None else embed_all(model, val_ds, device, cfg)
    gal = torch.cat([te, ve])
    gal_lab = np.array([f"t{x}" for x in train_ds.labels.tolist()] + [f"v{x}" for x in val_ds.labels.tolist()])
    vlab = val_ds.labels.numpy()
    first = {}
    for i, lab in enumerate(vlab):
        first.setdefault(int(lab), i)
    head = model.head
    head.eval()
    top1 = top5 = 0
    pos, neg = [], []
    uniq, inv = np.unique(gal_lab, return_inverse=True)
    for lab, qi in first.items():
        q = ve[qi:qi + 1].expand(len(gal), -1)
        s = torch.sigmoid(head(q.float(), gal.float()).float()).cpu().numpy()
        s[len(te) + qi] = -np.inf  # not against itself
        best = np.full(len(uniq), -np.inf)
        np.fmax.at(best, inv, s)  # fmax: NaN scores (a diverged head) count as no score
        true = int(np.flatnonzero(uniq == f"v{lab}")[0])
        rank = int((best >= best[true]).sum()) - 1  # ties count against the truth: a flat head is not perfect
        top1 += rank < 1
        top5 += rank < 5
        pos.append(float(best[true]))
        others = np.delete(best, true)
        neg.append(float(others.max()) if len(others) else 0.0)
    head.train(model.training)
    n = max(len(first), 1)
    return {"top1": top1 / n, "top5": top5 / n, "pos": pos, "neg": neg}


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, or of an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip/pickle errors of a damaged file
        raise CheckpointError(f"{path}: checkpoint is damaged or not a flukeid checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or "model" not in ck:
        raise CheckpointError(f"{path}: not a flukeid training checkpoint (format {CHECKPOINT_FORMAT})")
    return ck


def model_from_checkpoint(ck: dict, *, where: str = "checkpoint") -> tuple[Siamese, Config]:
    """Rebuild the network (eval mode, CPU) and its config from a loaded checkpoint."""
    cfg = Config.from_dict(ck["config"], where=where)
    model = build_siamese(_no_download(cfg))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the config ({str(exc).splitlines()[0]})") from None
    return model.eval(), cfg


def _no_download(cfg: Config) -> Config:
    """The same config without pretrained-weight loading (the checkpoint holds the weights)."""
    c = Config.from_dict(cfg.to_dict())
    c.branch.weights = "none"
    return c


# --------------------------------------------------------------------------------------- train


def _replace_run_folder(path: Path) -> str | None:
    """An existing ``--out`` is used only when empty or an earlier run's folder (config.json or checkpoint.pt)."""
    try:
        names = {e.name for e in os.scandir(path)}
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    if names and not names & {"config.json", CHECKPOINT}:
        return "already exists and is not a training run folder (no config.json); choose a new folder"
    return None


@dataclass
class _Run:
    """What the set-up of a training run gives the stages after it (one run, one process)."""

    cfg: Config
    out: Path
    t_start: float
    device: torch.device
    rank: int
    world: int
    emit: Callable[[dict], None]
    prog: Callable[[float, str], None]
    stop: Callable[[], bool]
    model: Siamese
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    train_ds: object
    val_ds: object | None
    names: list[str]
    result: TrainResult
    start_epoch: int = 0
    resumed: bool = False
    metric_state: dict | None = None  # the metric stage's checkpoint entry (metric.enabled only)
    bank: torch.Tensor | None = None  # [1 + passes, N, D] cached training embeddings (metric.enabled only)
    val_emb: torch.Tensor | None = None  # cached held-out embeddings (metric.enabled only)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def history(self) -> list[dict]:
        return self.result.history

    def save_checkpoint(self, epoch_done: int) -> None:
        m, cfg = self.model, self.cfg
        _save_atomic({"format": CHECKPOINT_FORMAT, "model": m.state_dict(), "optimizer": self.opt.state_dict(),
                      "scheduler": self.sched.state_dict(), "epoch": epoch_done, "config": cfg.to_dict(),
                      "rng": {"torch": torch.get_rng_state()}, "history": self.history,
                      "individuals": self.names, **({"metric": self.metric_state} if cfg.metric.enabled else {})},
                     self.out / CHECKPOINT)

    def validate(self) -> dict:
        return validate_split(self.model, self.train_ds, self.val_ds, self.device, self.cfg,
                              train_emb=self.bank[0] if self.bank is not None else None, val_emb=self.val_emb)


def _datasets(cfg: Config, records: Sequence, prog, stop):
    """Training and held-out datasets of the readable photos: (train_ds, val_ds or None, names, vnames, report)."""
    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    split = split_records(records, cfg)
    ok, crops, report = load_records(split.train + split.val, prep, workers=cfg.num_workers,
                                     progress=lambda f, m: prog(0.05 * f, m), should_stop=stop)
    ok_set = {id(r) for r in ok}
    crop_of = {id(r): c for r, c in zip(ok, crops)}
    train_recs = [r for r in split.train if id(r) in ok_set]
    val_recs = [r for r in split.val if id(r) in ok_set]
    names = sorted({str(r.individual) for r in train_recs})
    if len(names) < 2:
        raise DataError(f"fewer than two individuals left to train on after skipping unreadable photos "
                        f"({len(report.problems)} problems; first: {report.problems[:1]})")
    idx = {n: i for i, n in enumerate(names)}
    train_ds = dataset_from_crops(train_recs, [crop_of[id(r)] for r in train_recs], prep,
                                  [idx[str(r.individual)] for r in train_recs])
    vnames = sorted({str(r.individual) for r in val_recs})
    vidx = {n: i for i, n in enumerate(vnames)}
    val_ds = dataset_from_crops(val_recs, [crop_of[id(r)] for r in val_recs], prep,
                                [vidx[str(r.individual)] for r in val_recs]) if val_recs else None
    return train_ds, val_ds, names, vnames, report


def _set_up(cfg: Config, records: Sequence, out: Path, *, progress, should_stop, resume: bool, events) -> _Run:
    """Check the config, load the photos, build (or resume) the network and its optimizer; emit ``start``."""
    validate(cfg)
    t_start = time.monotonic()
    device = resolve_device(cfg.device)
    rank, world = _dist_init(device)
    is_main = rank == 0
    emit = events if (events and is_main) else (lambda e: None)
    prog = progress if (progress and is_main) else (lambda f, m: None)
    stop = should_stop or (lambda: False)

    check_output(out, folder=True, what="training run folder", replace=_replace_run_folder)
    ck = None
    if resume:
        ck = load_checkpoint(out / CHECKPOINT)
    elif (out / CHECKPOINT).exists():
        raise ConfigError(f"{out}: already holds a training run (use --resume to continue it, or another --out)")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")

    train_ds, val_ds, names, vnames, report = _datasets(cfg, records, prog, stop)
    metric = cfg.metric.enabled
    if metric and world > 1:
        raise ConfigError("the metric-learning stage (metric.enabled) does not run under torchrun yet; "
                          "train it in one process")
    torch.manual_seed(cfg.seed)
    model = build_siamese(_no_download(cfg) if ck else cfg).to(device)
    if cfg.channels_last:  # faster on CPU too (measured 1.2-1.4x for every branch on the 2-core VM)
        model = model.to(memory_format=torch.channels_last)
    # with the metric stage, the epochs train the head only (the branch is frozen after stage 1)
    params = [p for p in (model.head if metric else model).parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start_epoch, history = 0, []
    if ck:
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT}: does not fit this config ({str(exc).splitlines()[0]})") \
                from None
        start_epoch = int(ck["epoch"])
        history = list(ck.get("history", []))
        torch.set_rng_state(ck["rng"]["torch"])
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    result = TrainResult(run_dir=str(out), epochs_done=start_epoch, epochs=cfg.epochs, history=history,
                         train_images=len(train_ds), train_individuals=len(names),
                         val_individuals=len(vnames), problems=report.problems, device=str(device),
                         world_size=world)
    emit({"event": "start", "run_dir": str(out), "epochs": cfg.epochs, "start_epoch": start_epoch,
          "train_images": len(train_ds), "train_individuals": len(names), "val_individuals": len(vnames),
          "device": str(device), "world_size": world, "problems": report.problems[:20]})
    return _Run(cfg=cfg, out=out, t_start=t_start, device=device, rank=rank, world=world, emit=emit, prog=prog,
                stop=stop, model=model, net=net, opt=opt, sched=sched, train_ds=train_ds, val_ds=val_ds,
                names=names, result=result, start_epoch=start_epoch, resumed=ck is not None,
                metric_state=ck.get("metric") if ck else None)


def _metric_stage(run: _Run) -> None:
    """Stage 1 of ``metric.enabled``: ArcFace on the branch (unless a resumed run finished it), then freeze
    the branch and cache the embeddings the head trains on (``run.bank``, ``run.val_emb``)."""
    cfg, model = run.cfg, run.model

    def save_metric(state: dict) -> None:  # inside the metric stage: no head epoch done yet
        run.metric_state = state
        run.save_checkpoint(run.start_epoch)

    if not run.resumed and cfg.branch.normalize:  # a fresh run: the head starts at the cosine (kept on resume)
        init_head_as_cosine(model.head, model.branch.embedding_dim)
    if not (run.metric_state and run.metric_state.get("done")):
        left = cfg.time_budget_s * cfg.metric.budget_fraction - (time.monotonic() - run.t_start)
        budget = max(left, 1e-3) if cfg.time_budget_s else 0.0
        run.metric_state = train_metric(
            model, run.train_ds, run.device, cfg, state=run.metric_state, budget_s=budget, save=save_metric,
            progress=lambda f, m: run.prog(0.05 + 0.75 * f, m), should_stop=run.stop, events=run.emit)
    for p in model.branch.parameters():
        p.requires_grad_(False)
    run.prog(0.8, "caching embeddings for the pair head")
    run.bank = embedding_bank(model, run.train_ds, run.device, cfg, cfg.metric.passes)
    if run.val_ds is not None:
        run.val_emb = embed_all(model, run.val_ds, run.device, cfg)
    run.result.metric_history = list(run.metric_state.get("history", []))


def _train_epoch(run: _Run, epoch: int, miner) -> dict:
    """Mine this epoch's pairs and train on them (the head alone on cached embeddings after the metric
    stage); returns the epoch's record without validation."""
    cfg, model, device, world, rank = run.cfg, run.model, run.device, run.world, run.rank
    bank, labels = run.bank, run.train_ds.labels
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed * 1000 + epoch)
    rng = np.random.default_rng([cfg.seed, epoch])
    g_aug = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)
    _sync_buffers(model, world)
    if bank is not None:  # cached embeddings; the head scores only the pairs that can be hard
        scores = shortlist_score_matrix(model.head, bank[0], labels.to(bank.device), block=cfg.mining.block)
    else:
        scores = score_matrix(model.head, embed_all(model, run.train_ds, device, cfg), cfg.mining.block)
    pairs = concat_pairs([miner(scores, labels, epoch, cfg.epochs, rng) for _ in range(cfg.mining.rounds)])
    perm = rng.permutation(len(pairs))
    step_pairs = cfg.batch_size * world
    n_steps = max(1, math.ceil(len(perm) / step_pairs))
    model.train()
    loss_sum, n_seen = 0.0, 0
    for s in range(n_steps):
        if run.stop():
            raise Interrupted(f"training stopped by request during epoch {epoch + 1}")
        chunk = perm[s * step_pairs:(s + 1) * step_pairs]
        mine = chunk[rank::world]
        if len(mine) == 0:
            mine = chunk[:1]
        a = torch.from_numpy(pairs.a[mine])
        b = torch.from_numpy(pairs.b[mine])
        y = torch.from_numpy(pairs.target[mine]).to(device)
        if bank is not None:  # head only, on cached embeddings (a random plain/augmented pass each)
            pa = torch.from_numpy(pick_passes(len(mine), cfg.metric.passes, rng))
            pb = torch.from_numpy(pick_passes(len(mine), cfg.metric.passes, rng))
            model.branch.eval()
            logits = model.head(bank[pa, a], bank[pb, b])
        else:
            x = to_input(run.train_ds.uint8_batch(torch.cat([a, b]).tolist()), device, cfg, g_aug)
            with autocast(device, cfg):
                logits = run.net(x[: len(mine)], x[len(mine):])
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        loss_sum += float(loss.detach()) * len(mine)
        n_seen += len(mine)
        run.prog(0.05 + 0.95 * (epoch - run.start_epoch + (s + 1) / n_steps) / max(cfg.epochs - run.start_epoch, 1),
                 f"epoch {epoch + 1}/{cfg.epochs}: step {s + 1}/{n_steps}")
    run.sched.step()
    train_s = time.monotonic() - t0
    _sync_buffers(model, world)
    return {"epoch": epoch + 1, "epochs": cfg.epochs, "loss": loss_sum / max(n_seen, 1),
            "pairs": len(pairs), "lr": run.opt.param_groups[0]["lr"],
            "images_per_s": 2 * n_seen * world / max(train_s, 1e-9)}


def _finish(run: _Run, val: dict, start_head: dict | None, start_val: dict | None) -> TrainResult:
    """Final validation (keeping the head's cosine start when training did worse), threshold, summary.json."""
    result = run.result
    if run.val_ds is not None:
        if not val:
            val = run.validate()
        if start_val is not None and (start_val["top5"], start_val["top1"]) > (val["top5"], val["top1"]):
            run.model.head.load_state_dict(start_head)
            val = start_val
            result.head_kept_at_start = True
            if run.is_main:
                run.save_checkpoint(result.epochs_done)
            run.emit({"event": "head_kept_at_start", "val_top5": val["top5"], "val_top1": val["top1"]})
        result.val_top1, result.val_top5 = val["top1"], val["top5"]
        result.new_individual_threshold = calibrate_threshold(val["pos"], val["neg"])
    result.weights_sha256 = weights_digest(run.model)
    result.seconds = time.monotonic() - run.t_start
    if run.is_main:
        (run.out / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    run.prog(1.0, "training done")
    run.emit({"event": "done", "run_dir": str(run.out)})
    return result


def train(config: Config, records: Sequence, out_dir: str | Path, *,
          progress: Callable[[float, str], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          resume: bool = False,
          events: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a Siamese network on labelled records and leave checkpoint.pt, config.json in ``out_dir``.

    Args:
        config: the full configuration (see model.config).
        records: objects with ``path``, ``individual``, ``box`` (or None) and ``id_known``.
        out_dir: the run folder (created; config.json, checkpoint.pt, history.jsonl, summary.json).
        progress: ``progress(fraction, message)``.
        should_stop: polled between steps; when it returns True, :class:`Interrupted` is raised
            (the last epoch's checkpoint stays, so the run can be resumed).
        resume: continue from ``out_dir/checkpoint.pt``.
        events: receives event dicts (``start``, ``epoch``, ``done``) for JSON-lines progress.

    Raises:
        DataError, ConfigError, CheckpointError, Interrupted.
    """
    run = _set_up(config, records, Path(out_dir), progress=progress, should_stop=should_stop, resume=resume,
                  events=events)
    cfg = run.cfg
    if cfg.metric.enabled:
        _metric_stage(run)
    # The head trained on a frozen embedding may rank worse than the cosine it starts from (measured on
    # the right whales: seed top-5 24.3% trained vs 27.7% at the start). On a fresh head stage with
    # held-out individuals, remember the start and keep it if training did worse on them.
    start_head = start_val = None
    if cfg.metric.enabled and run.val_ds is not None and run.start_epoch == 0 and cfg.epochs > 0:
        start_head = copy.deepcopy(run.model.head.state_dict())
        start_val = run.validate()
        run.result.head_start_val_top5, run.result.head_start_val_top1 = start_val["top5"], start_val["top1"]
    miner = create_miner(cfg.mining)
    val: dict = {}
    epoch_times: list[float] = []
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.monotonic()
        rec = _train_epoch(run, epoch, miner)
        if run.val_ds is not None:
            val = run.validate()
            rec["val_top1"], rec["val_top5"] = val["top1"], val["top5"]
        epoch_times.append(time.monotonic() - t0)
        rec["epoch_s"] = epoch_times[-1]
        rec["eta_s"] = float(np.mean(epoch_times)) * (cfg.epochs - epoch - 1)
        run.history.append(rec)
        run.result.epochs_done = epoch + 1
        if run.is_main:
            run.save_checkpoint(epoch + 1)
            with open(run.out / "history.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        run.emit({"event": "epoch", **rec})
        if cfg.time_budget_s and time.monotonic() - run.t_start > cfg.time_budget_s and epoch + 1 < cfg.epochs:
            run.result.stopped_by_budget = True
            break
    return _finish(run, val, start_head, start_val)
