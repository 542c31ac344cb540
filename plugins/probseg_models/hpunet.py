"""The Hierarchical Probabilistic U-Net (Kohl et al. 2019) with its GECO objective, after the authors' public code
(github.com/google-deepmind/deepmind-research, ``hierarchical_probabilistic_unet``; Sonnet v1.35's GECO primitives
``LagrangeMultiplier`` and ``MovingAverage``).

A U-Net of pre-activation residual blocks (no normalisation) whose decoder interleaves K latent scales from the
bottleneck up (l = 0 the coarsest): at decoder level l, (mu_l, log sigma_l) = conv1x1(h_l), z_l ~ N(mu_l, sigma_l^2)
per pixel, and h_{l+1} = ResBlocks(concat(up2(concat(z_l, h_l)), skip)). Prior p(z_l|z_<l, x) and posterior
q(z_l|z_<l, x, y) are two such networks (posterior input: concat(one-hot y, x), no shift); the reconstruction
re-runs the PRIOR network with the posterior samples injected, and a stitching decoder ``f_comb`` finishes the
U-Net from its features. KL = sum_l KL(q_l || p_l) (teacher-forced prior), unweighted.

GECO (Rezende & Viola 2018): the reconstruction R is the top-k cross-entropy (k = 2 % of the batch's pixels,
chosen over the whole batch, stochastically: top-k of log(e_i / sum e) + Gumbel noise); the constraint
C_t = MA_t - kappa * N (MA: moving average of R, decay 0.99, MA_1 = R_1, straight-through gradient to R_t; N the
mean number of kept pixels per image); loss = lambda * C_t + KL with lambda = softplus(w)^2, w = softplus^-1(1)
at the start, and the gradient into w multiplied by -rate (rate 0.01), so the optimiser ascends over lambda:
lambda grows while the constraint is violated (C_t > 0). The state (w, MA) lives in this module (a parameter and
buffers), so it is optimised, checkpointed and resumed with the model. ``TrainOutput.reconstruction`` carries
the per-image share of lambda * C_t (its batch mean is lambda * C_t); with ``loss_type = "elbo"`` it is the
top-k reconstruction R itself and the KL is weighted by ``beta``.

Flattened latent layout: the levels' z_l (d, h_l, w_l) from l = 0 (coarsest) to K-1, ``TrainOutput.level_sizes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import parse_filters
from probseg_bench.nn.levels import flatten_levels, flatten_normals, split_levels


class ResBlock(nn.Module):
    """Pre-activation residual block: relu -> [conv3x3(n_down) -> relu] x (convs-1) -> conv3x3(n_down) ->
    conv1x1 to n if n_down != n; skip conv1x1 when c_in != n (``unet_utils.res_block``)."""

    def __init__(self, cin: int, n: int, n_down: int, convs: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReLU()]
        c = cin
        for i in range(convs):
            layers.append(nn.Conv2d(c, n_down, 3, padding=1))
            c = n_down
            if i < convs - 1:
                layers.append(nn.ReLU())
        if n_down != n:
            layers.append(nn.Conv2d(n_down, n, 1))
        self.residual = nn.Sequential(*layers)
        self.skip: nn.Module = nn.Conv2d(cin, n, 1) if cin != n else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.residual(x)


def res_stack(cin: int, n: int, blocks: int, convs: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(cin if i == 0 else n, n, max(n // 2, 1), convs) for i in range(blocks)))


def _up2(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, scale_factor=2.0, mode="nearest")


class HierarchicalCore(nn.Module):
    """The prior's or posterior's U-Net encoder and latent-interleaving decoder (``_HierarchicalCore``)."""

    def __init__(self, cin: int, channels: list[int], levels: int, d: int, blocks: int, convs: int,
                 finish: bool = True) -> None:
        super().__init__()
        self.levels, self.d = levels, d
        enc, c = [], cin
        for n in channels:
            enc.append(res_stack(c, n, blocks, convs))
            c = n
        self.encoder = nn.ModuleList(enc)
        rev = channels[::-1]
        self.heads = nn.ModuleList()
        self.decoder = nn.ModuleList()
        h = rev[0]
        for level in range(levels):
            self.heads.append(nn.Conv2d(h, 2 * d, 1))
            if finish or level < levels - 1:  # the posterior's features after its last latent are unused
                self.decoder.append(res_stack(h + d + rev[level + 1], rev[level + 1], blocks, convs))
            h = rev[level + 1]

    def forward(self, x: torch.Tensor, given: list[torch.Tensor] | None = None, repeat: int = 1,
                mean: Sequence[bool] = ()) -> tuple[torch.Tensor, list[torch.Tensor], list[Normal], list[torch.Tensor]]:
        """-> (decoder features, encoder features, per-level distributions, the latents used), l = 0 coarsest.

        ``given``: latents to inject (teacher forcing / decoding) instead of this net's samples. ``repeat``: the
        encoder runs once and its features are repeated (B -> B * repeat) for ancestral samples. ``mean[l]``: use
        the level's mean instead of a sample (the reference's ``sample(mean=[...])``)."""
        feats = []
        h = x
        for i, stage in enumerate(self.encoder):
            h = stage(F.avg_pool2d(h, 2) if i > 0 else h)
            feats.append(h)
        if repeat > 1:
            feats = [f.repeat_interleave(repeat, 0) for f in feats]
        skips = feats[::-1]
        h = skips[0]
        dists, used = [], []
        for level in range(self.levels):
            mu, log_sigma = self.heads[level](h).chunk(2, 1)
            dist = Normal(mu, torch.exp(log_sigma))
            if given is not None:
                z = given[level]
            else:
                z = dist.loc if level < len(mean) and mean[level] else dist.rsample()
            dists.append(dist)
            used.append(z)
            if level == len(self.decoder):  # the posterior: no decoder after the last latent
                break
            h = self.decoder[level](torch.cat([_up2(torch.cat([z, h], 1)), skips[level + 1]], 1))
        return h, feats, dists, used


class StitchingDecoder(nn.Module):
    """``f_comb``: from the core's decoder features at the last latent level's resolution up to H x W, with the
    encoder's skips, then a 1x1 convolution to K logits."""

    def __init__(self, channels: list[int], levels: int, num_classes: int, blocks: int, convs: int) -> None:
        super().__init__()
        rev = channels[::-1]
        self.start = levels + 1
        self.stages = nn.ModuleList(
            res_stack(rev[lv - 1] + rev[lv], rev[lv], blocks, convs) for lv in range(self.start, len(channels))
        )
        self.logits = nn.Conv2d(rev[-1], num_classes, 1)

    def forward(self, h: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        skips = feats[::-1]
        for i, stage in enumerate(self.stages):
            h = stage(torch.cat([_up2(h), skips[self.start + i]], 1))
        return self.logits(h)


def top_k_mask(errors: torch.Tensor, fraction: float, deterministic: bool) -> torch.Tensor:
    """Mask [B, P] of the k = floor(fraction * B * P) pixels kept over the whole batch: the top-k of
    log(e / sum e) (+ Gumbel(0, 1) noise unless ``deterministic``: sampling without replacement ~ e)."""
    e = errors.detach().flatten()
    k = math.floor(fraction * e.numel())
    logits = torch.log(e / e.sum() + 1e-20)
    if not deterministic:
        u = torch.rand_like(logits)
        logits = logits - torch.log(-torch.log(u + 1e-20) + 1e-20)
    mask = torch.zeros_like(e)
    if k > 0:
        mask[torch.topk(logits, k).indices] = 1.0
    return mask.reshape(errors.shape)


def softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class GECO(nn.Module):
    """Lagrange multiplier lambda = softplus(w)^2 (lambda_0 = 1) whose gradient is scaled by -rate, and the moving
    average of the reconstruction (Sonnet ``LagrangeMultiplier`` and ``MovingAverage(differentiable=True)``)."""

    def __init__(self, kappa: float = 0.05, decay: float = 0.99, rate: float = 0.01) -> None:
        super().__init__()
        self.kappa, self.decay, self.rate = float(kappa), float(decay), float(rate)
        self.w = nn.Parameter(torch.tensor(softplus_inverse(1.0)))
        self.w.register_hook(self._scale)
        self.register_buffer("moving_average", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _scale(self, grad: torch.Tensor) -> torch.Tensor:
        return -self.rate * grad

    @property
    def multiplier(self) -> torch.Tensor:
        return F.softplus(self.w) ** 2

    def forward(self, r: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction r [B] and kept pixels n [B] -> per-image terms [B], mean lambda * C_t.

        Training mode updates the moving average (MA_1 = R_1); eval mode uses the batch's R (no update)."""
        r_mean = r.mean()
        if self.training:
            ma, steps = self.moving_average, self.steps
            assert isinstance(ma, torch.Tensor) and isinstance(steps, torch.Tensor)
            with torch.no_grad():
                value = r_mean.detach().to(ma.dtype)
                ma.copy_(torch.where(steps == 0, value, self.decay * ma + (1 - self.decay) * value))
                steps += 1
            shift = (ma - r_mean).detach()
        else:
            shift = torch.zeros_like(r_mean)
        return self.multiplier * (r + shift - self.kappa * n)


class HierarchicalProbabilisticUNet(nn.Module):
    """HPU-Net.

    Args:
        latent_dim: d, latent channels per pixel per scale (reference ``latent_dims`` (1, 1, 1, 1): 1).
        in_channels: image channels C.
        num_classes: K output channels (1: binary foreground logits).
        filters: channels per level (reference: 24,48,96,192,192,192,192,192); the bottleneck of a res block
            has n // 2 channels.
        latent_levels: K latent scales (reference: 4); min(K, levels - 1) are used.
        blocks_per_level / convs_per_block: reference 3 / 3.
        loss_type: "geco" (reference) or "elbo"; kappa, geco_decay, geco_rate, top_k_percentage,
            deterministic_top_k: the reference's loss_kwargs (0.05, 0.99, 0.01, 0.02, False).
    """

    def __init__(self, latent_dim: int, in_channels: int = 1, num_classes: int = 1,
                 filters: str = "24,48,96,192,192,192,192,192", latent_levels: int = 4, blocks_per_level: int = 3,
                 convs_per_block: int = 3, loss_type: str = "geco", kappa: float = 0.05, geco_decay: float = 0.99,
                 geco_rate: float = 0.01, top_k_percentage: float = 0.02, deterministic_top_k: bool = False,
                 **_: object) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ProbsegError(f"latent_dim: expected an integer >= 1, got {latent_dim}")
        if loss_type not in ("geco", "elbo"):
            raise ProbsegError(f"loss_type: expected geco or elbo, got {loss_type!r}")
        channels = list(parse_filters(filters))
        if len(channels) < 2:
            raise ProbsegError(f"filters: HPU-Net needs at least 2 levels, got {filters!r}")
        self.latent_dim, self.in_channels = int(latent_dim), int(in_channels)
        self.num_levels = len(channels)
        self.latent_levels = max(1, min(int(latent_levels), len(channels) - 1))
        self.loss_type, self.top_k, self.deterministic_top_k = loss_type, float(top_k_percentage), bool(
            deterministic_top_k)
        d, L, b, c = self.latent_dim, self.latent_levels, int(blocks_per_level), int(convs_per_block)
        self.prior_net = HierarchicalCore(in_channels, channels, L, d, b, c)
        self.posterior_net = HierarchicalCore(in_channels + 2, channels, L, d, b, c, finish=False)
        self.f_comb = StitchingDecoder(channels, L, num_classes, b, c)
        self.geco = GECO(kappa, geco_decay, geco_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.trunc_normal_(m.bias, std=0.001, a=-0.002, b=0.002)

    # ------------------------------------------------------------------------------------------- layout
    def level_shapes(self, h: int, w: int) -> list[tuple[int, int, int]]:
        """(d, h_l, w_l) of each latent scale, l = 0 the coarsest (the bottleneck)."""
        f = 2 ** (self.num_levels - 1)
        if h % f or w % f:
            raise ProbsegError(f"HPU-Net with {self.num_levels} levels needs H and W divisible by {f}, got {h} x {w}; "
                               "use fewer filters")
        return [(self.latent_dim, (h // f) << lv, (w // f) << lv) for lv in range(self.latent_levels)]

    # ---------------------------------------------------------------------------------------------- protocol
    def prior(self, image: torch.Tensor) -> Normal:
        """The prior's conditionals along one ancestral draw, flattened: Normal loc/scale [B, D]."""
        _, _, dists, _ = self.prior_net(image)
        return flatten_normals(dists)

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z [B, n, D] injected into the prior net, then ``f_comb`` -> logits [B, n, K, H, W]."""
        b, n = z.shape[:2]
        h, w = image.shape[-2:]
        given = split_levels(z.reshape(b * n, -1), self.level_shapes(h, w))
        out, feats, _, _ = self.prior_net(image, given=given, repeat=n)
        logits = self.f_comb(out, feats)
        return logits.reshape(b, n, *logits.shape[1:])

    def sample(self, image: torch.Tensor, n: int, mean: bool | Sequence[bool] = False) -> torch.Tensor:
        """n ancestral samples of the prior (encoder run once) -> logits [B, n, K, H, W].

        ``mean``: True takes every scale's mean (deterministic), a list of one bool per latent scale (l = 0 the
        coarsest) the means of the scales marked True, e.g. ``[False, True, True]`` varies only the global z_0 (the
        reference's ``sample(img, mean=[0, 1, 1, 1])``). The evaluation calls ``sample(image, n)``: all sampled.

        Raises:
            ProbsegError: a list whose length is not the number of latent scales.
        """
        b = image.shape[0]
        self.level_shapes(*image.shape[-2:])
        flags = [bool(mean)] * self.latent_levels if isinstance(mean, bool) else [bool(m) for m in mean]
        if len(flags) != self.latent_levels:
            raise ProbsegError(f"mean: expected one flag per latent scale ({self.latent_levels}), got {len(flags)}")
        out, feats, _, _ = self.prior_net(image, repeat=n, mean=flags)
        logits = self.f_comb(out, feats)
        return logits.reshape(b, n, *logits.shape[1:])

    def reconstruction_terms(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k cross-entropy: per image (sum of the kept pixels' CE [B], kept pixels [B])."""
        e = F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1)
        mask = top_k_mask(e, self.top_k, self.deterministic_top_k)
        return (mask * e).sum(1), mask.sum(1)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """One annotation k per image; posterior latents injected into the prior net; ``reconstruction`` [B] the
        GECO term lambda * (MA(R) - kappa * N) (or the ELBO variant's top-k R) in training mode. In eval mode (the
        suite's validation loss, which selects the checkpoint and scores ``tune``'s val_loss) it is the BCE summed
        over all pixels, so the validation loss is the negative ELBO: GECO's lambda changes from epoch to epoch,
        and a loss scaled by it would pick the epoch with the most convenient lambda, not the best model."""
        b, a = masks.shape[:2]
        h, w = image.shape[-2:]
        shapes = self.level_shapes(h, w)
        k = torch.randint(a, (b,), device=masks.device)
        y = masks[torch.arange(b, device=masks.device), k].unsqueeze(1).to(image.dtype)
        _, _, q, z_q = self.posterior_net(torch.cat([1.0 - y, y, image], 1))
        out, feats, p, _ = self.prior_net(image, given=z_q)
        logits = self.f_comb(out, feats)
        if self.training:
            r, n = self.reconstruction_terms(logits.float(), y.float())
            reconstruction = self.geco(r, n) if self.loss_type == "geco" else r
        else:  # validation: the negative ELBO's BCE over every pixel, free of lambda and of the top-k draw
            reconstruction = F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none").flatten(
                1).sum(1)
        prior, posterior = flatten_normals(p), flatten_normals(q)
        return TrainOutput(
            logits=logits, target=y, prior=prior, posterior=posterior,
            posterior_samples=flatten_levels(z_q)[:, None], prior_samples=prior.rsample()[:, None],
            annotation_index=k, reconstruction=reconstruction,
            level_sizes=tuple(a_ * b_ * c_ for a_, b_, c_ in shapes),
        )
