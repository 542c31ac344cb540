"""Axis-aligned convolutional Gaussian encoder: the prior p(z|x) and posterior q(z|x, y) of the PU-Net
(Kohl et al. 2018): a :class:`ConvEncoder`, spatial mean, a 1x1 convolution to (mu, log sigma)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from probseg_bench.nn.unet import ConvEncoder

LOG_SIGMA_BOUND = 10.0
"""log sigma is soft-bounded to (-10, 10) by ``10 * tanh(raw / 10)``: the identity near 0, and sigma in
(4.5e-5, 2.2e4) for any encoder output, so KL terms stay finite in float32 (the public port's unbounded
``exp`` overflows to inf/NaN for extreme encoder outputs)."""


class AxisAlignedConvGaussian(nn.Module):
    """x [B, C_in, H, W] float -> ``Normal`` with loc and scale [B, d] (independent dimensions).

    For the prior, C_in = image channels; for the posterior, image channels + 1 (one annotation appended).
    """

    def __init__(self, in_channels: int, filters: Sequence[int], convs_per_block: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, filters, convs_per_block)
        self.to_params = nn.Conv2d(self.encoder.out_channels, 2 * latent_dim, 1)
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        """x [B, C_in, H, W] -> (the Normal, the pooled encoder features [B, filters[-1]]), the latter e.g. as the
        context of an amortised posterior flow."""
        h = self.encoder(x)[-1].mean((-2, -1))
        params = self.to_params(h[..., None, None]).flatten(1)
        mu, raw = params[:, : self.latent_dim], params[:, self.latent_dim :]
        log_sigma = LOG_SIGMA_BOUND * torch.tanh(raw / LOG_SIGMA_BOUND)
        return Normal(mu, torch.exp(log_sigma), validate_args=False), h

    def forward(self, x: torch.Tensor) -> Normal:
        return self.encode(x)[0]
