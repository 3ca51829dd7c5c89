"""Recording the reviewer's decisions: match verdicts, new individuals, box edits, merges, undo/redo.

Everything here is appended, never updated in place. Each call writes one *action* (the audit
log entry) plus the rows it implies (a match decision, an identification, a box version) in ONE
durable transaction (``synchronous=FULL``): when the function returns, the decision survives a
crash or power cut. Undo appends a reversing action; redo appends another.

Every action records its *effects* (what rows it wrote, and the state they replaced), so undo
and redo are generic: the inverse of an effect is another effect, written as new rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.catalog import Catalog, CatalogError

UNDOABLE = ("confirm", "reject", "new_individual", "skip", "identify", "set_box", "confirm_box",
            "confirm_boxes", "mark_junk", "merge", "rename")


@dataclass(frozen=True)
class Done:
    """What a decision call recorded.

    Attributes:
        action_id: the audit-log entry (durable once the call returned).
        description: one line for the user ("Confirmed photo 12 as HW-0003").
        decision_id: the match-decision row written, if any.
        individual_id: the individual concerned, if any (the new one for new_individual).
    """

    action_id: int
    description: str
    decision_id: int | None = None
    individual_id: int | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a photo's history, oldest first in :func:`history`."""

    at: str
    kind: str  # box | identification | decision
    text: str
    who: str | None
    action_id: int | None


def _who(catalog: Catalog, who: str | None) -> str:
    return who or catalog.user


def _code(catalog: Catalog, individual_id: int | None) -> str:
    return catalog.individual(individual_id).code if individual_id is not None else "unidentified"


def resolve_individual(catalog: Catalog, individual_id: int) -> int:
    """The individual a (possibly merged-away) individual now lives on as.

    Raises:
        CatalogError: no such individual.
    """
    seen = set()
    ind = catalog.individual(individual_id)
    while ind.merged_into is not None and ind.id not in seen:
        seen.add(ind.id)
        ind = catalog.individual(ind.merged_into)
    return ind.id


def _check_photo(catalog: Catalog, photo_id: int) -> None:
    catalog.photo(photo_id)  # raises CatalogError naming the id


def _record(catalog: Catalog, kind: str, photo_id: int | None, who: str, description: str, fn,
            *, reverses: int | None = None, redoes: int | None = None) -> Done:
    """Write one action and its rows (``fn(action_id) -> (effects, decision_id, individual_id)``)."""
    with catalog.transaction(durable=True):
        action_id = catalog.add_action(kind, photo_id=photo_id, who=who, description=description,
                                       reverses=reverses, redoes=redoes)
        effects, decision_id, individual_id = fn(action_id)
        catalog.set_action_effects(action_id, effects)
    return Done(action_id, description, decision_id, individual_id)


def _set_identity(catalog: Catalog, photo_id: int, individual_id: int | None, how: str, who: str,
                  action_id: int, model_version: str | None = None) -> list:
    prev = catalog.current_individual(photo_id)
    row = catalog.add_identification(photo_id, individual_id, how=how, who=who, model_version=model_version,
                                     action_id=action_id)
    return ["ident", photo_id, individual_id, prev, row]


def _decide(catalog: Catalog, kind: str, decision: str, photo_id: int, individual_id: int | None,
            rank: int | None, score: float | None, model_version: str | None, who: str | None,
            description: str, ident_how: str | None) -> Done:
    _check_photo(catalog, photo_id)
    if individual_id is not None:
        individual_id = resolve_individual(catalog, individual_id)
    who = _who(catalog, who)

    def write(action_id: int):
        md = catalog.add_match_decision(photo_id, individual_id, decision=decision, rank=rank, score=score,
                                        model_version=model_version, who=who, action_id=action_id)
        effects = [["decision", md]]
        if ident_how:
            effects.append(_set_identity(catalog, photo_id, individual_id, ident_how, who, action_id,
                                         model_version))
        return effects, md, individual_id

    return _record(catalog, kind, photo_id, who, description, write)


def confirm(catalog: Catalog, photo_id: int, individual_id: int, *, rank: int | None = None,
            score: float | None = None, model_version: str | None = None, who: str | None = None) -> Done:
    """The query photo shows this individual: record the decision and identify the photo.

    Raises:
        CatalogError: unknown photo or individual, or the catalog is read-only.
    """
    desc = f"Confirmed photo {photo_id} as {_code(catalog, resolve_individual(catalog, individual_id))}"
    return _decide(catalog, "confirm", "confirm", photo_id, individual_id, rank, score, model_version, who,
                   desc, "confirmed_match")


