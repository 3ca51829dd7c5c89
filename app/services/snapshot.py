"""Read what the views show from an open catalog (Qt-free; runs in a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.services.importing import box_needs_check
from app.services.viewdata import BOX_UNCHECKED, IDENTIFIED, JUNK, UNIDENTIFIED, IndividualRow, PhotoCard


@dataclass
class Snapshot:
    """Everything the photos, box-review and individuals views need, read in one go."""

    photos: list[PhotoCard]
    individuals: list[IndividualRow]
    stats: dict = field(default_factory=dict)
    missing: list[PhotoCard] = field(default_factory=list)

    @property
    def box_queue(self) -> list[PhotoCard]:
        """Photos whose box a person should check (identified photos, with a doubtful box, last)."""
        return [p for p in self.photos if p.status == BOX_UNCHECKED] + \
               [p for p in self.photos if p.status != BOX_UNCHECKED and p.box_to_check]

    @property
    def unidentified_ids(self) -> list[int]:
        return [p.photo_id for p in self.photos if p.status in (UNIDENTIFIED, BOX_UNCHECKED)]

    def photo(self, photo_id: int) -> PhotoCard | None:
        return next((p for p in self.photos if p.photo_id == photo_id), None)

    def counts(self) -> dict[str, int]:
        """What the status bar and the tab titles show, counted from the photos the views list.

        ``to_identify`` is what the match review queues (boxes still to check included, photos with
        no fluke left out); ``individuals`` those with at least one photo.
        """
        by: dict[str, int] = {}
        for p in self.photos:
            by[p.status] = by.get(p.status, 0) + 1
        return {"photos": len(self.photos), "individuals": len(self.individuals),
                "identified": by.get(IDENTIFIED, 0), "to_identify": by.get(UNIDENTIFIED, 0) + by.get(BOX_UNCHECKED, 0),
                "boxes": len(self.box_queue), "junk": by.get(JUNK, 0)}



def status_line(catalog_name: str, counts: dict[str, int]) -> str:
    """The status bar's line for a catalog from :meth:`Snapshot.counts` (photos with no fluke only
    when there are some)."""
    c = counts
    junk = c.get("junk", 0)
    no_fluke = f" · {junk:,} with no fluke" if junk else ""
    return (f"{catalog_name}: {c.get('photos', 0):,} photos · "
            f"{c.get('individuals', 0):,} individuals · {c.get('identified', 0):,} identified · "
            f"{c.get('to_identify', 0):,} to identify · {c.get('boxes', 0):,} boxes to check{no_fluke}")

def individual_label(code: str, name: str | None) -> str:
    return f"{code} {name}" if name else code


def read_snapshot(catalog, progress=None, should_stop=None, check_files: bool = True) -> Snapshot:
    """Photos with status, box and individual; individuals with counts and sighting dates.

    Args:
        catalog: an open :class:`app.catalog.Catalog`.
        progress, should_stop: the usual job callbacks (optional).
        check_files: also test whether each photo file exists (for the relink prompt).
    """
    individuals = {i.id: i for i in catalog.individuals(include_merged=True)}
    current = {ident.photo_id: ident.individual_id for ident in catalog.current_identifications()}
    photos: list[PhotoCard] = []
    missing: list[PhotoCard] = []
    total = max(catalog.photo_count(), 1)
    for n, ph in enumerate(catalog.iter_photos()):
        if should_stop and should_stop():
            from model.api import Interrupted

            raise Interrupted("reading the catalog was cancelled")
        box = catalog.current_box(ph.id)
        iid = current.get(ph.id)
        # a merged individual's photos belong to the one it was merged into
        seen: set[int] = set()
        while iid is not None and iid in individuals and individuals[iid].merged_into and iid not in seen:
            seen.add(iid)
            iid = individuals[iid].merged_into
        if iid is not None:
            status = IDENTIFIED
        elif box is not None and box.junk:
            status = JUNK
        elif box is None or not box.confirmed:
            status = BOX_UNCHECKED
        else:
            status = UNIDENTIFIED
        ind = individuals.get(iid) if iid is not None else None
        path = str(catalog.resolve_path(ph))
        card = PhotoCard(
            photo_id=ph.id, path=path, status=status, individual_id=iid,
            individual=individual_label(ind.code, ind.name) if ind else None,
            date=(ph.taken_at or "")[:10] or None,
            box=box.box if box is not None else None,
            box_confidence=box.confidence if box is not None else None,
            box_source=box.source if box is not None else None,
            box_to_check=status != JUNK and box_needs_check(box, iid is not None),
        )
        thumb = catalog.thumbnail_path(ph.sha256)
        if thumb.is_file():
            card.thumb = str(thumb)
        if check_files and not Path(path).is_file():
            card.missing = True
            missing.append(card)
        photos.append(card)
        if progress and n % 200 == 0:
            progress(n / total, "reading the catalog")
    rows: dict[int, IndividualRow] = {}
    for i in individuals.values():
        if i.merged_into is None:
            rows[i.id] = IndividualRow(individual_id=i.id, code=i.code, name=i.name or "", notes=i.notes or "")
    for p in photos:
        r = rows.get(p.individual_id) if p.individual_id is not None else None
        if r is None:
            continue
        r.photo_count += 1
        if p.date:
            r.first_seen = min(r.first_seen or p.date, p.date)
            r.last_seen = max(r.last_seen or p.date, p.date)
    stats = catalog.stats()
    # an individual with no photo left (its new-individual decision undone, its photos reassigned) is
    # not shown: it is kept in the catalog only so that a redo can bring it back
    shown = [r for r in rows.values() if r.photo_count > 0]
    return Snapshot(photos=photos, individuals=sorted(shown, key=lambda r: r.code), stats=stats,
                    missing=missing)
