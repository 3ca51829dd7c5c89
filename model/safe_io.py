"""Guards for every file flukeid writes to or reads from a path a user named (torch-free, stdlib only).

Outputs (:func:`check_output`): a path a user names for a command's result (``export --out``,
``export-model --out``, ``train --out``, ``synth --out``, ``train-detector --out``, the GUI's
export dialog) may never be

- a file or folder of a catalog: the catalog folder itself, its database (``catalog.sqlite``
  and its ``-wal``/``-shm``/``-journal`` files), its lock file, or anything under its
  ``models/``, ``thumbnails/`` or ``photos/`` folders. Any folder holding ``catalog.sqlite`` or
  ``flukeid.lock`` counts as a catalog, checked for the path as written and for the path with
  its links resolved;
- a file directly inside a model bundle or detector folder (``manifest.json`` beside an ``.onnx``);
- a device, FIFO or socket (or a link to one), or a dangling link;
- a folder where a file is expected, or a file where a folder is expected;
- an existing file or folder, unless the command says it replaces one (``replace``).

Inputs (:func:`check_input`, :func:`open_input`, :func:`sha256_bounded`): only regular files are
read (after following links), each read is bounded by a size limit, and a FIFO is never opened in
a way that blocks.

The checks run before any byte is written; a path swapped for something else between the check
and the write is out of scope (the writers still write to a temporary name and rename, so the
damage is limited to the named path).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from model.errors import DataError, FlukeidError

# A folder holding one of these is a catalog (app.catalog.store.DB_NAME, app.catalog.lock.LOCK_NAME).
CATALOG_MARKERS = ("catalog.sqlite", "flukeid.lock")
# What a catalog owns directly under its folder; no user-named output may be (or be inside) one of them.
CATALOG_OWNED = ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", "catalog.sqlite-journal",
                 "flukeid.lock", "models", "thumbnails", "photos")

# Bounds on what is read from a user-named input.
MAX_PHOTO_BYTES = 2 << 30  # 2 GiB: a 200-megapixel 16-bit RGB TIFF is 1.2 GB uncompressed
MAX_LABELS_BYTES = 512 << 20  # 512 MiB: about ten million labels.csv rows

ReplaceRule = bool | Callable[[Path], str | None]


class OutputError(FlukeidError):
    """A user-named output path that flukeid refuses to write (the message says why)."""


class InputError(DataError):
    """A user-named input that is not a regular file, is larger than its limit, or leaves its folder.

    Attributes:
        path: the file named (empty when the problem is a name, not a file).
        problem: what is wrong, without the path.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = "" if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def file_kind(mode: int) -> str:
    """Words for a file type from ``st_mode`` ("a FIFO", "a character device", ...)."""
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a regular file"


def is_catalog_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a catalog's marker files (database or lock file)."""
    return any(os.path.lexists(folder / m) for m in CATALOG_MARKERS)


def owning_catalog(path: Path) -> tuple[Path, tuple[str, ...]] | None:
    """(catalog folder, path parts below it) for the nearest catalog at or above ``path``; None if none."""
    path = Path(path)
    for folder in (path, *path.parents):
        try:
            if folder.is_dir() and is_catalog_folder(folder):
                return folder, path.parts[len(folder.parts):]
        except OSError:
            continue
    return None


def _catalog_reason(path: Path) -> str | None:
    owner = owning_catalog(path)
    if owner is None:
        return None
    folder, rest = owner
    if not rest:
        return f"is the catalog folder {folder}"
    if rest[0] in CATALOG_OWNED:
        return f"is part of the catalog in {folder} ({rest[0]})"
    return None


def _bundle_reason(path: Path) -> str | None:
    """A file directly inside a model bundle or detector folder (manifest.json next to an .onnx)."""
    folder = path.parent
    try:
        if (folder / "manifest.json").is_file() and any(
                (folder / n).is_file() for n in ("branch.onnx", "head.onnx", "detector.onnx")):
            return f"is inside the model folder {folder}"
    except OSError:
        return None
    return None


