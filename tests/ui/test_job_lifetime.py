"""No job outlives its owner (issue 17, item 3): a late signal is dropped, never run on a closed catalog."""

from __future__ import annotations

import threading

import pytest

from app.services import retraining
from app.ui.workers import JobRunner
from model.api import Interrupted
from tests.app.retrain_fakes import (
    catalog_fixture,  # noqa: F401  (the `catalog` fixture)
    fake_training_env,
)
from tests.ui.conftest import open_and_wait

pytestmark = pytest.mark.gui


def test_signals_of_a_job_ending_after_its_catalog_closed_are_dropped(qtbot):
    closed = threading.Event()
    release = threading.Event()
    runner = JobRunner(alive=lambda: not closed.is_set())
    seen: list = []

    def job(progress, should_stop):
        release.wait(5)
        progress(1.0, "done")
        return "late"

    j = runner.submit("late", job, on_result=seen.append, on_progress=lambda f, m: seen.append(m),
                      on_finished=lambda: seen.append("finished"))
    closed.set()  # the owner closes its catalog while the job still runs
    release.set()
    qtbot.waitUntil(lambda: j.done, timeout=5000)
    assert seen == []
    assert runner.dropped >= 3 and runner.running == []
    assert j.settled


def test_shutdown_cancels_waits_and_then_runs_nothing(qtbot):
    runner = JobRunner()
    started = threading.Event()
    seen: list = []

    def endless(progress, should_stop):
        started.set()
        while not should_stop():
            threading.Event().wait(0.01)
        raise Interrupted("stopped")

    job = runner.submit("endless", endless, on_cancelled=lambda: seen.append("cancelled"),
                        on_finished=lambda: seen.append("finished"))
    assert started.wait(5)
    assert runner.shutdown(5000)
    assert job.stop_event.is_set() and runner.pool.activeThreadCount() == 0
    qtbot.wait(100)  # the queued cancelled/finished arrive now: dropped
    assert seen == [] and runner.running == []
    late = runner.submit("after", lambda p, s: seen.append("ran"), on_result=seen.append)
    qtbot.wait(100)
    assert late.done and seen == []


def test_result_settles_the_job_before_finished(qtbot):
    runner = JobRunner()
    states = []
    holder = []
    holder.append(runner.submit("x", lambda p, s: 1,
                                on_result=lambda v: states.append((holder[0].settled, holder[0].done))))
    qtbot.waitUntil(lambda: holder[0].done, timeout=5000)
    assert states == [(True, False)]  # the next job may start from the result slot


def test_events_reach_the_gui_thread(qtbot):
    runner = JobRunner()
    events = []

    def job(progress, should_stop):
        for i in range(3):
            progress.event({"epoch": i})

    with qtbot.waitSignal(runner.job_finished, timeout=5000):
        runner.submit("events", job, on_event=events.append)
    assert events == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    path = fake_training_env(tmp_path, monkeypatch)
    monkeypatch.setenv(retraining.TRAINING_PYTHON_ENV, path)
    return path


def test_model_switch_finishing_after_the_catalog_closed_touches_nothing(qtbot, catalog, fake_python,
                                                                         monkeypatch):
    """The teardown error of test_model_versions_lists_and_switches, made certain: the catalog closes
    as soon as the switch reports its result, before its ``finished`` arrives."""
    import numpy as np

    from app.ui.model_versions import ModelVersionsDialog

    def embed_missing(cat, engine, version, *, progress=None, should_stop=None):
        for pid in cat.photos_missing_embedding(version):
            cat.put_embedding(pid, version, np.zeros(engine.embedding_dim, np.float32))

    monkeypatch.setattr("app.services.matching.embed_missing", embed_missing)
    result = retraining.retrain(catalog, retraining.RetrainOptions(epochs=1, detector=False))
    dlg = ModelVersionsDialog(catalog)
    qtbot.addWidget(dlg)
    dlg.select_version(result.version)
    dlg.model_activated.connect(lambda _v: catalog.close())
    with qtbot.waitSignal(dlg.model_activated, timeout=30000):
        dlg.activate_selected()
    qtbot.waitUntil(lambda: not dlg.jobs.running, timeout=5000)
    qtbot.wait(50)
    assert dlg.jobs.dropped >= 1  # its finished -> refresh() on the closed catalog never ran


def test_closing_the_window_leaves_no_job_behind(qtbot, settings, ui_catalog):
    from app.ui.main_window import MainWindow

    folder, new_photos = ui_catalog
    win = MainWindow(settings, confirm_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    open_and_wait(qtbot, win, folder)
    failures = []
    for runner in (win.jobs, win.writer, win.light):
        runner.job_failed.connect(lambda name, exc: failures.append((name, exc)))
    win.import_photos([str(p) for p in new_photos])  # a slow job, still running at close
    win.show_view("match")
    win.refresh()
    win.close()
    assert win.session.catalog.closed
    assert all(r.pool.activeThreadCount() == 0 and not r.running for r in (win.jobs, win.writer, win.light))
    qtbot.wait(300)  # queued signals of the jobs arrive now: none reaches a slot
    assert failures == []
    assert win.jobs.submit("late", lambda p, s: 1).done


def test_a_finished_job_and_what_its_slots_captured_are_freed(qtbot):
    import gc
    import weakref

    class Captured:  # stands for what a slot closes over: a session and its descriptor index
        pass

    runner = JobRunner()
    results: list = []
    refs = []
    for _ in range(3):
        captured = Captured()
        job = runner.submit("work", lambda p, s: 42, on_result=lambda v, c=captured: results.append((v, c)),
                            on_finished=lambda c=captured: None)
        qtbot.waitUntil(lambda j=job: j.done, timeout=10000)
        refs.append((weakref.ref(job), weakref.ref(captured)))
        del job, captured
    results.clear()
    gc.collect()
    assert [(j() is None, c() is None) for j, c in refs] == [(True, True)] * 3
