"""Reference cycles holding Qt objects are destroyed on the GUI thread, never by a worker."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QObject

from app.ui import gcguard


class _Owner:
    """A cycle (self -> lambda -> self) that keeps a Qt object, as a dialog's slot closures do."""

    def __init__(self):
        self.qobject = QObject()
        self.slot = lambda: self


def test_a_worker_that_allocates_does_not_collect_a_qt_cycle(qapp):
    gcguard.install()
    assert gcguard.installed()
    gc.collect()
    owner = _Owner()
    ref = weakref.ref(owner)
    destroyed_on: list[str] = []
    owner.qobject.destroyed.connect(lambda *_: destroyed_on.append(threading.current_thread().name))
    del owner
    assert ref() is not None  # a cycle: reference counting alone cannot free it

    kept: list = []

    def allocate():
        # far past the generation-0 threshold: the automatic collector would have run here
        kept.extend([[i] for i in range(gc.get_threshold()[0] * 20)])
        gcguard.collect_if_due()  # refuses off the GUI thread

    worker = threading.Thread(target=allocate, name="worker")
    worker.start()
    worker.join()
    assert ref() is not None, "the cycle was collected by the worker thread"
    assert destroyed_on == []

    assert gcguard.collect_if_due() > 0
    assert ref() is None
    assert destroyed_on in ([], [threading.main_thread().name])
    kept.clear()


def test_the_application_installs_it(qapp):
    from app.ui.app import application

    application()
    assert gcguard.installed()
    assert not gc.isenabled()