def check_output(path: str | Path, *, folder: bool = False, replace: ReplaceRule = False,
                 what: str = "output") -> Path:
    """Refuse an output path flukeid must not write (see the module docstring); return it as a Path.

    Args:
        path: the path the user named.
        folder: True when the output is a folder (bundle, run, data set), False for a file.
        replace: whether an existing file (or folder) of the right kind may be replaced or written
            into: False (never), True (always), or a function of the existing path returning a
            reason to refuse (or None to allow).
        what: the option or output named in messages (e.g. ``--out``).

    Raises:
        OutputError: naming the path and the reason.
    """
    p = Path(path)
    if not str(path).strip():
        raise OutputError(f"{what}: no path given")
    written = Path(os.path.abspath(p))
    resolved = Path(os.path.realpath(p))
    for cand in dict.fromkeys((written, resolved)):
        reason = _catalog_reason(cand) or (None if folder else _bundle_reason(cand))
        if reason is not None:
            shown = "" if cand == written else f" (it leads to {cand})"
            raise OutputError(f"{p}: {reason}{shown}; flukeid never writes its {what} there; "
                              "choose a path outside it")
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        if not folder and not written.parent.is_dir():
            raise OutputError(f"{p}: the folder {written.parent} does not exist") from None
        return p
    except OSError as exc:
        raise OutputError(f"{p}: cannot check this {what} path ({exc.strerror or exc})") from None
    try:
        st = os.stat(p)
    except OSError:
        raise OutputError(f"{p}: is a symbolic link to a missing or unreadable target; "
                          f"give a plain {'folder' if folder else 'file'} path") from None
    link = " (through a symbolic link)" if stat.S_ISLNK(lst.st_mode) else ""
    if folder:
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{p}: is {file_kind(st.st_mode)}{link}, not a folder")
    elif stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{p}: is a folder{link}; give a file name for the {what}")
    elif not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{p}: is {file_kind(st.st_mode)}{link}, not a regular file; "
                          f"flukeid writes its {what} only to a regular file")
    if replace is True:
        return p
    if replace is False:
        raise OutputError(f"{p}: already exists; flukeid does not replace it (choose a new name)")
    why = replace(p)
    if why:
        raise OutputError(f"{p}: {why}")
    return p


def replace_text_file(path: Path) -> str | None:
    """Replace rule for CSV outputs: an existing file is replaced only if it is UTF-8 text.

    Keeps an export from replacing a database, a photo or a model that a mistyped ``--out`` named.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as exc:
        return f"exists and cannot be read to check it ({exc.strerror or exc})"
    if b"\0" in head:
        return "exists and is not a text (CSV) file; flukeid replaces only an earlier CSV (choose a new name)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 64 KiB boundary
            return "exists and is not UTF-8 text; flukeid replaces only an earlier CSV (choose a new name)"
    return None


def replace_empty_folder(path: Path) -> str | None:
    """Replace rule: an existing folder is used only when it is empty."""
    try:
        if any(os.scandir(path)):
            return "already exists and is not empty (choose a new folder)"
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    return None


# ------------------------------------------------------------------------------------ inputs
def check_input(path: str | Path, *, what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """The ``os.stat`` of an input that is a regular file (links followed) within ``max_bytes``.

    Raises:
        InputError: missing, not a regular file (folder, FIFO, device, socket), or too large;
            the message names the path.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(p, f"file not found in {Path(p).parent.absolute()}") from None
    except OSError as exc:
        raise InputError(p, f"cannot access this {what} ({exc.strerror or exc})") from None
    _check_stat(p, st, what, max_bytes)
    return st


