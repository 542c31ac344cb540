"""Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020), the LIDC-2D variant of the authors' TF fork.

The logits of C = 2 classes over the P pixels, eta in R^{C*P}, are a low-rank multivariate Gaussian
N(mu(x), Sigma(x)) with Sigma = F F^T + D (F: [C*P, R], D diagonal), all three maps computed by 1x1 heads on the
suite's U-Net features (after a ReLU). The loss is the Monte-Carlo estimate of -log p(y|x):

    L = -[logsumexp_s (sum_p log softmax(eta_p^(s))[y_p]) - log S],   eta^(s) = mu + F eps_R + sqrt(D) eps_P,

per image, summed over pixels (not averaged), from S reparameterised samples (no density, no Cholesky).
``sample`` draws eta the same way and returns the binary foreground logit eta_1 - eta_0 (softmax over two classes
is the sigmoid of that difference), so the evaluation scores it unchanged. The model has no latent prior
(``latent_dim = 0``, see :class:`probseg_bench.api.LatentSegmentationModel`).

Defaults taken from the authors' code (github.com/biomedia-mira/stochastic_segmentation_networks, and its TF fork
MiguelMonteiro/PHiSeg-code for LIDC-2D, "SSN-TF"): rank R = 10, S = 20 MC samples, 2 classes,
D = exp(log_cov_diag) + 1e-5, no ROI mask and no antithetic pairs (the LIDC settings of SSN-TF; ``antithetic=True``
gives the PyTorch SSN's pairs mu +- (eta - mu), S even), event order (C, H, W) with cov-factor channel r*C + c
(PyTorch SSN's layout).
Training reconstructs one annotation drawn uniformly per image, as the other built-ins do.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import UNet, parse_filters
from probseg_bench.nn.unet import init_weights

CLASSES = 2
EPSILON = 1e-5


class StochasticSegmentationNetwork(nn.Module):
    """SSN: U-Net features -> ReLU -> 1x1 heads for the mean (C), log of the diagonal (C) and the covariance
    factor (C*R) of the logits' low-rank Gaussian.

    Args:
        latent_dim: ignored (the CLI's --latent-dim; an SSN has no latent space): ``self.latent_dim = 0``.
        in_channels: image channels.
        rank: R, the rank of the covariance factor (paper: 10).
        mc_samples: S, Monte-Carlo samples of the loss (paper: 20).
        antithetic: use S/2 draws and their mirror images mu - (eta - mu) (PyTorch SSN); S must be even.
        filters, convs_per_block: the U-Net's.
    """

    def __init__(self, latent_dim: int = 0, in_channels: int = 1, rank: int = 10, mc_samples: int = 20,
                 antithetic: bool = False, filters: str = "32,64,128,192", convs_per_block: int = 3,
                 **_: object) -> None:
        super().__init__()
        if int(rank) < 1:
            raise ProbsegError(f"rank: expected an integer >= 1, got {rank}")
        if int(mc_samples) < 1 or (antithetic and int(mc_samples) % 2):
            raise ProbsegError(f"mc_samples: expected an integer >= 1 (even with antithetic), got {mc_samples}")
        f = parse_filters(filters)
        self.latent_dim = 0
        self.rank = int(rank)
        self.mc_samples = int(mc_samples)
        self.antithetic = bool(antithetic)
        self.unet = UNet(in_channels, f, convs_per_block)
        self.mean_head = nn.Conv2d(f[0], CLASSES, 1)
        self.log_diag_head = nn.Conv2d(f[0], CLASSES, 1)
        self.factor_head = nn.Conv2d(f[0], CLASSES * self.rank, 1)
        init_weights(self)

    def distribution(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image [B, C_in, H, W] -> (mu [B, C*P], factor F [B, C*P, R], diagonal D [B, C*P]); event order (C, H, W),
        F[(c, p), r] = factor-head channel r*C + c at pixel p."""
        h = F.relu(self.unet(image))
        b = image.shape[0]
        mu = self.mean_head(h).reshape(b, -1)
        diag = self.log_diag_head(h).exp().reshape(b, -1) + EPSILON
        factor = self.factor_head(h).reshape(b, self.rank, -1).transpose(1, 2)
        return mu, factor, diag

    @staticmethod
    def draw(mu: torch.Tensor, factor: torch.Tensor, diag: torch.Tensor, n: int) -> torch.Tensor:
        """n reparameterised draws eta = mu + F eps_R + sqrt(D) eps_P: [B, n, C*P]."""
        b, e, r = factor.shape
        eps_r = torch.randn((b, n, r), dtype=mu.dtype, device=mu.device)
        eps_p = torch.randn((b, n, e), dtype=mu.dtype, device=mu.device)
        return mu[:, None] + eps_r @ factor.transpose(1, 2) + diag.sqrt()[:, None] * eps_p

    def _foreground(self, eta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B, n, C*P] -> binary foreground logits eta_1 - eta_0 [B, n, 1, H, W]."""
        eta = eta.reshape(eta.shape[0], eta.shape[1], CLASSES, h, w)
        return (eta[:, :, 1] - eta[:, :, 0]).unsqueeze(2)

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n draws of the logits' Gaussian per image -> foreground logits [B, n, 1, H, W]."""
        mu, factor, diag = self.distribution(image)
        return self._foreground(self.draw(mu, factor, diag, n), *image.shape[-2:])

    def prior(self, image: torch.Tensor) -> None:
        """No latent prior (``latent_dim = 0``)."""
        return None

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("an SSN has no latent space to decode")

    def mc_loss(self, mu: torch.Tensor, factor: torch.Tensor, diag: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image -log (1/S) sum_s p(y | eta^(s)) [B] for y long [B, H, W] (class index per pixel)."""
        s = self.mc_samples
        if self.antithetic:
            half = self.draw(mu, factor, diag, s // 2) - mu[:, None]
            eta = torch.cat([mu[:, None] + half, mu[:, None] - half], 1)
        else:
            eta = self.draw(mu, factor, diag, s)
        return mc_nll(eta, y)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """One annotation k per image; ``reconstruction`` = the MC loss of it, ``logits`` the mean's foreground
        logit (for monitoring)."""
        b, a, h, w = masks.shape
        k = torch.randint(a, (b,), device=masks.device)
        y = masks[torch.arange(b, device=masks.device), k].to(torch.float32)
        mu, factor, diag = self.distribution(image)
        nll = self.mc_loss(mu, factor, diag, y.long())
        return TrainOutput(
            logits=self._foreground(mu[:, None], h, w)[:, 0], target=y.unsqueeze(1), prior=None, posterior=None,
            posterior_samples=None, prior_samples=None, annotation_index=k, reconstruction=nll,
        )


def mc_nll(eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """eta [B, S, C*P] (event order (C, H, W)), y long [B, H, W] -> -[logsumexp_s log p(y|eta_s) - log S] [B]."""
    b, s = eta.shape[:2]
    logits = eta.reshape(b * s, CLASSES, -1)
    target = y.reshape(b, 1, -1).expand(b, s, -1).reshape(b * s, -1)
    log_lik = -F.cross_entropy(logits, target, reduction="none").sum(1).reshape(b, s)
    return -(torch.logsumexp(log_lik, 1) - math.log(s))
