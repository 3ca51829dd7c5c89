"""The metric-learning stage: sub-center ArcFace fine-tuning of the branch, then cached embeddings.

With ``metric.enabled`` the Siamese run has two stages (see :func:`model.training.siamese.train`):

1. **metric** (this module): the branch learns an embedding in which photos of one whale are
   close in angle. Every training individual gets ``k`` class centres on the unit sphere (sub-
   centres: a whale photographed from two sides or under two lights may need two); a photo's
   cosine to an individual is its best cosine over that individual's sub-centres; the true
   individual's angle gets an additive margin ``m`` before the softmax with scale ``s``
   (ArcFace, with Deng et al.'s sub-centres). Adam + weight decay on the branch, ``centre_lr_mult``
   times faster on the centres, linear warmup then cosine decay per step, the usual batch-wise
   augmentation. Centres start at each individual's mean embedding (plus noise per sub-centre), so
   the first steps already pull photos towards their whale instead of towards random points.
2. **pair head**: the branch is frozen and the pair head (the paper's nn head) trains on cached
   embeddings, a plain pass plus ``passes`` augmented ones (:func:`embedding_bank`), with the
   existing hard-pair miners. Why frozen: on this CPU the branch runs at tens of photos/s, so
   pair training through the branch sees a few hundred pairs a minute, while the head on cached
   embeddings sees thousands of mined pairs a second; and BCE on so few pairs would pull the
   branch away from the ArcFace geometry it just learned. The augmented passes keep the head
   from fitting the exact training embeddings (the queries are new photos).

The ArcFace loss is written here (about 40 lines) rather than taken from pytorch-metric-learning:
that package is not a dependency, and the sub-centre max and the centre initialisation from class
means are easier to test and to checkpoint as our own small module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.errors import Interrupted
from model.training.common import autocast, embed_all, to_input


class SubCenterArcFace(nn.Module):
    """Sub-center ArcFace logits: ``k`` normalised centres per class, max over them, angular margin.

    Args:
        dim: embedding size.
        classes: number of individuals.
        subcenters: centres per individual (``k``).
        margin: additive angular margin ``m`` (radians) on the true class.
        scale: logit scale ``s``.
    """

    def __init__(self, dim: int, classes: int, subcenters: int = 3, margin: float = 0.3, scale: float = 30.0):
        super().__init__()
        self.classes, self.k = classes, subcenters
        self.margin, self.scale = margin, scale
        self.weight = nn.Parameter(torch.randn(classes * subcenters, dim) * 0.01)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """[N, classes]: each photo's best cosine over every class's sub-centres."""
        w = F.normalize(self.weight, dim=1)
        cos = F.normalize(emb.float(), dim=1) @ w.T  # [N, classes * k]
        return cos.view(-1, self.classes, self.k).amax(dim=2)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits [N, classes] with the margin applied to each photo's true class."""
        cos = self.cosine(emb).clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        target = cos.gather(1, labels[:, None])
        theta = torch.acos(target)
        # cos(theta + m) is not monotone past pi - m: there, fall back to a linear penalty
        with_margin = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin),
                                  target - self.margin * math.sin(self.margin))
        logits = cos.scatter(1, labels[:, None], with_margin)
        return logits * self.scale

    def loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(emb, labels), labels)

    @torch.no_grad()
    def init_from_embeddings(self, emb: torch.Tensor, labels: torch.Tensor, g: torch.Generator,
                             noise: float = 0.05) -> None:
        """Centres at each class's mean (normalised) embedding, sub-centres spread by a little noise."""
        e = F.normalize(emb.float().cpu(), dim=1)
        lab = labels.cpu().long()
        mean = torch.zeros(self.classes, e.shape[1]).index_add_(0, lab, e)
        mean = F.normalize(mean, dim=1)
        w = mean.repeat_interleave(self.k, dim=0)
        w = w + noise * torch.randn(w.shape, generator=g) / math.sqrt(e.shape[1])
        self.weight.copy_(F.normalize(w, dim=1).to(self.weight.device))


@torch.no_grad()
def _train_mode_embeddings(model, ds, device: torch.device, cfg, batch: int) -> torch.Tensor:
    """Embeddings as the training steps see them (BN on batch statistics), for the centres' start.

    In eval mode a fresh neck's BN uses its initial running statistics (mean 0, variance 1), so the
    embeddings of every photo point almost the same way (cosine ~0.99) and class means made from them
    are useless starting centres: measured on the right whales, ArcFace from such centres drifted
    towards the collapsed solution (train accuracy at chance after two epochs). This pass also moves
    the BN running statistics towards the data's.
    """
    was = model.training
    model.train()
    try:
        parts = [model.embed(to_input(ds.uint8_batch(range(i, min(len(ds), i + batch))), device, cfg, None)).float()
                 for i in range(0, len(ds), batch)]
    finally:
        model.train(was)
    return torch.cat(parts)


