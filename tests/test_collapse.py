"""SPU-Net's sample collapse (issue 14): the finite-sample bias of the Sinkhorn term that drives it, the options
that remove it, and the diagnostic that makes a collapse visible."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.diagnostics import COLLAPSE_RATIO, collapse_warning
from probseg_bench.errors import ProbsegError
from probseg_models.spunet import SinkhornProbabilisticUNet
from probseg_regularizers.sinkhorn import SinkhornDivergence

SMALL = {"filters": "4,8,16", "convs_per_block": 2}


def equal_gaussians(scale: float, n: int, trials: int, dim: int = 6, seed: int = 0, blocks: int = 2) -> TrainOutput:
    """``trials`` images whose posterior and prior are both N(0, scale^2 I): n independent points of each (i.i.d.,
    so any split into ``blocks`` is a split into independent blocks)."""
    g = torch.Generator().manual_seed(seed)
    q = scale * torch.randn(trials, n, dim, generator=g, dtype=torch.float64)
    p = scale * torch.randn(trials, n, dim, generator=g, dtype=torch.float64)
    zero = torch.zeros(trials, dim, dtype=torch.float64)
    prior = Normal(zero, zero + scale)
    return TrainOutput(logits=zero, target=zero, prior=prior, posterior=prior, posterior_samples=q, prior_samples=p,
                       annotation_index=torch.zeros(trials, dtype=torch.long), sample_blocks=blocks)


# ------------------------------------------------------------------------------------------------ the mechanism
def test_plain_sinkhorn_on_equal_distributions_is_positive_and_grows_with_the_square_of_the_scale():
    """The collapse mechanism: with the paper's 4 posterior vs 4 prior points (d = 6, eps = 0.0025), S_eps of
    two samples of the SAME Gaussian averages about 4 s^2 (measured: 4.04-4.14 s^2 for s = 0.1..3 over 1000
    draws), so beta = 100 charges ~400 s^2 per image at the optimum q = p: shrinking every sigma pays."""
    sink = SinkhornDivergence()
    means = {s: float(sink(equal_gaussians(s, 4, 400, seed=1)).mean()) for s in (0.1, 1.0, 3.0)}
    for s, m in means.items():
        assert 3.5 < m / s**2 < 4.7, (s, m)
    # the same draws scaled: exactly quadratic up to the entropic blur (eps is fixed, not scaled)
    assert means[3.0] / means[1.0] == pytest.approx(9.0, rel=0.05)


def test_more_points_only_slowly_reduce_the_bias():
    """n = 64 per side still leaves ~1.5 s^2 (measured 1.55): more prior samples alone cannot remove it."""
    sink = SinkhornDivergence()
    four = float(sink(equal_gaussians(1.0, 4, 300, seed=2)).mean())
    many = float(sink(equal_gaussians(1.0, 64, 100, seed=3)).mean())
    assert 1.2 < many < 1.9
    assert many < four / 2


def test_split_correction_is_unbiased_on_equal_distributions_at_every_scale():
    sink = SinkhornDivergence(sinkhorn_correction="split")
    for s in (0.1, 1.0, 3.0):
        values = sink(equal_gaussians(s, 8, 600, seed=4))
        mean, se = float(values.mean()), float(values.std() / len(values) ** 0.5)
        assert abs(mean) < 3.5 * se, (s, mean, se)
        assert abs(mean) < 0.1 * s**2  # vs ~3.2 s^2 for the plain estimator with 8 points


def test_split_correction_still_separates_different_distributions():
    out = equal_gaussians(1.0, 8, 300, seed=5)
    out.posterior_samples = out.posterior_samples + 2.0  # q = N(2, I): |mean shift|^2 / 2 = 12 in cost units
    values = SinkhornDivergence(sinkhorn_correction="split")(out)
    assert float(values.mean()) > 8.0


def test_split_correction_refuses_sets_it_cannot_split():
    out = equal_gaussians(1.0, 3, 2)
    with pytest.raises(ProbsegError, match="even number"):
        SinkhornDivergence(sinkhorn_correction="split")(out)
    # spunet's default layout (one sample of each of 4 annotations, one block): the halves would hold different
    # annotations, so they are not identically distributed
    with pytest.raises(ProbsegError, match="1 block"):
        SinkhornDivergence(sinkhorn_correction="split")(equal_gaussians(1.0, 4, 2, blocks=1))
    with pytest.raises(ProbsegError, match="as many prior"):
        SinkhornDivergence(sinkhorn_correction="split", sinkhorn_prior_samples=16)(equal_gaussians(1.0, 4, 2))
    with pytest.raises(ProbsegError, match="sinkhorn_correction"):
        SinkhornDivergence(sinkhorn_correction="bogus")
    with pytest.raises(ProbsegError, match="sinkhorn_prior_samples"):
        SinkhornDivergence(sinkhorn_prior_samples=-1)


# ---------------------------------------------------------------------------------------------------- options
def test_prior_samples_option_draws_that_many_reparameterised_prior_samples():
    loc = torch.zeros(2, 3, requires_grad=True)
    out = equal_gaussians(1.0, 4, 2, dim=3)
    out.prior = Normal(loc.double(), torch.ones(2, 3, dtype=torch.float64))
    sink = SinkhornDivergence(sinkhorn_prior_samples=32)
    assert sink.prior_points(out).shape == (2, 32, 3)
    sink(out).sum().backward()
    assert loc.grad is not None and loc.grad.abs().sum() > 0


def test_prior_gradient_option_detaches_the_prior_samples():
    z_p = torch.randn(2, 4, 3, requires_grad=True)
    z_q = torch.randn(2, 4, 3, requires_grad=True)
    out = equal_gaussians(1.0, 4, 2, dim=3)
    out.posterior_samples, out.prior_samples = z_q, z_p
    SinkhornDivergence(sinkhorn_prior_gradient=False)(out).sum().backward()
    assert z_p.grad is None and z_q.grad is not None
    SinkhornDivergence()(out).sum().backward()
    assert z_p.grad is not None


class AnnotationMeans(nn.Module):
    """A posterior net whose mean is the annotation's foreground fraction (per latent dim) and whose sigma is
    tiny, so that every sample identifies the annotation it came from."""

    def forward(self, pairs: torch.Tensor) -> Normal:
        frac = pairs[:, 1].flatten(1).mean(1, keepdim=True).expand(-1, 3)
        return Normal(frac, torch.full_like(frac, 1e-6))


def test_spunet_samples_per_annotation_lays_out_one_sample_of_every_annotation_per_block():
    torch.manual_seed(0)
    model = SinkhornProbabilisticUNet(latent_dim=3, samples_per_annotation=2, **SMALL)
    model.posterior_net = AnnotationMeans()
    x = torch.rand(2, 1, 16, 16)
    y = torch.zeros(2, 4, 16, 16, dtype=torch.uint8)
    for a in range(4):
        y[:, a, : 2 * (a + 1)] = 1  # annotation a covers 2(a+1) rows: distinct foreground fractions
    out = model(x, y)
    assert out.posterior_samples.shape == out.prior_samples.shape == (2, 8, 3) and out.sample_blocks == 2
    z = out.posterior_samples[..., 0]
    expected = torch.tensor([2 * (a + 1) / 16 for a in range(4)])
    torch.testing.assert_close(z[:, :4], expected.expand(2, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[:, 4:], expected.expand(2, 4), atol=1e-4, rtol=0)
    with pytest.raises(ProbsegError, match="samples_per_annotation"):
        SinkhornProbabilisticUNet(latent_dim=3, samples_per_annotation=0, **SMALL)


def test_spunet_default_is_the_papers_one_sample_per_annotation():
    out = SinkhornProbabilisticUNet(latent_dim=3, **SMALL)(torch.rand(2, 1, 16, 16),
                                                             torch.ones(2, 4, 16, 16, dtype=torch.uint8))
    assert out.posterior_samples.shape == out.prior_samples.shape == (2, 4, 3) and out.sample_blocks == 1


# ------------------------------------------------------------------------------------------------ the diagnostic
def test_collapse_warning_thresholds():
    assert collapse_warning("m", 0.008, 0.29) is not None
    line = collapse_warning("spunet", 0.008, 0.29)
    assert line is not None and "spunet" in line and "0.008" in line and "0.290" in line and "0.03x" in line
    assert collapse_warning("m", COLLAPSE_RATIO * 0.29 + 1e-6, 0.29) is None
    assert collapse_warning("m", 0.30, 0.29) is None
    assert collapse_warning("m", 0.0, 0.01) is None  # the annotators agree: no spread expected
    assert collapse_warning("m", float("nan"), 0.29) is None  # a record without the metric
