"""Labelled photo sets as plain records: our labels.csv and Kaggle's train.csv.

Two formats are recognised from the header:

- ours (the format of ../shared/data): ``image`` (relative to an images folder),
  ``individual_id``, optional ``id_known`` (1/0) and an optional box ``x0,y0,x1,y1`` in pixels;
  other columns are ignored.
- Kaggle (humpback whale identification): ``Image,Id``, where ``new_whale`` means the photo's
  individual is unknown.

A bad row (missing or unreadable photo, malformed box, duplicate photo, empty id) is reported in
:attr:`LabelledSet.problems` with the file, line and problem, and skipped; the rest loads. A file
that cannot be read as a whole (missing, empty, wrong encoding, required columns absent) raises
:class:`~model.errors.DataError`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from model.errors import DataError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
UNKNOWN_IDS = {"new_whale", "unknown"}
# A box may reach this many pixels past the photo's edge (rounding in other tools) and still load.
BOX_TOLERANCE = 2.0


@dataclass(frozen=True)
class Record:
    """One labelled photo.

    Attributes:
        path: the photo file.
        individual: the individual's id, or None when unidentified (Kaggle ``new_whale``,
            ``id_known=0``).
        box: the fluke's box ``(x0, y0, x1, y1)`` in photo pixels, or None when not given.
        id_known: False when the photo's individual is unknown (never a positive pair).
    """

    path: Path
    individual: str | None
    box: Box | None = None
    id_known: bool = True


@dataclass
class LabelledSet:
    """The rows of a labels file that loaded, and one message per row that did not."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    format: str = "flukeid"  # "flukeid" (our labels.csv) or "kaggle" (train.csv)

    @property
    def individuals(self) -> set[str]:
        """The known individuals."""
        return {r.individual for r in self.records if r.individual is not None}

    def photos_per_individual(self) -> Counter[str]:
        """How many photos each known individual has."""
        return Counter(r.individual for r in self.records if r.individual is not None)


