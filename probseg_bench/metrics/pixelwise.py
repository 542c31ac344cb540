"""Pixel-wise uncertainty metrics of one image's predictive distribution against its annotations.

Inputs: ``probabilities`` [N, H, W] (or [B, N, H, W]): the foreground probability of each of N model samples
(sigmoid of the sample's logits; binary samples are allowed too), floats in [0, 1]; ``annotations`` [M, H, W]
(or [B, M, H, W]) binary. The *mean prediction* is p_bar = mean over samples of the probabilities; the
*annotator mean* is y_bar = mean over annotators. Entropies are binary entropies in nats. Every function returns
a float (unbatched) or a float64 numpy array [B]; a value that is undefined for an image (a correlation with a
constant map) is NaN, never a made-up number.

:func:`pixelwise_metrics` computes all of them from one pass over the samples (the evaluation uses it); the
single-metric functions are thin wrappers around the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probseg_bench.errors import ProbsegError
from probseg_bench.metrics.distribution import _as_masks, _check_pair

EPS = 1e-8
"""Added inside the logarithms of the cross-entropy maps of the NCC, as in Baumgartner et al.'s code."""


@dataclass
class _Stats:
    """Per-image pixel maps, float64 [B, HW]: p_bar, the mean over samples of -log(p + eps) (fg) and of
    -log(1 - p + eps) (bg); annotations float64 [B, M, HW]."""

    p_bar: torch.Tensor
    fg: torch.Tensor
    bg: torch.Tensor
    y: torch.Tensor


def _stats(probabilities: Any, annotations: Any) -> tuple[_Stats, bool]:
    """Validate once and reduce the samples to three maps (float32 passes over [B, N, HW], float64 after)."""
    p = torch.from_numpy(np.ascontiguousarray(probabilities)) if isinstance(probabilities, np.ndarray) \
        else probabilities
    if not isinstance(p, torch.Tensor):
        raise ProbsegError(f"probabilities: expected a numpy array or torch tensor, got {type(probabilities).__name__}")
    if p.ndim not in (3, 4) or p.shape[-3] == 0:
        raise ProbsegError(f"probabilities: expected shape [N, H, W] or [B, N, H, W] with N >= 1, got {tuple(p.shape)}")
    p = p.detach()
    p = p.float() if p.dtype != torch.float64 else p
    if not bool(torch.isfinite(p).all()) or bool(((p < 0) | (p > 1)).any()):
        raise ProbsegError("probabilities: expected probabilities in [0, 1] (finite)")
    y = _as_masks(annotations, "annotations")
    _check_pair(p, y)
    batched = p.ndim == 4
    if not batched:
        p, y = p[None], y[None]
    p = p.flatten(2)
    stats = _Stats(
        p_bar=p.mean(1).double(),
        fg=(-torch.log(p + EPS)).mean(1).double(),
        bg=(-torch.log(1 - p + EPS)).mean(1).double(),
        y=y.to(p.device).flatten(2).double(),
    )
    return stats, batched


