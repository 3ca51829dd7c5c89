"""The paper's classifier baseline: a branch CNN + a softmax over the training individuals.

The paper's best Table 1 row is an ImageNet ResNet50 trained as a 199-class classifier; top-5 is
read from the class probabilities. Here the backbone comes from the branch registry
(``model.nets.registry.create_branch``; its max-pooled embedding feeds one linear layer), trained
with cross-entropy and Adam (weight decay as the L2 penalty), a cosine learning-rate schedule and
the same batch-wise augmentation as the Siamese training. It only works on a closed set of
individuals, so it is evaluated on the ``seed`` protocol: gallery individuals are the classes.

The settings come from a :class:`model.config.Config` (branch, input size, margin, augment,
epochs, batch_size = images per step, lr, weight_decay, seed, device, time_budget_s); the pair
head and mining settings are unused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from model.errors import DataError, Interrupted


def _noop_progress(fraction: float, message: str) -> None:
    pass


def _never() -> bool:
    return False


class ClassifierNet(nn.Module):
    """Branch (image -> embedding) + dropout + linear layer over the classes."""

    def __init__(self, branch: nn.Module, n_classes: int, dropout: float = 0.2):
        super().__init__()
        self.branch = branch
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(branch.embedding_dim, n_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        emb, _ = self.branch(image)
        return self.fc(self.drop(emb))


@dataclass
class TrainedClassifier:
    """A trained classifier with its class names and how it was trained.

    Attributes:
        net: the network (eval mode).
        classes: the individual of each output class.
        prep: the preprocessing it was trained with.
        device: the torch device it lives on.
        info: epochs (fractional when stopped by the time budget), seconds, images/s, losses.
    """

    net: ClassifierNet
    classes: list[str]
    prep: Any
    device: str
    info: dict = field(default_factory=dict)


def _device(name: str) -> str:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def _prep(cfg):
    from model.preprocess import Preprocessing

    return Preprocessing(input_height=cfg.input_height, input_width=cfg.input_width, margin=cfg.margin)


def _to_input(batch_u8: torch.Tensor, device: str, eps: float, augment=None, gen=None) -> torch.Tensor:
    from model.data.dataset import normalise_tensor
    from model.training.augment import augment_batch

    x = batch_u8.to(device).float().div_(255.0)
    if augment is not None:
        x = augment_batch(x, augment, gen)
    return normalise_tensor(x, eps)


def train_classifier(records: Sequence[Any], cfg, *, progress: Callable[[float, str], None] = _noop_progress,
                     should_stop: Callable[[], bool] = _never) -> TrainedClassifier:
    """Train backbone + softmax over the individuals of ``records`` (identified rows only).

    Args:
        records: labelled records (``path``, ``individual``, ``box``, ``id_known``).
        cfg: a :class:`model.config.Config` (see the module docstring for the keys used).
        progress: ``progress(fraction, message)``.
        should_stop: returns True to stop (raises Interrupted).

    Returns:
        The trained classifier. With ``cfg.time_budget_s`` > 0 training stops at the first step
        past the budget (``info["epochs"]`` then says how far it got).

    Raises:
        DataError: fewer than two identified individuals, or no readable photo.
        Interrupted: ``should_stop`` returned True.
    """
    from model.data.dataset import load_records
    from model.nets.registry import create_branch

    t_start = time.perf_counter()
    recs = [r for r in records if r.id_known]
    classes = sorted({str(r.individual) for r in recs})
    if len(classes) < 2:
        raise DataError(f"the classifier needs at least 2 identified individuals; found {len(classes)}")
    prep = _prep(cfg)
    recs, crops, report = load_records(recs, prep, workers=cfg.num_workers,
                                       progress=lambda f, m: progress(0.05 * f, m), should_stop=should_stop)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[str(r.individual)] for r in recs], dtype=torch.long)
    data = torch.from_numpy(np.stack(crops))[:, None]  # uint8 [N,1,H,W]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = _device(cfg.device)
    net = ClassifierNet(create_branch(cfg.branch), len(classes)).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(data)
    bs = max(2, min(cfg.batch_size, n))
    steps_per_epoch = max(1, n // bs)
    total_steps = steps_per_epoch * cfg.epochs
    warm = steps_per_epoch * cfg.warmup_epochs

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    losses: list[float] = []
    step = 0
    seen = 0
    t_train = time.perf_counter()
    stopped_by_budget = False
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        ep_loss = []
        for b in range(steps_per_epoch):
            if should_stop():
                raise Interrupted("classifier training stopped")
            idx = perm[b * bs:(b + 1) * bs]
            x = _to_input(data[idx], device, prep.eps, cfg.augment if cfg.augment.enabled else None, gen)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_at(step)
            loss = loss_fn(net(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep_loss.append(float(loss.detach()))
            step += 1
            seen += len(idx)
            if cfg.time_budget_s and time.perf_counter() - t_train > cfg.time_budget_s:
                stopped_by_budget = True
                break
        losses.append(float(np.mean(ep_loss)))
        progress(0.05 + 0.95 * step / total_steps, f"classifier epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
        if stopped_by_budget:
            break
    net.eval()
    train_s = time.perf_counter() - t_train
    info = {"epochs": round(step / steps_per_epoch, 2), "planned_epochs": cfg.epochs,
            "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - t_start, 1),
            "images_per_s": round(seen / max(train_s, 1e-9), 1), "losses": [round(v, 4) for v in losses],
            "photos": n, "classes": len(classes), "unreadable": len(report.problems),
            "stopped_by_time_budget": stopped_by_budget, "device": device}
    return TrainedClassifier(net, classes, prep, device, info)


@torch.no_grad()
def predict_proba(model: TrainedClassifier, records: Sequence[Any], *, flip: bool = False,
                  batch_size: int = 64) -> np.ndarray:
    """Class probabilities [N, K] for the records' photos (columns follow ``model.classes``).

    Args:
        model: a trained classifier.
        records: the photos to classify.
        flip: also classify the mirror image and average the probabilities.
        batch_size: photos per forward pass.

    Raises:
        DataError: no photo could be read.
    """
    from model.data.dataset import load_records

    ok, crops, report = load_records(list(records), model.prep, workers=2)
    if report.problems:
        raise DataError(f"cannot classify: {report.problems[0]}")
    data = torch.from_numpy(np.stack(crops))[:, None]
    out = []
    model.net.eval()
    for s in range(0, len(data), batch_size):
        x = _to_input(data[s:s + batch_size], model.device, model.prep.eps)
        p = torch.softmax(model.net(x), dim=1)
        if flip:
            p = (p + torch.softmax(model.net(torch.flip(x, dims=[3])), dim=1)) / 2
        out.append(p.float().cpu().numpy())
    return np.concatenate(out)


def evaluate_classifier(records: Sequence[Any], cfg, seed: int = 0, *, flip: bool = False,
                        progress: Callable[[float, str], None] = _noop_progress,
                        should_stop: Callable[[], bool] = _never):
    """Train on the seed protocol's training photos and rank the classes for each query photo.

    Returns:
        A :class:`model.evaluate.EvalResult` (top-1/top-5/MAP@5 from the class probabilities);
        ``info`` holds the training details.
    """
    from model.evaluate import evaluate_scores, ids_of, photo_counts, seed_split

    split = seed_split(records, seed)
    model = train_classifier([records[i] for i in split.train], cfg,
                             progress=lambda f, m: progress(0.9 * f, m), should_stop=should_stop)
    probs = predict_proba(model, [records[i] for i in split.queries], flip=flip)
    res = evaluate_scores(probs, ids_of(records, split.queries), model.classes, photo_counts(records))
    res.info.update(split.summary(records))
    res.info.update({"method": "classifier", "branch": cfg.branch.kind, "weights": cfg.branch.weights,
                     "input": f"{cfg.input_width}x{cfg.input_height}", "flip": flip, **model.info})
    progress(1.0, "classifier evaluated")
    return res
