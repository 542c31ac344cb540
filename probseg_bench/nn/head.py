"""The latent-injection head of the PU-Net (Kohl et al. 2018, "Fcomb"): the latent z is tiled over the image,
concatenated with the U-Net features, and mapped to logits by 1x1 convolutions only."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LatentInjectionHead(nn.Module):
    """features [B, F, H, W] and z [B, n, d] -> logits [B, n, K, H, W].

    ``num_convs`` 1x1 convolutions (ReLU between them; 4 as in the public PyTorch port). The first convolution
    over concat(features, tile(z)) is computed as ``W_f * features + W_z z``: identical to tiling, but the
    feature part is computed once for all n samples and no tiled tensor is built.
    """

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

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, n = z.shape[:2]
        base = self.feature_proj(features)  # [B, F, H, W], once for all samples
        h = base[:, None] + self.latent_proj(z)[..., None, None]  # [B, n, F, H, W]
        h = F.relu(h).flatten(0, 1)
        out = self.last(self.hidden(h))
        return out.view(b, n, self.num_classes, *out.shape[-2:])
