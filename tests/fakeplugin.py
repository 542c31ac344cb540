"""A fake third-party plugin distribution, for tests: nothing is installed.

``install_fake_distribution(monkeypatch, name, module)`` makes ``importlib.metadata`` report one more
distribution whose entry point (group ``probseg_bench``) points at ``module`` (put into ``sys.modules``),
exactly as an installed ``pip install my-probseg-plugin`` would.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from probseg_bench import hookimpl
from probseg_bench.api import HyperParameter, ModelSpec, ObjectiveTerm, Registry, TrainOutput
from probseg_bench.plugins import reset_plugins


class FakeDistribution(importlib_metadata.Distribution):
    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self._meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        self._eps = "[probseg_bench]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())

    def read_text(self, filename: str) -> str | None:
        return {"METADATA": self._meta, "entry_points.txt": self._eps}.get(filename)

    def locate_file(self, path: Any) -> Any:
        return None


def install_fake_distribution(
    monkeypatch: pytest.MonkeyPatch, dist_name: str, modules: dict[str, types.ModuleType | None],
    entry_point_names: dict[str, str] | None = None,
) -> None:
    """Add a fake distribution whose entry points name ``modules`` (None = a module that is not put into
    ``sys.modules``: it is imported from ``sys.path``, or fails to import). An entry point is named after its
    module unless ``entry_point_names`` (module -> entry point name) says otherwise."""
    eps = {}
    for mod_name, module in modules.items():
        eps[(entry_point_names or {}).get(mod_name, mod_name)] = mod_name
        if module is not None:
            monkeypatch.setitem(sys.modules, mod_name, module)
    real = importlib_metadata.distributions

    def distributions(**kwargs: Any):
        yield from real(**kwargs)
        yield FakeDistribution(dist_name, "1.2.3", eps)

    monkeypatch.setattr(importlib_metadata, "distributions", distributions)
    reset_plugins()


class TinyLatentModel(nn.Module):
    """A minimal model implementing the latent-model protocol (not a PU-Net): conv features, Gaussian prior
    and posterior from mean intensities, latent injected by a 1x1 convolution."""

    def __init__(self, latent_dim: int, in_channels: int = 1, width: int = 4, **_: Any) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.features = nn.Conv2d(in_channels, width, 3, padding=1)
        self.prior_net = nn.Linear(in_channels, 2 * latent_dim)
        self.posterior_net = nn.Linear(in_channels + 1, 2 * latent_dim)
        self.head = nn.Conv2d(width + latent_dim, 1, 1)

    @staticmethod
    def _gaussian(params: torch.Tensor) -> Normal:
        mu, log_sigma = params.chunk(2, -1)
        return Normal(mu, log_sigma.clamp(-5, 5).exp())

    def prior(self, image: torch.Tensor) -> Normal:
        return self._gaussian(self.prior_net(image.mean((-2, -1))))

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        f = self.features(image)
        b, n, d = z.shape
        f = f[:, None].expand(b, n, *f.shape[1:])
        tiled = z[..., None, None].expand(b, n, d, *f.shape[-2:])
        out = self.head(torch.cat([f, tiled], 2).flatten(0, 1))
        return out.view(b, n, 1, *out.shape[-2:])

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        return self.decode(image, self.prior(image).sample((n,)).transpose(0, 1))

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        b, a = masks.shape[:2]
        k = torch.randint(a, (b,))
        y = masks[torch.arange(b), k].unsqueeze(1).float()
        prior = self.prior(image)
        posterior = self._gaussian(self.posterior_net(torch.cat([image, y], 1).mean((-2, -1))))
        z = posterior.rsample()[:, None]
        return TrainOutput(
            logits=self.decode(image, z)[:, 0], target=y, prior=prior, posterior=posterior,
            posterior_samples=z, prior_samples=prior.rsample()[:, None], annotation_index=k,
        )


TINY_SPEC = ModelSpec(
    name="tiny-fake",
    description="a tiny third-party test model",
    factory=TinyLatentModel,
    hyperparameters=(HyperParameter("beta", 1.0, "KL weight", low=0.1, high=10.0, log=True),),
    objective=(ObjectiveTerm("kl", "beta"),),
)


def make_model_plugin_module(spec: ModelSpec = TINY_SPEC, name: str = "fake_probseg_plugin") -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def probseg_bench_register_models(registry: Registry[ModelSpec]) -> None:
        registry.add(spec)

    module.probseg_bench_register_models = probseg_bench_register_models  # type: ignore[attr-defined]
    return module
