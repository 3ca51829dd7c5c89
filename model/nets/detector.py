"""The fluke detector network: a small CNN regressor from a gray photo to one box and a presence score.

Five stride-2 conv blocks (conv-BN-ReLU, depthwise-separable after the first) reduce an S x S
photo to an S/32 grid; global average and max pooling feed two small heads: the box as
centre/size (sigmoid, fractions of the photo) converted to x0, y0, x1, y1, and a presence logit.
model.export.export_detector writes it to ONNX with the contract's outputs ("box", sigmoid
"confidence") and checks the file against torch.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, separable: bool) -> nn.Sequential:
    if not separable:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class FlukeDetectorNet(nn.Module):
    """Gray photo [N, 1, S, S] -> (box [N, 4] as x0, y0, x1, y1 fractions, presence logit [N]).

    Args:
        width: channels of the first block; later blocks use 2x, 4x, 6x, 8x.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 6 * width, 8 * width]
        blocks, cin = [], 1
        for i, c in enumerate(chans):
            blocks.append(_block(cin, c, separable=i > 0))
            cin = c
        self.features = nn.Sequential(*blocks)
        self.box_head = nn.Sequential(nn.Linear(2 * cin, 128), nn.ReLU(inplace=True), nn.Linear(128, 4))
        self.conf_head = nn.Sequential(nn.Linear(2 * cin, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        self.width = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, 2C] (average and max over the last feature map)."""
        f = self.features(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.forward_features(x)
        p = torch.sigmoid(self.box_head(z))
        c, s = p[:, :2], p[:, 2:]
        box = torch.cat([c - s / 2, c + s / 2], dim=1).clamp(0.0, 1.0)
        return box, self.conf_head(z).squeeze(1)