def reject(catalog: Catalog, photo_id: int, individual_id: int, *, rank: int | None = None,
           score: float | None = None, model_version: str | None = None, who: str | None = None) -> Done:
    """The query photo does not show this candidate (the photo's identity is unchanged)."""
    desc = f"Rejected {_code(catalog, individual_id)} for photo {photo_id}"
    return _decide(catalog, "reject", "reject", photo_id, individual_id, rank, score, model_version, who,
                   desc, None)


def skip(catalog: Catalog, photo_id: int, *, model_version: str | None = None, who: str | None = None) -> Done:
    """Leave the photo for later (recorded, identity unchanged)."""
    return _decide(catalog, "skip", "skip", photo_id, None, None, None, model_version, who,
                   f"Skipped photo {photo_id}", None)


def new_individual(catalog: Catalog, photo_id: int, *, code: str | None = None, name: str | None = None,
                   model_version: str | None = None, who: str | None = None) -> Done:
    """The photo shows a whale not in the catalog: create it (code like ``HW-0001`` if not given).

    Raises:
        CatalogError: unknown photo, a code already in use, or a read-only catalog.
    """
    _check_photo(catalog, photo_id)
    who = _who(catalog, who)
    with catalog.transaction(durable=True):
        code = (code or catalog.next_code()).strip()
        ind = catalog.add_individual(code, name=name)

        def write(action_id: int):
            md = catalog.add_match_decision(photo_id, ind, decision="new", model_version=model_version,
                                            who=who, action_id=action_id)
            eff = _set_identity(catalog, photo_id, ind, "new_individual", who, action_id, model_version)
            return [["decision", md], eff], md, ind

        return _record(catalog, "new_individual", photo_id, who,
                       f"New individual {code} from photo {photo_id}", write)


def identify(catalog: Catalog, photo_id: int, individual_id: int | None, *, who: str | None = None) -> Done:
    """Assign the photo to an individual by hand (``None``: mark it unidentified again)."""
    _check_photo(catalog, photo_id)
    if individual_id is not None:
        catalog.individual(individual_id)
    who = _who(catalog, who)
    desc = f"Identified photo {photo_id} as {_code(catalog, individual_id)} by hand"

    def write(action_id: int):
        return [_set_identity(catalog, photo_id, individual_id, "manual", who, action_id)], None, individual_id

    return _record(catalog, "identify", photo_id, who, desc, write)


# ---------------------------------------------------------------- boxes
def _box_change(catalog: Catalog, kind: str, photo_id: int, who: str | None, description: str,
                **changes) -> Done:
    _check_photo(catalog, photo_id)
    who = _who(catalog, who)

    def write(action_id: int):
        cur = catalog.current_box(photo_id)
        fields = {
            "box": cur.box if cur else None, "source": cur.source if cur else "none",
            "confidence": cur.confidence if cur else None, "confirmed": cur.confirmed if cur else False,
            "junk": cur.junk if cur else False,
        }
        fields.update(changes)
        row = catalog.add_box(photo_id, fields.pop("box"), who=who, action_id=action_id, **fields)
        return [["box", photo_id, row, cur.id if cur else None]], None, None

    return _record(catalog, kind, photo_id, who, description, write)


def set_box(catalog: Catalog, photo_id: int, box: Sequence[float], *, who: str | None = None) -> Done:
    """The reviewer drew a box (x0, y0, x1, y1 in pixels of the oriented photo); it counts as confirmed.

    The previous box stays in the history (a new version is appended).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise CatalogError(f"photo {photo_id}: box {box} is empty (needs x1 > x0 and y1 > y0)")
    return _box_change(catalog, "set_box", photo_id, who, f"Drew a box on photo {photo_id}",
                       box=(x0, y0, x1, y1), source="manual", confidence=None, confirmed=True)


def confirm_box(catalog: Catalog, photo_id: int, *, who: str | None = None) -> Done:
    """The reviewer accepts the photo's current box as it is."""
    cur = catalog.current_box(photo_id)
    if cur is None or cur.box is None:
        raise CatalogError(f"photo {photo_id}: has no box to confirm")
    return _box_change(catalog, "confirm_box", photo_id, who, f"Confirmed the box of photo {photo_id}",
                       confirmed=True)


def detector_sure(source: str | None, confidence: float | None, min_confidence: float) -> bool:
    """Whether the detector drew a box at least ``min_confidence`` sure: the one rule for the box
    review's "sure boxes" (its view asks it of a photo card, :func:`confirm_sure_boxes` of the stored
    box). Labelled boxes the detector disagreed with, and hand-drawn ones, never count."""
    return source != "imported" and confidence is not None and confidence >= min_confidence


