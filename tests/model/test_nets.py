"""Branches, heads and the Siamese wrapper: shapes, registry, weights, freezing."""

from __future__ import annotations

import pytest
import torch

from model.config import BranchConfig, HeadConfig, preset
from model.errors import ConfigError
from model.nets.branches import efficientnet_lite0_imagenet_state
from model.nets.heads import L1Head, NNHead
from model.nets.registry import BRANCHES, HEADS, create_branch, create_head
from model.nets.siamese import build_siamese


@pytest.mark.parametrize("kind", ["cnn", "plain", "resnet50", "efficientnet_lite0"])
def test_every_branch_returns_embedding_and_its_last_bn_feature_map(kind):
    torch.manual_seed(0)
    branch = create_branch(BranchConfig(kind=kind, width=8, blocks=[1, 1], embedding_dim=24)).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        emb, fmap = branch(x)
    assert emb.shape == (2, 24) and fmap.shape[:2] == (2, 24) and fmap.ndim == 4
    assert torch.allclose(emb, fmap.amax(dim=(2, 3)))  # global max pooling of the feature map
    assert isinstance(branch.neck[-1], torch.nn.BatchNorm2d)  # the map is a batch-norm output
    assert torch.equal(branch.forward_features(x), fmap)
    assert branch.feature_channels == 24


def test_registries_know_the_names_and_refuse_others():
    assert {"cnn", "plain", "resnet50", "efficientnet_lite0"} <= set(BRANCHES)
    assert {"nn", "l1"} <= set(HEADS)
    with pytest.raises(ConfigError, match="unknown branch kind 'vgg'"):
        create_branch(BranchConfig(kind="vgg"))
    with pytest.raises(ConfigError, match="unknown head kind"):
        create_head(HeadConfig(kind="cosine"), 8)


def test_a_branch_added_to_the_registry_is_built_by_name(monkeypatch):
    from model.nets.branches import plain

    built = []
    monkeypatch.setitem(BRANCHES, "mine", lambda cfg: built.append(cfg.kind) or plain(cfg))
    cfg = preset("tiny")
    cfg.branch.kind = "mine"
    model = build_siamese(cfg)
    assert built == ["mine"] and model.branch.embedding_dim == cfg.branch.embedding_dim


def test_efficientnet_imagenet_weights_load_and_stem_becomes_gray():
    import timm

    ref = timm.create_model("efficientnet_lite0", pretrained=False)
    state = efficientnet_lite0_imagenet_state(ref)
    ref.load_state_dict(state)
    branch = create_branch(BranchConfig(kind="efficientnet_lite0", weights="imagenet", embedding_dim=16)).eval()
    stem = branch.backbone.net.conv_stem.weight
    assert stem.shape[1] == 1
    assert torch.allclose(stem, state["conv_stem.weight"].sum(dim=1, keepdim=True))
    # a gray image through the 1-channel stem equals the same image as RGB through the ImageNet stem
    g = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(branch.backbone.net.conv_stem(g), ref.conv_stem(g.expand(-1, 3, -1, -1)), atol=1e-5)
    assert torch.equal(branch.backbone.net.blocks[3][0].conv_pw.weight, state["blocks.3.0.conv_pw.weight"])


def test_resnet50_weights_from_a_local_file_and_freeze(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    net = resnet50(weights=None)
    torch.save(net.state_dict(), tmp_path / "r50.pth")
    branch = create_branch(BranchConfig(kind="resnet50", weights=str(tmp_path / "r50.pth"), freeze=True,
                                        embedding_dim=16))
    assert torch.equal(branch.backbone.net.layer1[0].conv1.weight, net.layer1[0].conv1.weight)
    assert torch.allclose(branch.backbone.net.conv1.weight, net.conv1.weight.sum(1, keepdim=True))
    assert not any(p.requires_grad for p in branch.backbone.parameters())
    assert all(p.requires_grad for p in branch.neck.parameters())
    branch.train()
    assert not branch.backbone.training and branch.neck.training  # frozen BN statistics stay
    with pytest.raises(ConfigError, match="not found"):
        create_branch(BranchConfig(kind="resnet50", weights=str(tmp_path / "missing.pth")))
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="bad.pth"):
        create_branch(BranchConfig(kind="resnet50", weights=str(tmp_path / "bad.pth")))


def test_nn_head_is_symmetric_and_uses_the_four_pair_features():
    torch.manual_seed(0)
    head = NNHead(6, hidden=4)
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    assert torch.allclose(head(a, b), head(b, a), atol=1e-6)
    assert head(a, b).shape == (5,)
    # the per-position network is shared: 4 inputs (x*y, x+y, |x-y|, (x-y)^2) per feature position
    assert head.per_position[0].in_channels == 4 and head.per_position[0].kernel_size == (1,)
    p = head.probability(a, b)
    assert torch.all((p > 0) & (p < 1))


def test_l1_head_starts_as_a_distance_score():
    head = L1Head(4)
    x = torch.zeros(1, 4)
    near, far = torch.full((1, 4), 0.1), torch.full((1, 4), 3.0)
    assert head(x, near) > head(x, far)
    assert torch.isclose(head(x, x), torch.tensor([1.0]))


