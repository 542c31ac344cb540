"""Maximum mean discrepancy between posterior and prior samples, per image (geomloss kernel losses)."""

from __future__ import annotations

import torch
from geomloss import SamplesLoss

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError

KERNELS = ("gaussian", "laplacian", "energy")


class MaximumMeanDiscrepancy:
    """Squared MMD per image with uniform weights (Gretton et al. 2012), through
    ``geomloss.SamplesLoss(kernel, blur=mmd_blur)``: 1/2 ||mu_q - mu_p||^2_k in the kernel's RKHS, with
    k(x, y) = exp(-|x - y|^2 / (2 sigma^2)) (gaussian), exp(-|x - y| / sigma) (laplacian) or -|x - y| (energy).

    ``out.posterior_samples`` and ``out.prior_samples`` [B, S, d] -> float [B]. A drop-in replacement for the
    ``sinkhorn`` term of SPU-Net (``run --model spunet --regularizer mmd``): the Sinkhorn divergence tends to
    the energy-distance MMD as epsilon grows (Feydy et al. 2019).

    Raises:
        ProbsegError: unknown kernel or a non-positive bandwidth.
    """

    def __init__(self, mmd_kernel: str = "gaussian", mmd_blur: float = 1.0) -> None:
        if mmd_kernel not in KERNELS:
            raise ProbsegError(f"mmd_kernel: expected one of {', '.join(KERNELS)}, got {mmd_kernel!r}")
        if not mmd_blur > 0:
            raise ProbsegError(f"mmd_blur: expected a positive bandwidth, got {mmd_blur}")
        self.loss = SamplesLoss(mmd_kernel, blur=float(mmd_blur))

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        _, _, posterior_samples, prior_samples = out.latent()
        return self.loss(posterior_samples.contiguous(), prior_samples.contiguous())