def confirm_sure_boxes(catalog: Catalog, photo_ids: Sequence[int], min_confidence: float, *,
                       who: str | None = None) -> Done:
    """Accept, in one undoable action, the boxes of these photos that the detector is sure of.

    For a field day of thousands of photos: the boxes at or above ``min_confidence`` (the box
    review's own threshold) are confirmed as they are; the others stay in the review. One Undo
    takes them all back.

    Raises:
        CatalogError: no photo has such a box (nothing is recorded, so an Undo never lands on an
            earlier decision).
    """
    who = _who(catalog, who)
    with catalog.transaction(durable=True):
        current = {pid: catalog.current_box(pid) for pid in dict.fromkeys(photo_ids)}
        sure = {pid: b for pid, b in current.items() if b is not None and b.box is not None and not b.confirmed
                and not b.junk and detector_sure(b.source, b.confidence, min_confidence)}
        if not sure:
            raise CatalogError(f"no unconfirmed box the detector is at least {min_confidence:.0%} sure of "
                               "among these photos")

        def write(action_id: int):
            effects = []
            for pid, cur in sure.items():
                row = catalog.add_box(pid, cur.box, source=cur.source, confidence=cur.confidence, confirmed=True,
                                      junk=False, who=who, action_id=action_id)
                effects.append(["box", pid, row, cur.id])
            return effects, None, None

        n = len(sure)
        return _record(catalog, "confirm_boxes", None, who,
                       f"Accepted {n} box{'es' if n != 1 else ''} the detector was sure of", write)


def mark_junk(catalog: Catalog, photo_id: int, junk: bool = True, *, who: str | None = None) -> Done:
    """Mark the photo unusable (no fluke, too blurred) or usable again; it leaves the review queue."""
    word = "unusable" if junk else "usable"
    return _box_change(catalog, "mark_junk", photo_id, who, f"Marked photo {photo_id} {word}", junk=junk)


# ---------------------------------------------------------------- individuals
def describe_merge(catalog: Catalog, keep_id: int, merge_id: int) -> str:
    """What :func:`merge_individuals` would change, in words, before the user agrees."""
    keep, gone = catalog.individual(keep_id), catalog.individual(merge_id)
    n = len(catalog.photos_of(merge_id))
    return (f"{n} photo{'s' if n != 1 else ''} of {gone.code} will become {keep.code}; "
            f"{gone.code} will be marked as merged into {keep.code}. This can be undone.")


def merge_individuals(catalog: Catalog, keep_id: int, merge_id: int, *, who: str | None = None) -> Done:
    """Merge individual ``merge_id`` into ``keep_id``: its photos are re-identified, it is retired.

    Raises:
        CatalogError: the same individual twice, an unknown id, or one already merged away.
    """
    if keep_id == merge_id:
        raise CatalogError(f"cannot merge individual {keep_id} into itself")
    keep, gone = catalog.individual(keep_id), catalog.individual(merge_id)
    for ind in (keep, gone):
        if ind.merged_into is not None:
            raise CatalogError(f"individual {ind.code} was already merged into another")
    who = _who(catalog, who)

    def write(action_id: int):
        effects = [_set_identity(catalog, p, keep_id, "merge", who, action_id) for p in catalog.photos_of(merge_id)]
        catalog.update_individual(merge_id, merged_into=keep_id)
        effects.append(["indiv", merge_id, {"merged_into": None}, {"merged_into": keep_id}])
        return effects, None, keep_id

    return _record(catalog, "merge", None, who, f"Merged {gone.code} into {keep.code}", write)


def rename_individual(catalog: Catalog, individual_id: int, *, code: str | None = None,
                      name: str | None = None, notes: str | None = None, who: str | None = None) -> Done:
    """Change an individual's code, name or notes (only the ones given).

    Raises:
        CatalogError: the new code is empty or already used.
    """
    ind = catalog.individual(individual_id)
    new = {k: v for k, v in (("code", code), ("name", name), ("notes", notes)) if v is not None}
    if "code" in new:
        new["code"] = new["code"].strip()
        if not new["code"]:
            raise CatalogError(f"individual {ind.code}: the code cannot be empty")
    old = {k: getattr(ind, k) for k in new}
    who = _who(catalog, who)

    def write(action_id: int):
        catalog.update_individual(individual_id, **new)
        return [["indiv", individual_id, old, new]], None, individual_id

    return _record(catalog, "rename", None, who, f"Renamed {ind.code}" + (
        f" to {new['code']}" if "code" in new else ""), write)


