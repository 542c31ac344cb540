"""The U-Net of the Probabilistic U-Net (Kohl et al. 2018, as in the public PyTorch port used by the seed paper).

Each resolution level is one block of ``convs_per_block`` 3x3 convolutions + ReLU (padding 1); levels after the
first start with a 2x2 average pooling. The decoder upsamples bilinearly (align_corners=True), concatenates the
skip connection and applies a block of the same shape. The paper's setting: filters 32/64/128/192, 3 convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from probseg_bench.errors import ProbsegError


def parse_filters(filters: str | Sequence[int]) -> tuple[int, ...]:
    """``"32,64,128,192"`` or a sequence of ints -> a tuple of positive ints.

    Raises:
        ProbsegError: not a comma-separated list of positive integers.
    """
    try:
        out = tuple(int(f) for f in (filters.split(",") if isinstance(filters, str) else filters))
    except ValueError:
        raise ProbsegError(f"filters: expected comma-separated positive integers, got {filters!r}") from None
    if not out or min(out) < 1:
        raise ProbsegError(f"filters: expected comma-separated positive integers, got {filters!r}")
    return out


def _conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1), nn.ReLU(True)]
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU) weights and zero biases for every convolution, as in Kohl's code."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvEncoder(nn.Module):
    """The contracting path: input [B, C, H, W] -> list of features per level, level i with filters[i] channels
    at H / 2**i (ceil) resolution."""

    def __init__(self, in_channels: int, filters: Sequence[int], convs_per_block: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for i, f in enumerate(filters):
            self.blocks.append(_conv_block(in_channels if i == 0 else filters[i - 1], f, convs_per_block))
        self.out_channels = int(filters[-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.avg_pool2d(x, 2, 2, ceil_mode=True)
            x = block(x)
            feats.append(x)
        return feats


class UNet(nn.Module):
    """U-Net feature extractor: image [B, C, H, W] float -> features [B, filters[0], H, W] (no output layer;
    the latent-injection head maps features to logits)."""

    def __init__(self, in_channels: int, filters: Sequence[int], convs_per_block: int = 3) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, filters, convs_per_block)
        self.decoder = nn.ModuleList(
            _conv_block(filters[i + 1] + filters[i], filters[i], convs_per_block)
            for i in range(len(filters) - 2, -1, -1)
        )
        self.out_channels = int(filters[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            y = block(torch.cat([y, skip], 1))
        out: torch.Tensor = y
        return out
