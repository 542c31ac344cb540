"""The Sinkhorn PU-Net (Valiuddin et al. 2024, Eq. 16 and Algorithm 1)."""

from __future__ import annotations

import torch
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_models.punet import ProbabilisticUNet


class SinkhornProbabilisticUNet(ProbabilisticUNet):
    """SPU-Net: the PU-Net architecture trained with Algorithm 1 of the seed paper.

    ``forward`` encodes the posterior of EVERY annotation in one batched pass ([B*A, C+1, H, W] through the
    posterior encoder, no Python loop over annotators), draws one posterior sample per annotation and A prior
    samples (for the Sinkhorn divergence between them), and reconstructs one randomly chosen annotation k per
    image, whose posterior also enters the KL term. Inference is the PU-Net's (prior sampling).
    """

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks {0,1} [B, A, H, W] -> TrainOutput with S = A samples each."""
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
        z_q = mu + sigma * torch.randn_like(mu)  # [B, A, d], reparameterised
        posterior = Normal(mu[ar, k], sigma[ar, k], validate_args=False)
        logits = self.head(features, z_q[ar, k][:, None])[:, 0]
        return TrainOutput(
            logits=logits,
            target=masks[ar, k].unsqueeze(1).to(torch.float32),
            prior=prior,
            posterior=posterior,
            posterior_samples=z_q,
            prior_samples=prior.rsample((a,)).transpose(0, 1),
            annotation_index=k,
        )
