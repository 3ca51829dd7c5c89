"""CSV reading (labels.csv, Kaggle train.csv) and safe CSV writing (formula escaping, atomic rename)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.api import DataError

UNIDENTIFIED = {"", "new_whale", "unknown", "none", "nan"}
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class LabelRow:
    """One labelled photo: ``image`` relative to the images folder; individual None = unidentified."""

    line: int
    image: str
    individual: str | None
    box: tuple[float, float, float, float] | None


def _open_text(path: Path):
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the caller
        f.read(1 << 16)
        f.seek(0)
        return f
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "n", "")


def read_label_rows(path: str | Path) -> Iterator[LabelRow]:
    """Stream the rows of our labels.csv or Kaggle's train.csv (detected from the header).

    labels.csv: ``image, individual_id[, id_known][, x0, y0, x1, y1]``; train.csv: ``Image, Id``
    where ``new_whale`` means unidentified. The header is checked before the first row is
    returned; rows are read lazily (a million-row file is never held in memory).

    Raises:
        DataError: naming the file (and line) for a missing column, bad encoding, empty file or
            a malformed box.
    """
    path = Path(path)
    f = _open_text(path)
    try:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: file is empty (expected a header row)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot parse the header ({exc})") from None
        cols = {h.strip().lower(): i for i, h in enumerate(header)}
        if "image" in cols and "individual_id" in cols:
            img_i, id_i = cols["image"], cols["individual_id"]
        elif "image" in cols and "id" in cols:
            img_i, id_i = cols["image"], cols["id"]
        else:
            raise DataError(f"{path}: missing columns: need image,individual_id (labels.csv) "
                            f"or Image,Id (Kaggle); found {', '.join(header)}")
        known_i = cols.get("id_known")
        box_i = [cols.get(k) for k in ("x0", "y0", "x1", "y1")]
        has_box = all(i is not None for i in box_i)
    except BaseException:
        f.close()
        raise

    def rows() -> Iterator[LabelRow]:
        with f:
            try:
                for line, rec in enumerate(reader, start=2):
                    if not rec or all(not c.strip() for c in rec):
                        continue
                    if len(rec) <= max(img_i, id_i):
                        raise DataError(f"{path}: line {line}: too few columns")
                    image = rec[img_i].strip()
                    if not image:
                        raise DataError(f"{path}: line {line}: empty image name")
                    ind = rec[id_i].strip()
                    if ind.lower() in UNIDENTIFIED or (known_i is not None and known_i < len(rec)
                                                       and not _truthy(rec[known_i])):
                        ind = None
                    box = None
                    if has_box and all(i < len(rec) and rec[i].strip() for i in box_i):
                        try:
                            box = tuple(float(rec[i]) for i in box_i)
                        except ValueError:
                            raise DataError(f"{path}: line {line}: box is not numeric") from None
                        if not (box[2] > box[0] and box[3] > box[1]):
                            raise DataError(f"{path}: line {line}: box {box} is empty")
                    yield LabelRow(line, image, ind, box)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
            except csv.Error as exc:
                raise DataError(f"{path}: malformed CSV ({exc})") from None

    return rows()


def count_rows(path: str | Path) -> int:
    """Data rows in a CSV (lines after the header; for progress only)."""
    with open(path, "rb") as f:
        return max(0, sum(1 for _ in f) - 1)


def escape_cell(value) -> str:
    """A cell as text that no spreadsheet will run as a formula (risky prefixes get a leading ')."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value) if value == value else ""
    else:
        text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        # a plain negative number is data, not a formula
        if text.startswith("-"):
            try:
                float(text)
                return text
            except ValueError:
                pass
        return "'" + text
    return text


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Write a CSV to a temporary name in the same folder, fsync it, then rename it into place.

    Every cell goes through :func:`escape_cell`. A crash leaves either the old file or the new
    one, never a partial file under the final name. Returns the number of data rows.

    Raises:
        DataError: the folder cannot be written.
    """
    path = Path(path)
    n = 0
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([escape_cell(h) for h in header])
            for row in rows:
                w.writerow([escape_cell(c) for c in row])
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n
