"""The per-photo job loop shared by local features, detection and embedding."""

from __future__ import annotations

import pytest

from app.services.jobs import each_photo
from model.api import Interrupted


def test_each_photo_reports_progress_and_stops_with_the_work_done_so_far():
    seen: list[tuple[float, str]] = []
    done: list[int] = []
    report = {"done": done}
    with pytest.raises(Interrupted, match="features stopped after 2 of 4 photos") as info:
        for pid in each_photo([10, 11, 12, 13], "features", progress=lambda f, m: seen.append((f, m)),
                              should_stop=lambda: len(done) == 2, report=report):
            done.append(pid)
    assert done == [10, 11]
    assert info.value.report is report
    assert seen == [(0.0, "features 1/4"), (0.25, "features 2/4")]


def test_each_photo_without_callbacks_and_with_a_custom_step():
    assert list(each_photo([1, 2], "x")) == [1, 2]
    seen: list[str] = []
    list(each_photo([5], "embedding", progress=lambda f, m: seen.append(m), step="Embedding photo {i}/{n}"))
    assert seen == ["Embedding photo 1/1"]
