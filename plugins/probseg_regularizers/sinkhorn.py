"""The debiased Sinkhorn divergence between posterior and prior samples, per image (geomloss)."""

from __future__ import annotations

import torch
from geomloss import SamplesLoss

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError


class SinkhornDivergence:
    """S_eps({z_q,i}, {z_p,i}) per image (seed paper Eq. 11 and 16; Feydy et al. 2019).

    Uses ``geomloss.SamplesLoss("sinkhorn", p=p, blur=eps**(1/p), scaling=scaling, debias=True)`` in batch mode:
    ``out.posterior_samples`` [B, S, d] and ``out.prior_samples`` [B, S, d] are S points per image with uniform
    weights 1/S; the result is one divergence per image, float [B]. geomloss's ground cost is |x - y|^p / p and
    its entropic regularisation is eps = blur^p, so ``epsilon`` is in the units of that cost.

    Raises:
        ProbsegError: for epsilon <= 0 or p not in {1, 2}.
    """

    def __init__(self, epsilon: float = 0.0025, sinkhorn_p: int = 2, sinkhorn_scaling: float = 0.5) -> None:
        if not epsilon > 0:
            raise ProbsegError(f"epsilon: expected a positive number, got {epsilon}")
        if sinkhorn_p not in (1, 2):
            raise ProbsegError(f"sinkhorn_p: expected 1 or 2, got {sinkhorn_p}")
        self.epsilon = float(epsilon)
        self.blur = float(epsilon) ** (1.0 / sinkhorn_p)
        self.loss = SamplesLoss("sinkhorn", p=sinkhorn_p, blur=self.blur, scaling=sinkhorn_scaling, debias=True)

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        return self.loss(out.posterior_samples.contiguous(), out.prior_samples.contiguous())
