"""Property: any sequence of decisions, undos and redos behaves like a linear undo stack.

An oracle keeps the catalog state after each fresh decision; undo must bring back the state
before the undone decision, redo the state after it, and a fresh decision clears the redo stack.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.catalog import Catalog, CatalogError
from app.services import decisions as D

N_PHOTOS = 3

op = st.one_of(
    st.tuples(st.just("confirm"), st.integers(0, N_PHOTOS - 1), st.integers(0, 3)),
    st.tuples(st.just("reject"), st.integers(0, N_PHOTOS - 1), st.integers(0, 3)),
    st.tuples(st.just("new"), st.integers(0, N_PHOTOS - 1), st.just(0)),
    st.tuples(st.just("box"), st.integers(0, N_PHOTOS - 1), st.integers(10, 50)),
    st.tuples(st.just("junk"), st.integers(0, N_PHOTOS - 1), st.booleans()),
    st.tuples(st.just("merge"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("rename"), st.integers(0, 3), st.integers(0, 99)),
    st.tuples(st.just("undo"), st.just(0), st.just(0)),
    st.tuples(st.just("redo"), st.just(0), st.just(0)),
)


def _state(cat: Catalog, photos: list[int]):
    idents = {p: cat.current_individual(p) for p in photos}
    inds = {i: (cat.individual(i).code, cat.individual(i).merged_into)
            for i in set(idents.values()) if i is not None}
    boxes = {}
    for p in photos:
        b = cat.current_box(p)
        boxes[p] = None if b is None else (b.box, b.confirmed, b.junk)
    decisions = sorted((d.query_photo_id, d.individual_id or 0, d.decision)
                       for d in cat.match_decisions(effective_only=True))
    return idents, inds, boxes, decisions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=14))
def test_undo_redo_is_a_linear_stack(ops):
    with tempfile.TemporaryDirectory() as d, Catalog.create(Path(d) / "c") as cat:
        photos = [cat.add_photo(path=f"/p{i}.jpg", sha256=str(i), size=1) for i in range(N_PHOTOS)]
        for p in photos:
            cat.add_box(p, (0, 0, 5, 5), source="auto", confidence=0.5)
        stack, idx = [_state(cat, photos)], 0
        for kind, a, b in ops:
            inds = [i.id for i in cat.individuals(include_merged=True)]
            if kind == "undo":
                done = D.undo(cat)
                assert (done is None) == (idx == 0)
                idx = max(idx - 1, 0)
            elif kind == "redo":
                done = D.redo(cat)
                assert (done is None) == (idx == len(stack) - 1)
                idx = min(idx + 1, len(stack) - 1)
            else:
                try:
                    if kind == "confirm" and inds:
                        D.confirm(cat, photos[a], inds[b % len(inds)], rank=1, score=0.5)
                    elif kind == "reject" and inds:
                        D.reject(cat, photos[a], inds[b % len(inds)], rank=2, score=0.1)
                    elif kind == "new":
                        D.new_individual(cat, photos[a])
                    elif kind == "box":
                        D.set_box(cat, photos[a], (1, 1, b, b))
                    elif kind == "junk":
                        D.mark_junk(cat, photos[a], b)
                    elif kind == "merge" and len(inds) >= 2:
                        D.merge_individuals(cat, inds[a % len(inds)], inds[b % len(inds)])
                    elif kind == "rename" and inds:
                        D.rename_individual(cat, inds[a % len(inds)], code=f"R{b}-{len(stack)}")
                    else:
                        continue
                except CatalogError:
                    continue  # refused (merge into itself, merged-away individual): nothing recorded
                stack = stack[: idx + 1] + [_state(cat, photos)]
                idx += 1
            assert _state(cat, photos) == stack[idx]
        assert cat.integrity_check() == "ok"
