"""The paper models: architecture pieces and the behaviour public implementations got wrong at least once."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.nn import LatentInjectionHead
from probseg_models.punet import ProbabilisticUNet
from probseg_models.spunet import SinkhornProbabilisticUNet
from probseg_regularizers.kl import KLDivergence
from probseg_regularizers.mmd import MaximumMeanDiscrepancy
from probseg_regularizers.sinkhorn import SinkhornDivergence

SMALL = {"filters": "4,8,16", "convs_per_block": 2}


def batch(b: int = 3, a: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, generator=g), (torch.rand(b, a, size, size, generator=g) > 0.7).to(torch.uint8)


def test_head_equals_tiling_z_and_concatenating_with_the_features():
    torch.manual_seed(0)
    head = LatentInjectionHead(feature_channels=5, latent_dim=3, num_classes=1, num_convs=3)
    features, z = torch.randn(2, 5, 7, 7), torch.randn(2, 4, 3)
    # the reference: tile z over H x W, concatenate, the same 1x1 convolutions
    first = nn.Conv2d(5 + 3, 5, 1)
    with torch.no_grad():
        first.weight.copy_(torch.cat([head.feature_proj.weight, head.latent_proj.weight[..., None, None]], 1))
        first.bias.copy_(head.feature_proj.bias)
    tiled = z[..., None, None].expand(2, 4, 3, 7, 7)
    inp = torch.cat([features[:, None].expand(2, 4, 5, 7, 7), tiled], 2).flatten(0, 1)
    ref = head.last(head.hidden(torch.relu(first(inp)))).view(2, 4, 1, 7, 7)
    out = head(features, z)
    torch.testing.assert_close(out, ref)
    # the blocked, in-place computation has the same gradients as the plain convolutions
    features.requires_grad_(True)
    shared = [n for n, _ in head.named_parameters() if n.startswith(("hidden", "last"))]
    params = dict(head.named_parameters())
    ours = torch.autograd.grad((head(features, z) ** 2).sum(), [features, *(params[n] for n in shared)])
    tiled = torch.cat([features[:, None].expand(2, 4, 5, 7, 7), z[..., None, None].expand(2, 4, 3, 7, 7)], 2)
    reference = head.last(head.hidden(torch.relu(first(tiled.flatten(0, 1)))))
    theirs = torch.autograd.grad((reference**2).sum(), [features, *(params[n] for n in shared)])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [ProbabilisticUNet, SinkhornProbabilisticUNet])
def test_reconstruction_and_kl_use_the_same_annotation_k(cls):
    torch.manual_seed(0)
    model = cls(latent_dim=3, **SMALL)
    x, y = batch()
    out = model(x, y)
    k = out.annotation_index
    assert k.shape == (3,)
    torch.testing.assert_close(out.target, y[torch.arange(3), k].unsqueeze(1).float())
    expected = model.posterior_net(torch.cat([x, out.target], 1))
    torch.testing.assert_close(out.posterior.loc, expected.loc, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.posterior.scale, expected.scale, atol=1e-5, rtol=1e-4)


def test_spunet_encodes_every_annotation_in_one_batched_pass():
    torch.manual_seed(0)
    model = SinkhornProbabilisticUNet(latent_dim=3, **SMALL)
    calls: list[torch.Tensor] = []
    model.posterior_net.register_forward_hook(lambda mod, inp, out: calls.append(inp[0]))
    x, y = batch(b=3, a=4)
    out = model(x, y)
    assert len(calls) == 1
    pairs = calls[0]
    assert pairs.shape == (12, 2, 32, 32)  # B * A rows
    for b in range(3):
        for a in range(4):
            torch.testing.assert_close(pairs[b * 4 + a, 0], x[b, 0])
            torch.testing.assert_close(pairs[b * 4 + a, 1], y[b, a].float())
    assert out.posterior_samples.shape == out.prior_samples.shape == (3, 4, 3)


def test_punet_draws_one_posterior_and_one_prior_sample():
    out = ProbabilisticUNet(latent_dim=5, **SMALL)(*batch())
    assert out.posterior_samples.shape == out.prior_samples.shape == (3, 1, 5)
    assert out.logits.shape == out.target.shape == (3, 1, 32, 32)


def test_sample_uses_the_prior_and_computes_features_once():
    torch.manual_seed(0)
    model = ProbabilisticUNet(latent_dim=3, **SMALL).eval()
    x, _ = batch()

    def no_posterior(*args, **kwargs):
        raise AssertionError("sample() must not use the posterior")

    model.posterior_net.forward = no_posterior  # type: ignore[method-assign]
    unet_calls = []
    model.unet.register_forward_hook(lambda *a: unet_calls.append(1))
    torch.manual_seed(1)
    logits = model.sample(x, 7)
    assert logits.shape == (3, 7, 1, 32, 32)
    assert len(unet_calls) == 1
    torch.manual_seed(1)
    z = model.prior(x).sample((7,)).transpose(0, 1)  # the same draws, from p(z|x)
    torch.testing.assert_close(logits, model.decode(x, z))


@pytest.mark.parametrize("cls", [ProbabilisticUNet, SinkhornProbabilisticUNet])
@pytest.mark.parametrize("size", [(41, 41), (97, 130), (1, 7)])
def test_sides_not_divisible_by_the_pooling_work(cls, size):
    # three levels: 2 poolings; 41, 97, 130, 7 are not multiples of 4 (ceil-mode pooling, resize to the skip)
    torch.manual_seed(0)
    model = cls(latent_dim=2, filters="4,8,16", convs_per_block=1)
    x = torch.rand(2, 1, *size)
    y = (torch.rand(2, 3, *size) > 0.5).to(torch.uint8)
    assert model(x, y).logits.shape == (2, 1, *size)
    assert model.sample(x, 3).shape == (2, 3, 1, *size)


def test_extreme_encoder_outputs_give_finite_losses():
    torch.manual_seed(0)
    model = SinkhornProbabilisticUNet(latent_dim=3, **SMALL)
    with torch.no_grad():
        model.posterior_net.to_params.bias.fill_(1e4)  # log sigma -> +huge
        model.prior_net.to_params.bias.fill_(-1e4)  # log sigma -> -huge
    out = model(*batch())
    assert torch.isfinite(out.posterior.scale).all() and torch.isfinite(out.prior.scale).all()
    assert torch.isfinite(KLDivergence()(out)).all()


def gaussian_output(mu_q, s_q, mu_p, s_p, z_q, z_p) -> TrainOutput:
    b = mu_q.shape[0]
    return TrainOutput(
        logits=torch.zeros(b, 1, 2, 2), target=torch.zeros(b, 1, 2, 2), prior=Normal(mu_p, s_p),
        posterior=Normal(mu_q, s_q), posterior_samples=z_q, prior_samples=z_p,
        annotation_index=torch.zeros(b, dtype=torch.long),
    )


def test_analytic_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu_q, mu_p = torch.randn(2, 4), torch.randn(2, 4)
    s_q, s_p = torch.rand(2, 4) + 0.5, torch.rand(2, 4) + 0.5
    out = gaussian_output(mu_q, s_q, mu_p, s_p, torch.zeros(2, 1, 4), torch.zeros(2, 1, 4))
    analytic = KLDivergence()(out)
    z = Normal(mu_q, s_q).sample((200_000,))
    mc = (Normal(mu_q, s_q).log_prob(z) - Normal(mu_p, s_p).log_prob(z)).sum(-1).mean(0)
    # MC standard error here is below 0.01 nats; tolerance 0.03 nats
    torch.testing.assert_close(analytic, mc, atol=0.03, rtol=0)


def test_sinkhorn_is_per_image_zero_on_equal_samples_and_permutes_with_the_batch():
    torch.manual_seed(0)
    z_q, z_p = torch.randn(5, 4, 3), torch.randn(5, 4, 3) + 1.0
    ones = torch.ones(5, 3)
    sink = SinkhornDivergence(epsilon=0.01)
    per_image = sink(gaussian_output(ones, ones, ones, ones, z_q, z_p))
    assert per_image.shape == (5,) and (per_image > 0).all()
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = sink(gaussian_output(ones, ones, ones, ones, z_q[perm], z_p[perm]))
    torch.testing.assert_close(permuted, per_image[perm])
    same = sink(gaussian_output(ones, ones, ones, ones, z_q, z_q.clone()))
    torch.testing.assert_close(same, torch.zeros(5), atol=1e-5, rtol=0)
    # image 0 alone gives the same value as inside the batch: no mixing across images
    alone = sink(gaussian_output(ones[:1], ones[:1], ones[:1], ones[:1], z_q[:1], z_p[:1]))
    torch.testing.assert_close(alone, per_image[:1])


def test_sinkhorn_point_weights_are_uniform_and_sum_to_one_per_image():
    from geomloss import SamplesLoss

    torch.manual_seed(0)
    z_q, z_p = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    ones = torch.ones(3, 2)
    ours = SinkhornDivergence(epsilon=0.01)(gaussian_output(ones, ones, ones, ones, z_q, z_p))
    weights = torch.full((3, 4), 1 / 4)  # explicit uniform weights, summing to 1 per image
    assert torch.allclose(weights.sum(1), torch.ones(3))
    reference = SamplesLoss("sinkhorn", p=2, blur=0.1, debias=True)(weights, z_q, weights, z_p)
    torch.testing.assert_close(ours, reference)


def test_mmd_is_per_image_and_zero_on_equal_samples():
    torch.manual_seed(0)
    z_q, z_p = torch.randn(4, 4, 3), torch.randn(4, 4, 3) + 2.0
    ones = torch.ones(4, 3)
    for kernel in ("gaussian", "laplacian", "energy"):
        mmd = MaximumMeanDiscrepancy(mmd_kernel=kernel)
        values = mmd(gaussian_output(ones, ones, ones, ones, z_q, z_p))
        assert values.shape == (4,) and (values > 0).all()
        perm = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(mmd(gaussian_output(ones, ones, ones, ones, z_q[perm], z_p[perm])), values[perm])
        same = mmd(gaussian_output(ones, ones, ones, ones, z_q, z_q.clone()))
        torch.testing.assert_close(same, torch.zeros(4), atol=1e-5, rtol=0)


def test_mmd_gaussian_matches_the_hand_formula():
    # one point each at distance 1, sigma 1: 1/2 k(x,x) + 1/2 k(y,y) - k(x,y) = 1 - exp(-1/2)
    z_q, z_p = torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]])
    ones = torch.ones(1, 2)
    value = MaximumMeanDiscrepancy("gaussian", 1.0)(gaussian_output(ones, ones, ones, ones, z_q, z_p))
    torch.testing.assert_close(value, torch.tensor([1 - math.exp(-0.5)]))


def test_sinkhorn_epsilon_is_blur_to_the_p():
    assert SinkhornDivergence(epsilon=0.01, sinkhorn_p=2).blur == pytest.approx(0.1)
    assert SinkhornDivergence(epsilon=0.01, sinkhorn_p=1).blur == pytest.approx(0.01)


def _degenerate_output(z_q: torch.Tensor, z_p: torch.Tensor, blocks: int = 1) -> TrainOutput:
    b, _, d = z_q.shape
    mu = torch.zeros(b, d, requires_grad=True)
    return TrainOutput(logits=torch.zeros(b, 1, 4, 4), target=torch.zeros(b, 1, 4, 4), prior=Normal(mu, 1.0),
                       posterior=Normal(mu, 1.0), posterior_samples=z_q, prior_samples=z_p,
                       annotation_index=torch.zeros(b, dtype=torch.long), sample_blocks=blocks)


def test_every_regularizer_is_finite_with_finite_gradients_on_coincident_samples():
    """Issue 16: sinkhorn on 8 images with one sample each, posterior = prior (all zero), raised geomloss's
    "Maximum allowed size exceeded" (epsilon-scaling from a diameter of 0). Identical sets must give 0."""
    from probseg_bench.plugins import get_plugins

    regularizers = get_plugins().regularizers
    builtin = [("kl", {}), ("sinkhorn", {}), ("sinkhorn", {"sinkhorn_correction": "split"}),
               *[("mmd", {"mmd_kernel": k}) for k in ("gaussian", "laplacian", "energy")]]
    cases = {"8 images x 1 zero sample": torch.zeros(8, 1, 6), "1 image x 1 sample": torch.full((1, 1, 6), 0.3),
             "8 x 4 coincident points": torch.ones(8, 4, 6), "8 x 4 equal sets": torch.randn(8, 4, 6)}
    for name, options in builtin:
        for label, z in cases.items():
            if options.get("sinkhorn_correction") == "split" and z.shape[1] % 2:
                continue
            z_q, z_p = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            value = regularizers.get(name).factory(**options)(_degenerate_output(z_q, z_p, blocks=2))
            assert value.shape == (z.shape[0],) and torch.isfinite(value).all(), (name, options, label, value)
            # KL compares the distributions (equal here too); the split correction of two equal random sets
            # estimates the divergence of their distributions from the halves (not 0 on one draw)
            coincident = bool((z == z.flatten(0, 1)[0]).all())
            if name != "kl" and (coincident or "sinkhorn_correction" not in options):
                torch.testing.assert_close(value, torch.zeros_like(value), atol=1e-5, rtol=0)
            value.sum().backward()
            for grad in (z_q.grad, z_p.grad):
                assert grad is None or torch.isfinite(grad).all(), (name, options, label)


def test_sinkhorn_on_non_finite_latents_is_nan_for_the_divergence_check_not_a_geomloss_error():
    z = torch.zeros(4, 2, 6)
    z[1, 0, 0] = float("nan")
    value = SinkhornDivergence()(_degenerate_output(z, torch.zeros(4, 2, 6)))
    assert value.shape == (4,) and torch.isnan(value).all()
