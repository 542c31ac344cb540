"""PU-Net+NF: the Probabilistic U-Net with a normalizing-flow posterior (Valiuddin et al. 2021)."""

from __future__ import annotations

import torch

from probseg_bench.api import TrainOutput
from probseg_models.flows import build_flow
from probseg_models.punet import ProbabilisticUNet


class FlowProbabilisticUNet(ProbabilisticUNet):
    """PU-Net whose posterior sample is refined by an amortised flow: z_0 ~ q_0(z|x, y_k) (axis-aligned
    Gaussian), z_K = f_K o ... o f_1(z_0; h) with h the posterior encoder's pooled features [B, C].

    The KL term is the one-sample Monte-Carlo estimate ``log q_0(z_0) - sum_k log|det J_k| - log p(z_K|x)``
    computed by the ``kl`` regularizer from ``TrainOutput.base_samples`` (z_0), ``log_det`` and
    ``posterior_samples`` (z_K). Sampling at test time uses the prior, as in the PU-Net.

    Args:
        num_flows: number of flow steps K (paper: 2).
        flow: ``planar`` (paper), ``radial`` or ``maf``.
        others: see :class:`ProbabilisticUNet`.
    """

    def __init__(self, latent_dim: int, *args: object, num_flows: int = 2, flow: str = "planar",
                 **kwargs: object) -> None:
        super().__init__(latent_dim, *args, **kwargs)  # type: ignore[arg-type]
        self.flow = build_flow(flow, self.latent_dim, self.posterior_net.encoder.out_channels, num_flows)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks {0,1} [B, A, H, W] -> TrainOutput with base_samples and log_det."""
        k, y = self._pick_annotation(masks)
        features = self.unet(image)
        prior = self.prior_net(image)
        posterior, context = self.posterior_net.encode(torch.cat([image, y], 1))
        z0 = posterior.rsample()
        z_k, log_det = self.flow(z0, context=context)
        logits = self.head(features, z_k[:, None])[:, 0]
        return TrainOutput(
            logits=logits,
            target=y,
            prior=prior,
            posterior=posterior,
            posterior_samples=z_k[:, None],
            prior_samples=prior.rsample()[:, None],
            annotation_index=k,
            base_samples=z0,
            log_det=log_det,
        )