def _open_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; DataError for a file that cannot be read as CSV."""
    try:
        raw = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{csv_path}: labels file not found") from None
    except IsADirectoryError:
        raise DataError(f"{csv_path}: is a folder, not a labels file") from None
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read labels file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerates a UTF-8 byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{csv_path}: not UTF-8 text (undecodable byte at offset {exc.start}); save it as UTF-8 CSV"
        ) from None
    if "\x00" in text:
        raise DataError(f"{csv_path}: contains NUL bytes; not a CSV text file")
    if not text.strip():
        raise DataError(f"{csv_path}: labels file is empty")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        rows: list[tuple[int, dict[str, str]]] = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank line
            row = {name: (values[i].strip() if i < len(values) else "") for i, name in enumerate(header)}
            if len(values) > len(header):
                row["\x00extra"] = "1"
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV at line {reader.line_num} ({exc})") from None
    return header, rows


def _detect_format(csv_path: Path, header: list[str]) -> str:
    cols = set(header)
    if {"image", "individual_id"} <= cols:
        return "flukeid"
    if {"Image", "Id"} <= cols:
        return "kaggle"
    lower = {h.lower() for h in header}
    if "image" in lower and not ({"individual_id", "id"} & lower):
        missing = "individual_id"
    elif "image" not in lower:
        missing = "image"
    else:
        missing = "individual_id"
    raise DataError(
        f"{csv_path}: required column '{missing}' is missing (found columns: {', '.join(header) or 'none'}); "
        "expected image,individual_id[,id_known,x0,y0,x1,y1] or Kaggle's Image,Id"
    )


def _default_images_dir(csv_path: Path, fmt: str) -> Path:
    parent = csv_path.parent
    # Kaggle 2018 keeps photos in train/; Kaggle 2022 (happywhale: image,species,individual_id,
    # which reads as our format) in train_images/.
    candidates = [parent / "images", parent / "train_images"] + (
        [parent / "train"] if fmt == "kaggle" else []
    )
    for c in candidates:
        if c.is_dir():
            return c
    return parent


def _parse_box(row: dict[str, str]) -> tuple[Box | None, str | None]:
    """(box, problem): no box columns or all empty -> (None, None)."""
    vals = [row.get(c, "") for c in BOX_COLUMNS]
    if not any(vals):
        return None, None
    if not all(vals):
        return None, "malformed box: some of x0,y0,x1,y1 are empty"
    try:
        nums = tuple(float(v) for v in vals)
    except ValueError:
        return None, f"malformed box: not numbers ({','.join(vals)})"
    if not all(math.isfinite(v) for v in nums):
        return None, f"malformed box: not finite ({','.join(vals)})"
    x0, y0, x1, y1 = nums
    if x1 <= x0 or y1 <= y0:
        return None, f"malformed box: x1 <= x0 or y1 <= y0 ({','.join(vals)})"
    if min(nums) < -BOX_TOLERANCE:
        return None, f"malformed box: negative coordinates ({','.join(vals)})"
    return nums, None  # type: ignore[return-value]


def _parse_known(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f"):
        return False
    return None


def _image_problem(path: Path, box: Box | None) -> str | None:
    """Cheap check (header only) that the photo exists, is an image and holds its box."""
    try:
        if path.stat().st_size == 0:
            return "photo file is empty (0 bytes)"
    except FileNotFoundError:
        return "photo file not found"
    except OSError as exc:
        return f"cannot access photo ({exc.strerror or exc})"
    if path.is_dir():
        return "is a folder, not a photo"
    try:
        with Image.open(path) as im:
            w, h = im.size
    except UnidentifiedImageError:
        return "not a readable image"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable image ({exc})"
    if box is not None and (box[2] > w + BOX_TOLERANCE or box[3] > h + BOX_TOLERANCE):
        return f"box {tuple(round(v, 1) for v in box)} lies outside the {w}x{h} photo"
    return None


def read_labels(
    csv_path: str | Path, images_dir: str | Path | None = None, *, check_images: bool = True
) -> LabelledSet:
    """Read a labels.csv (ours) or a Kaggle train.csv into records; bad rows are reported and skipped.

    Args:
        csv_path: the labels file (UTF-8, with or without a byte-order mark).
        images_dir: the folder the image column is relative to. Default: ``images/`` next to
            the file if it exists (then ``train_images/``; Kaggle: ``train/``), else the file's folder.
        check_images: check each photo exists and its header decodes (cheap; no pixel decoding),
            and that its box lies inside it.

    Returns:
        The loaded records (in file order) and one message per skipped row, of the form
        ``"labels.csv line 7 (img.jpg): photo file not found"``.

    Raises:
        DataError: the file is missing, empty, not UTF-8, not CSV, or lacks required columns.
    """
    csv_path = Path(csv_path)
    header, rows = _open_rows(csv_path)
    fmt = _detect_format(csv_path, header)
    root = Path(images_dir) if images_dir is not None else _default_images_dir(csv_path, fmt)
    image_col, id_col = ("image", "individual_id") if fmt == "flukeid" else ("Image", "Id")
    has_known = fmt == "flukeid" and "id_known" in header
    out = LabelledSet(format=fmt)
    seen: dict[str, int] = {}
    name = csv_path.name
    for line, row in rows:
        image = row.get(image_col, "")

        def problem(msg: str, line: int = line, image: str = image) -> None:
            out.problems.append(f"{name} line {line} ({image or 'no image'}): {msg}")

        if row.get("\x00extra"):
            problem(f"more values than the {len(header)} header columns")
            continue
        if not image:
            problem("empty image name")
            continue
        ident = row.get(id_col, "")
        known = True
        if has_known and row.get("id_known", "") != "":
            parsed = _parse_known(row["id_known"])
            if parsed is None:
                problem(f"id_known must be 1 or 0 (got {row['id_known']!r})")
                continue
            known = parsed
        if known and not ident:
            problem(f"empty {id_col}")
            continue
        if ident in UNKNOWN_IDS:
            known = False
        box, box_problem = _parse_box(row) if fmt == "flukeid" else (None, None)
        if box_problem:
            problem(box_problem)
            continue
        path = root / image
        key = os.path.normcase(os.path.normpath(str(path)))
        if key in seen:
            problem(f"duplicate photo (first listed on line {seen[key]}); skipped")
            continue
        if check_images:
            img_problem = _image_problem(path, box)
            if img_problem:
                problem(img_problem)
                continue
        seen[key] = line
        out.records.append(Record(path=path, individual=ident if known else None, box=box, id_known=known))
    return out


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def write_labels(records: Iterable[Record], csv_path: str | Path, images_root: str | Path) -> Path:
    """Write records as our labels.csv (image, individual_id, id_known, x0, y0, x1, y1).

    Args:
        records: the records to write.
        csv_path: the file to write (replaced if it exists).
        images_root: the folder the image column is written relative to (``read_labels``'
            ``images_dir``); photos outside it get a relative path with ``..``.

    Returns:
        The written path.

    Raises:
        DataError: the file cannot be written, or a known record has an empty individual.
    """
    csv_path = Path(csv_path)
    root = Path(images_root)
    lines = []
    for r in records:
        if r.individual is not None and r.id_known and not str(r.individual).strip():
            raise DataError(f"{r.path}: record has an empty individual id")
        try:
            rel = Path(os.path.relpath(r.path, root)).as_posix()
        except ValueError:  # other drive on Windows
            rel = Path(r.path).as_posix()
        known = r.individual is not None and r.id_known
        box = [_fmt_num(v) for v in r.box] if r.box is not None else ["", "", "", ""]
        lines.append([rel, r.individual if known else "unknown", 1 if known else 0, *box])
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "individual_id", "id_known", *BOX_COLUMNS])
            writer.writerows(lines)
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot write labels ({exc.strerror or exc})") from None
    return csv_path
