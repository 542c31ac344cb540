"""PHiSeg (Baumgartner et al., MICCAI 2019): a hierarchy of per-pixel latent levels, after the public reference
code (github.com/baumgach/PHiSeg-code, config ``phiseg_7_5``).

Levels l = 0..L-1, l = 0 the finest; R resolution levels (one per entry of ``filters``), Delta = R - L; latent
z_l has d channels on a (H / 2^(l + Delta)) x (W / 2^(l + Delta)) grid. Prior p(z_{L-1}|x) prod_l p(z_l|z_{l+1}, x)
and posterior q(z_{L-1}|x, y) prod_l q(z_l|z_{l+1}, x, y) are per-pixel diagonal Gaussians (sigma = softplus), two
networks with separate weights; the likelihood sees only the latents: per level logits s_l, nearest-neighbour
resized to H x W and summed. Training: teacher forcing (the likelihood decodes posterior samples, the prior at
level l is conditioned on the posterior's z_{l+1}); the reconstruction is the residual loss
sum_l CE(y, sum_{k >= l} s_k) (summed over pixels; the binary cross-entropy of one foreground logit = the
two-class softmax cross-entropy of logits (0, s)); the KL term is sum_l alpha_l KL(q_l || p_l), alpha_l = 4^l
(``exponential_weighting``). Sampling: ancestral from the prior hierarchy.

Flattened latent layout of the suite's protocol: the levels' z_l (d, h_l, w_l) flattened and concatenated from
l = 0 (finest) to L-1 (coarsest), ``TrainOutput.level_sizes`` = (d h_l w_l for each l).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import parse_filters
from probseg_bench.nn.levels import flatten_levels, flatten_normals, split_levels

EPS = 1e-10
"""Added to the softplus standard deviations (the reference adds 1e-10 inside the KL's logs and divisor)."""


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3x3 SAME convolution without bias, batch norm (TF decay 0.99 = momentum 0.01, eps 1e-3), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3),
                         nn.ReLU(inplace=True))


def _up2(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)


class Encoder(nn.Module):
    """Per resolution level r: [2x2 average pool for r > 0] + 3x conv-BN-ReLU to ``channels[r]``."""

    def __init__(self, cin: int, channels: list[int]) -> None:
        super().__init__()
        blocks = []
        for c in channels:
            blocks.append(nn.Sequential(conv_bn_relu(cin, c), conv_bn_relu(c, c), conv_bn_relu(c, c)))
            cin = c
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for r, block in enumerate(self.blocks):
            x = block(F.avg_pool2d(x, 2) if r > 0 else x)
            out.append(x)
        return out


class LatentHierarchy(nn.Module):
    """A prior (input x) or posterior (input x and the one-hot annotation - 0.5) net: the encoder, then per level
    Normal(mu_l, softplus(.)) conditioned on the next-coarser z_{l+1} (reference ``posteriors.py``/``priors.py``)."""

    def __init__(self, cin: int, channels: list[int], levels: int, d: int) -> None:
        super().__init__()
        self.levels, self.delta, self.d = levels, len(channels) - levels, d
        self.encoder = Encoder(cin, channels)
        top = channels[-1]
        self.top_mu = nn.Conv2d(top, d, 3, padding=1)
        self.top_sigma = nn.Conv2d(top, d, 1)
        n0 = channels[0]
        self.z_up = nn.ModuleList()
        self.mix = nn.ModuleList()
        self.mu = nn.ModuleList()
        self.sigma = nn.ModuleList()
        for level in range(levels - 1):
            c = channels[level + self.delta]
            self.z_up.append(nn.Sequential(conv_bn_relu(d, d * n0), conv_bn_relu(d * n0, d * n0)))
            self.mix.append(nn.Sequential(conv_bn_relu(d * n0 + c, c), conv_bn_relu(c, c)))
            self.mu.append(nn.Conv2d(c, d, 1))
            self.sigma.append(nn.Conv2d(c, d, 1))

    def forward(self, x: torch.Tensor, given: list[torch.Tensor] | None = None, repeat: int = 1
                ) -> tuple[list[Normal], list[torch.Tensor]]:
        """Top-down over the levels: (distributions, samples), each a list indexed by level l (0 = finest).

        ``given``: latents z_l to condition level l - 1 on (teacher forcing) instead of this net's own samples.
        ``repeat``: the features are computed once and repeated (batch B -> B * repeat) for ancestral samples.
        """
        feats = self.encoder(x)
        if repeat > 1:
            feats = [f.repeat_interleave(repeat, 0) for f in feats]
        dists: list[Normal | None] = [None] * self.levels
        samples: list[torch.Tensor | None] = [None] * self.levels
        f = feats[-1]
        top = Normal(self.top_mu(f), F.softplus(self.top_sigma(f)) + EPS)
        dists[-1], samples[-1] = top, top.rsample()
        for level in range(self.levels - 2, -1, -1):
            coarser = given[level + 1] if given is not None else samples[level + 1]
            assert coarser is not None
            h = self.z_up[level](_up2(coarser))
            h = self.mix[level](torch.cat([h, feats[level + self.delta]], 1))
            dist = Normal(self.mu[level](h), F.softplus(self.sigma[level](h)) + EPS)
            dists[level], samples[level] = dist, dist.rsample()
        return [d for d in dists if d is not None], [s for s in samples if s is not None]


