"""The Probabilistic U-Net (Kohl et al. 2018), architecture of the public PyTorch port used by the seed paper."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import AxisAlignedConvGaussian, LatentInjectionHead, UNet, parse_filters
from probseg_bench.nn.unet import init_weights


class ProbabilisticUNet(nn.Module):
    """PU-Net: U-Net features, axis-aligned conv Gaussian prior p(z|x) and posterior q(z|x, y), latent tiled
    into a 1x1-convolution head.

    Args:
        latent_dim: d, the latent dimension (>= 1).
        in_channels: image channels C.
        num_classes: K output channels (1: binary foreground logits).
        filters: filters per level, e.g. ``"32,64,128,192"`` (the paper's).
        convs_per_block: 3x3 convolutions per level (paper: 3).
        head_convs: 1x1 convolutions in the head (public port: 4).
        **_: other hyperparameters (objective weights, gradient clip) are used by the training loop, not here.

    Training (``forward``): one annotation k per image is drawn uniformly; its posterior sample is decoded.
    Inference (``sample``): z from the PRIOR; U-Net features computed once for all n samples.
    """

    def __init__(
        self,
        latent_dim: int,
        in_channels: int = 1,
        num_classes: int = 1,
        filters: str = "32,64,128,192",
        convs_per_block: int = 3,
        head_convs: int = 4,
        **_: object,
    ) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ProbsegError(f"latent_dim: expected an integer >= 1, got {latent_dim}")
        f = parse_filters(filters)
        self.latent_dim = int(latent_dim)
        self.in_channels = int(in_channels)
        self.unet = UNet(in_channels, f, convs_per_block)
        self.prior_net = AxisAlignedConvGaussian(in_channels, f, convs_per_block, self.latent_dim)
        self.posterior_net = AxisAlignedConvGaussian(in_channels + 1, f, convs_per_block, self.latent_dim)
        self.head = LatentInjectionHead(f[0], self.latent_dim, num_classes, head_convs)
        init_weights(self)

    # ---------------------------------------------------------------------------------------------- protocol
    def prior(self, image: torch.Tensor) -> Normal:
        """p(z|x): image float [B, C, H, W] -> Normal(loc [B, d], scale [B, d])."""
        return self.prior_net(image)

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W], z [B, n, d] -> logits [B, n, K, H, W]."""
        return self.head(self.unet(image), z)

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n samples per image from the prior: image [B, C, H, W] -> logits [B, n, K, H, W].

        The U-Net features and the prior are computed once; only the 1x1 head runs per sample.
        """
        features = self.unet(image)
        z = self.prior_net(image).sample((n,)).transpose(0, 1)  # [B, n, d]
        return self.head(features, z)

    def _pick_annotation(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One annotation k ~ U{0..A-1} per image: masks [B, A, H, W] -> (k long [B], y_k float [B, 1, H, W])."""
        b, a = masks.shape[:2]
        k = torch.randint(a, (b,), device=masks.device)
        y = masks[torch.arange(b, device=masks.device), k].unsqueeze(1).to(torch.float32)
        return k, y

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks {0,1} [B, A, H, W] -> TrainOutput with S = 1 sample each."""
        k, y = self._pick_annotation(masks)
        features = self.unet(image)
        prior = self.prior_net(image)
        posterior = self.posterior_net(torch.cat([image, y], 1))
        z_q = posterior.rsample()[:, None]  # [B, 1, d]
        logits = self.head(features, z_q)[:, 0]
        return TrainOutput(
            logits=logits,
            target=y,
            prior=prior,
            posterior=posterior,
            posterior_samples=z_q,
            prior_samples=prior.rsample()[:, None],
            annotation_index=k,
        )