def metric_lr(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warmup over ``warmup`` steps, then cosine from 1 down to 0.02 at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    t = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))


def train_metric(model, train_ds, device: torch.device, cfg, *, state: dict | None, budget_s: float,
                 save: Callable[[dict], None], progress: Callable[[float, str], None], should_stop: Callable[[], bool],
                 events: Callable[[dict], None]) -> dict:
    """Fine-tune ``model.branch`` with sub-center ArcFace; returns the stage's (final) state.

    ``state`` is a previous checkpoint's ``metric`` entry (resume) or None. The stage plans its
    number of epochs after the first one: ``metric.epochs``, or fewer when ``budget_s`` (> 0) would
    not cover them at the first epoch's pace; the plan is stored, so a resumed run keeps it (and
    its LR schedule). ``save(state)`` is called after every epoch (the caller writes the checkpoint).
    All randomness of an epoch is seeded from (seed, epoch).

    Raises:
        Interrupted: ``should_stop`` returned True (the last epoch's checkpoint stays).
    """
    mc = cfg.metric
    labels = train_ds.labels.long()
    classes = int(labels.max()) + 1
    dim = model.branch.embedding_dim
    arc = SubCenterArcFace(dim, classes, mc.subcenters, mc.margin, mc.scale).to(device)
    branch_params = [p for p in model.branch.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": branch_params, "lr": mc.lr},
                            {"params": arc.parameters(), "lr": mc.lr * mc.centre_lr_mult}],
                           weight_decay=cfg.weight_decay)
    base_lrs = [mc.lr, mc.lr * mc.centre_lr_mult]
    n = len(train_ds)
    steps_per_epoch = max(1, n // mc.batch_size)  # full batches only (BN and the softmax like them)
    warmup = int(round(mc.warmup_epochs * steps_per_epoch))
    if state:
        arc.load_state_dict(state["arcface"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, planned, seconds = int(state["epoch"]), int(state["planned"]), float(state["seconds"])
    else:
        arc.init_from_embeddings(_train_mode_embeddings(model, train_ds, device, cfg, mc.batch_size),
                                 labels, torch.Generator().manual_seed(cfg.seed))
        start, planned, seconds = 0, mc.epochs, 0.0
    model.train()
    epoch = start
    while epoch < planned:  # planned may shrink after the first epoch
        t0 = time.monotonic()
        torch.manual_seed(cfg.seed * 1000 + 500 + epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        g_aug = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 77 + epoch * 101)
        loss_sum = correct = seen = 0.0
        for s in range(steps_per_epoch):
            if should_stop():
                raise Interrupted(f"training stopped by request during metric epoch {epoch + 1}")
            f = metric_lr(epoch * steps_per_epoch + s, planned * steps_per_epoch, warmup)
            for grp, lr in zip(opt.param_groups, base_lrs, strict=True):
                grp["lr"] = lr * f
            idx = perm[s * mc.batch_size:(s + 1) * mc.batch_size]
            if len(idx) < 2:
                continue
            y = labels[idx].to(device)
            x = to_input(train_ds.uint8_batch(idx.tolist()), device, cfg, g_aug)
            with autocast(device, cfg):
                emb = model.embed(x).float()
            logits = arc(emb, y)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((arc.cosine(emb.detach()).argmax(1) == y).sum())
            seen += len(idx)
            progress((epoch + (s + 1) / steps_per_epoch) / planned,
                     f"metric epoch {epoch + 1}/{planned}: step {s + 1}/{steps_per_epoch}")
        dt = time.monotonic() - t0
        seconds += dt
        if epoch == 0 and budget_s > 0:  # plan the stage at the first epoch's pace (nearest whole number)
            planned = max(1, min(mc.epochs, int(round(budget_s / max(dt, 1e-9)))))
        rec = {"stage": "metric", "epoch": epoch + 1, "epochs": planned, "loss": loss_sum / max(seen, 1),
               "train_acc": correct / max(seen, 1), "lr": opt.param_groups[0]["lr"], "epoch_s": dt,
               "images_per_s": seen / max(dt, 1e-9)}
        state = {"epoch": epoch + 1, "planned": planned, "done": epoch + 1 >= planned, "seconds": seconds,
                 "arcface": arc.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                 "history": [*(state or {}).get("history", []), rec]}
        save(state)
        events({"event": "metric_epoch", **rec})
        epoch += 1
    if state is None or not state.get("done"):  # nothing left to run (e.g. epochs already done)
        state = {**(state or {}), "done": True}
    return state


@torch.no_grad()
def embedding_bank(model, ds, device: torch.device, cfg, passes: int, *, batch: int = 64) -> torch.Tensor:
    """[1 + passes, N, D]: the plain embeddings, then ``passes`` augmented ones (eval mode, seeded)."""
    plain = embed_all(model, ds, device, cfg)
    out = [plain]
    was = model.training
    model.eval()
    try:
        for p in range(passes):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 999_983 + p)
            parts = []
            for i in range(0, len(ds), batch):
                x = to_input(ds.uint8_batch(range(i, min(len(ds), i + batch))), device, cfg, g)
                parts.append(model.embed(x).float())
            out.append(torch.cat(parts) if parts else torch.empty_like(plain))
    finally:
        model.train(was)
    return torch.stack(out)


@torch.no_grad()
def shortlist_score_matrix(head: nn.Module, emb: torch.Tensor, labels: torch.Tensor, k: int = 50,
                           block: int = 8192) -> torch.Tensor:
    """Head probabilities [N,N] for the pairs a miner can find hard; every other pair gets 0.

    Scored: each image against its ``k`` nearest images by cosine and against every photo of its own
    individual (the matched pairs). The pairs left out are the far ones by cosine, which the head
    scores low anyway, so the miners' hardest pairs are the same; the nn head over all N^2 pairs of a
    few thousand photos takes minutes per epoch on a CPU, this a few seconds. The diagonal is 1.
    """
    n = emb.shape[0]
    e = F.normalize(emb.float(), dim=1)
    k = min(k, n)
    near = torch.topk(e @ e.T, k, dim=1).indices
    rows = torch.arange(n)[:, None].expand(n, k).reshape(-1)
    cols = near.reshape(-1)
    same = labels[:, None] == labels[None, :]
    si, sj = torch.nonzero(same, as_tuple=True)
    pairs = torch.unique(torch.stack([torch.cat([rows, si]), torch.cat([cols, sj])], 1), dim=0)
    out = torch.zeros(n, n)
    was = head.training
    head.eval()
    try:
        for s in range(0, len(pairs), block):
            a, b = pairs[s:s + block, 0], pairs[s:s + block, 1]
            out[a, b] = torch.sigmoid(head(emb[a].float(), emb[b].float()).float()).cpu()
    finally:
        head.train(was)
    out.fill_diagonal_(1.0)
    return out


@torch.no_grad()
def init_head_as_cosine(head: nn.Module, dim: int, scale: float = 10.0, threshold: float = 0.5) -> bool:
    """Start an nn head at ``logit = scale * (cosine - threshold)`` for embeddings of norm sqrt(dim).

    Two hidden units pass ``a*b`` through the ReLU (``relu(x) - relu(-x) = x``) and the output sums
    it over positions with weight ``scale / dim``; the other hidden units start small and random
    so they can learn. Measured on the right whales: a randomly initialised head trained on a
    frozen ArcFace embedding with the hard-pair curriculum ranked worse than chance-level cosine
    (top-5 5% vs cosine 28%): the hardest pairs of a fixed embedding are the ones it gets wrong, so
    the head learned that closer means different. Started at the cosine, the head begins at the
    embedding's own ranking. Returns False (and leaves the head alone) for other heads.
    """
    pp = getattr(head, "per_position", None)
    if pp is None or not isinstance(pp[0], nn.Conv1d) or pp[0].out_channels < 2:
        return False
    c1, c2, out = pp[0], pp[2], head.out
    c1.weight.mul_(0.01)
    c1.bias.zero_()
    c1.weight[:2].zero_()
    c1.weight[0, 0, 0], c1.weight[1, 0, 0] = 1.0, -1.0
    c2.weight.mul_(0.01)
    c2.weight[0, 0, 0], c2.weight[0, 1, 0] = 1.0, -1.0
    c2.bias.zero_()
    out.weight.fill_(scale / dim)
    out.bias.fill_(-scale * threshold)
    return True


def pick_passes(n: int, passes: int, rng: np.random.Generator) -> np.ndarray:
    """For ``n`` pair members, which cached pass each uses (0 = plain, 1.. = augmented)."""
    return rng.integers(0, passes + 1, size=n)
