"""Labels files: the one reader and writer of our labels.csv and Kaggle's train.csv.

Every labels file in the project goes through this module: the app's labelled import and CSV
exports, training and evaluation (``flukeid train|evaluate``), the detector's training rows, the
retraining data handed to the training process, the synthetic data sets and the demo catalog.

Formats (recognised from the header; column names match case-insensitively):

- ours (the format of ../shared/data): ``image`` (relative to an images folder),
  ``individual_id``, optional ``id_known`` (1/0) and an optional box ``x0,y0,x1,y1`` in photo
  pixels; other columns are ignored.
- Kaggle (humpback whale identification): ``Image,Id``, where ``new_whale`` means unidentified.

The rules, the same for every caller:

- Unidentified: an ``individual_id`` that is empty or one of :data:`UNKNOWN_IDS` (any case), or
  ``id_known=0`` whatever the id. Such a row loads with ``individual=None, id_known=False``: the
  app imports the photo without an identification, training never uses it as a positive. The
  one contradiction, an empty id with ``id_known=1``, is a bad row.
- A bad row is skipped and reported as a :class:`LabelIssue` (file, line, image, problem); the
  rest loads. Bad rows: more values than header columns, an empty image name, a NUL byte or
  bytes that are not UTF-8 in a field, ``id_known`` not 1/0, an empty id with ``id_known=1``, a
  box with a field empty, not a number, not finite, outside -2..1,000,000 pixels, or with
  ``x1 <= x0`` / ``y1 <= y0`` (the message names the field). :func:`read_labels` also reports a
  photo listed twice (naming both lines and, when they differ, both individuals) and, with
  ``check_images``, a photo that is missing, unreadable or smaller than its box.
- A file that cannot be read as a whole raises :class:`~model.errors.DataError` naming it:
  missing, a folder, empty, not UTF-8 in its first 64 KiB, NUL bytes or a repeated name among the
  columns read in the header, required columns absent, larger than :data:`MAX_LABELS_BYTES`.
  A line longer than :data:`MAX_LINE_BYTES`, or a stream that grows past the size limit, ends the
  reading there with an issue (rows before it stand).
- Cells are read back the way :func:`escape_cell` wrote them: a leading ``'`` that protects a
  formula-like cell (``'=1+1``, ``'+cmd|calc``) or another quote is removed, so an export
  re-imports to the same codes and file names.

Files are read as a stream, line by line, without seeking: a pipe (``--labels <(cat x.csv)``)
works and a million-row file is never held in memory (:func:`open_labels`). Every file this
module writes goes to a temporary name and is renamed into place (:func:`write_csv_atomic`).

Over 600 lines, one job: this is every rule about a labels file (reading, row checks, writing,
escaping) in one place, on purpose (issue 18: three readers and four writers became this one).
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import DataError
from model.safe_io import InputError, is_absolute_name, resolve_inside

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
LABEL_COLUMNS = ("image", "individual_id", "id_known", "x0", "y0", "x1", "y1")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
UNKNOWN_IDS = frozenset({"new_whale", "unknown", "none", "nan"})
# A box may reach this many pixels past the photo's edge (rounding in other tools) and still load.
BOX_TOLERANCE = 2.0
MAX_BOX_COORD = 1_000_000.0  # pixels; the largest photo imported (200 MP) is far inside this
MAX_LABELS_BYTES = 1 << 30  # 1 GiB: a million-row labels.csv with 20 columns is about 300 MB
MAX_LINE_BYTES = 1 << 20  # 1 MiB: no labels row is near this; binary data usually is
STRICT_HEAD_BYTES = 1 << 16  # undecodable bytes in the first 64 KiB: the file is in another encoding
MAX_ISSUES = 10_000  # issues kept by a streaming reader; the rest are counted
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class LabelledPhoto:
    """One labelled photo (a row of a labels file, or a confirmed photo of a catalog).

    Attributes:
        path: the photo file.
        individual: the individual's id, or None when unidentified.
        box: the fluke's box ``(x0, y0, x1, y1)`` in photo pixels, or None when not given.
        id_known: False when the photo's individual is unknown (never a positive pair).
        line: the line of the labels file the row was read from (None when not read from one).
        photo_id: the catalog's photo id, when the row comes from a catalog.
        box_source: where the box came from in the catalog (``manual``, ``imported``, ``auto``).
        box_at: when that box was recorded (ISO time).
    """

    path: Path
    individual: str | None
    box: Box | None = None
    id_known: bool = True
    line: int | None = field(default=None, compare=False)
    photo_id: int | None = None
    box_source: str | None = None
    box_at: str | None = None

    def __post_init__(self):
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.box is not None and not isinstance(self.box, tuple):
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))


@dataclass(frozen=True)
class LabelIssue:
    """A row of a labels file that was skipped, and why."""

    file: str  # the labels file's name
    line: int
    image: str  # the row's image name as written ("" when empty)
    problem: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line} ({self.image or 'no image'}): {self.problem}"


@dataclass
class LabelledSet:
    """The rows of a labels file that loaded, and one issue per row that did not."""

    records: list[LabelledPhoto] = field(default_factory=list)
    issues: list[LabelIssue] = field(default_factory=list)
    format: str = "flukeid"  # "flukeid" (our labels.csv) or "kaggle" (train.csv)

    @property
    def problems(self) -> list[str]:
        """The issues as messages: ``"labels.csv line 7 (img.jpg): photo file not found"``."""
        return [str(i) for i in self.issues]

    @property
    def individuals(self) -> set[str]:
        """The known individuals."""
        return {r.individual for r in self.records if r.individual is not None}

    def photos_per_individual(self) -> Counter[str]:
        """How many photos each known individual has."""
        return Counter(r.individual for r in self.records if r.individual is not None)


# --- cells -----------------------------------------------------------------------------------------


def escape_cell(value) -> str:
    """A cell as text that no spreadsheet will run as a formula (risky prefixes get a leading ').

    A text that starts with ``'`` gets one more, so :func:`unescape_cell` gives back every text
    exactly. Plain negative numbers are data and stay as they are.
    """
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value) if value == value else ""
    else:
        text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        if text.startswith("-"):
            try:
                float(text)
                return text
            except ValueError:
                pass
        return "'" + text
    if text.startswith("'"):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """The text :func:`escape_cell` was given: one protecting leading ``'`` removed."""
    if len(text) > 1 and text[0] == "'" and (text[1] == "'" or text[1] in FORMULA_PREFIXES):
        return text[1:]
    return text


def _fmt_num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


# --- reading ---------------------------------------------------------------------------------------


def _parse_known(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f"):
        return False
    return None


def parse_box(values: Sequence[str]) -> tuple[Box | None, str | None]:
    """``(box, problem)`` for the four texts of x0, y0, x1, y1: all empty -> ``(None, None)``."""
    if not any(values):
        return None, None
    empty = [c for c, v in zip(BOX_COLUMNS, values) if not v]
    if empty:
        return None, f"malformed box: some of x0,y0,x1,y1 are empty ({', '.join(empty)})"
    nums = []
    for col, v in zip(BOX_COLUMNS, values):
        try:
            nums.append(float(v))
        except ValueError:
            return None, f"malformed box: not numbers ({col}={v!r})"
    for col, v, n in zip(BOX_COLUMNS, values, nums):
        if not math.isfinite(n):
            return None, f"malformed box: {col} is not finite ({v!r})"
    for col, n in zip(BOX_COLUMNS, nums):
        if not -BOX_TOLERANCE <= n <= MAX_BOX_COORD:
            return None, (f"malformed box: {col} = {n:g} is out of range "
                          f"({-BOX_TOLERANCE:g} to {MAX_BOX_COORD:,.0f} pixels)")
    x0, y0, x1, y1 = nums
    if x1 <= x0:
        return None, f"malformed box: x1 <= x0 ({x1:g} <= {x0:g})"
    if y1 <= y0:
        return None, f"malformed box: y1 <= y0 ({y1:g} <= {y0:g})"
    return (x0, y0, x1, y1), None


def box_problem(box: Sequence[float], width: int, height: int) -> str | None:
    """Why ``box`` does not fit a ``width`` x ``height`` photo (None when it does)."""
    if box[2] > width + BOX_TOLERANCE or box[3] > height + BOX_TOLERANCE:
        return f"box {tuple(round(float(v), 1) for v in box)} lies outside the {width}x{height} photo"
    return None


def _image_problem(path: Path, box: Box | None) -> str | None:
    """Cheap check (header only) that the photo exists, is an image and holds its box."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "photo file is empty (0 bytes)"
    except FileNotFoundError:
        return f"photo file not found in {path.parent}"
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
    return box_problem(box, w, h) if box is not None else None


def default_images_dir(csv_path: Path, fmt: str, first_image: str | None = None) -> Path:
    """The folder a labels file's image names are relative to when none is given.

    Candidates, in order: ``images/`` beside the file, ``train_images/`` (Kaggle 2022), ``train/``
    (Kaggle 2018, for train.csv) and the file's own folder. The first that holds the first row's
    photo wins; else the first that exists.
    """
    parent = csv_path.parent
    candidates = [parent / "images", parent / "train_images"]
    if fmt == "kaggle":
        candidates.append(parent / "train")
    candidates.append(parent)
    if first_image:
        for c in candidates:
            if (c / first_image).exists():
                return c
    return next((c for c in candidates if c.is_dir()), parent)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def count_lines(path: str | Path) -> int | None:
    """Data lines of a labels file (lines after the header; for progress only); None for a stream."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return None


class LabelRows:
    """A labels file being read: iterate for its good rows; ``issues`` fills as bad rows go by.

    Made by :func:`open_labels`, which has already read the header. Close it (or use it in a
    ``with`` block, or read it to the end) to close the file.

    Attributes:
        path: the labels file.
        format: ``"flukeid"`` or ``"kaggle"``.
        header: the column names as written.
        images_dir: the folder image names are relative to (chosen at the first row when not given).
        issues: the first :data:`MAX_ISSUES` bad rows; ``issue_count`` counts them all.
        rows_read: non-blank rows read so far (good and bad).
        absolute_refused: rows refused because they name a photo by absolute path (with
            ``confine`` and not ``allow_absolute``): the caller may offer to allow them.
    """

    def __init__(self, path: Path, images_dir: Path | None, *, check_images: bool,
                 keep: Mapping[str, Collection[str]] | None, max_bytes: int,
                 confine: bool = False, allow_absolute: bool = False):
        self.path = path
        self._confine = confine
        self._allow_absolute = allow_absolute
        self.images_dir = images_dir
        self.issues: list[LabelIssue] = []
        self.issue_count = 0
        self.absolute_refused = 0  # rows refused only because they name a photo by absolute path
        self.rows_read = 0
        self._check_images = check_images
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lines_read = 0
        self._bad_bytes = False
        self._stop: str | None = None
        self._file = _open_binary(path)
        try:
            if stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
                size = os.fstat(self._file.fileno()).st_size
                if size > max_bytes:
                    raise DataError(f"{path}: labels file is {_size(size)}; the limit is {_size(max_bytes)}")
            lines = self._lines()
            head: list[str] = []  # the first 64 KiB are decoded before any row is returned
            for text in lines:
                head.append(text)
                if self._bytes >= STRICT_HEAD_BYTES:
                    break
            self._reader = csv.reader(itertools.chain(head, lines))
            self._read_header()
            cols = self._cols
            self._keep = [(cols[k.lower()], set(v)) for k, v in (keep or {}).items() if k.lower() in cols]
        except BaseException:
            self._file.close()
            raise
        self._iter = self._rows()

    # the byte stream, as decoded lines ----------------------------------------------------------
    def _lines(self) -> Iterator[str]:
        f = self._file
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                self._stop = f"cannot read further ({exc.strerror or exc}); reading stopped"
                return
            if not raw:
                return
            start = self._bytes
            self._bytes += len(raw)
            self._lines_read += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                msg = f"line {self._lines_read} is longer than {MAX_LINE_BYTES >> 20} MiB: not a CSV labels file"
                if self._lines_read == 1:
                    raise DataError(f"{self.path}: {msg}")
                self._stop = f"{msg}; reading stopped"
                return
            if self._bytes > self._max_bytes:
                self._stop = f"the file grows past the {_size(self._max_bytes)} limit; reading stopped"
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if start < STRICT_HEAD_BYTES:
                    raise DataError(
                        f"{self.path}: not UTF-8 text (undecodable byte at offset {start + exc.start}); "
                        "save it as UTF-8 CSV") from None
                text = raw.decode("utf-8", "surrogateescape")
                self._bad_bytes = True
            if self._lines_read == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield text

    def _read_header(self) -> None:
        path = self.path
        try:
            while True:
                header = next(self._reader)
                if any(h.strip() for h in header):
                    break
        except StopIteration:
            raise DataError(f"{path}: labels file is empty") from None
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV header ({exc})") from None
        header = [h.strip() for h in header]
        if any("\x00" in h for h in header):
            raise DataError(f"{path}: contains NUL bytes in its header; not a CSV text file")
        self.header = header
        lower = [h.lower() for h in header]
        cols: dict[str, int] = {}
        for i, h in enumerate(lower):
            cols.setdefault(h, i)
        if "image" in cols and "individual_id" in cols:
            self.format, self._id_name = "flukeid", "individual_id"
        elif "image" in cols and "id" in cols:
            self.format, self._id_name = "kaggle", "id"
        else:
            missing = "image" if "image" not in cols else "individual_id"
            raise DataError(
                f"{path}: missing columns: required column '{missing}' is missing (found columns: {', '.join(header) or 'none'}); "
                "expected image,individual_id[,id_known,x0,y0,x1,y1] or Kaggle's Image,Id")
        used = ["image", self._id_name, "id_known", *BOX_COLUMNS]
        for name in used:
            where = [i + 1 for i, h in enumerate(lower) if h == name]
            if len(where) > 1:
                raise DataError(f"{path}: column '{name}' appears {len(where)} times (columns "
                                f"{', '.join(map(str, where))}); which one holds the data is unclear")
        self._cols = cols
        self._img_i = cols["image"]
        self._id_i = cols[self._id_name]
        self._id_label = header[self._id_i]
        self._known_i = cols.get("id_known") if self.format == "flukeid" else None
        box_i = [cols.get(c) for c in BOX_COLUMNS]
        self._box_i = box_i if self.format == "flukeid" and all(i is not None for i in box_i) else None

    # rows -------------------------------------------------------------------------------------------
    def _issue(self, line: int, image: str, problem: str) -> None:
        self.issue_count += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(LabelIssue(self.path.name, line, image, problem))

    def _rows(self) -> Iterator[LabelledPhoto]:
        with self._file:
            reader = self._reader
            width = len(self.header)
            while True:
                line = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    self.rows_read += 1
                    self._issue(line, "", f"malformed CSV ({exc})")
                    continue
                if not any(v.strip() for v in values):
                    continue  # blank line
                self.rows_read += 1
                row = self._row(line, values, width)
                if row is not None:
                    yield row
            if self._stop:
                self._issue(self._lines_read, "", self._stop)

    def _row(self, line: int, values: list[str], width: int) -> LabelledPhoto | None:
        def get(i: int | None) -> str:
            return unescape_cell(values[i].strip()) if i is not None and i < len(values) else ""

        image = get(self._img_i)
        for i, v in enumerate(values):
            name = self.header[i] if i < width else f"column {i + 1}"
            if "\x00" in v:
                self._issue(line, image.replace("\x00", ""), f"NUL byte in field '{name}'")
                return None
            if self._bad_bytes and _SURROGATE.search(v):
                self._issue(line, _SURROGATE.sub("?", image), f"field '{name}' is not UTF-8 text")
                return None
        if len(values) > width:
            self._issue(line, image, f"more values than the {width} header columns")
            return None
        for i, allowed in self._keep:
            if i < len(values) and values[i].strip() and values[i].strip() not in allowed:
                return None  # left out by the caller's selection, not a problem
        if not image:
            self._issue(line, image, "empty image name")
            return None
        ident = get(self._id_i)
        known: bool | None = None
        if self._known_i is not None and get(self._known_i):
            known = _parse_known(get(self._known_i))
            if known is None:
                self._issue(line, image, f"id_known must be 1 or 0 (got {get(self._known_i)!r})")
                return None
        if not ident and known:
            self._issue(line, image, f"empty {self._id_label} with id_known=1")
            return None
        if not ident or ident.lower() in UNKNOWN_IDS:
            known = False
        box = None
        if self._box_i is not None:
            box, problem = parse_box([get(i) for i in self._box_i])
            if problem:
                self._issue(line, image, problem)
                return None
        if self.images_dir is None:
            self.images_dir = default_images_dir(self.path, self.format, image)
        if self._confine:  # a photo to import: inside the images folder (see model.safe_io.resolve_inside)
            try:
                path = resolve_inside(self.images_dir, image, allow_absolute=self._allow_absolute)
            except InputError as exc:
                if not self._allow_absolute and is_absolute_name(image):
                    self.absolute_refused += 1
                self._issue(line, image, exc.problem)
                return None
        else:
            path = self.images_dir / image
        if _names_folder(image):
            self._issue(line, image, "the image name ends in a folder, not a photo file")
            return None
        if self._check_images:
            problem = _image_problem(path, box)
            if problem:
                self._issue(line, image, problem)
                return None
        known = known is not False
        return LabelledPhoto(path, ident if known else None, box, known, line=line)

    def __iter__(self) -> Iterator[LabelledPhoto]:
        return self._iter

    def __next__(self) -> LabelledPhoto:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()
        self._file.close()

    def __enter__(self) -> LabelRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _names_folder(image: str) -> bool:
    """True for an image name that cannot be a photo file: ``/``, ``x/``, ``.``, ``a/..`` (either slash)."""
    parts = image.replace("\\", "/").split("/")
    return parts[-1].strip() in ("", ".", "..")


def _open_binary(path: Path):
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by LabelRows
    except FileNotFoundError:
        raise DataError(f"{path}: labels file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a labels file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read labels file ({exc.strerror or exc})") from None


def open_labels(csv_path: str | Path, images_dir: str | Path | None = None, *, check_images: bool = False,
                keep: Mapping[str, Collection[str]] | None = None,
                max_bytes: int = MAX_LABELS_BYTES, confine: bool = False,
                allow_absolute: bool = False) -> LabelRows:
    """Open a labels.csv (ours) or a Kaggle train.csv and read its header; rows follow as a stream.

    Args:
        csv_path: the labels file (UTF-8, with or without a byte-order mark); a pipe works too.
        images_dir: the folder the image column is relative to (default: :func:`default_images_dir`).
        check_images: check each photo exists, its header decodes and it holds its box.
        keep: ``{column: allowed values}``: rows whose (non-empty) value in such a column is not
            allowed are left out silently (a selection, not a problem), e.g. ``{"crop": ["full_frame"]}``.
        max_bytes: the size limit.
        confine: photos must lie inside ``images_dir`` (a labels file to import: a row naming an
            absolute path, unless ``allow_absolute``, or climbing out with ``..`` is a bad row).
            Training reads labels written with ``..`` paths (retraining), so it is off by default.
        allow_absolute: with ``confine``, accept rows naming a photo by absolute path.

    Returns:
        The rows, as an iterator of :class:`LabelledPhoto` with ``issues`` for the bad ones.

    Raises:
        DataError: the file cannot be read as a whole (see the module's rules).
    """
    return LabelRows(Path(csv_path), Path(images_dir) if images_dir is not None else None,
                     check_images=check_images, keep=keep, max_bytes=max_bytes, confine=confine,
                     allow_absolute=allow_absolute)


def read_labels(csv_path: str | Path, images_dir: str | Path | None = None, *, check_images: bool = True,
                keep: Mapping[str, Collection[str]] | None = None) -> LabelledSet:
    """Read a labels.csv (ours) or a Kaggle train.csv into a list; bad rows are reported and skipped.

    As :func:`open_labels`, all rows at once, and a photo listed twice is reported (the first
    listing stands).

    Args:
        csv_path: the labels file.
        images_dir: the folder the image column is relative to (default: :func:`default_images_dir`).
        check_images: check each photo exists and its header decodes (cheap; no pixel decoding),
            and that its box lies inside it.
        keep: see :func:`open_labels`.

    Returns:
        The loaded records (in file order) and one issue per skipped row.

    Raises:
        DataError: the file is missing, empty, not UTF-8, not CSV, or lacks required columns.
    """
    out = LabelledSet()
    with open_labels(csv_path, images_dir, check_images=check_images, keep=keep, max_bytes=MAX_LABELS_BYTES) as rows:
        out.format = rows.format
        seen: dict[str, LabelledPhoto] = {}
        issues: list[LabelIssue] = []
        for r in rows:
            key = os.path.normcase(os.path.normpath(str(r.path)))
            first = seen.get(key)
            if first is not None:
                if first.individual != r.individual:
                    msg = (f"duplicate photo (first listed on line {first.line}) with a conflicting label: "
                           f"{first.individual or 'unidentified'!r} there, {r.individual or 'unidentified'!r} here; "
                           "the first stands, this row is skipped")
                else:
                    msg = f"duplicate photo (first listed on line {first.line}); skipped"
                issues.append(LabelIssue(rows.path.name, r.line or 0, os.path.relpath(r.path, rows.images_dir), msg))
                continue
            seen[key] = r
            out.records.append(r)
        issues += rows.issues
    out.issues = sorted(issues, key=lambda i: i.line)
    return out


# --- writing ---------------------------------------------------------------------------------------


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


def write_labels(records: Iterable[LabelledPhoto], csv_path: str | Path, images_root: str | Path) -> Path:
    """Write photos as our labels.csv (image, individual_id, id_known, x0, y0, x1, y1).

    Numbers are written exactly (``30`` or ``30.25``), cells escaped like every export
    (:func:`read_labels` gives back the same rows), the file replaced atomically.

    Args:
        records: the photos to write.
        csv_path: the file to write (replaced if it exists; its folder is created).
        images_root: the folder the image column is written relative to (``read_labels``'
            ``images_dir``); photos outside it get a relative path with ``..``.

    Returns:
        The written path.

    Raises:
        DataError: the file cannot be written, or a known record has an empty individual.
    """
    csv_path = Path(csv_path)
    root = Path(images_root)

    def rows():
        for r in records:
            if r.individual is not None and r.id_known and not str(r.individual).strip():
                raise DataError(f"{r.path}: record has an empty individual id")
            try:
                rel = Path(os.path.relpath(r.path, root)).as_posix()
            except ValueError:  # other drive on Windows
                rel = Path(r.path).as_posix()
            known = r.individual is not None and r.id_known
            box = [_fmt_num(v) for v in r.box] if r.box is not None else ["", "", "", ""]
            yield [rel, r.individual if known else "unknown", 1 if known else 0, *box]

    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(csv_path, LABEL_COLUMNS, rows())
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot write labels ({exc.strerror or exc})") from None
    return csv_path
