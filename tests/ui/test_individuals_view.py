"""The individuals list shows each code whole (seen on a real catalog: 'hwk:w_0369a5c' was cut off)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_the_code_column_fits_the_longest_code_within_bounds(qtbot):
    from app.services.viewdata import IndividualRow
    from app.ui.images import ImageCache
    from app.ui.individuals_view import CODE_COLUMN_MAX, CODE_COLUMN_MIN, IndividualsView

    view = IndividualsView(ImageCache())
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.show()
    header = view.table.horizontalHeader()
    fm = view.table.fontMetrics()
    codes = ["hwk:w_0369a5c", "hwk:w_e1ffbe2", "HW-1"]
    view.set_individuals([IndividualRow(i, c, photo_count=1) for i, c in enumerate(codes)], [])
    assert header.sectionSize(0) >= fm.horizontalAdvance("hwk:w_0369a5c") + 24  # room for the sort arrow
    view.set_individuals([IndividualRow(1, "A")], [])
    assert header.sectionSize(0) == CODE_COLUMN_MIN
    view.set_individuals([IndividualRow(1, "x" * 300)], [])
    assert header.sectionSize(0) == CODE_COLUMN_MAX  # a pathological code does not push the rest away
    view.set_individuals([], [])
    assert header.sectionSize(0) == CODE_COLUMN_MIN
