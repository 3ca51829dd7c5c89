"""Retraining: the process runner, the JSON-lines protocol, the pipeline, cancel, crash, activation.

Most tests drive the pipeline with a *fake training Python* (a script that answers
``-m app train|export|train-detector`` quickly, and hands anything else to the real Python), so
they check the service's own logic in a second each. ``test_real_retrain_end_to_end`` runs the
real training entry point (tiny configuration, CPU).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from app.services import retraining
from app.services.retraining import (
    RetrainOptions,
    TrainingEvent,
    TrainingFailed,
    check_training_python,
    parse_event_line,
    run_training_process,
)
from model.api import BundleError, Interrupted, verify_bundle
from tests.app.retrain_fakes import (
    REPO,
    catalog_fixture,  # noqa: F401  (the `catalog` fixture)
    fake_training_env,
    make_catalog,
)


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    return fake_training_env(tmp_path, monkeypatch)


# --- the protocol and the runner ------------------------------------------------------------------


def test_parse_event_line():
    ev = parse_event_line('{"event": "epoch", "epoch": 2, "epochs": 4, "loss": 0.5, "val_top5": 0.25}\n')
    assert ev.kind == "epoch" and ev.data["loss"] == 0.5 and ev.fraction() == 0.5
    assert parse_event_line('{"event": "done", "run_dir": "/r"}').data == {"run_dir": "/r"}
    assert parse_event_line("   \n") is None
    assert parse_event_line("Warning: something").kind == "log"
    assert parse_event_line('{"not": "an event"}').kind == "log"
    assert parse_event_line("{broken json").kind == "log"


def _script(tmp_path: Path, body: str) -> list[str]:
    p = tmp_path / "child.py"
    p.write_text(textwrap.dedent(body))
    return [sys.executable, str(p)]


def test_runner_collects_events_and_returns_done(tmp_path):
    cmd = _script(tmp_path, """
        import json
        print(json.dumps({"event": "start", "epochs": 2}))
        print("a log line")
        for e in (1, 2):
            print(json.dumps({"event": "epoch", "epoch": e, "epochs": 2, "loss": 1.0 / e}), flush=True)
        print(json.dumps({"event": "done", "run_dir": "RUN"}))
    """)
    seen: list[TrainingEvent] = []
    done = run_training_process(cmd, on_event=seen.append, log_path=tmp_path / "log.txt")
    assert done.data["run_dir"] == "RUN"
    assert [e.kind for e in seen] == ["start", "log", "epoch", "epoch", "done"]
    assert "a log line" in (tmp_path / "log.txt").read_text()


def test_runner_crash_is_a_clear_error(tmp_path):
    cmd = _script(tmp_path, """
        import json, sys
        print(json.dumps({"event": "epoch", "epoch": 1, "epochs": 3, "loss": 1.0}), flush=True)
        print("RuntimeError: CUDA out of memory", file=sys.stderr)
        sys.exit(1)
    """)
    with pytest.raises(TrainingFailed, match=r"exited with code 1: RuntimeError: CUDA out of memory"):
        run_training_process(cmd)


def test_runner_error_event_and_missing_done(tmp_path):
    cmd = _script(tmp_path, """
        import json
        print(json.dumps({"event": "error", "message": "labels.csv: no individual has 2 photos"}))
    """)
    with pytest.raises(TrainingFailed, match="labels.csv: no individual has 2 photos"):
        run_training_process(cmd)
    cmd = _script(tmp_path, "print('bye')\n")
    with pytest.raises(TrainingFailed, match="ended without finishing"):
        run_training_process(cmd)
    assert run_training_process(cmd, require_done=False) is None


def test_runner_cancel_stops_the_process_group(tmp_path):
    marker = tmp_path / "stopped"
    cmd = _script(tmp_path, f"""
        import json, signal, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a trainer's duty (app.cli.interruptible)
        try:
            for e in range(1, 100000):  # about 80 minutes unless stopped
                print(json.dumps({{"event": "epoch", "epoch": e, "epochs": 99999, "loss": 1.0}}), flush=True)
                time.sleep(0.05)
        except KeyboardInterrupt:
            open({str(marker)!r}, "w").write("checkpoint kept")
            raise SystemExit(130)
    """)
    seen = []
    asked: list[float] = []

    def should_stop() -> bool:
        if len(seen) >= 3 and not asked:
            asked.append(time.monotonic())
        return bool(asked)

    with pytest.raises(Interrupted):
        run_training_process(cmd, on_event=seen.append, should_stop=should_stop)
    # stopped soon after it was asked (a generous bound: a busy CI machine once took 15 s from the start)
    assert time.monotonic() - asked[0] < 60
    assert marker.read_text() == "checkpoint kept"  # it got SIGINT and could save


def test_check_training_python(tmp_path):
    ok, message = check_training_python(sys.executable)
    assert ok and "PyTorch" in message
    ok, message = check_training_python(str(tmp_path / "no-such-python"))
    assert not ok and "not found" in message
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text(f"#!{sys.executable}\nimport sys\nsys.modules['torch'] = None\n"
                        "exec(compile(sys.argv[2], '<probe>', 'exec'))\n")
    no_torch.chmod(0o755)
    ok, message = check_training_python(str(no_torch))
    assert not ok and "PyTorch is not installed" in message
    ok, message = check_training_python(None)
    assert not ok and "no training Python is configured" in message


def test_training_python_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUKEID_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv(retraining.TRAINING_PYTHON_ENV, raising=False)
    assert retraining.load_training_python() is None
    retraining.save_training_python("/opt/train/bin/python")
    assert retraining.load_training_python() == "/opt/train/bin/python"
    assert retraining.resolve_training_python() == "/opt/train/bin/python"
    assert retraining.resolve_training_python("/explicit") == "/explicit"
    assert retraining.settings_path() == tmp_path / "retraining.json"  # app.paths.config_dir, overridden


def test_child_processes_start_in_the_checkout_root():
    # the runner and the probe start ``python -m app`` there; the package moved one folder deeper
    from app.services.retraining.process import _repo_root

    assert (Path(_repo_root()) / "app" / "services" / "retraining" / "process.py").is_file()


def test_verdicts():
    base = dict(version="new", bundle=Path("b"), run_dir=Path("r"), active_version="old")
    better = retraining.RetrainResult(new_metrics={"top1": 0.5, "top5": 0.9, "map5": 0.6},
                                      active_metrics={"top1": 0.4, "top5": 0.9, "map5": 0.5}, heldout=10, **base)
    assert better.is_better() and "is better" in better.verdict()
    worse = retraining.RetrainResult(new_metrics={"top1": 0.3, "top5": 0.9, "map5": 0.4},
                                     active_metrics={"top1": 0.4, "top5": 0.9, "map5": 0.5}, heldout=10, **base)
    assert not worse.is_better() and "keeping the current model is advised" in worse.verdict()
    assert worse.comparison_rows()[1] == ("top-1", "40.0%", "30.0%")
    none = retraining.RetrainResult(new_metrics={"top1": None, "top5": None, "map5": None},
                                    active_metrics={"top1": None}, heldout=0, **base)
    assert "were not compared" in none.verdict()


def test_multi_gpu_command_uses_torchrun(tmp_path):
    data = retraining.TrainingData(tmp_path / "l.csv", tmp_path / "h.csv", tmp_path, (), (), "t")
    cmd = retraining.training_command("py", data, tmp_path / "run", RetrainOptions(gpus=2, epochs=3, device="cuda"))
    assert cmd[:5] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:8] == ["-m", "app", "train"] and "--progress-json" in cmd and cmd[cmd.index("--epochs") + 1] == "3"


# --- the training set ------------------------------------------------------------------------------


def test_summary_and_prepared_data(catalog, tmp_path):
    s = retraining.training_set_summary(catalog)
    assert (s.individuals, s.photos, s.boxes, s.individuals_2plus) == (4, 16, 16, 4)
    assert s.active_version == "m-initial" and s.trainable
    assert s.new_boxes == 4  # one manual box per individual, detector never trained
    data = retraining.prepare_training_data(catalog, tmp_path / "data")
    rows = data.labels.read_text().splitlines()
    held = data.heldout.read_text().splitlines()
    assert rows[0] == "image,individual_id,id_known,x0,y0,x1,y1"
    assert len(rows) - 1 == len(data.train) and len(held) - 1 == len(data.held) == 4  # one per individual
    assert not {p.photo_id for p in data.train} & {p.photo_id for p in data.held}
    first = rows[1].split(",")
    assert (data.images / first[0]).is_file() and float(first[5]) > float(first[3])
    # the held-out choice is stable
    again = retraining.prepare_training_data(catalog, tmp_path / "data2")
    assert [p.photo_id for p in again.held] == [p.photo_id for p in data.held]


def test_summary_counts_new_confirmations(catalog):
    # the identifications predate the active model: nothing new yet
    assert retraining.training_set_summary(catalog).new_confirmations == 0
    pid = catalog.photos()[0].id
    catalog.add_identification(pid, catalog.individuals()[1].id, how="confirmed_match")
    s = retraining.training_set_summary(catalog)
    assert s.new_confirmations == 1 and "1 confirmations since model m-initial" in s.describe()
    # what training learns from is said: the individuals with 2+ photos, not only the total
    assert f"{s.individuals} individuals, {s.individuals_2plus} of them with 2 or more photos" in s.describe()


# --- the pipeline with a fake training process -------------------------------------------------------


def _embed_stub(calls):
    def embed_missing(catalog, engine, version, *, progress=None, should_stop=None):
        calls.append(version)
        for pid in catalog.photos_missing_embedding(version):
            catalog.put_embedding(pid, version, np.zeros(engine.embedding_dim, np.float32))
    return embed_missing


def test_retrain_compare_and_activate_with_fake_trainer(catalog, fake_python, monkeypatch):
    events: list[TrainingEvent] = []
    result = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=3, detector=False),
                                on_event=events.append)
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.data["epoch"] for e in epochs] == [1, 2, 3]
    assert result.bundle == catalog.models_dir / result.version and result.bundle.is_dir()
    manifest = verify_bundle(result.bundle)
    assert manifest["training"]["photos"] == 12 and manifest["training"]["heldout_photos"] == 4
    assert result.heldout == 4 and result.new_metrics["n_queries"] == 4
    assert result.active_version == "m-initial" and result.active_metrics["n_queries"] == 4
    assert 0.0 <= result.new_metrics["top1"] <= result.new_metrics["top5"] <= 1.0
    assert [r[0] for r in result.comparison_rows()] == ["model", "top-1", "top-5", "MAP@5", "held-out photos"]
    assert catalog.active_model().version == "m-initial"  # not activated by retrain
    assert [v.version for v in retraining.list_model_versions(catalog)][0] == result.version
    calls: list[str] = []
    monkeypatch.setattr("app.services.matching.embed_missing", _embed_stub(calls), raising=False)
    retraining.activate(catalog, result.version)
    assert calls == [result.version]
    assert catalog.active_model().version == result.version
    assert catalog.photos_missing_embedding(result.version) == []
    assert retraining.training_set_summary(catalog).new_confirmations == 0


def test_crash_gives_clear_error_and_no_model_change(catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_MODE", "crash")
    before = [m.version for m in catalog.models()]
    with pytest.raises(TrainingFailed, match="CUDA out of memory.*active model is unchanged"):
        retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=4, detector=False))
    assert [m.version for m in catalog.models()] == before
    assert catalog.active_model().version == "m-initial"
    assert [p.name for p in catalog.models_dir.iterdir()] == ["m-initial"]


def test_export_failure_gives_clear_error_and_no_model_change(catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_MODE", "export-fails")
    with pytest.raises(TrainingFailed, match="export process exited with code 1: export: parity check failed"):
        retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=2, detector=False))
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1


def test_cancel_keeps_active_model_and_resume_continues(catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.2")
    seen: list[TrainingEvent] = []
    # 40 epochs: the stop after 2 lands long before the end even on a busy machine (with 6, a CI run
    # under load finished all of them before the stop was seen, leaving nothing to resume)
    with pytest.raises(Interrupted):
        retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=40, detector=False),
                           on_event=seen.append,
                           should_stop=lambda: sum(e.kind == "epoch" for e in seen) >= 2)
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1
    folder = retraining.find_resumable_run(catalog)
    assert folder is not None and int((folder / "run" / "last.ckpt").read_text()) >= 2
    monkeypatch.setenv("FAKE_EPOCH_S", "0.01")
    seen.clear()
    result = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=40, resume=True,
                                                        detector=False), on_event=seen.append)
    first = [e.data["epoch"] for e in seen if e.kind == "epoch"][0]
    assert first >= 3  # continued from the checkpoint, not from epoch 1
    assert result.run_dir.parent == folder
    assert retraining.find_resumable_run(catalog) is None


def test_time_budget_stops_at_an_epoch_and_uses_that_checkpoint(catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.25")
    seen: list[TrainingEvent] = []
    result = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=50, detector=False,
                                                        time_budget_s=0.6), on_event=seen.append)
    epochs = [e.data["epoch"] for e in seen if e.kind == "epoch"]
    assert 1 <= len(epochs) < 10
    assert any(e.kind == "stage" and e.message.startswith("Time budget reached") for e in seen)
    assert result.bundle.is_dir() and catalog.active_model().version == "m-initial"
    assert retraining.find_resumable_run(catalog) is None  # a finished run, not a cancelled one


def test_detector_retrained_when_boxes_were_drawn(catalog, fake_python):
    events: list[TrainingEvent] = []
    result = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=1), on_event=events.append)
    assert "Detector retrained on 4 boxes (4 new or corrected)" in result.detector
    assert any(e.kind == "stage" and e.message == "Detector: epoch 1/2" for e in events)
    manifest = verify_bundle(result.bundle)
    assert manifest["detector"]["input_size"] == 96 and "detector.onnx" in manifest["files"]
    assert retraining.training_set_summary(catalog).new_boxes == 0  # trained on them now
    # nothing new: the next retraining keeps the detector
    again = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=1))
    assert again.detector.startswith("Detector not retrained")


def test_detector_failure_stops_before_any_model_change(catalog, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_MODE", "detector-fails")
    with pytest.raises(TrainingFailed, match="detector training process exited with code 1: detector: no photo"):
        retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=1))
    assert catalog.active_model().version == "m-initial" and len(catalog.models()) == 1


def test_activate_refuses_a_damaged_bundle(catalog, fake_python, monkeypatch):
    result = retraining.retrain(catalog, RetrainOptions(training_python=fake_python, epochs=1, detector=False))
    (result.bundle / "head.onnx").write_bytes(b"damaged")
    calls: list[str] = []
    monkeypatch.setattr("app.services.matching.embed_missing", _embed_stub(calls), raising=False)
    with pytest.raises(BundleError, match="head.onnx: checksum mismatch"):
        retraining.activate(catalog, result.version)
    assert calls == [] and catalog.active_model().version == "m-initial"
    versions = {v.version: v for v in retraining.list_model_versions(catalog)}
    assert "checksum mismatch" in versions[result.version].problem and versions["m-initial"].problem is None


def test_cli_retrain_with_fake_trainer(catalog, fake_python, capsys):
    from app.cli import main

    root = str(catalog.root)
    catalog.close()
    rc = main(["retrain", root, "--training-python", fake_python, "--epochs", "2", "--no-detector", "--config", "tiny"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "new model" in out.out and "MAP@5" in out.out and "not activated" in out.out
    assert "epoch 2/2" in out.err
    from app.catalog import Catalog

    with Catalog.open(root) as cat:
        assert cat.active_model().version == "m-initial" and len(cat.models()) == 2


# --- the real training entry point -----------------------------------------------------------------


def _real_trainer_available() -> bool:
    return (REPO / "app" / "commands" / "train.py").is_file() and (REPO / "app" / "services" / "matching.py").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _real_trainer_available(), reason="flukeid train / matching service not present")
def test_real_retrain_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUKEID_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv(retraining.TRAINING_PYTHON_ENV, raising=False)
    cat = make_catalog(tmp_path, individuals=4, photos_each=4)
    try:
        events: list[TrainingEvent] = []
        t0 = time.monotonic()
        # boxes were drawn by hand: the real detector training runs too
        result = retraining.retrain(cat, RetrainOptions(config="tiny", epochs=2, device="cpu"),
                                    on_event=events.append)
        assert result.detector.startswith("Detector retrained on 4 boxes")
        assert "detector.onnx" in verify_bundle(result.bundle)["files"]
        epochs = [e for e in events if e.kind == "epoch"]
        assert len(epochs) == 2 and all("loss" in e.data for e in epochs)
        assert json.loads((result.bundle / "manifest.json").read_text())["version"] == result.version
        assert result.new_metrics["n_queries"] == 4 and result.active_metrics["n_queries"] == 4
        retraining.activate(cat, result.version)
        assert cat.active_model().version == result.version
        assert cat.photos_missing_embedding(result.version) == []
        print(f"real tiny retrain: {time.monotonic() - t0:.1f} s")
    finally:
        cat.close()


def test_no_torch_in_this_process_from_the_service():
    # the service itself never imports torch (the GUI process must stay torch-free)
    import subprocess

    code = ("import sys; import app.services.retraining, app.commands.retrain; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=os.environ)
    assert out.stdout.strip() == "False", out.stderr


def test_training_commands_can_be_interrupted_even_when_started_with_sigint_ignored(tmp_path):
    """A background launch (no job control) passes SIGINT ignored: Cancel's SIGINT must still work."""
    import signal
    import subprocess

    code = ("import signal; from app.cli import interruptible; "
            "before = signal.getsignal(signal.SIGINT); interruptible(); "
            "print(before is signal.SIG_IGN, signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parents[2],
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    assert out.stdout.split() == ["True", "True"]
    src = Path(__file__).resolve().parents[2] / "app" / "commands"
    for name, fn in (("train.py", "def run_train("), ("detect.py", "def run_train_detector(")):
        body = (src / name).read_text().split(fn, 1)[1].split("\ndef ", 1)[0]
        assert "interruptible()" in body, f"{name}: {fn} does not make itself interruptible"
