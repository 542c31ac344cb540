"""PU-Net+NF: the flows' log-determinants against autograd, identity at initialisation, invertibility, and the
Monte-Carlo KL with the base density evaluated at the BASE sample z_0."""

from __future__ import annotations

import pytest
import torch
from nflows.transforms.base import InverseNotAvailable
from torch import nn
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_models.flows import PlanarTransform, RadialTransform, build_flow
from probseg_models.punet_nf import FlowProbabilisticUNet
from probseg_regularizers.kl import KLDivergence

D, C = 4, 6


def randomise(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """Non-zero random parameters everywhere (the default init zeroes the u / c heads)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module


def autograd_logdet(transform, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """log|det df/dz| of one sample from the full autograd Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda v: transform(v[None], context[None])[0][0], z)
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("make", [
    lambda: randomise(PlanarTransform(D, C)),
    lambda: randomise(RadialTransform(D, C)),
    lambda: randomise(build_flow("planar", D, C, 3), 0.7),
    lambda: randomise(build_flow("radial", D, C, 2), 0.7),
    lambda: build_flow("maf", D, C, 2),
], ids=["planar", "radial", "planar-x3", "radial-x2", "maf-x2"])
def test_log_det_equals_the_autograd_jacobian(make):
    transform = make().double()
    torch.manual_seed(0)
    z, ctx = torch.randn(8, D, dtype=torch.float64), torch.randn(8, C, dtype=torch.float64)
    _, logdet = transform(z, ctx)
    assert logdet.shape == (8,)
    for i in range(8):
        torch.testing.assert_close(logdet[i], autograd_logdet(transform, z[i], ctx[i]), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("cls", [PlanarTransform, RadialTransform])
def test_a_new_flow_is_the_identity_with_zero_log_det(cls):
    torch.manual_seed(0)
    transform = cls(D, C)
    z, ctx = torch.randn(16, D), torch.randn(16, C)
    out, logdet = transform(z, ctx)
    torch.testing.assert_close(out, z)
    torch.testing.assert_close(logdet, torch.zeros(16))


def test_planar_with_zero_u_is_the_identity_whatever_w_and_b():
    transform = randomise(PlanarTransform(D, C))
    with torch.no_grad():
        transform.u.weight.zero_()
        transform.u.bias.zero_()
    z, ctx = torch.randn(5, D), torch.randn(5, C)
    out, logdet = transform(z, ctx)
    torch.testing.assert_close(out, z)
    torch.testing.assert_close(logdet, torch.zeros(5))


def test_planar_invertibility_constraint_holds_for_adversarial_parameters():
    transform = PlanarTransform(D, C)
    with torch.no_grad():  # u = -10 w: w^T u very negative, the unconstrained map would fold
        transform.w.weight.zero_()
        transform.w.bias.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        transform.u.weight.zero_()
        transform.u.bias.copy_(-10 * transform.w.bias)
    ctx = torch.randn(3, C)
    u_hat, w, _ = transform.parameters_for(ctx)
    assert ((w * u_hat).sum(-1) > -1).all()
    z = torch.randn(1000, D)
    _, logdet = transform(z, torch.randn(1000, C))
    assert torch.isfinite(logdet).all()
    with pytest.raises(InverseNotAvailable):
        transform.inverse(z, ctx)


def test_bad_flow_arguments():
    with pytest.raises(ProbsegError, match="flow"):
        build_flow("glow", D, C, 2)
    with pytest.raises(ProbsegError, match="num_flows"):
        build_flow("planar", D, C, 0)


def flow_output(z0: torch.Tensor, z_k: torch.Tensor, log_det: torch.Tensor, q0: Normal, prior: Normal) -> TrainOutput:
    b = z0.shape[0]
    return TrainOutput(
        logits=torch.zeros(b, 1, 2, 2), target=torch.zeros(b, 1, 2, 2), prior=prior, posterior=q0,
        posterior_samples=z_k[:, None], prior_samples=torch.zeros(b, 1, z0.shape[1]),
        annotation_index=torch.zeros(b, dtype=torch.long), base_samples=z0, log_det=log_det,
    )


def test_monte_carlo_kl_evaluates_the_base_density_at_the_base_sample():
    q0 = Normal(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.5]]))
    prior = Normal(torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 1.0]]))
    z0, z_k, log_det = torch.tensor([[0.3, 0.8]]), torch.tensor([[1.3, -0.2]]), torch.tensor([0.25])
    kl = KLDivergence()(flow_output(z0, z_k, log_det, q0, prior))
    expected = q0.log_prob(z0).sum() - 0.25 - prior.log_prob(z_k).sum()
    wrong = q0.log_prob(z_k).sum() - 0.25 - prior.log_prob(z_k).sum()  # base density at z_K: the public bug
    torch.testing.assert_close(kl, expected[None])
    assert abs(float(expected - wrong)) > 0.5


def test_monte_carlo_kl_with_an_identity_flow_is_unbiased_for_the_analytic_kl():
    torch.manual_seed(0)
    q0 = Normal(torch.randn(1, 3).expand(200_000, 3), (torch.rand(1, 3) + 0.5).expand(200_000, 3))
    prior = Normal(torch.randn(1, 3).expand(200_000, 3), (torch.rand(1, 3) + 0.5).expand(200_000, 3))
    z0 = q0.sample()
    mc = KLDivergence()(flow_output(z0, z0, torch.zeros(200_000), q0, prior)).mean()
    analytic = torch.distributions.kl_divergence(q0, prior).sum(-1)[0]
    assert float(mc) == pytest.approx(float(analytic), abs=0.02)  # MC standard error < 0.005 nats here


def test_punet_nf_forward_flows_the_base_sample():
    torch.manual_seed(0)
    model = FlowProbabilisticUNet(latent_dim=3, filters="4,8", convs_per_block=1, num_flows=2, flow="radial")
    randomise(model.flow, 0.5)
    x = torch.rand(2, 1, 16, 16)
    y = (torch.rand(2, 4, 16, 16) > 0.5).to(torch.uint8)
    out = model(x, y)
    assert out.base_samples is not None and out.log_det is not None and out.log_det.shape == (2,)
    _, context = model.posterior_net.encode(torch.cat([x, out.target], 1))
    z_k, log_det = model.flow(out.base_samples, context=context)
    torch.testing.assert_close(out.posterior_samples[:, 0], z_k)
    torch.testing.assert_close(out.log_det, log_det)
    assert not torch.allclose(z_k, out.base_samples)