def _check_stat(p: Path, st: os.stat_result, what: str, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InputError(p, f"is {file_kind(st.st_mode)}, not a regular file; flukeid reads its {what} "
                         "only from a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(p, f"{what} is too large ({st.st_size:,} bytes; limit {max_bytes:,})")


def open_input(path: str | Path, *, what: str = "file", max_bytes: int | None = None):
    """Open an input for binary reading, refusing anything but a regular file within ``max_bytes``.

    The file is opened without blocking (a FIFO with no writer cannot hang the caller) and
    checked on the open descriptor, so what is read is what was checked.

    Raises:
        InputError: as :func:`check_input`.
    """
    p = Path(path)
    check_input(p, what=what, max_bytes=max_bytes)  # refuses FIFOs before opening them
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(p, f"file not found in {Path(p).parent.absolute()}") from None
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as exc:
        raise InputError(p, f"cannot open this {what} ({exc.strerror or exc})") from None
    try:
        _check_stat(p, os.fstat(fd), what, max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_bounded(path: str | Path, *, max_bytes: int, what: str = "photo", chunk: int = 1 << 20) -> tuple[str, int]:
    """(SHA-256, size) of a regular file of at most ``max_bytes``, read in chunks from one open descriptor.

    Raises:
        InputError: not a regular file, too large, or it grew past the limit while being read.
    """
    h = hashlib.sha256()
    n = 0
    with open_input(path, what=what, max_bytes=max_bytes) as f:
        while block := f.read(chunk):
            n += len(block)
            if n > max_bytes:
                raise InputError(path, f"{what} grew past the limit of {max_bytes:,} bytes while being read")
            h.update(block)
    return h.hexdigest(), n


def is_absolute_name(name: str) -> bool:
    """True when a labels row's image name is an absolute path (POSIX, a drive letter or a UNC share)."""
    text = str(name)
    return text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":" and text[0].isalpha()) \
        or Path(text).is_absolute()


def resolve_inside(base: str | Path, name: str, *, allow_absolute: bool = False) -> Path:
    """The file a labels row names: ``base / name``, refused when it leaves ``base``.

    An absolute ``name`` (``/etc/passwd``, ``C:\\photos\\a.jpg``, ``\\\\server\\share``) is refused
    unless ``allow_absolute``; a relative one may not climb out of ``base`` with ``..`` (checked on
    the path as written; links inside ``base`` are followed later, to regular files only).

    Raises:
        InputError: the reason, without the row (the caller names the file and line).
    """
    text = str(name)
    if "\0" in text:
        raise InputError(None, f"image name {text!r} contains a NUL byte")
    if is_absolute_name(text):
        if not allow_absolute:
            raise InputError(None, f"image {text!r} is an absolute path; photos named in a labels file must be "
                             f"inside the images folder {base} (allow absolute paths explicitly to import it)")
        return Path(text)
    base_abs = os.path.normpath(os.path.abspath(base))
    joined = os.path.normpath(os.path.join(base_abs, text))
    if os.path.commonpath([base_abs, joined]) != base_abs or joined == base_abs:
        raise InputError(None, f"image {text!r} leads outside the images folder {base} (via '..'); "
                         "photos named in a labels file must be inside it")
    return Path(base) / text


def copy_pipe_bounded(src: str | Path, dest, *, max_bytes: int, what: str = "file", idle_s: float = 10.0) -> int:
    """Copy a pipe or FIFO into the binary file ``dest``, at most ``max_bytes``; returns the byte count.

    The pipe is opened without blocking and read with a deadline: a FIFO nobody writes to is an
    error after ``idle_s`` seconds without data, never a hang.

    Raises:
        InputError: not a pipe/FIFO, larger than ``max_bytes``, or no data for ``idle_s`` seconds.
    """
    import select

    p = Path(src)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(p, f"cannot open this {what} ({exc.strerror or exc})") from None
    n = 0
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise InputError(p, f"is {file_kind(os.fstat(fd).st_mode)}, not a pipe")
        while True:
            ready, _, _ = select.select([fd], [], [], idle_s)
            if not ready:
                raise InputError(p, f"no data arrived from this pipe for {idle_s:g} s (is anything writing to it?)")
            try:
                block = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not block:
                return n
            n += len(block)
            if n > max_bytes:
                raise InputError(p, f"{what} is too large (more than {max_bytes:,} bytes)")
            dest.write(block)
    finally:
        os.close(fd)
