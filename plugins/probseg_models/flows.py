"""Amortised normalizing flows for the PU-Net posterior, on nflows' Transform API.

nflows has no planar or radial transform; :class:`PlanarTransform` and :class:`RadialTransform` implement them
(Rezende & Mohamed 2015) with their parameters computed from a context vector (the posterior encoder's pooled
features), as in the PU-Net+NF of Valiuddin et al. 2021. ``forward(z, context) -> (f(z), log|det df/dz|)``;
neither has a closed-form inverse (:class:`nflows.transforms.base.InverseNotAvailable`). The masked
autoregressive alternative is nflows' own ``MaskedAffineAutoregressiveTransform``.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform, InverseNotAvailable, Transform
from nflows.transforms.permutations import ReversePermutation
from torch import nn
from torch.nn import functional as F

from probseg_bench.errors import ProbsegError

FLOWS = ("planar", "radial", "maf")
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_INV_1) = 1


class PlanarTransform(Transform):
    """One planar step f(z) = z + u_hat tanh(w^T z + b), with u, w, b computed from the context.

    Invertibility (Rezende & Mohamed 2015, appendix A): u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with
    m(x) = -1 + softplus(x + log(e - 1)), so that w^T u_hat > -1 and m(0) = 0: u = 0 gives u_hat = 0, the
    identity with log-det 0. The u head is initialised to zero, so a new flow starts as the identity.
    log|det J| = log|1 + u_hat^T w tanh'(w^T z + b)|.

    Shapes: inputs [B, d], context [B, C] -> outputs [B, d], logabsdet [B].
    """

    def __init__(self, features: int, context_features: int) -> None:
        super().__init__()
        self.u = nn.Linear(context_features, features)
        self.w = nn.Linear(context_features, features)
        self.b = nn.Linear(context_features, 1)
        nn.init.zeros_(self.u.weight)
        nn.init.zeros_(self.u.bias)

    def parameters_for(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u_hat [B, d], w [B, d], b [B]) for a context [B, C]."""
        u, w, b = self.u(context), self.w(context), self.b(context)[:, 0]
        wu = (w * u).sum(-1, keepdim=True)
        m = -1.0 + F.softplus(wu + _SOFTPLUS_INV_1)
        u_hat = u + (m - wu) * w / (w.pow(2).sum(-1, keepdim=True) + 1e-12)
        return u_hat, w, b

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None:
            raise ValueError("PlanarTransform is amortised: a context is required")
        u_hat, w, b = self.parameters_for(context)
        h = torch.tanh((w * inputs).sum(-1) + b)  # [B]
        outputs = inputs + u_hat * h[:, None]
        logabsdet = torch.log(torch.abs(1.0 + (1.0 - h.pow(2)) * (w * u_hat).sum(-1)))
        return outputs, logabsdet

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise InverseNotAvailable()


class RadialTransform(Transform):
    """One radial step f(z) = z + beta h(r) (z - z_0), h = 1 / (alpha + r), r = ||z - z_0||, with z_0,
    alpha = softplus(a) > 0 and beta = -alpha + softplus(c + a) >= -alpha (invertible) computed from the context.
    The c head starts at zero, so beta = 0 and a new flow is the identity.
    log|det J| = (d - 1) log(1 + beta h) + log(1 + beta h - beta r / (alpha + r)^2).

    Shapes: inputs [B, d], context [B, C] -> outputs [B, d], logabsdet [B].
    """

    def __init__(self, features: int, context_features: int) -> None:
        super().__init__()
        self.z0 = nn.Linear(context_features, features)
        self.a = nn.Linear(context_features, 1)
        self.c = nn.Linear(context_features, 1)
        nn.init.zeros_(self.c.weight)
        nn.init.zeros_(self.c.bias)
        self.features = features

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None:
            raise ValueError("RadialTransform is amortised: a context is required")
        a = self.a(context)[:, 0]
        alpha = F.softplus(a)
        beta = -alpha + F.softplus(self.c(context)[:, 0] + a)
        diff = inputs - self.z0(context)
        r = diff.norm(dim=-1)
        h = 1.0 / (alpha + r)
        outputs = inputs + (beta * h)[:, None] * diff
        logabsdet = (self.features - 1) * torch.log1p(beta * h) + torch.log1p(beta * h - beta * r * h.pow(2))
        return outputs, logabsdet

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise InverseNotAvailable()


def build_flow(kind: str, features: int, context_features: int, num_flows: int) -> CompositeTransform:
    """``num_flows`` amortised steps of ``kind`` (planar | radial | maf) as one nflows CompositeTransform.

    MAF steps are nflows' ``MaskedAffineAutoregressiveTransform`` (hidden width max(2 d, 16), conditioned on the
    context) with a reversed feature order between steps.

    Raises:
        ProbsegError: unknown kind or num_flows < 1.
    """
    if kind not in FLOWS:
        raise ProbsegError(f"flow: expected one of {', '.join(FLOWS)}, got {kind!r}")
    if int(num_flows) < 1:
        raise ProbsegError(f"num_flows: expected an integer >= 1, got {num_flows}")
    steps: list[Transform] = []
    for i in range(int(num_flows)):
        if kind == "planar":
            steps.append(PlanarTransform(features, context_features))
        elif kind == "radial":
            steps.append(RadialTransform(features, context_features))
        else:
            if i > 0:
                steps.append(ReversePermutation(features))
            steps.append(MaskedAffineAutoregressiveTransform(
                features, max(2 * features, 16), context_features=context_features
            ))
    return CompositeTransform(steps)
