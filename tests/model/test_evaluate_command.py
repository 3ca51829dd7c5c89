"""``flukeid evaluate``: local features alone without a bundle, three rows with one."""

from __future__ import annotations

import json

import pytest

from app.cli import main


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """10 synthetic individuals x 3 photos, one row marked unidentified, one row with a missing file."""
    from model.api import generate_dataset

    path = generate_dataset(tmp_path_factory.mktemp("syn") / "set", 10, seed=5, photos=3, size=(384, 256))
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    k = head.index("id_known")
    last = lines[-1].split(",")
    last[k] = "0"
    lines[-1] = ",".join(last)
    missing = lines[1].split(",")
    missing[0] = "missing.jpg"
    lines.append(",".join(missing))
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(labels, *extra):
    return ["evaluate", "--data", str(labels), "--images", str(labels.parent / "images"), *extra]


def test_without_bundle_evaluates_local_features_alone(labels, capsys):
    rc = main(_args(labels, "--protocol", "all"))
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "missing.jpg" in out.err  # the bad row is named, the rest is evaluated
    assert "protocol all" in out.out and "1 of them unidentified" in out.out
    summary = out.out.split("method ")[1].splitlines()[1:]
    rows = [line.split()[0] for line in summary if line.strip() and not line.startswith("(")]
    assert rows == ["local"]
    assert "queries 10: top-1" in out.out and "MAP@5" in out.out


def test_with_bundle_prints_local_embedding_and_fused(labels, tiny_bundle, capsys):
    rc = main(_args(labels, "--protocol", "all", "--bundle", str(tiny_bundle), "--device", "cpu"))
    out = capsys.readouterr()
    assert rc == 0, out.err
    for title in ("local: local features", f"embedding: {tiny_bundle}", "fused: local + embedding"):
        assert title in out.out
    table = out.out.split("\nmethod ")[1].splitlines()[1:4]
    assert [line.split()[0] for line in table] == ["local", "embedding", "fused"]
    assert all(line.split()[1] == "10" for line in table)  # every row over the same 10 queries


def test_json_keeps_the_bundle_result_on_top(labels, tiny_bundle, capsys):
    rc = main(_args(labels, "--protocol", "seed", "--bundle", str(tiny_bundle), "--device", "cpu", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert list(out["methods"]) == ["local", "embedding", "fused"]
    assert out["overall"] == out["methods"]["embedding"]["overall"]  # what bench scripts read
    rc = main(_args(labels, "--bundle", str(tiny_bundle), "--device", "cpu", "--no-local", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and list(out["methods"]) == ["embedding"]


def test_no_local_without_bundle_is_refused(labels, capsys):
    assert main(_args(labels, "--no-local")) == 2
    assert "--no-local needs --bundle" in capsys.readouterr().err


def test_protocol_choices_follow_the_model():
    from app.commands.evaluate import PROTOCOL_CHOICES
    from model.api import PROTOCOLS

    assert PROTOCOL_CHOICES == PROTOCOLS
