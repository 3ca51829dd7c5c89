"""The experiment runner's data: every row builds a valid config, pinned rows keep their recipe, the
printed commands run, and scoring lines up the photos it embedded."""

from __future__ import annotations

import re
import shlex

import pytest
import torch

from bench import assemble
from bench import experiments as E
from bench.common import RunEmbeddings, head_scores
from tests.conftest import REPO


@pytest.fixture(scope="module")
def plan():
    return E.load()


def test_every_row_builds_a_valid_config_where_it_runs(plan):
    assert {"table1", "rw_metric", "rw_recipe", "gpu"} <= set(plan.tables)
    for exp in plan.experiments.values():
        runs = plan.runs(exp)
        assert runs, exp.id
        for dataset, _ in runs:
            cfg = E.make_config(plan, exp, dataset)
            assert cfg.input_height == cfg.input_width == exp.input
            assert cfg.time_budget_s == exp.budget(dataset) and cfg.val_fraction == 0.0


def test_rows_keep_the_recipe_they_were_measured_with(plan):
    # Table 1 ran before the metric stage, frozen stages and erasing existed, NCHW on the CPU
    best = E.make_config(plan, plan.experiments["table1.best"], "rw")
    assert not best.metric.enabled and best.branch.pool == "max" and not best.branch.normalize
    assert best.branch.frozen_stages == 0 and best.augment.erase_p == 0.0 and best.augment.rotation == 10.0
    assert not best.channels_last and best.input_height == 128 and best.time_budget_s == 300.0
    assert E.make_config(plan, plan.experiments["table1.cnn_l1"], "synth").head.kind == "l1"
    # the first metric recipe at 128 px, its ArcFace cap then
    m = E.make_config(plan, plan.experiments["rw_metric.metric"], "rw_full")
    assert m.metric.enabled and m.metric.margin == 0.3 and m.metric.epochs == 12 and m.epochs == 6
    # margin05_224_24ep's levers are the cpu preset's now
    from model.config import preset

    cpu = preset("cpu")
    v = E.make_config(plan, plan.experiments["rw_recipe.margin05_224_24ep"], "rw_full")
    for key in ("branch.frozen_stages", "augment.erase_p", "augment.rotation", "augment.zoom", "metric.margin",
                "metric.epochs", "input_height"):
        part, _, name = key.rpartition(".")
        got, want = (getattr(getattr(c, part), name) if part else getattr(c, name) for c in (v, cpu))
        assert got == want, key
    # rows run where their data set allows: humpback has no open protocol
    assert ("humpback", "open") not in plan.runs(plan.experiments["table1.best"])
    assert ("synth", "open") in plan.runs(plan.experiments["table1.best"])


def test_a_bad_row_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text('[t]\nlayout = "variants"\n[t.experiments.a]\nlabel = "a"\nkind = "metric"\npreset = "cpu"\n'
                   'recipies = ["first_metric"]\n')
    with pytest.raises(ValueError, match=r"x.toml: \[t.experiments.a\]: unknown keys recipies"):
        E.load(bad)
    bad.write_text('[t]\nlayout = "variants"\n[t.experiments.a]\nlabel = "a"\nkind = "metric"\npreset = "cpu"\n'
                   'recipes = ["nope"]\nprotocols = ["closed"]\n')
    with pytest.raises(ValueError, match="unknown recipe 'nope', protocol 'closed'"):
        E.load(bad)


def test_the_commands_printed_in_benchmarks_select_the_rows_they_reproduce(plan):
    text = (REPO / "docs" / "BENCHMARKS.md").read_text()
    commands = re.findall(r"`(python -m bench\.experiments run [^`]*)`", text)
    assert len(commands) >= 10
    for cmd in commands:
        args = E.parser().parse_args(shlex.split(cmd.split("&&")[0])[3:])
        datasets = set(args.datasets.split(",")) if args.datasets else None
        exps = plan.select(args.targets)
        assert any(plan.runs(e, datasets, args.protocol) for e in exps), cmd
    assert "bench.bench_table1" not in text and "bench.bench_rw_recipe" not in text


def test_head_scores_on_a_shortlist_match_every_pair():
    torch.manual_seed(0)

    class Head(torch.nn.Module):
        def forward(self, a, b):
            return -(a - b).abs().sum(1)

    q, g = torch.randn(5, 8), torch.randn(12, 8)
    model = type("M", (), {"head": Head()})()
    full = head_scores(model, q, g, 0)
    short = head_scores(model, q, g, 4)
    assert full.shape == short.shape == (5, 12) and (full >= 0).all()
    kept = short >= 0
    assert (kept.sum(1) == 4).all()
    assert torch.allclose(torch.from_numpy(short[kept]), torch.from_numpy(full[kept]))
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    assert (torch.from_numpy(kept) == (cos >= torch.topk(cos, 4, dim=1).values[:, -1:])).all()


def test_run_embeddings_take_rows_in_the_order_asked():
    emb = RunEmbeddings(model=None, checkpoint={}, rows=[3, 7, 9], plain=torch.tensor([[3.0], [7.0], [9.0]]))
    assert emb.take("plain", [9, 3, 7]).flatten().tolist() == [9.0, 3.0, 7.0]


def test_assemble_puts_hand_written_notes_around_the_generated_tables():
    out = assemble.section("## Title\n\n| a |\n", "Intro.\n\n<!-- tables -->\n\nReading.\n")
    assert out == "## Title\n\nIntro.\n\n| a |\n\nReading.\n"
    assert assemble.section("## T\n\nx\n", None) == "## T\n\nx\n"
