"""The Sinkhorn PU-Net (Valiuddin et al. 2024, Eq. 16 and Algorithm 1)."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_models.punet import ProbabilisticUNet


class SinkhornProbabilisticUNet(ProbabilisticUNet):
    """SPU-Net: the PU-Net architecture trained with Algorithm 1 of the seed paper.

    ``forward`` encodes the posterior of EVERY annotation in one batched pass ([B*A, C+1, H, W] through the
    posterior encoder, no Python loop over annotators), draws one posterior sample per annotation and A prior
    samples (for the Sinkhorn divergence between them), and reconstructs one randomly chosen annotation k per
    image, whose posterior also enters the KL term. Inference is the PU-Net's (prior sampling).

    ``samples_per_annotation`` R (default 1, the paper): R independent posterior samples per annotation, laid out
    sample-major ([B, R * A, d]: the first A points hold one sample of every annotation, the next A another), and
    R * A prior samples; R >= 2 gives the ``sinkhorn`` regularizer's ``split`` correction its two halves.
    """

    def __init__(self, latent_dim: int, samples_per_annotation: int = 1, **kwargs: Any) -> None:
        super().__init__(latent_dim, **kwargs)
        if int(samples_per_annotation) < 1:
            raise ProbsegError(f"samples_per_annotation: expected an integer >= 1, got {samples_per_annotation}")
        self.samples_per_annotation = int(samples_per_annotation)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks {0,1} [B, A, H, W] -> TrainOutput with S = R * A samples each."""
        b, a, h, w = masks.shape
        ar = torch.arange(b, device=masks.device)
        k = torch.randint(a, (b,), device=masks.device)
        features = self.unet(image)
        prior = self.prior_net(image)
        pairs = torch.cat(
            [image.repeat_interleave(a, 0), masks.reshape(b * a, 1, h, w).to(image.dtype)], 1
        )  # [B*A, C+1, H, W], annotation-major within each image
        post_all = self.posterior_net(pairs)
        mu = post_all.loc.view(b, a, -1)
        sigma = post_all.scale.view(b, a, -1)
        r = self.samples_per_annotation
        noise = torch.randn((b, r, a, mu.shape[-1]), dtype=mu.dtype, device=mu.device)
        z_q = mu[:, None] + sigma[:, None] * noise  # [B, R, A, d], reparameterised (R = 1: the paper's draw)
        posterior = Normal(mu[ar, k], sigma[ar, k], validate_args=False)
        logits = self.head(features, z_q[ar, 0, k][:, None])[:, 0]
        return TrainOutput(
            logits=logits,
            target=masks[ar, k].unsqueeze(1).to(torch.float32),
            prior=prior,
            posterior=posterior,
            posterior_samples=z_q.reshape(b, r * a, -1),
            prior_samples=prior.rsample((r * a,)).transpose(0, 1),
            annotation_index=k,
            sample_blocks=r,
        )
