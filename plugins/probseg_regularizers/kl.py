"""KL(q(z|x, y_k) || p(z|x)) per image."""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from probseg_bench.api import TrainOutput


class KLDivergence:
    """Per-image KL divergence between the posterior of the reconstructed annotation and the prior.

    Without a flow (``out.log_det is None``): the closed form for axis-aligned Gaussians, summed over the d
    latent dimensions -> [B] (nats). With a flow posterior: a one-sample Monte-Carlo estimate with the change of
    variables, ``log q0(z0) - log|det dz_K/dz_0| - log p(z_K|x)``, where z0 is the BASE sample
    (``out.base_samples``) and z_K the flowed sample of annotation k.
    """

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        prior, posterior, posterior_samples, _ = out.latent()
        if out.log_det is None:
            return kl_divergence(posterior, prior).sum(-1)
        if out.base_samples is None:
            raise ValueError("a flow posterior must provide base_samples (z_0) with log_det")
        b = posterior_samples.shape[0]
        idx = out.annotation_index if posterior_samples.shape[1] > 1 else torch.zeros_like(out.annotation_index)
        z_k = posterior_samples[torch.arange(b, device=idx.device), idx]
        return (
            posterior.log_prob(out.base_samples).sum(-1) - out.log_det - prior.log_prob(z_k).sum(-1)
        )