def test_siamese_wrapper_scores_pairs_in_one_branch_pass():
    cfg = preset("tiny")
    model = build_siamese(cfg).eval()
    a = torch.randn(3, 1, cfg.input_height, cfg.input_width)
    with torch.no_grad():
        logits = model(a, a.flip(0))
        ea, eb = model.embed(a), model.embed(a.flip(0))
        assert torch.allclose(logits, model.head(ea, eb), atol=1e-5)


@pytest.mark.parametrize("kind", ["efficientnet_lite0", "resnet50"])
def test_frozen_stages_freeze_the_stem_and_the_first_stages_only(kind):
    torch.manual_seed(0)
    branch = create_branch(BranchConfig(kind=kind, embedding_dim=16, frozen_stages=2))
    net = branch.backbone.net
    if kind == "efficientnet_lite0":
        frozen, trained = [net.conv_stem, net.bn1, net.blocks[0], net.blocks[1]], [net.blocks[2], net.conv_head]
    else:
        frozen, trained = [net.conv1, net.bn1, net.layer1, net.layer2], [net.layer3, net.layer4]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in [*trained, branch.neck] for p in m.parameters())
    branch.train()
    assert not any(m.training for m in frozen) and all(m.training for m in trained)
    # a training step leaves the frozen stages (weights and BN statistics) exactly as they were
    before = {k: v.clone() for k, v in branch.state_dict().items()}
    opt = torch.optim.Adam([p for p in branch.parameters() if p.requires_grad], lr=1e-2)
    emb, _ = branch(torch.randn(4, 1, 64, 64))
    emb.pow(2).mean().backward()
    opt.step()
    after = branch.state_dict()
    stem = "conv_stem.weight" if kind == "efficientnet_lite0" else "conv1.weight"
    first = "blocks.1.0.bn1.running_mean" if kind == "efficientnet_lite0" else "layer2.0.bn1.running_mean"
    later = "blocks.2.0.conv_pw.weight" if kind == "efficientnet_lite0" else "layer3.0.conv1.weight"
    assert torch.equal(after[f"backbone.net.{stem}"], before[f"backbone.net.{stem}"])
    assert torch.equal(after[f"backbone.net.{first}"], before[f"backbone.net.{first}"])
    assert not torch.equal(after[f"backbone.net.{later}"], before[f"backbone.net.{later}"])


def test_frozen_stages_are_refused_where_they_do_not_apply():
    from model.config import apply_overrides, validate

    with pytest.raises(ConfigError, match="has 4 stages after its stem"):
        create_branch(BranchConfig(kind="resnet50", embedding_dim=16, frozen_stages=5))
    cfg = preset("tiny")
    apply_overrides(cfg, {"branch.frozen_stages": 1})
    with pytest.raises(ConfigError, match="frozen_stages.*not 'plain'"):
        validate(cfg)


def test_cosine_head_is_the_cosine_mapped_onto_0_to_1_and_has_no_weights():
    from model.nets.heads import CosineHead

    head = CosineHead()
    assert list(head.parameters()) == []
    a = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    b = torch.tensor([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0], [-2.0, 0.0, 0.0], [2.0, 1.0, 0.5]])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    p = head.probability(a, b)
    assert torch.allclose(p, (1 + cos) / 2, atol=1e-6)
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.5) and p[2] == pytest.approx(0.0)
    assert torch.allclose(torch.sigmoid(head(a, b)), p, atol=1e-4)  # the logit of the same score
    assert torch.allclose(head.probability(b, a), p)  # symmetric


def test_a_branch_without_a_neck_embeds_the_backbones_own_features():
    from model.nets.branches import Branch

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, 2, 1), torch.nn.ReLU())
    branch = Branch(backbone, 6, 6, freeze=True, pool="max", normalize=True, neck=False).eval()
    x = torch.randn(2, 1, 16, 16)
    emb, fmap = branch(x)
    with torch.no_grad():
        feats = backbone(x)
    assert torch.equal(fmap, feats)  # nothing between the backbone and the map
    pooled = feats.amax(dim=(2, 3))
    assert torch.allclose(emb, pooled / pooled.norm(dim=1, keepdim=True) * 6 ** 0.5, atol=1e-5)
    assert not any(p.requires_grad for p in branch.parameters())
    with pytest.raises(ConfigError, match="backbone's 6 channels, not 8"):
        Branch(backbone, 6, 8, neck=False)


def test_frozen_efficientnet_lite0_is_the_imagenet_network_untouched():
    from model.nets.branches import frozen_efficientnet_lite0

    branch = frozen_efficientnet_lite0("avg")
    ref = __import__("timm").create_model("efficientnet_lite0", pretrained=False)
    state = efficientnet_lite0_imagenet_state(ref)
    net = branch.backbone.net
    assert torch.equal(net.blocks[6][0].conv_pwl.weight, state["blocks.6.0.conv_pwl.weight"])
    assert torch.equal(net.bn2.running_var, state["bn2.running_var"])
    assert torch.allclose(net.conv_stem.weight, state["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert branch.embedding_dim == branch.feature_channels == 1280
    assert not any(p.requires_grad for p in branch.parameters())
    branch.train()  # a caller switching modes must not let BN statistics move
    assert not net.training
    emb, fmap = branch(torch.randn(1, 1, 64, 64))
    assert emb.shape == (1, 1280) and fmap.shape[1] == 1280
    assert torch.allclose(emb, fmap.mean(dim=(2, 3)) / fmap.mean(dim=(2, 3)).norm() * 1280 ** 0.5, atol=1e-4)
