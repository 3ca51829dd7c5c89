"""The shape every long job of the services shares: ``progress(fraction, message)``, ``should_stop()``.

:func:`each_photo` is the loop of the per-photo background jobs (local features, detection,
embedding): it polls ``should_stop`` before each photo, reports progress, and stops with
:class:`model.api.Interrupted` carrying the job's partial report, so what was stored stays and
the next run continues where this one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from model.api import Interrupted

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


def each_photo(todo: Sequence[int], what: str, *, progress: ProgressFn | None = None,
               should_stop: StopFn | None = None, report: Any = None, step: str = "{what} {i}/{n}") -> Iterator[int]:
    """Yield the photo ids of ``todo`` one by one, as a stoppable job with progress.

    Args:
        todo: the photo ids to work on.
        what: the work, for the messages ("local features": "local features 3/40",
            "local features stopped after 2 of 40 photos").
        progress: told ``(i / len(todo), step)`` before each photo.
        should_stop: polled before each photo.
        report: attached to the :class:`Interrupted` as ``report`` (the work done so far).
        step: the progress message, formatted with ``what``, ``i`` (1-based) and ``n``.

    Raises:
        Interrupted: ``should_stop()`` returned True.
    """
    n = len(todo)
    for i, pid in enumerate(todo):
        if should_stop is not None and should_stop():
            err = Interrupted(f"{what} stopped after {i} of {n} photos")
            err.report = report  # type: ignore[attr-defined]
            raise err
        if progress is not None:
            progress(i / max(n, 1), step.format(what=what, i=i + 1, n=n))
        yield pid
