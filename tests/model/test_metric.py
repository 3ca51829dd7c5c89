"""The metric-learning stage: sub-center ArcFace on hand-made embeddings, a tiny two-stage run, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.bundle import verify_bundle
from model.config import preset
from model.data.records import read_labels
from model.data.synthetic import generate_dataset
from model.errors import ConfigError, Interrupted
from model.export import export_run
from model.nets.siamese import build_siamese
from model.training.common import embed_all
from model.training.metric import SubCenterArcFace, metric_lr
from model.training.siamese import load_checkpoint, model_from_checkpoint, train


def _arc(weight: list[list[float]], classes: int, k: int, margin: float, scale: float = 1.0) -> SubCenterArcFace:
    arc = SubCenterArcFace(len(weight[0]), classes, k, margin, scale)
    with torch.no_grad():
        arc.weight.copy_(torch.tensor(weight))
    return arc


def test_margin_lowers_only_the_true_logit_by_the_angle():
    # two classes, one centre each, on the axes; the photo at 30 degrees from class 0
    w = [[1.0, 0.0], [0.0, 1.0]]
    emb = torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]]) * 5.0  # any norm
    y = torch.tensor([0])
    plain = _arc(w, 2, 1, 0.0)(emb, y)
    marg = _arc(w, 2, 1, 0.5)(emb, y)
    assert plain[0, 0].item() == pytest.approx(math.cos(math.pi / 6), abs=1e-5)
    assert marg[0, 0].item() == pytest.approx(math.cos(math.pi / 6 + 0.5), abs=1e-5)
    assert marg[0, 1].item() == pytest.approx(plain[0, 1].item(), abs=1e-6)  # other classes untouched
    scaled = _arc(w, 2, 1, 0.5, scale=30.0)(emb, y)
    assert torch.allclose(scaled, marg * 30.0, atol=1e-4)
    # the margin makes the loss larger for the same embedding (it asks for a tighter angle)
    assert _arc(w, 2, 1, 0.5, 30.0).loss(emb, y) > _arc(w, 2, 1, 0.0, 30.0).loss(emb, y)


def test_margin_past_pi_stays_monotone():
    arc = _arc([[1.0, 0.0], [0.0, 1.0]], 2, 1, 0.5)
    far = arc(torch.tensor([[-1.0, 0.01]]), torch.tensor([0]))[0, 0].item()
    less_far = arc(torch.tensor([[-1.0, 0.5]]), torch.tensor([0]))[0, 0].item()
    assert far < less_far < 0


def test_subcentre_max_picks_the_nearest_centre():
    # class 0 has sub-centres on +x and +y; class 1 on -x and -y
    w = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    arc = _arc(w, 2, 2, 0.0)
    cos = arc.cosine(torch.tensor([[0.1, 1.0], [1.0, 0.05], [-0.2, -1.0]]))
    assert cos.shape == (3, 2)
    assert cos[0, 0].item() == pytest.approx(1.0 / math.sqrt(1.01), abs=1e-5)  # the +y sub-centre
    assert cos[1, 0].item() == pytest.approx(1.0 / math.sqrt(1.0025), abs=1e-5)  # the +x one
    assert cos.argmax(1).tolist() == [0, 0, 1]


def test_centres_start_at_class_means():
    arc = SubCenterArcFace(3, 2, 2, 0.3, 30.0)
    emb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    arc.init_from_embeddings(emb, torch.tensor([0, 0, 1]), torch.Generator().manual_seed(0), noise=0.0)
    w = torch.nn.functional.normalize(arc.weight, dim=1)
    assert torch.allclose(w[0], torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(w[0], w[1]) and torch.allclose(w[2], torch.tensor([0.0, 0.0, 1.0]))


def test_metric_lr_warms_up_then_decays():
    f = [metric_lr(s, 100, 10) for s in range(100)]
    assert f[0] < f[9] <= 1.0 and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.1


def test_normalised_branch_has_norm_sqrt_dim_and_avg_pool():
    cfg = preset("tiny")
    cfg.branch.normalize, cfg.branch.pool = True, "avg"
    m = build_siamese(cfg).eval()
    with torch.no_grad():
        emb, fmap = m.branch(torch.randn(3, 1, cfg.input_height, cfg.input_width))
    assert torch.allclose(emb.norm(dim=1), torch.full((3,), math.sqrt(cfg.branch.embedding_dim)), atol=1e-4)
    raw = fmap.mean(dim=(2, 3))
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=1) * math.sqrt(cfg.branch.embedding_dim), emb,
                          atol=1e-5)


def _metric_cfg(**metric):
    cfg = preset("tiny")
    cfg.val_fraction = 0.0
    cfg.epochs = 2
    cfg.head.kind = "nn"
    cfg.branch.normalize, cfg.branch.pool = True, "avg"
    cfg.metric.enabled = True
    cfg.metric.epochs = 3
    cfg.metric.batch_size = 8
    cfg.metric.passes = 1
    cfg.metric.lr = 3e-3
    cfg.metric.centre_lr_mult = 10.0  # a from-scratch tiny net: centres from its class means need to move fast
    for k, v in metric.items():
        setattr(cfg.metric, k, v)
    return cfg


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn_metric")
    csv = generate_dataset(d, 8, seed=5, photos=5, size=(144, 96))
    return read_labels(csv, d / "images").records


def test_two_stage_run_learns_exports_and_beats_chance_on_new_photos(syn, tmp_path):
    by: dict[str, list] = {}
    for r in syn:
        by.setdefault(str(r.individual), []).append(r)
    train_recs = [r for rs in by.values() for r in rs[:3]]
    test_recs = [r for rs in by.values() for r in rs[3:]]
    cfg = _metric_cfg(epochs=12)
    cfg.epochs, cfg.mining.rounds = 10, 4  # the head stage is cheap: cached embeddings
    events: list[dict] = []
    res = train(cfg, train_recs, tmp_path / "run", events=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("metric_epoch") == 12 and kinds.count("epoch") == 10
    mh = res.metric_history
    assert len(mh) == 12 and mh[-1]["loss"] < mh[0]["loss"]
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["epoch"] == 10 and ck["metric"]["done"] and ck["metric"]["epoch"] == 12
    # held-out photos of the training individuals against the training photos (gallery)
    model, _ = model_from_checkpoint(ck)
    from model.data.dataset import dataset_from_crops, load_records
    from model.preprocess import Preprocessing

    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)

    def emb_of(recs):
        ok, crops, _ = load_records(recs, prep)
        return embed_all(model, dataset_from_crops(ok, crops, prep, [0] * len(ok)), torch.device("cpu"), cfg)

    g, q = emb_of(train_recs), emb_of(test_recs)
    gn = np.array([str(r.individual) for r in train_recs])
    qn = np.array([str(r.individual) for r in test_recs])
    names = np.unique(gn)
    with torch.no_grad():
        cos = (torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T).numpy()
        head = np.stack([torch.sigmoid(model.head(q[i:i + 1].expand(len(g), -1), g)).numpy() for i in range(len(q))])
    for scores in (cos, head):
        best = np.stack([scores[:, gn == n].max(1) for n in names], 1)
        top1 = float(np.mean(names[best.argmax(1)] == qn))
        assert top1 >= 2 / len(names), f"top-1 {top1:.0%} vs chance {1 / len(names):.0%}"
    bundle = export_run(tmp_path / "run", tmp_path / "bundle")
    manifest = verify_bundle(bundle)
    assert manifest["metrics"]["export_parity"]["head_max_abs_diff"] < 1e-4
    assert manifest["config"]["metric"]["enabled"] is True


def test_resume_inside_the_metric_stage_repeats_the_uninterrupted_run(syn, tmp_path):
    train(_metric_cfg(), syn, tmp_path / "straight")
    split = tmp_path / "split"
    seen = []

    def stop_after_first_metric_epoch():
        if (split / "checkpoint.pt").exists():
            seen.append(load_checkpoint(split / "checkpoint.pt")["metric"]["epoch"])
            return True
        return False

    with pytest.raises(Interrupted):
        train(_metric_cfg(), syn, split, should_stop=stop_after_first_metric_epoch)
    assert seen == [1]
    train(_metric_cfg(), syn, split, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(split / "checkpoint.pt")
    assert b["epoch"] == 2 and b["metric"]["epoch"] == 3
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5), k


def test_metric_config_is_validated():
    from model.config import load_config, validate

    cfg = load_config("tiny", ["metric.enabled=true", "metric.subcenters=2", "branch.pool=avg"])
    assert cfg.metric.enabled and cfg.metric.subcenters == 2 and cfg.branch.pool == "avg"
    for bad, needle in ((["metric.margn=0.3"], "metric.margn"), (["metric.subcenters=0"], "metric.subcenters"),
                        (["metric.budget_fraction=0"], "metric.budget_fraction"), (["branch.pool=gem"], "branch.pool"),
                        (["metric.scale=-1"], "metric.scale"), (["metric.epochs=1.5"], "metric.epochs")):
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            load_config("tiny", bad)
    cpu = preset("cpu")
    assert cpu.metric.enabled and cpu.branch.normalize and (cpu.input_height, cpu.input_width) == (224, 224)
    assert cpu.branch.frozen_stages == 2 and cpu.augment.erase_p > 0
    validate(cpu)
    assert not preset("tiny").metric.enabled and not preset("paper").metric.enabled


def test_shortlist_scores_match_the_full_head_where_scored():
    from model.nets.heads import NNHead
    from model.training.metric import shortlist_score_matrix
    from model.training.mining import score_matrix

    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    emb = torch.randn(10, 16)
    head = NNHead(16, 8)
    full = score_matrix(head, emb)
    short = shortlist_score_matrix(head, emb, labels, k=3, block=7)
    scored = short != 0
    assert torch.allclose(short[scored], full[scored], atol=1e-6)
    assert bool(scored[labels[:, None] == labels[None, :]].all())  # every matched pair is scored
    e = torch.nn.functional.normalize(emb, dim=1)
    near = torch.topk(e @ e.T, 3, dim=1).indices
    assert all(bool(scored[i, near[i]].all()) for i in range(10))
    assert int((~scored).sum()) > 0  # the far pairs are left at 0


def test_the_budget_plan_shortens_the_metric_stage(syn, tmp_path):
    cfg = _metric_cfg(epochs=50)
    cfg.time_budget_s = 1e-3  # any real epoch passes it: the plan after the first epoch is one epoch
    cfg.epochs = 1
    res = train(cfg, syn, tmp_path / "run")
    assert [h["epochs"] for h in res.metric_history] == [1]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["metric"]["done"]


def test_nn_head_can_start_at_the_cosine():
    from model.nets.heads import L1Head, NNHead
    from model.training.metric import init_head_as_cosine

    torch.manual_seed(0)
    head = NNHead(64, 8)
    assert init_head_as_cosine(head, 64, scale=10.0, threshold=0.5)
    a = torch.nn.functional.normalize(torch.randn(6, 64), dim=1) * 8.0  # norm sqrt(64), as branch.normalize
    b = torch.nn.functional.normalize(torch.randn(6, 64), dim=1) * 8.0
    cos = torch.nn.functional.cosine_similarity(a, b)
    with torch.no_grad():
        assert torch.allclose(head(a, b), 10.0 * (cos - 0.5), atol=0.05)
    assert not init_head_as_cosine(L1Head(64), 64)


def _scripted_validation(monkeypatch, top5s: list[float]):
    """Replace validate_split by a script of top-5 values (the first call validates the start head)."""
    from model.training import siamese as S

    calls = iter(top5s)

    def fake(model, train_ds, val_ds, device, cfg, train_emb=None, val_emb=None):
        t5 = next(calls)
        return {"top1": t5 / 2, "top5": t5, "pos": [0.9, 0.8], "neg": [0.2, 0.3]}

    monkeypatch.setattr(S, "validate_split", fake)


@pytest.mark.parametrize("trained_better", [False, True])
def test_head_stage_keeps_its_cosine_start_when_training_did_worse(syn, tmp_path, monkeypatch, trained_better):
    from model.training.metric import init_head_as_cosine

    cfg = _metric_cfg(epochs=1)
    cfg.val_fraction, cfg.epochs, cfg.lr = 0.25, 2, 1e-2
    _scripted_validation(monkeypatch, [0.5, 0.4, 0.75 if trained_better else 0.25])
    res = train(cfg, syn, tmp_path / "run")
    assert res.head_start_val_top5 == 0.5 and res.head_kept_at_start is (not trained_better)
    assert res.val_top5 == (0.75 if trained_better else 0.5)
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "checkpoint.pt"))
    torch.manual_seed(cfg.seed)  # the head as train() builds it, then started at the cosine
    start = build_siamese(cfg).head
    init_head_as_cosine(start, cfg.branch.embedding_dim)
    same = all(torch.equal(a, b) for a, b in zip(model.head.state_dict().values(), start.state_dict().values()))
    assert same is (not trained_better)  # the checkpoint (what export ships) holds the kept head


def test_a_diverged_head_does_not_validate_as_perfect(syn):
    from model.data.dataset import dataset_from_crops, load_records
    from model.preprocess import Preprocessing
    from model.training.siamese import validate_split

    cfg = _metric_cfg()
    model = build_siamese(cfg).eval()
    prep = Preprocessing(cfg.input_height, cfg.input_width, cfg.margin)
    ok, crops, _ = load_records(syn, prep)
    names = sorted({str(r.individual) for r in ok})
    labels = [names.index(str(r.individual)) for r in ok]
    ds = dataset_from_crops(ok, crops, prep, labels)
    with torch.no_grad():
        for p in model.head.parameters():
            p.fill_(float("nan"))
    val = validate_split(model, ds, ds, torch.device("cpu"), cfg)
    assert val["top1"] == 0.0 and val["top5"] == 0.0