def _reduce(values: torch.Tensor, batched: bool) -> Any:
    arr = values.double().cpu().numpy()
    return arr if batched else float(arr[0])


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the last axis (population moments, ddof = 0); NaN where either is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = torch.sqrt((a * a).mean(-1) * (b * b).mean(-1))
    corr = torch.where(den > 0, (a * b).mean(-1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
    return corr.clamp(-1.0, 1.0)  # rounding can leave |r| a few ulps above 1; NaN stays NaN


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) over the last axis of [B, P], ties given their average rank (scipy's rankdata)."""
    b, n = x.shape
    values, order = x.sort(dim=1)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.cumsum(1) - 1
    position = torch.arange(n, dtype=torch.float64, device=x.device).expand(b, n)
    total = torch.zeros(b, n, dtype=torch.float64, device=x.device).scatter_add_(1, group, position)
    count = torch.zeros_like(total).scatter_add_(1, group, torch.ones_like(position))
    ranks_sorted = (total / count.clamp_min(1)).gather(1, group) + 1
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def _ncc(s: _Stats) -> torch.Tensor:
    # CE(t, p_i) is linear in the target t, so mean_i CE(t, p_i) = t * fg + (1 - t) * bg: E_ss = bg + p_bar * d
    # and E_sy_j = bg + y_j * d with d = fg - bg. As y_j is binary (y_j^2 = y_j), the moments of E_sy_j and its
    # product with E_ss are bg-terms plus dot products y_j . map, computed for all j at once by one matmul.
    d = s.fg - s.bg
    e_ss = s.bg + s.p_bar * d  # [B, P]
    n = e_ss.shape[1]
    maps = torch.stack([d, 2 * s.bg * d + d * d, e_ss * d], -1)  # [B, P, 3]
    dots = s.y @ maps  # [B, M, 3]
    mean_y = (s.bg.sum(1, keepdim=True) + dots[..., 0]) / n
    mean_yy = ((s.bg * s.bg).sum(1, keepdim=True) + dots[..., 1]) / n
    mean_sy = ((e_ss * s.bg).sum(1, keepdim=True) + dots[..., 2]) / n
    mean_s = e_ss.mean(1, keepdim=True)
    var_s = (e_ss - mean_s).pow(2).mean(1, keepdim=True)
    var_y = (mean_yy - mean_y * mean_y).clamp_min(0)
    den = torch.sqrt(var_s * var_y)
    corr = torch.where(den > 1e-12 * (1 + mean_yy), (mean_sy - mean_s * mean_y) / den.clamp_min(1e-300),
                       torch.full_like(den, float("nan")))
    # the moment expansion E[xy] - E[x]E[y] can round a perfect (anti-)correlation to 1 + 3e-8: clamp, NaN stays
    return corr.clamp(-1.0, 1.0).mean(1)


def _entropy_correlation(s: _Stats) -> tuple[torch.Tensor, torch.Tensor]:
    h_pred, h_ann = _binary_entropy(s.p_bar), _binary_entropy(s.y.mean(1))
    return _pearson(h_pred, h_ann), _pearson(_average_ranks(h_pred), _average_ranks(h_ann))


def _ece(s: _Stats, bins: int) -> torch.Tensor:
    y_bar = s.y.mean(1)
    idx = torch.clamp((s.p_bar * bins).long(), max=bins - 1)
    # sum_b (n_b / HW) |mean_b p - mean_b y| = sum_b |sum_b p - sum_b y| / HW
    sum_p = torch.zeros(s.p_bar.shape[0], bins, dtype=s.p_bar.dtype, device=s.p_bar.device)
    sum_p.scatter_add_(1, idx, s.p_bar)
    sum_y = torch.zeros_like(sum_p).scatter_add_(1, idx, y_bar)
    return (sum_p - sum_y).abs().sum(1) / s.p_bar.shape[1]


def _overlap(s: _Stats) -> tuple[torch.Tensor, torch.Tensor]:
    a = (s.p_bar >= 0.5).double()
    b = (s.y.mean(1) >= 0.5).double()
    inter, sa, sb = (a * b).sum(1), a.sum(1), b.sum(1)
    union = sa + sb - inter
    dice = torch.where(sa + sb > 0, 2 * inter / (sa + sb).clamp_min(1), torch.ones_like(inter))
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return dice, iou


def ncc(probabilities: Any, annotations: Any) -> Any:
    """S_NCC of Baumgartner et al. 2019 (PHiSeg, Eq. 9), as in their code:

    E_ss = mean_i CE(p_bar, p_i) and, per annotation j, E_sy_j = mean_i CE(y_j, p_i) (pixel maps, binary
    cross-entropy with eps = 1e-8 inside the logs); S_NCC = mean_j NCC(E_ss, E_sy_j), NCC the Pearson correlation
    over pixels with population moments (ddof = 0, numpy's default std). Higher is better, in [-1, 1].

    Returns:
        float or float64 numpy [B]; NaN when a map is constant (e.g. all samples identical and hard).

    Raises:
        ProbsegError: shapes, or probabilities outside [0, 1] / not finite; non-binary annotations.
    """
    s, batched = _stats(probabilities, annotations)
    return _reduce(_ncc(s), batched)


def entropy_correlation(probabilities: Any, annotations: Any) -> tuple[Any, Any]:
    """Correlation between the annotators' pixel entropy H(y_bar) and the predicted pixel entropy H(p_bar) over
    the pixels of each image (the seed paper's Fig. 8): (Pearson, Spearman), Spearman = Pearson of the ranks with
    ties given their average rank (as scipy.stats.spearmanr).

    Returns:
        (pearson, spearman): floats or float64 numpy [B]; NaN where either entropy map is constant.
    """
    s, batched = _stats(probabilities, annotations)
    pearson, spearman = _entropy_correlation(s)
    return _reduce(pearson, batched), _reduce(spearman, batched)


def expected_calibration_error(probabilities: Any, annotations: Any, bins: int = 10) -> Any:
    """Expected calibration error of the mean prediction against the annotator mean: pixels are binned by p_bar
    into ``bins`` equal-width bins on [0, 1] (the last bin closed); ECE = sum_b (n_b / HW) |mean p_bar - mean
    y_bar| over the pixels of bin b (Guo et al. 2017 with the soft annotator target). Lower is better, in [0, 1].

    Raises:
        ProbsegError: bins < 1, or bad inputs as for :func:`ncc`.
    """
    if bins < 1:
        raise ProbsegError(f"bins: expected >= 1, got {bins}")
    s, batched = _stats(probabilities, annotations)
    return _reduce(_ece(s, bins), batched)


def mean_prediction_overlap(probabilities: Any, annotations: Any) -> tuple[Any, Any]:
    """Dice and IoU of the thresholded mean prediction (p_bar >= 0.5) against the majority annotation
    (y_bar >= 0.5); both masks empty gives 1 for both.

    Returns:
        (dice, iou): floats or float64 numpy [B].
    """
    s, batched = _stats(probabilities, annotations)
    dice, iou = _overlap(s)
    return _reduce(dice, batched), _reduce(iou, batched)


def pixelwise_metrics(probabilities: Any, annotations: Any, bins: int = 10) -> dict[str, Any]:
    """All pixel-wise metrics from one validation and one pass over the samples: ``ncc``, ``entropy_pearson``,
    ``entropy_spearman``, ``ece``, ``mean_dice``, ``mean_iou`` (see the single-metric functions)."""
    s, batched = _stats(probabilities, annotations)
    pearson, spearman = _entropy_correlation(s)
    dice, iou = _overlap(s)
    values = {"ncc": _ncc(s), "entropy_pearson": pearson, "entropy_spearman": spearman, "ece": _ece(s, bins),
              "mean_dice": dice, "mean_iou": iou}
    return {k: _reduce(v, batched) for k, v in values.items()}
