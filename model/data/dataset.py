"""A torch dataset over labelled photo records: crops cached as uint8, normalised like inference.

Each record needs ``path``, ``individual`` and ``box`` attributes (``model.data.records.LabelledPhoto``).
Crops come from :func:`model.preprocess.load_image` + :func:`model.preprocess.crop_to_input` (the
exact pixels inference sees), are kept in memory as uint8 after the first load, and are
normalised with the same math as :func:`model.preprocess.normalise`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from model.errors import DataError, ImageError
from model.preprocess import Preprocessing, crop_to_input, load_image


def normalise_tensor(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image normalisation of [..., H, W]: the math of model.preprocess.normalise, in torch."""
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


@dataclass
class LoadReport:
    loaded: int = 0
    problems: list[str] = field(default_factory=list)


class CropDataset(torch.utils.data.Dataset):
    """Records -> (normalised crop [1,H,W] float32, label index). ``crops_uint8`` holds the cache."""

    def __init__(self, records: Sequence, prep: Preprocessing, *, labels: Sequence[int] | None = None):
        self.records = list(records)
        self.prep = prep
        self.individuals = sorted({r.individual for r in self.records})
        index = {ind: i for i, ind in enumerate(self.individuals)}
        self.labels = torch.tensor(
            list(labels) if labels is not None else [index[r.individual] for r in self.records], dtype=torch.long)
        self._cache: list[np.ndarray | None] = [None] * len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def crop(self, i: int) -> np.ndarray:
        """The uint8 [H,W] crop of record ``i`` (loaded once, then cached)."""
        c = self._cache[i]
        if c is None:
            r = self.records[i]
            max_side = 4 * max(self.prep.input_height, self.prep.input_width) if r.box is None else None
            img = load_image(r.path, max_side=max_side)
            c = np.round(crop_to_input(img, r.box, self.prep) * 255.0).astype(np.uint8)
            self._cache[i] = c
        return c

    def uint8_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """[B,1,H,W] uint8 crops."""
        return torch.from_numpy(np.stack([self.crop(int(i)) for i in indices]))[:, None]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.crop(i)).float().div_(255.0)[None]
        return normalise_tensor(x, self.prep.eps), int(self.labels[i])


def load_records(records: Sequence, prep: Preprocessing, *, workers: int = 2,
                 progress: Callable[[float, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> tuple[list, list[np.ndarray], LoadReport]:
    """Decode and crop every record in a thread pool; unreadable photos are reported and skipped.

    Returns:
        (usable records, their uint8 crops, report with one line per problem naming the file).
    """
    from model.errors import Interrupted

    report = LoadReport()

    def one(r):
        try:
            max_side = 4 * max(prep.input_height, prep.input_width) if r.box is None else None
            img = load_image(r.path, max_side=max_side)
            return np.round(crop_to_input(img, r.box, prep) * 255.0).astype(np.uint8), None
        except ImageError as exc:
            return None, str(exc)

    ok_records, crops = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for k, (r, (crop, problem)) in enumerate(zip(records, pool.map(one, records))):
            if should_stop and should_stop():
                raise Interrupted("stopped while loading photos")
            if crop is None:
                report.problems.append(problem)
            else:
                ok_records.append(r)
                crops.append(crop)
            if progress and (k % 50 == 0 or k == len(records) - 1):
                progress((k + 1) / max(len(records), 1), f"loading photos {k + 1}/{len(records)}")
    report.loaded = len(ok_records)
    if not ok_records and records:
        raise DataError(f"none of the {len(records)} photos could be read; first problem: {report.problems[0]}")
    return ok_records, crops, report


def dataset_from_crops(records: Sequence, crops: Sequence[np.ndarray], prep: Preprocessing,
                       labels: Sequence[int]) -> CropDataset:
    ds = CropDataset(records, prep, labels=labels)
    ds._cache = list(crops)
    return ds
