"""Exports for other tools: identifications CSV, Kaggle ``Image,Id``, sightings table (individual x date).

Every cell is escaped against spreadsheet formula injection (the labels reader undoes it, so
codes re-import unchanged), and every file is written to a temporary name, fsynced and renamed,
so a crash never leaves a partial file under the final name.
Before anything is written the output path goes through :func:`model.api.check_output`: never a
catalog's file or folder, a device, FIFO or folder; an existing file is replaced only when it is
text (an earlier CSV). A failed write (disk full) leaves the previous file as it was.

An export can leave notes for the user (where image paths are relative to, photos left out) in
the ``notes`` list it is given.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from app.catalog import Catalog
from model.api import OutputError, check_output, replace_text_file, write_csv_atomic

FORMATS = ("identifications", "kaggle", "sightings")
IDENTIFICATION_COLUMNS = ["image", "individual_id", "date", "latitude", "longitude", "x0", "y0", "x1", "y1",
                          "decision", "who", "when", "model_version", "sha256"]


def _write(out: str | Path, header, rows) -> int:
    """The one place exports write: path checked first, write errors reported as such (old file kept)."""
    out = check_output(out, replace=replace_text_file, what="export")
    try:
        return write_csv_atomic(out, header, rows)
    except OSError as exc:
        kept = " (the previous file is kept)" if out.exists() else ""
        raise OutputError(f"{out}: writing the export failed ({exc.strerror or exc}){kept}") from None


def _codes(catalog: Catalog) -> dict[int, str]:
    return {i.id: i.code for i in catalog.individuals(include_merged=True)}


def photo_root(catalog: Catalog) -> Path | None:
    """The deepest folder holding every photo of the catalog (the catalog's folder when it has none).

    None when the photos share no folder (different drives on Windows).
    """
    parents = {os.path.normpath(catalog.resolve_path(ph).parent) for ph in catalog.iter_photos()}
    if not parents:
        return catalog.root
    try:
        return Path(os.path.commonpath(sorted(parents)))
    except ValueError:
        return None


def export_identifications(catalog: Catalog, out: str | Path, *, include_unidentified: bool = True,
                           notes: list[str] | None = None) -> int:
    """Write one row per photo: its file, current individual, date, position, box and how it was decided.

    The columns start with ``image, individual_id`` and include ``x0..y1``, so the file is also a
    labels.csv that :func:`app.services.importing.import_labelled` reads back. Image paths are
    relative to :func:`photo_root` (said in ``notes``), so the file re-imports on another machine
    with ``--images`` pointing at the copied photo folder. Returns the row count.
    """
    codes = _codes(catalog)
    current = {i.photo_id: i for i in catalog.current_identifications()}
    root = photo_root(catalog)

    def image(ph) -> str:
        path = os.path.normpath(catalog.resolve_path(ph))
        return Path(os.path.relpath(path, root)).as_posix() if root is not None else path

    if notes is not None:
        notes.append(f"image paths are relative to {root}; re-import with --images pointing there"
                     if root is not None else "photos on different drives: image paths are absolute")

    def rows():
        for ph in catalog.iter_photos():
            ident = current.get(ph.id)
            ind = codes.get(ident.individual_id) if ident and ident.individual_id is not None else None
            if ind is None and not include_unidentified:
                continue
            box = catalog.current_box(ph.id)
            coords = box.box if box is not None and box.box is not None else (None,) * 4
            yield [image(ph), ind or "", ph.taken_at, ph.latitude, ph.longitude, *coords,
                   ident.how if ident else "", ident.who if ident else "", ident.at if ident else "",
                   ident.model_version if ident else "", ph.sha256]

    return _write(out, IDENTIFICATION_COLUMNS, rows())


def export_kaggle(catalog: Catalog, out: str | Path, *, notes: list[str] | None = None) -> int:
    """Kaggle-style ``Image,Id``: file name and individual code (``new_whale`` when unidentified)."""
    codes = _codes(catalog)
    current = {i.photo_id: i.individual_id for i in catalog.current_identifications()}

    def rows():
        for ph in catalog.iter_photos():
            ind = current.get(ph.id)
            yield [Path(ph.path).name, codes.get(ind, "new_whale") if ind is not None else "new_whale"]

    return _write(out, ["Image", "Id"], rows())


def photo_date(catalog: Catalog, photo) -> str | None:
    """The day a photo was taken (``YYYY-MM-DD``): from the catalog, else from the file's EXIF now."""
    if photo.taken_at:
        return photo.taken_at[:10]
    from app.services.photo_metadata import read_metadata  # photos imported before their EXIF date was read

    try:
        taken = read_metadata(catalog.resolve_path(photo))["taken_at"]
    except (OSError, ValueError, SyntaxError):
        return None
    return taken[:10] if taken else None


def sightings(catalog: Catalog) -> tuple[list[str], list[str], dict[tuple[str, str], int], int]:
    """(individual codes, dates, {(code, date): photos}, undated photos) for identified photos.

    A photo's date is its EXIF date (:func:`photo_date`); identified photos without one are
    only counted (a capture history has a column per date, none for "unknown").
    """
    codes = _codes(catalog)
    current = {i.photo_id: i.individual_id for i in catalog.current_identifications() if i.individual_id}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    undated = 0
    for ph in catalog.iter_photos():
        ind = current.get(ph.id)
        if ind is None:
            continue
        date = photo_date(catalog, ph)
        if date is None:
            undated += 1
            continue
        counts[(codes[ind], date)] += 1
    inds = sorted({c for c, _ in counts})
    dates = sorted({d for _, d in counts})
    return inds, dates, dict(counts), undated


def export_sightings(catalog: Catalog, out: str | Path, *, notes: list[str] | None = None) -> int:
    """Capture history for capture-recapture work: one row per individual, one column per date (photo counts).

    Identified photos without a date are left out, and counted in ``notes``.
    """
    inds, dates, counts, undated = sightings(catalog)
    if undated and notes is not None:
        notes.append(f"{undated} identified photo{'s' if undated != 1 else ''} without a date "
                     "(no EXIF date) left out of the sightings table")
    return _write(out, ["individual_id", *dates],
                  ([c, *(counts.get((c, d), 0) for d in dates)] for c in inds))


def export(catalog: Catalog, fmt: str, out: str | Path, notes: list[str] | None = None) -> int:
    """Export in one of :data:`FORMATS`; returns the number of rows written (notes for the user in ``notes``).

    Raises:
        ValueError: an unknown format.
    """
    fns = {"identifications": export_identifications, "kaggle": export_kaggle, "sightings": export_sightings}
    if fmt not in fns:
        raise ValueError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fns[fmt](catalog, out, notes=notes)
