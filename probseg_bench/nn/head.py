"""The latent-injection head of the PU-Net (Kohl et al. 2018, "Fcomb"): the latent z is tiled over the image,
concatenated with the U-Net features, and mapped to logits by 1x1 convolutions only."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class LatentInjectionHead(nn.Module):
    """features [B, F, H, W] and z [B, n, d] -> logits [B, n, K, H, W].

    ``num_convs`` 1x1 convolutions (ReLU between them; 4 as in the public PyTorch port). The first convolution
    over concat(features, tile(z)) is computed as ``W_f * features + W_z z``: identical to tiling, but the
    feature part is computed once for all n samples and no tiled tensor is built. The per-sample 1x1
    convolutions run as matrix products on a channels-last layout, one sample and a block of pixels at a time
    (about ``BLOCK_ROWS`` rows of F channels, a few MB, so that the chain of layers stays in the CPU cache:
    6x faster than whole-tensor 1x1 convolutions for 16 samples). The parameters are the ``nn.Conv2d``
    weights, as in the port.
    """

    BLOCK_ROWS = 16384

    def __init__(self, feature_channels: int, latent_dim: int, num_classes: int = 1, num_convs: int = 4) -> None:
        super().__init__()
        if num_convs < 2:
            raise ValueError("num_convs must be >= 2")
        self.feature_proj = nn.Conv2d(feature_channels, feature_channels, 1)
        self.latent_proj = nn.Linear(latent_dim, feature_channels, bias=False)
        hidden: list[nn.Module] = []
        for _ in range(num_convs - 2):
            hidden += [nn.Conv2d(feature_channels, feature_channels, 1), nn.ReLU(True)]
        self.hidden = nn.Sequential(*hidden)
        self.last = nn.Conv2d(feature_channels, num_classes, 1)
        self.num_classes = num_classes

    def _layers(self) -> list[nn.Conv2d]:
        return [m for m in self.hidden if isinstance(m, nn.Conv2d)] + [self.last]

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, n = z.shape[:2]
        h, w = features.shape[-2:]
        base = self.feature_proj(features).flatten(2).transpose(1, 2)  # [B, HW, F], once for all samples
        shift = self.latent_proj(z)  # [B, n, F]
        weights = [(conv.weight.flatten(1).t(), cast(torch.Tensor, conv.bias)) for conv in self._layers()]
        block = max(256, self.BLOCK_ROWS // max(b, 1))
        samples = []
        for s in range(n):
            parts = []
            for start in range(0, h * w, block):
                x = (base[:, start : start + block] + shift[:, s, None, :]).relu_()  # [B, block, F], contiguous
                rows = x.shape[1]
                x = x.reshape(-1, x.shape[-1])
                for i, (weight, bias) in enumerate(weights):
                    x = torch.addmm(bias, x, weight)  # one GEMM per layer and block
                    if i < len(weights) - 1:
                        x = x.relu_()  # in place: neither add nor addmm needs its output for the backward
                parts.append(x.view(b, rows, -1))  # [B, block, K]
            samples.append(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
        out = torch.stack(samples, 1)  # [B, n, HW, K]
        return out.transpose(2, 3).reshape(b, n, self.num_classes, h, w)
