"""What every torch training stage shares: the network's input from uint8 crops, autocast, embedding.

The Siamese loop (model.training.siamese), the metric-learning stage (model.training.metric) and
the benchmarks that score a run's checkpoint all prepare inputs and embed photos through these,
so a batch means the same thing everywhere.
"""

from __future__ import annotations

import torch

from model.config import Config
from model.data.dataset import normalise_tensor
from model.training.augment import augment_batch

EMBED_BATCH = 64


def to_input(u8: torch.Tensor, device: torch.device, cfg: Config, g: torch.Generator | None) -> torch.Tensor:
    """uint8 crops [B,1,H,W] -> (augmented when ``g`` is given) normalised float input on ``device``."""
    on_dev = cfg.augment.gpu or device.type == "cpu"
    x = (u8.to(device, non_blocking=True) if on_dev else u8).float().div_(255.0)
    if g is not None:
        x = augment_batch(x, cfg.augment, g)
    x = normalise_tensor(x, 1e-6).to(device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(device: torch.device, cfg: Config):
    """bf16 autocast on CUDA when ``cfg.bf16``; a no-op context elsewhere."""
    enabled = device.type == "cuda" and cfg.bf16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def embed_all(model, ds, device: torch.device, cfg: Config) -> torch.Tensor:
    """Embeddings [N,D] float32 (on ``device``) of every image of ``ds``, eval mode, no augmentation."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(ds), EMBED_BATCH):
            x = to_input(ds.uint8_batch(range(i, min(len(ds), i + EMBED_BATCH))), device, cfg, None)
            with autocast(device, cfg):
                out.append(model.embed(x).float())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0, model.branch.embedding_dim, device=device)
