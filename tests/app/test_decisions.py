"""Decisions: appended, undone and redone as new records; history; merges; box edits."""

from __future__ import annotations

import pytest

from app.catalog import CatalogError
from app.services import decisions as D


@pytest.fixture
def two_photos(catalog):
    a = catalog.add_photo(path="/a.jpg", sha256="a", size=1, width=100, height=80)
    b = catalog.add_photo(path="/b.jpg", sha256="b", size=1, width=100, height=80)
    return a, b


def _rows(cat, table):
    return cat._query(f"SELECT count(*) FROM {table}")[0][0]


def test_confirm_reject_new_are_appended_with_model_version(catalog, two_photos):
    a, b = two_photos
    new = D.new_individual(catalog, a, model_version="m1", who="ann")
    assert catalog.individual(new.individual_id).code == "HW-0001"
    D.reject(catalog, b, new.individual_id, rank=2, score=0.3, model_version="m1", who="bob")
    done = D.confirm(catalog, b, new.individual_id, rank=1, score=0.93, model_version="m1", who="bob")
    md = catalog.match_decision(done.decision_id)
    assert (md.decision, md.rank, md.score, md.model_version, md.who) == ("confirm", 1, 0.93, "m1", "bob")
    assert catalog.current_individual(b) == new.individual_id
    assert catalog.current_identification(b).how == "confirmed_match"
    assert [d.decision for d in catalog.match_decisions(b)] == ["reject", "confirm"]


def test_undo_redo_append_and_restore_state(catalog, two_photos):
    a, b = two_photos
    ind = D.new_individual(catalog, a).individual_id
    D.confirm(catalog, b, ind, rank=1, score=0.9)
    n_before = _rows(catalog, "match_decisions"), _rows(catalog, "identifications")
    assert D.can_undo(catalog).startswith("Confirmed photo")
    D.undo(catalog)
    assert catalog.current_individual(b) is None
    assert catalog.match_decisions(b, effective_only=True) == []
    # nothing was deleted: one undo row per table was appended
    assert (_rows(catalog, "match_decisions"), _rows(catalog, "identifications")) == (n_before[0] + 1,
                                                                                      n_before[1] + 1)
    D.undo(catalog)
    assert catalog.current_individual(a) is None
    assert D.redo(catalog).description == "Redo: New individual HW-0001 from photo 1"
    assert catalog.current_individual(a) == ind
    D.redo(catalog)
    assert catalog.current_individual(b) == ind
    assert [d.decision for d in catalog.match_decisions(b, effective_only=True)] == ["confirm"]
    assert D.redo(catalog) is None
    # a fresh decision clears the redo stack
    D.undo(catalog)
    D.skip(catalog, b)
    assert D.redo(catalog) is None and D.can_redo(catalog) is None
    kinds = [x.kind for x in catalog.actions()][::-1]
    assert kinds == ["new_individual", "confirm", "undo", "undo", "redo", "redo", "undo", "skip"]


def test_history_lists_decisions_and_undo(catalog, two_photos):
    a, b = two_photos
    ind = D.new_individual(catalog, a).individual_id
    D.confirm(catalog, b, ind, rank=1, score=0.5)
    D.undo(catalog)
    texts = [h.text for h in D.history(catalog, b)]
    # the confirmation's two rows, then the undo's two rows (which of an action's rows comes first
    # is not specified: they can share a timestamp)
    assert len(texts) == 4
    assert set(texts[:2]) == {"confirm HW-0001 (rank 1, score 0.500)", "identified as HW-0001 (confirmed_match)"}
    confirm_id = [d.id for d in catalog.match_decisions(b) if d.decision == "confirm"][0]
    assert set(texts[2:]) == {"identified as unidentified (undo)", f"undid decision #{confirm_id}"}


def test_box_edits_keep_every_version_and_undo(catalog, two_photos):
    a, _ = two_photos
    catalog.add_box(a, (0, 0, 50, 40), source="auto", confidence=0.7)
    D.set_box(catalog, a, (5, 5, 60, 50))
    D.mark_junk(catalog, a)
    assert catalog.current_box(a).junk
    assert a not in catalog.unidentified_photo_ids()
    D.undo(catalog)
    D.undo(catalog)
    cur = catalog.current_box(a)
    assert cur.box == (0, 0, 50, 40) and cur.source == "auto" and not cur.junk
    assert len(catalog.box_history(a)) == 5
    D.confirm_box(catalog, a)
    assert catalog.current_box(a).confirmed
    with pytest.raises(CatalogError, match="empty"):
        D.set_box(catalog, a, (10, 10, 5, 20))


def test_merge_describes_then_moves_photos_and_undoes(catalog, two_photos):
    a, b = two_photos
    x = D.new_individual(catalog, a).individual_id
    y = D.new_individual(catalog, b).individual_id
    assert D.describe_merge(catalog, x, y).startswith("1 photo of HW-0002 will become HW-0001")
    D.merge_individuals(catalog, x, y)
    assert catalog.photos_of(x) == [a, b] and catalog.individual(y).merged_into == x
    assert [i.code for i in catalog.individuals()] == ["HW-0001"]
    D.undo(catalog)
    assert catalog.photos_of(y) == [b] and catalog.individual(y).merged_into is None
    with pytest.raises(CatalogError):
        D.merge_individuals(catalog, x, x)


def test_rename_and_undo(catalog, two_photos):
    a, _ = two_photos
    x = D.new_individual(catalog, a).individual_id
    D.rename_individual(catalog, x, code="Notch", name="Notchy")
    assert catalog.individual(x).code == "Notch"
    D.undo(catalog)
    assert (catalog.individual(x).code, catalog.individual(x).name) == ("HW-0001", None)


def test_unknown_ids_raise_clear_errors(catalog, two_photos):
    with pytest.raises(CatalogError, match="no photo with id 99"):
        D.skip(catalog, 99)
    with pytest.raises(CatalogError, match="no individual with id 7"):
        D.confirm(catalog, two_photos[0], 7)


def test_rejected_individuals_respect_undo(catalog, two_photos):
    a, b = two_photos
    x = D.new_individual(catalog, a).individual_id
    D.reject(catalog, b, x, rank=1, score=0.2)
    assert D.rejected_individuals(catalog, b) == {x}
    D.undo(catalog)
    assert D.rejected_individuals(catalog, b) == set()


def test_confirming_a_merged_away_individual_goes_to_the_kept_one(catalog, two_photos):
    a, b = two_photos
    c = catalog.add_photo(path="/c.jpg", sha256="c", size=1)
    x = D.new_individual(catalog, a).individual_id
    y = D.new_individual(catalog, b).individual_id
    D.merge_individuals(catalog, x, y)
    done = D.confirm(catalog, c, y, rank=1, score=0.7)  # a stale candidate list still shows y
    assert catalog.current_individual(c) == x and "HW-0001" in done.description
