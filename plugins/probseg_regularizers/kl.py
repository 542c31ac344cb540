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
    (``out.base_samples``) and z_K the flowed sample of annotation k. A hierarchical model
    (``out.level_sizes``): sum_l w_l KL_l with the closed-form KL of each level (:func:`kl_per_level`) and
    ``out.level_weights`` (all 1 when empty).
    """

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        prior, posterior, posterior_samples, _ = out.latent()
        if out.level_sizes and out.log_det is None:
            per_level = kl_per_level(out)
            weights = out.level_weights or (1.0,) * per_level.shape[1]
            return (per_level * per_level.new_tensor(weights)).sum(1)
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


def kl_per_level(out: TrainOutput) -> torch.Tensor:
    """Closed-form KL(q_l || p_l) of each latent level of a hierarchical model, summed over the level's
    elements: [B, L] (a model with one level: [B, 1])."""
    prior, posterior, _, _ = out.latent()
    kl = kl_divergence(posterior, prior)
    sizes = list(out.level_sizes) or [kl.shape[-1]]
    return torch.stack([block.sum(-1) for block in torch.split(kl, sizes, -1)], 1)
