"""The training set: what a retraining would learn from, the held-out split, and the files it writes.

:func:`prepare_training_data` writes ``labels.csv`` (confirmed identifications with their current
boxes) and ``heldout.csv`` (a held-out share of confirmed photos, used only to compare models);
``data.json`` beside them lets a cancelled run resume on the same data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from model.api import FlukeidError, LabelledPhoto, write_labels


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class TrainingSetSummary:
    """What a retraining would learn from.

    Attributes:
        individuals: individuals with at least one confirmed photo.
        photos: confirmed photos (current identification to an individual, not marked junk).
        boxes: of those, photos with a box.
        individuals_2plus: individuals with two or more confirmed photos (what pair training needs).
        new_confirmations: identifications recorded since the active model was trained.
        new_boxes: boxes drawn or corrected by hand since the detector was last trained.
        active_version: the active model (None if there is none).
    """

    individuals: int
    photos: int
    boxes: int
    individuals_2plus: int
    new_confirmations: int
    new_boxes: int
    active_version: str | None

    @property
    def trainable(self) -> bool:
        """True when there is enough to train and compare (2+ individuals with 2+ photos)."""
        return self.individuals_2plus >= 2

    def describe(self) -> str:
        since = f"since model {self.active_version} was trained" if self.active_version else "(no model trained yet)"
        text = (
            f"{self.individuals} individuals, {self.individuals_2plus} of them with 2 or more photos (training "
            f"learns from those); {self.photos} confirmed photos, {self.boxes} with a box; "
            f"{self.new_confirmations} confirmations {since}; "
            f"{self.new_boxes} boxes drawn or corrected since the detector was trained."
        )
        if not self.trainable:
            text += (f" Training needs at least 2 individuals with 2 or more confirmed photos "
                     f"(this catalog has {self.individuals_2plus}).")
        return text


def confirmed_photos(catalog) -> list[LabelledPhoto]:
    """The catalog's confirmed photos: current identification to an individual, usable box or none.

    Merged individuals count as the individual they were merged into; photos whose current box
    is marked junk are left out.
    """
    codes: dict[int, str] = {}
    merged: dict[int, int | None] = {}
    for ind in catalog.individuals(include_merged=True):
        codes[ind.id] = ind.code
        merged[ind.id] = ind.merged_into

    def root(iid: int) -> int:
        seen = set()
        while merged.get(iid) is not None and iid not in seen:
            seen.add(iid)
            iid = merged[iid]  # type: ignore[assignment]
        return iid

    out = []
    for ident in catalog.current_identifications():
        if ident.individual_id is None:
            continue
        box = catalog.current_box(ident.photo_id)
        if box is not None and box.junk:
            continue
        photo = catalog.photo(ident.photo_id)
        out.append(LabelledPhoto(
            photo_id=photo.id,
            path=str(catalog.resolve_path(photo)),
            individual=codes[root(ident.individual_id)],
            box=tuple(box.box) if box is not None and box.box is not None else None,  # type: ignore[arg-type]
            box_source=box.source if box is not None else None,
            box_at=box.created_at if box is not None else None,
        ))
    return out


def _active_trained_at(catalog) -> str | None:
    active = catalog.active_model()
    if active is None:
        return None
    return (active.metrics or {}).get("data_until") or active.created_at


def training_set_summary(catalog) -> TrainingSetSummary:
    """Counts of what a retraining would use, and what is new since the last one."""
    photos = confirmed_photos(catalog)
    per_ind: dict[str, int] = {}
    for p in photos:
        per_ind[p.individual] = per_ind.get(p.individual, 0) + 1
    since = _active_trained_at(catalog)
    new_conf = sum(
        1 for i in catalog.current_identifications()
        if i.individual_id is not None and (since is None or i.at > since)
    )
    active = catalog.active_model()
    return TrainingSetSummary(
        individuals=len(per_ind),
        photos=len(photos),
        boxes=sum(1 for p in photos if p.box is not None),
        individuals_2plus=sum(1 for n in per_ind.values() if n >= 2),
        new_confirmations=new_conf,
        new_boxes=len(_new_manual_boxes(catalog, photos)),
        active_version=active.version if active else None,
    )


def _new_manual_boxes(catalog, photos: Sequence[LabelledPhoto]) -> list[LabelledPhoto]:
    since = catalog.get_meta("detector_trained_at")
    return [p for p in photos if p.box is not None and p.box_source == "manual" and (since is None or (p.box_at or "") > since)]


def split_heldout(photos: Sequence[LabelledPhoto], fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """Split confirmed photos into (training, held-out) for the model comparison.

    From each individual with 3 or more photos about ``fraction`` of its photos (at least one)
    are held out; individuals with fewer photos train only. The choice depends on the photo's id
    and ``seed`` only, so the same photo stays held out as the catalog grows.
    """
    import hashlib

    groups: dict[str, list[LabelledPhoto]] = {}
    for p in photos:
        groups.setdefault(p.individual, []).append(p)
    train: list[LabelledPhoto] = []
    held: list[LabelledPhoto] = []
    for key in sorted(groups):
        items = groups[key]
        if len(items) < 3:
            train += items
            continue
        order = sorted(items, key=lambda p: hashlib.sha256(f"{seed}:{p.photo_id}".encode()).hexdigest())
        n = min(len(items) - 2, max(1, round(len(items) * fraction)))
        held += order[:n]
        train += order[n:]
    return train, held


def _images_root(paths: Sequence[str]) -> Path:
    try:
        return Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    except ValueError:  # different drives (Windows)
        raise FlukeidError("the confirmed photos are on different drives; copy them into the catalog "
                           "(import with 'copy into catalog') to retrain") from None


@dataclass(frozen=True)
class TrainingData:
    """The files :func:`prepare_training_data` wrote."""

    labels: Path  # training photos (labels.csv)
    heldout: Path  # held-out photos (heldout.csv), never trained on
    images: Path  # the folder ``image`` paths are relative to
    train: tuple[LabelledPhoto, ...]
    held: tuple[LabelledPhoto, ...]
    data_until: str


def prepare_training_data(catalog, out_dir: str | Path, *, heldout_fraction: float = 0.2, seed: int = 0
                          ) -> TrainingData:
    """Write ``labels.csv`` (training) and ``heldout.csv`` (comparison) of confirmed identifications.

    Columns: image (relative to the common folder of the photos), individual_id, id_known,
    x0, y0, x1, y1 (the current box in photo pixels; empty when the photo has none).

    Raises:
        DataError: fewer than 2 individuals with 2 or more confirmed photos.
    """
    from model.api import DataError

    data_until = _now()
    photos = confirmed_photos(catalog)
    train, held = split_heldout(photos, heldout_fraction, seed)
    per_ind: dict[str, int] = {}
    for p in train:
        per_ind[p.individual] = per_ind.get(p.individual, 0) + 1
    if sum(1 for n in per_ind.values() if n >= 2) < 2:
        raise DataError(f"{catalog.root}: training needs at least 2 individuals with 2 or more confirmed photos")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = _images_root([p.path for p in photos])
    write_labels(train, out / "labels.csv", root)
    write_labels(held, out / "heldout.csv", root)
    return TrainingData(out / "labels.csv", out / "heldout.csv", root, tuple(train), tuple(held), data_until)


def _load_data(folder: Path) -> TrainingData:
    """Re-read the training data of a run folder (for a resumed run)."""
    meta = json.loads((folder / "data" / "data.json").read_text(encoding="utf-8"))
    return TrainingData(folder / "data" / "labels.csv", folder / "data" / "heldout.csv", Path(meta["images"]),
                        tuple(LabelledPhoto(**r) for r in meta["train"]),
                        tuple(LabelledPhoto(**r) for r in meta["held"]), meta["data_until"])


def _save_data_meta(data: TrainingData) -> None:
    meta = {"images": str(data.images), "data_until": data.data_until,
            "train": [asdict(p) for p in data.train], "held": [asdict(p) for p in data.held]}
    (data.labels.parent / "data.json").write_text(json.dumps(meta, default=str), encoding="utf-8")