# ---------------------------------------------------------------- undo / redo
def _invert(catalog: Catalog, effects: list, action_id: int, who: str, how: str) -> list:
    out = []
    for eff in reversed(effects):
        kind = eff[0]
        if kind == "ident":
            _, photo, new, prev, _row = eff
            row = catalog.add_identification(photo, prev, how=how, who=who, action_id=action_id)
            out.append(["ident", photo, prev, new, row])
        elif kind == "decision":
            md = catalog.match_decision(eff[1])
            u = catalog.add_match_decision(md.query_photo_id, md.individual_id, decision="undo", rank=md.rank,
                                           score=md.score, model_version=md.model_version, who=who,
                                           action_id=action_id, reverses=md.id)
            out.append(["decision_undo", u, md.id])
        elif kind == "decision_undo":
            md = catalog.match_decision(eff[2])
            new = catalog.add_match_decision(md.query_photo_id, md.individual_id, decision=md.decision,
                                             rank=md.rank, score=md.score, model_version=md.model_version,
                                             who=who, action_id=action_id)
            out.append(["decision", new])
        elif kind == "box":
            _, photo, new_row, prev_row = eff
            if prev_row is None:
                row = catalog.add_box(photo, None, source="none", who=who, action_id=action_id)
            else:
                b = catalog.box_row(prev_row)
                row = catalog.add_box(photo, b.box, source=b.source, confidence=b.confidence,
                                      confirmed=b.confirmed, junk=b.junk, who=who, action_id=action_id)
            out.append(["box", photo, row, new_row])
        elif kind == "indiv":
            _, ind, old, new = eff
            catalog.update_individual(ind, **old)
            out.append(["indiv", ind, new, old])
        else:  # pragma: no cover - written by this module only
            raise CatalogError(f"action {action_id}: unknown effect {kind!r}")
    return out


def can_undo(catalog: Catalog) -> str | None:
    """Description of what :func:`undo` would reverse, or None when there is nothing to undo."""
    target = catalog.undo_target(UNDOABLE)
    return target.description if target else None


def can_redo(catalog: Catalog) -> str | None:
    """Description of what :func:`redo` would re-apply, or None."""
    target = catalog.redo_target(UNDOABLE)
    return catalog.action(target.reverses).description if target else None


def undo(catalog: Catalog, *, who: str | None = None) -> Done | None:
    """Reverse the latest decision not yet undone, by appending reversing rows. None: nothing to undo."""
    who = _who(catalog, who)
    with catalog.transaction(durable=True):
        target = catalog.undo_target(UNDOABLE)
        if target is None:
            return None
        return _record(catalog, "undo", target.photo_id, who,
                       f"Undo: {target.description.removeprefix('Redo: ')}",
                       lambda aid: (_invert(catalog, target.effects, aid, who, "undo"), None, None),
                       reverses=target.id)


def redo(catalog: Catalog, *, who: str | None = None) -> Done | None:
    """Re-apply the latest undone decision (unless a new decision came since). None: nothing to redo."""
    who = _who(catalog, who)
    with catalog.transaction(durable=True):
        target = catalog.redo_target(UNDOABLE)
        if target is None:
            return None
        original = catalog.action(target.reverses)
        return _record(catalog, "redo", target.photo_id, who, f"Redo: {original.description}",
                       lambda aid: (_invert(catalog, target.effects, aid, who, "redo"), None, None),
                       redoes=target.id)


def rejected_individuals(catalog: Catalog, photo_id: int) -> set[int]:
    """Individuals the reviewer rejected for this photo (rejections since undone do not count)."""
    return {d.individual_id for d in catalog.match_decisions(photo_id, effective_only=True)
            if d.decision == "reject" and d.individual_id is not None}


# ---------------------------------------------------------------- history
def _fmt_box(box) -> str:
    return "none" if box is None else "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


def history(catalog: Catalog, photo_id: int) -> list[HistoryEntry]:
    """Everything recorded about a photo (boxes, identifications, match decisions), oldest first."""
    _check_photo(catalog, photo_id)
    codes = {i.id: i.code for i in catalog.individuals(include_merged=True)}
    out: list[tuple[str, int, HistoryEntry]] = []
    for b in catalog.box_history(photo_id):
        flags = "".join([", confirmed" if b.confirmed else "", ", unusable" if b.junk else ""])
        text = f"box {_fmt_box(b.box)} ({b.source}{flags})"
        out.append((b.created_at, 0, HistoryEntry(b.created_at, "box", text, b.who, b.action_id)))
    for i in catalog.identification_history(photo_id):
        who_is = codes.get(i.individual_id, "unidentified") if i.individual_id else "unidentified"
        text = f"identified as {who_is} ({i.how})"
        out.append((i.at, 1, HistoryEntry(i.at, "identification", text, i.who, i.action_id)))
    for d in catalog.match_decisions(photo_id):
        cand = codes.get(d.individual_id, "") if d.individual_id else ""
        if d.decision == "undo":
            text = f"undid decision #{d.reverses}"
        else:
            extra = f" (rank {d.rank}, score {d.score:.3f})" if d.rank is not None and d.score is not None else ""
            text = f"{d.decision} {cand}".strip() + extra
        out.append((d.at, 2, HistoryEntry(d.at, "decision", text, d.who, d.action_id)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [e for _, _, e in out]
