"""Evaluation of a trained model on the test set: n prior samples per image, per-image metrics.

For each test image, n samples are drawn from the PRIOR (``model.sample``); a sample's foreground probability
is the sigmoid of its logits and its mask is logits > 0. Stored per image: every metric of the catalogue
(:mod:`probseg_bench.metrics.catalogue`, in its order; built in: ``ged``, ``hm_iou``, ``ewd`` (binary samples vs.
annotations), ``er`` (effective rank of the prior sigma; NaN per image, None
aggregated, for a model without latent prior), ``sample_diversity`` and ``annotator_diversity`` (mean
d = 1 - IoU over distinct pairs), ``ncc`` (Baumgartner et al. 2019), ``entropy_pearson`` and ``entropy_spearman``
(annotator vs. predicted pixel entropy), ``ece`` (calibration of the mean prediction against the annotator mean),
``mean_dice`` / ``mean_iou`` (the thresholded mean prediction against the majority annotation) and
``empty_fraction`` (the fraction of the n samples with no foreground pixel: 1 = every sample of the image is
empty)), each by its per-image function on a :class:`probseg_bench.metrics.per_image.SampleBatch`. All metrics are
computed batched, in torch, on the model's device, with one ``linear_sum_assignment`` per image for HM-IoU. The
aggregate of a metric is the mean over the test images where it is defined (NaN marks an undefined value, e.g. a
correlation with a constant map); None if it is defined for none.

With ``sample_counts`` (a preset's, e.g. the field's 16, 32 and 100 of the LIDC protocols), one pass draws
max(n_samples, *sample_counts) samples per image; the catalogue's metrics score its first ``n_samples``, and
GED_n and HM-IoU_n (``ged_<n>``, ``hm_iou_<n>``: :func:`probseg_bench.metrics.catalogue.at_samples`) its first n,
as CCDM's evaluation (``evaluate_lidc_uncertainty.py``) scores the first n of one pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from probseg_bench.api import LatentSegmentationModel, MultiRaterData
from probseg_bench.errors import ProbsegError
from probseg_bench.memory import format_bytes, memory_limit
from probseg_bench.metrics.catalogue import SAMPLE_COUNT_METRICS, Metric, all_metrics, at_samples
from probseg_bench.metrics.per_image import MissingPriorScale, SampleBatch

EVALUATION_MEMORY_BOUND = 4 * 2**30
"""Bytes the metrics of one evaluation batch may allocate (or half this machine's memory, when less): a sample
count whose estimate (:func:`evaluation_memory`) exceeds it is refused before any sample is drawn."""


def evaluation_memory(n_samples: int, annotators: int, height: int, width: int,
                      batch_size: int) -> list[tuple[str, int]]:
    """The main allocations, in bytes, of the metrics of one evaluation batch (a lower bound of its peak; the
    model's own activations while sampling are not counted): (what, bytes) pairs, the largest first.

    The B x n sample maps of H x W pixels (logits and probabilities float32, the binary samples, a float32 copy
    for the IoU products: 13 bytes per pixel and sample); the B n x n IoU matrices between samples (float64, with
    their intersection and union: 24 bytes per pair); HM-IoU's L x L assignment (the tiled IoU matrix and its cost
    1 - IoU, float64, one image at a time), L = lcm(n, A).
    """
    pixels = height * width
    lcm = n_samples * annotators // math.gcd(n_samples, annotators)
    terms = [
        (f"{batch_size} x {n_samples} sample maps of {height} x {width} pixels", batch_size * n_samples * pixels * 13),
        (f"{batch_size} IoU matrices of {n_samples} x {n_samples} samples", batch_size * n_samples * n_samples * 24),
        (f"HM-IoU's {lcm} x {lcm} assignment matrix, lcm({n_samples} samples, {annotators} annotators), "
         f"{format_bytes(lcm * lcm * 8)} per copy", 2 * lcm * lcm * 8),
    ]
    return sorted(terms, key=lambda t: -t[1])


def check_evaluation_memory(n_samples: int, annotators: int, height: int, width: int, batch_size: int,
                            what: str) -> None:
    """Refuse, before anything is drawn, an evaluation whose metrics would allocate more than
    :data:`EVALUATION_MEMORY_BOUND` per batch (see :func:`evaluation_memory`), or a sample count < 1.

    Args:
        what: the option or setting that sets ``n_samples``, for the message (e.g. ``"--samples 10007"``).

    Raises:
        ProbsegError: one line naming ``what``, the estimate, its largest part and the bound.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ProbsegError(f"{what}: expected an integer >= 1 samples per image, got {n_samples!r}")
    machine = memory_limit()
    bound = EVALUATION_MEMORY_BOUND if machine is None else min(EVALUATION_MEMORY_BOUND, machine // 2)
    terms = evaluation_memory(n_samples, annotators, height, width, batch_size)
    total = sum(size for _, size in terms)
    if total > bound:
        raise ProbsegError(
            f"{what}: the metrics of one evaluation batch would allocate about {format_bytes(total)} (most of it "
            f"{terms[0][0]}), more than the bound of {format_bytes(bound)} per batch; use fewer samples per image "
            "(a multiple of the annotator count keeps HM-IoU's matrix small)")


@dataclass
class EvaluationResult:
    """Per-image metrics (lists of length N, in test-set order; NaN = undefined), their means over the images
    where defined (None if nowhere), timings in seconds (sampling: the model's ``sample`` and ``prior`` calls for
    ``samples_drawn`` samples per image, over all images), and the latent size (the prior's number of dimensions,
    over all levels; None without a latent prior)."""

    per_image: dict[str, list[float]]
    aggregate: dict[str, float | None]
    seconds_sampling: float
    seconds_metrics: float
    latent_size: int | None = None
    samples_drawn: int = 16


def metric_values(metric: Metric, batch: SampleBatch) -> np.ndarray:
    """``metric``'s per-image values on ``batch``: float64 numpy [B].

    Raises:
        ProbsegError: its function returned something else than B numbers.
    """
    value = metric.function()(batch)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (len(batch),):
        raise ProbsegError(f"metric {metric.name!r}: its per-image function returned {type(value).__name__} of "
                           f"shape {getattr(value, 'shape', '?')}, expected {len(batch)} numbers (one per image)")
    return values


def image_metrics(logits: torch.Tensor, annotations: torch.Tensor,
                  prior_scale: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Every metric of the catalogue on a batch; without ``prior_scale``, every one but those of the prior (the
    effective rank).

    Args:
        logits: float [B, n, H, W], the logits of n samples per image (foreground channel).
        annotations: [B, A, H, W] binary.
        prior_scale: float [B, d], the prior's standard deviations.

    Returns:
        metric name -> float64 numpy [B], in catalogue order.
    """
    batch = SampleBatch(logits, annotations, prior_scale)
    out = {}
    for metric in all_metrics():
        try:
            out[metric.name] = metric_values(metric, batch)
        except MissingPriorScale:  # a metric of the prior, and no prior scale given
            continue
    return out


def prior_sample_batches(
    model: torch.nn.Module, data: MultiRaterData, device: torch.device, n_samples: int = 16, batch_size: int = 8,
    seed: int = 0,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor, float]]:
    """The evaluation's draws, batch by batch: ``(start, logits [B, n, H, W], prior sigma [B, d] (None for a model
    without latent prior), annotations
    [B, A, H, W], seconds spent sampling)`` for the items ``start .. start + B - 1`` of ``data``.

    Torch's generator is seeded with ``seed`` for the whole pass (and restored afterwards), so the same model,
    data, batch size and seed give the same samples: :func:`evaluate` and the validity benchmark
    (:mod:`probseg_bench.validation`) see identical samples. Runs without gradients, in eval mode.
    """
    model.to(device).eval()
    latent_model = cast(LatentSegmentationModel, model)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(data), batch_size):
            x = torch.as_tensor(data.images[start : start + batch_size], device=device).float()
            y = torch.as_tensor(data.masks[start : start + batch_size], device=device)
            t0 = time.perf_counter()
            logits = latent_model.sample(x, n_samples)[:, :, 0]  # [B, n, H, W]
            prior = latent_model.prior(x)
            sigma = None if prior is None else prior.scale  # None: no latent prior (latent_dim 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            yield start, logits, sigma, y, time.perf_counter() - t0


def evaluate(
    model: torch.nn.Module,
    data: MultiRaterData,
    device: torch.device,
    n_samples: int = 16,
    batch_size: int = 8,
    seed: int = 0,
    sample_counts: Sequence[int] = (),
) -> EvaluationResult:
    """Evaluate ``model`` on every item of ``data`` with ``n_samples`` prior samples per image, and GED_n / HM-IoU_n
    on the first n of one pass for each n in ``sample_counts`` (see the module docstring).

    The draws are made with torch's generator seeded with ``seed`` (restored afterwards), so the same model,
    data and seed give the same numbers (see :func:`prior_sample_batches`).

    Raises:
        ProbsegError: a sample count < 1 or beyond the memory bound (:func:`check_evaluation_memory`), before any
            sample is drawn.
    """
    drawn = max((n_samples, *sample_counts))
    _, annotators, height, width = data.masks.shape
    check_evaluation_memory(drawn, annotators, height, width, min(batch_size, len(data)), f"n_samples {drawn}")
    metrics = [(m, n_samples) for m in all_metrics()]
    metrics += [(at_samples(name, n), n) for name in SAMPLE_COUNT_METRICS for n in sorted(set(sample_counts))]
    out: dict[str, list[float]] = {m.name: [] for m, _ in metrics}
    t_sample = t_metric = 0.0
    latent_size: int | None = None
    for _, logits, sigma, y, seconds in prior_sample_batches(model, data, device, drawn, batch_size, seed):
        t1 = time.perf_counter()
        if sigma is not None:
            latent_size = int(sigma.shape[-1])
        batches = {n: SampleBatch(logits[:, :n], y, sigma) for n in {n for _, n in metrics}}
        for metric, n in metrics:
            try:
                out[metric.name] += metric_values(metric, batches[n]).tolist()
            except MissingPriorScale:  # a metric of the prior (ER), and the model has none: undefined
                out[metric.name] += [float("nan")] * len(y)
        t_sample += seconds
        t_metric += time.perf_counter() - t1
    aggregate: dict[str, float | None] = {}
    for k, v in out.items():
        arr = np.asarray(v, dtype=np.float64)
        aggregate[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else None
    return EvaluationResult(out, aggregate, t_sample, t_metric, latent_size, drawn)
