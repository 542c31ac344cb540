"""One contract test per registered plugin (timm style): every model, dataset and regularizer."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from probseg_bench.api import LatentSegmentationModel, MultiRaterData, TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import build_objective
from probseg_bench.plugin_check import check_model
from probseg_bench.plugins import get_plugins

PLUGINS = get_plugins()


def build_small(name: str, latent_dim: int = 3):
    spec = PLUGINS.models.get(name)
    hp = {h.name: h.default for h in spec.hyperparameters}
    if "filters" in hp:
        hp["filters"] = "4,8,16"
    if "timesteps" in hp:  # a diffusion model (ccdm): few steps, so that sample() stays fast
        hp["timesteps"] = hp["sampling_steps"] = 10
    torch.manual_seed(0)
    return spec, spec.factory(latent_dim=latent_dim, in_channels=1, **hp), hp


@pytest.mark.parametrize("name", PLUGINS.models.names())
def test_model_contract(name):
    spec, model, hp = build_small(name)
    assert isinstance(model, torch.nn.Module) and isinstance(model, LatentSegmentationModel)
    x = torch.rand(2, 1, 32, 32)
    y = (torch.rand(2, 3, 32, 32) > 0.6).to(torch.uint8)
    check_model(name, model, 3, x, y)  # the suite's pre-training check passes
    out = model(x, y)
    assert isinstance(out, TrainOutput)
    assert out.logits.shape == out.target.shape == (2, 1, 32, 32)
    latent = model.latent_dim != 0  # 0: a model without latent prior (ssn, unet-ensemble)
    size = sum(out.level_sizes) if out.level_sizes else 3  # a hierarchical model: D, its flattened levels
    if latent:
        assert isinstance(out.prior, Normal) and out.prior.loc.shape == (2, size)
        assert out.posterior.loc.shape == (2, size)
        assert out.posterior_samples.shape[0] == 2 and out.posterior_samples.shape[2] == size
        assert out.prior_samples.shape == out.posterior_samples.shape
    else:
        assert out.prior is out.posterior is out.posterior_samples is out.prior_samples is None
        assert not spec.objective  # no latent regularizer without a latent
    objective = build_objective(spec, PLUGINS, hp)
    loss, parts = objective(out)
    loss.backward()
    assert torch.isfinite(loss) and "reconstruction" in parts
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unreached, f"backward does not reach {unreached}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        assert model.sample(x, 5).shape == (2, 5, 1, 32, 32)
        if not latent:
            assert model.prior(x) is None
            return
        assert model.decode(x, torch.zeros(2, 4, size)).shape == (2, 4, 1, 32, 32)
        sigma = model.prior(x).scale
        assert sigma.shape == (2, size) and (sigma > 0).all()


@pytest.mark.parametrize("name", PLUGINS.models.names())
def test_model_hyperparameters_have_valid_ranges(name):
    for hp in PLUGINS.models.get(name).hyperparameters:
        if hp.tunable and hp.choices is None:
            assert hp.low is not None and hp.high is not None and hp.low < hp.high, hp
            assert hp.low <= hp.default <= hp.high, hp


@pytest.mark.parametrize("name", PLUGINS.datasets.names())
def test_dataset_contract(name):
    spec = PLUGINS.datasets.get(name)
    assert spec.license and spec.citation
    try:
        data = spec.load(None)
    except ProbsegError as exc:
        pytest.skip(f"{name} needs a data root: {exc}")
    assert isinstance(data, MultiRaterData)
    data.validate(name)
    assert data.images.shape[0] == data.masks.shape[0] == len(data.groups)


@pytest.mark.parametrize("name", PLUGINS.regularizers.names())
def test_regularizer_contract(name):
    spec = PLUGINS.regularizers.get(name)
    reg = spec.factory()
    torch.manual_seed(0)
    mu, sigma = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    out = TrainOutput(
        logits=torch.zeros(4, 1, 8, 8), target=torch.zeros(4, 1, 8, 8), prior=Normal(mu, sigma),
        posterior=Normal(mu + 1, sigma), posterior_samples=torch.randn(4, 3, 3), prior_samples=torch.randn(4, 3, 3),
        annotation_index=torch.zeros(4, dtype=torch.long),
    )
    value = reg(out)
    assert value.shape == (4,) and torch.isfinite(value).all()


@pytest.mark.parametrize("name", PLUGINS.regularizers.names())
def test_regularizer_refuses_an_output_without_latent(name):
    out = TrainOutput(
        logits=torch.zeros(2, 1, 8, 8), target=torch.zeros(2, 1, 8, 8), prior=None, posterior=None,
        posterior_samples=None, prior_samples=None, annotation_index=torch.zeros(2, dtype=torch.long),
    )
    with pytest.raises(ProbsegError, match="latent prior"):
        PLUGINS.regularizers.get(name).factory()(out)