class Likelihood(nn.Module):
    """Per level: z_l -> 2x conv -> Delta x (bilinear x2, conv) to resolution l; top-down combination with the
    coarser level's features; 1x1 convolution to K logits, nearest-neighbour resized to H x W (``likelihoods.py``)."""

    def __init__(self, channels: list[int], levels: int, d: int, num_classes: int) -> None:
        super().__init__()
        self.levels, self.delta = levels, len(channels) - levels
        self.post_z = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.combine = nn.ModuleList()
        self.up_c = nn.ModuleList()
        self.heads = nn.ModuleList()
        for level in range(levels):
            c = channels[level]
            self.post_z.append(nn.Sequential(conv_bn_relu(d, c), conv_bn_relu(c, c)))
            self.ups.append(nn.ModuleList(conv_bn_relu(c, c) for _ in range(self.delta)))
            if level < levels - 1:
                cc = channels[level + 1]
                self.up_c.append(conv_bn_relu(cc, c))
                self.combine.append(nn.Sequential(conv_bn_relu(2 * c, c), conv_bn_relu(c, c)))
            self.heads.append(nn.Conv2d(c, num_classes, 1))

    def forward(self, z: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """Latents per level -> per-level logits s_l [N, K, H, W] (index l; their sum is the prediction)."""
        post_z = []
        for level in range(self.levels):
            h = self.post_z[level](z[level])
            ups = self.ups[level]
            assert isinstance(ups, nn.ModuleList)
            for conv in ups:
                h = conv(_up2(h))
            post_z.append(h)
        out: list[torch.Tensor] = [torch.empty(0)] * self.levels
        c = post_z[-1]
        for level in range(self.levels - 1, -1, -1):
            if level < self.levels - 1:
                c = self.combine[level](torch.cat([post_z[level], self.up_c[level](_up2(c))], 1))
            out[level] = F.interpolate(self.heads[level](c), size=size, mode="nearest")
        return out


def residual_sums(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """[sum_{k >= l} s_k for each l] without modifying the inputs (the reference's in-place pitfall)."""
    acc: list[torch.Tensor] = []
    total: torch.Tensor | None = None
    for s in reversed(logits):
        total = s if total is None else total + s
        acc.append(total)
    return acc[::-1]


class PHiSeg(nn.Module):
    """PHiSeg.

    Args:
        latent_dim: d, latent channels per pixel per level (reference ``zdim0``: 2).
        in_channels: image channels C.
        num_classes: K output channels (1: binary foreground logits).
        filters: channels per resolution level, R = their number (reference: 32,64,128,192,192,192,192).
        latent_levels: L (reference: 5); min(L, R - 2) levels are used (at least 1), so that the finest latent
            grid stays a quarter of the image side as in the reference (Delta = R - L = 2).
        exponential_weighting: KL weights alpha_l = 4^l (reference: on), else 1.
        **_: objective weights and the gradient clip are used by the training loop.
    """

    def __init__(self, latent_dim: int, in_channels: int = 1, num_classes: int = 1,
                 filters: str = "32,64,128,192,192,192,192", latent_levels: int = 5,
                 exponential_weighting: bool = True, **_: object) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ProbsegError(f"latent_dim: expected an integer >= 1, got {latent_dim}")
        channels = list(parse_filters(filters))
        self.latent_dim = int(latent_dim)
        self.latent_levels = max(1, min(int(latent_levels), len(channels) - 2))
        self.resolution_levels = len(channels)
        self.in_channels = int(in_channels)
        self.level_weights = tuple(4.0 ** lv if exponential_weighting else 1.0 for lv in range(self.latent_levels))
        d, L = self.latent_dim, self.latent_levels
        self.prior_net = LatentHierarchy(in_channels, channels, L, d)
        self.posterior_net = LatentHierarchy(in_channels + 2, channels, L, d)
        self.likelihood = Likelihood(channels, L, d, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------- layout
    def level_shapes(self, h: int, w: int) -> list[tuple[int, int, int]]:
        """(d, h_l, w_l) of each level for an H x W image."""
        delta = self.resolution_levels - self.latent_levels
        if h % 2 ** (self.resolution_levels - 1) or w % 2 ** (self.resolution_levels - 1):
            raise ProbsegError(f"PHiSeg with {self.resolution_levels} resolution levels needs H and W divisible by "
                               f"{2 ** (self.resolution_levels - 1)}, got {h} x {w}; use fewer filters")
        return [(self.latent_dim, h >> (lv + delta), w >> (lv + delta)) for lv in range(self.latent_levels)]

    # ---------------------------------------------------------------------------------------------- protocol
    def prior(self, image: torch.Tensor) -> Normal:
        """The prior's conditionals along one ancestral draw, flattened: Normal loc/scale [B, D]."""
        dists, _ = self.prior_net(image)
        return flatten_normals(dists)

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z [B, n, D] (flattened levels) -> logits [B, n, K, H, W] (the likelihood does not see the image)."""
        b, n = z.shape[:2]
        h, w = image.shape[-2:]
        logits = sum(self.likelihood(split_levels(z.reshape(b * n, -1), self.level_shapes(h, w)), (h, w)))
        assert isinstance(logits, torch.Tensor)
        return logits.reshape(b, n, *logits.shape[1:])

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n ancestral samples of the prior hierarchy per image (encoder run once) -> logits [B, n, K, H, W]."""
        b = image.shape[0]
        h, w = image.shape[-2:]
        self.level_shapes(h, w)
        _, z = self.prior_net(image, repeat=n)
        logits = sum(self.likelihood(z, (h, w)))
        assert isinstance(logits, torch.Tensor)
        return logits.reshape(b, n, *logits.shape[1:])

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """One annotation k per image; posterior samples decoded; the prior teacher-forced on them."""
        b, a = masks.shape[:2]
        h, w = image.shape[-2:]
        shapes = self.level_shapes(h, w)
        k = torch.randint(a, (b,), device=masks.device)
        y = masks[torch.arange(b, device=masks.device), k].unsqueeze(1).to(image.dtype)
        onehot = torch.cat([1.0 - y, y], 1) - 0.5
        q, z_q = self.posterior_net(torch.cat([image, onehot], 1))
        p, _ = self.prior_net(image, given=z_q)
        s = self.likelihood(z_q, (h, w))
        acc = residual_sums(s)
        reconstruction = sum(
            F.binary_cross_entropy_with_logits(t, y, reduction="none").flatten(1).sum(1) for t in acc
        )
        assert isinstance(reconstruction, torch.Tensor)
        prior, posterior = flatten_normals(p), flatten_normals(q)
        return TrainOutput(
            logits=acc[0], target=y, prior=prior, posterior=posterior,
            posterior_samples=flatten_levels(z_q)[:, None], prior_samples=prior.rsample()[:, None],
            annotation_index=k, reconstruction=reconstruction,
            level_sizes=tuple(a_ * b_ * c_ for a_, b_, c_ in shapes), level_weights=self.level_weights,
        )
