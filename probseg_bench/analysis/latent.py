"""The numbers behind the seed paper's Figures 3-8 for one trained model and its test images.

All draws use torch's generator seeded with the fold's seed, in the order of the evaluation (per batch: the
prior's samples, then nothing else), so that the freezing curve with 0 frozen dimensions reproduces the
stored test EWD of the protocol's evaluation for the built-in models (whose ``sample`` is
``decode(x, prior(x).sample((n,)))``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from probseg_bench.api import MultiRaterData
from probseg_bench.metrics import hungarian_matched_iou
from probseg_bench.metrics.pixelwise import _average_ranks, _binary_entropy, _pearson


@dataclass
class PriorStatistics:
    """Prior mean and standard deviation per test image and latent dimension: float64 [N, d] each."""

    mean: np.ndarray
    std: np.ndarray


def _batches(
    data: MultiRaterData, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield (torch.as_tensor(data.images[start : start + batch_size], device=device).float(),
               torch.as_tensor(data.masks[start : start + batch_size], device=device))


@torch.no_grad()
def prior_statistics(model: torch.nn.Module, data: MultiRaterData, device: torch.device,
                     batch_size: int = 8) -> PriorStatistics:
    """p(z|x) of every test image (Fig. 4)."""
    means, stds = [], []
    for x, _ in _batches(data, batch_size, device):
        prior = model.prior(x)  # type: ignore[operator]
        means.append(prior.loc.double().cpu().numpy())
        stds.append(prior.scale.double().cpu().numpy())
    return PriorStatistics(np.concatenate(means), np.concatenate(stds))


@torch.no_grad()
def prior_logits(model: torch.nn.Module, data: MultiRaterData, device: torch.device, n: int, seed: int,
                 batch_size: int = 8, frozen: tuple[int, ...] = ()) -> Iterator[torch.Tensor]:
    """Per batch, the logits [B, n, H, W] of n decoded prior draws (dimensions in ``frozen`` set to the prior
    mean), drawn with torch's generator seeded with ``seed`` in the evaluation's order; for a model without latent
    prior (``prior(x)`` None), its ``sample(x, n)``."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for x, _ in _batches(data, batch_size, device):
            prior = model.prior(x)  # type: ignore[operator]
            if prior is None:  # no latent prior (latent_dim 0): the model's own samples, the evaluation's draws
                yield model.sample(x, n)[:, :, 0]  # type: ignore[operator]
                continue
            z = prior.sample((n,)).transpose(0, 1)  # [B, n, d]
            if frozen:
                idx = list(frozen)
                z[:, :, idx] = prior.loc[:, None, idx]
            yield model.decode(x, z)[:, :, 0]  # type: ignore[operator]


def sample_maps(model: torch.nn.Module, data: MultiRaterData, device: torch.device, n: int, seed: int,
                batch_size: int = 8, frozen: tuple[int, ...] = ()) -> np.ndarray:
    """Binary samples bool [N, n, H, W]: z ~ p(z|x) (dimensions in ``frozen`` set to the prior mean), decoded."""
    return np.concatenate([(logits > 0).cpu().numpy()
                           for logits in prior_logits(model, data, device, n, seed, batch_size, frozen)])


def freezing_curve(model: torch.nn.Module, data: MultiRaterData, device: torch.device, n: int, seed: int,
                   order: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Test-set EWD as the latent dimensions in ``order`` are frozen to their prior mean one by one (Fig. 6):
    float64 [d + 1], entry k with the first k dimensions of ``order`` frozen."""
    values = []
    for k in range(len(order) + 1):
        samples = sample_maps(model, data, device, n, seed, batch_size, tuple(int(i) for i in order[:k]))
        values.append(float(np.mean(1.0 - hungarian_matched_iou(samples, data.masks.astype(bool)))))
    return np.array(values)


@torch.no_grad()
def traversal(model: torch.nn.Module, image: np.ndarray, device: torch.device, steps: int = 5,
              extent: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Decoded foreground probability as each latent axis moves from -extent to +extent prior std around the prior
    mean, the other axes at the mean (Fig. 5).

    Args:
        image: float [C, H, W], one test image.

    Returns:
        (probabilities float [d, steps, H, W], offsets float [steps] in prior standard deviations).
    """
    x = torch.as_tensor(image[None], device=device).float()
    prior = model.prior(x)  # type: ignore[operator]
    d = prior.loc.shape[1]
    offsets = np.linspace(-extent, extent, steps)
    z = prior.loc[:, None, None, :].repeat(1, d, steps, 1)  # [1, d, steps, d]
    for axis in range(d):
        z[0, axis, :, axis] += torch.as_tensor(offsets, dtype=z.dtype, device=device) * prior.scale[0, axis]
    logits = model.decode(x, z.reshape(1, d * steps, d))[0, :, 0]  # type: ignore[operator]
    return torch.sigmoid(logits).reshape(d, steps, *logits.shape[-2:]).cpu().numpy(), offsets


@torch.no_grad()
def mean_predictions(model: torch.nn.Module, data: MultiRaterData, device: torch.device, n: int, seed: int,
                     batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over n prior samples of the binary samples (Fig. 3): float [N, H, W] each."""
    samples = sample_maps(model, data, device, n, seed, batch_size).astype(np.float64)
    return samples.mean(1), samples.std(1)


def entropy_maps(model: torch.nn.Module, data: MultiRaterData, device: torch.device, n: int, seed: int,
                 batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(annotator pixel entropy H(y_bar), predicted pixel entropy H(p_bar)) float [N, H, W] in nats (Fig. 8),
    p_bar the mean over n prior samples of the sigmoid probabilities."""
    pred = [_binary_entropy(torch.sigmoid(logits.double()).mean(1)).cpu().numpy()
            for logits in prior_logits(model, data, device, n, seed, batch_size)]
    ann = _binary_entropy(torch.as_tensor(data.masks, dtype=torch.float64).mean(1)).numpy()
    return ann, np.concatenate(pred)


def entropy_correlations(annotator: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Pearson and Spearman correlation of two entropy maps [N, H, W] (NaN for a constant map), as in
    :func:`probseg_bench.metrics.entropy_correlation`."""
    a = torch.as_tensor(annotator, dtype=torch.float64).flatten(1)
    b = torch.as_tensor(predicted, dtype=torch.float64).flatten(1)
    return _pearson(b, a).numpy(), _pearson(_average_ranks(b), _average_ranks(a)).numpy()
