"""``example-punet``: a small Probabilistic U-Net (Kohl et al. 2018) implementing probseg-bench's latent-model
contract (:class:`probseg_bench.api.LatentSegmentationModel`) in plain torch.

The contract, as probseg-bench checks it on two training images before a fold trains (B images, A annotators,
d = ``latent_dim``, K = 1 output channel for a binary mask):

* an integer attribute ``latent_dim`` (= d);
* ``forward(image [B, C, H, W], masks uint8 [B, A, H, W]) -> TrainOutput`` (one training batch);
* ``prior(image) -> Normal`` with loc/scale [B, d];
* ``sample(image, n) -> logits [B, n, K, H, W]``: n segmentations per image from the PRIOR;
* ``decode(image, z [B, n, d]) -> logits [B, n, K, H, W]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class Encoder(nn.Module):
    """Conv blocks with 2x average pooling between them: [B, C, H, W] -> the feature map of every level."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_block(c, w) for c, w in zip([in_channels, *widths[:-1]], widths, strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for i, block in enumerate(self.blocks):
            x = block(F.avg_pool2d(x, 2) if i else x)
            levels.append(x)
        return levels


class UNet(nn.Module):
    """Encoder + decoder with skip connections: [B, C, H, W] -> features [B, widths[0], H, W]."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, widths)
        self.decoder = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.encoder(x)
        y = levels[-1]
        for i in reversed(range(len(levels) - 1)):
            y = F.interpolate(y, size=levels[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.decoder[i](torch.cat([levels[i], y], 1))
        return y


class GaussianEncoder(nn.Module):
    """An axis-aligned Gaussian from an image (and masks): encoder, global mean, 1x1 convolution -> Normal [B, d]."""

    def __init__(self, in_channels: int, widths: list[int], latent_dim: int) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, widths)
        self.to_params = nn.Conv2d(widths[-1], 2 * latent_dim, 1)

    def forward(self, x: torch.Tensor) -> Normal:
        params = self.to_params(self.encoder(x)[-1].mean((-2, -1), keepdim=True))[..., 0, 0]  # [B, 2d]
        mu, log_sigma = params.chunk(2, dim=1)
        return Normal(mu, log_sigma.exp())


class ExampleProbabilisticUNet(nn.Module):
    """A Probabilistic U-Net: U-Net features, a prior p(z|x) and a posterior q(z|x, y_k), the latent tiled over
    the image and concatenated to the features before a 1x1-convolution head.

    Args:
        latent_dim: d (the suite passes ``--latent-dim``).
        in_channels: image channels C (the suite passes the dataset's).
        filters: channels per level, e.g. ``"8,16,32"`` (a declared hyperparameter; the quick preset's
            ``model_defaults`` set it to ``"16,32,64,96"``).
        **_: the other hyperparameters (``beta``, ``grad_clip``) are used by the suite's training loop.
    """

    def __init__(self, latent_dim: int, in_channels: int = 1, filters: str = "8,16,32", **_: object) -> None:
        super().__init__()
        try:
            widths = [int(f) for f in str(filters).split(",")]
        except ValueError:
            raise ProbsegError(f"filters: expected comma-separated integers, got {filters!r}") from None
        if int(latent_dim) < 1 or not widths or min(widths) < 1:
            raise ProbsegError(f"example-punet: expected latent_dim >= 1 and positive filters, got {latent_dim}, "
                               f"{filters!r}")
        self.latent_dim = int(latent_dim)  # required by the contract
        self.unet = UNet(in_channels, widths)
        self.prior_net = GaussianEncoder(in_channels, widths, self.latent_dim)
        self.posterior_net = GaussianEncoder(in_channels + 1, widths, self.latent_dim)
        self.head = nn.Sequential(nn.Conv2d(widths[0] + self.latent_dim, widths[0], 1), nn.ReLU(),
                                  nn.Conv2d(widths[0], 1, 1))

    def _head(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """features [B, F, H, W], z [B, n, d] -> logits [B, n, 1, H, W]."""
        b, n, d = z.shape
        h, w = features.shape[-2:]
        tiled = z[..., None, None].expand(b, n, d, h, w)
        stacked = torch.cat([features[:, None].expand(b, n, *features.shape[1:]), tiled], 2)
        return self.head(stacked.flatten(0, 1)).view(b, n, 1, h, w)

    def prior(self, image: torch.Tensor) -> Normal:
        """p(z|x): Normal with loc/scale [B, d]."""
        return self.prior_net(image)

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W], z [B, n, d] -> logits [B, n, 1, H, W]."""
        return self._head(self.unet(image), z)

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n segmentations per image from the prior: logits [B, n, 1, H, W] (U-Net features computed once)."""
        z = self.prior(image).sample((n,)).transpose(0, 1)  # [B, n, d]
        return self._head(self.unet(image), z)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """One training batch: image float [B, C, H, W], masks {0, 1} [B, A, H, W] (uint8) -> TrainOutput."""
        b, a = masks.shape[:2]
        k = torch.randint(a, (b,), device=masks.device)  # one annotation per image, uniformly
        y = masks[torch.arange(b, device=masks.device), k].unsqueeze(1).float()  # [B, 1, H, W]
        prior = self.prior(image)
        posterior = self.posterior_net(torch.cat([image, y], 1))
        z = posterior.rsample()[:, None]  # [B, 1, d]
        return TrainOutput(
            logits=self._head(self.unet(image), z)[:, 0],  # [B, 1, H, W]
            target=y,
            prior=prior,
            posterior=posterior,
            posterior_samples=z,  # [B, S=1, d]
            prior_samples=prior.rsample()[:, None],  # [B, 1, d]
            annotation_index=k,
        )
