"""The debiased Sinkhorn divergence between posterior and prior samples, per image (geomloss)."""

from __future__ import annotations

import torch
from geomloss import SamplesLoss

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError

CORRECTIONS = ("none", "split")


class SinkhornDivergence:
    """S_eps({z_q,i}, {z_p,j}) per image (seed paper Eq. 11 and 16; Feydy et al. 2019).

    Uses ``geomloss.SamplesLoss("sinkhorn", p=p, blur=eps**(1/p), scaling=scaling, debias=True)`` in batch mode:
    ``out.posterior_samples`` [B, S, d] and the prior samples [B, M, d] are point sets per image with uniform
    weights; the result is one divergence per image, float [B]. geomloss's ground cost is |x - y|^p / p and its
    entropic regularisation is eps = blur^p, so ``epsilon`` is in the units of that cost.

    The defaults are the paper's formulation (Algorithm 1): the model's prior samples, as many as posterior
    samples, gradients reaching the prior through them, no correction. Options (issue 14,
    docs/studies/spunet-collapse.md):

    * ``sinkhorn_prior_samples`` M > 0: draw M reparameterised samples of ``out.prior`` here instead of using
      ``out.prior_samples``;
    * ``sinkhorn_prior_gradient`` False: the prior samples are detached (only the posterior is moved by the term);
    * ``sinkhorn_correction = "split"``: remove the finite-sample bias. S_eps between two *independent* n-point
      samples of one distribution is positive and, for cost |x - y|^2 / 2, grows with the square of its scale, so
      the plain estimator rewards shrinking every latent sigma (the collapse). With the posterior and prior sets
      each split into halves (q1, q2), (p1, p2) of equal size, the term becomes
      ``(S(q1, p1) + S(q2, p2)) / 2 - S(q1, q2) / 2 - S(p1, p2) / 2``, whose expectation is 0 when q = p
      whatever the scale (it can be negative on one draw). The halves must be identically distributed: it needs
      an even number of independent sample blocks (``out.sample_blocks``; SPU-Net: ``samples_per_annotation``
      2, 4, ...) and as many prior as posterior samples.

    Raises:
        ProbsegError: epsilon <= 0, p not in {1, 2}, a negative prior-sample count, an unknown correction, or
            (when called) point sets the correction cannot split.
    """

    def __init__(self, epsilon: float = 0.0025, sinkhorn_p: int = 2, sinkhorn_scaling: float = 0.5,
                 sinkhorn_prior_samples: int = 0, sinkhorn_prior_gradient: bool = True,
                 sinkhorn_correction: str = "none") -> None:
        if not epsilon > 0:
            raise ProbsegError(f"epsilon: expected a positive number, got {epsilon}")
        if sinkhorn_p not in (1, 2):
            raise ProbsegError(f"sinkhorn_p: expected 1 or 2, got {sinkhorn_p}")
        if sinkhorn_prior_samples < 0:
            raise ProbsegError(f"sinkhorn_prior_samples: expected 0 (the model's) or a positive count, "
                               f"got {sinkhorn_prior_samples}")
        if sinkhorn_correction not in CORRECTIONS:
            raise ProbsegError(f"sinkhorn_correction: expected one of {', '.join(CORRECTIONS)}, "
                               f"got {sinkhorn_correction!r}")
        self.epsilon = float(epsilon)
        self.blur = float(epsilon) ** (1.0 / sinkhorn_p)
        self.prior_samples = int(sinkhorn_prior_samples)
        self.prior_gradient = bool(sinkhorn_prior_gradient)
        self.correction = sinkhorn_correction
        self.p, self.scaling = sinkhorn_p, float(sinkhorn_scaling)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """geomloss's batched S_eps(x[b], y[b]) -> [B]. The diameter of epsilon-scaling is given to geomloss: its
        own estimate (the bounding-box diagonal of all points), or the blur when that is 0. geomloss's default
        fails with "Maximum allowed size exceeded" when every point coincides (diameter 0, e.g. a model whose
        latents are all equal), where the divergence is simply 0. Non-finite points give NaN, which training
        reports as a divergence."""
        points = torch.cat([x, y], dim=1).detach().reshape(-1, x.shape[-1])
        if not bool(torch.isfinite(points).all()):
            return torch.full(x.shape[:1], float("nan"), dtype=x.dtype, device=x.device) + 0 * (x.sum() + y.sum())
        diameter = float((points.max(0).values - points.min(0).values).norm()) or self.blur
        return SamplesLoss("sinkhorn", p=self.p, blur=self.blur, scaling=self.scaling, debias=True,
                           diameter=diameter)(x, y)

    def prior_points(self, out: TrainOutput) -> torch.Tensor:
        """The prior point set [B, M, d] this term compares the posterior samples with."""
        prior, _, _, prior_samples = out.latent()
        if self.prior_samples:
            p = prior.rsample((self.prior_samples,)).transpose(0, 1)
        else:
            p = prior_samples
        return p if self.prior_gradient else p.detach()

    def __call__(self, out: TrainOutput) -> torch.Tensor:
        q = out.latent()[2].contiguous()
        p = self.prior_points(out).contiguous()
        if self.correction == "none":
            return self.loss(q, p)
        s, m = q.shape[1], p.shape[1]
        if out.sample_blocks % 2 or s != m or s % 2:
            raise ProbsegError(
                "sinkhorn_correction 'split': needs posterior samples in an even number of independent blocks and "
                f"as many prior samples; got {out.sample_blocks} block(s) of {s} posterior samples and {m} prior "
                "samples per image (spunet: --hp samples_per_annotation=2 or 4, and sinkhorn_prior_samples 0)"
            )
        h = s // 2
        q1, q2, p1, p2 = q[:, :h], q[:, h:], p[:, :h], p[:, h:]
        b = q.shape[0]
        # one batched geomloss call for the four divergences of every image
        v = self.loss(torch.cat([q1, q2, q1, p1]).contiguous(), torch.cat([p1, p2, q2, p2]).contiguous())
        cross_a, cross_b, within_q, within_p = v[:b], v[b : 2 * b], v[2 * b : 3 * b], v[3 * b :]
        return 0.5 * (cross_a + cross_b) - 0.5 * within_q - 0.5 * within_p
