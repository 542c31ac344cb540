"""Distribution metrics for probabilistic segmentation, with the conventions of DESIGN.md section 4.

Inputs are binary foreground masks, ``bool`` or {0, 1} (integer or float), as numpy arrays or torch tensors:
``samples`` [N, H, W] (N model samples of one image) and ``annotations`` [M, H, W] (M annotators). Every
function also accepts a leading batch dimension ([B, N, H, W] and [B, M, H, W]) and then returns one value per
image (numpy float64 [B]). Torch inputs are computed on their own device.

Conventions (they differ across public code; these are pinned by tests):

* IoU(a, b) = |a & b| / |a | b|; IoU = 1 when both masks are empty, 0 when exactly one is. d(a, b) = 1 - IoU.
* GED is the *squared* generalized energy distance (Kohl et al. 2018, Eq. 4) as a V-statistic: all pairs,
  i = i' included: ``2 mean_ij d(s_i, y_j) - mean_ii' d(s_i, s_i') - mean_jj' d(y_j, y_j')``.
* HM-IoU (Kohl et al. 2019, "A hierarchical probabilistic U-Net"): with L = lcm(N, M), each sample is repeated
  L/N times and each annotation L/M times; the assignment minimising the total cost 1 - IoU is solved with
  ``scipy.optimize.linear_sum_assignment``; HM-IoU is the mean IoU of the L matched pairs. The seed paper's EWD
  (Valiuddin et al. 2024, Section III-E) is 1 - HM-IoU.
* ER (effective rank, Roy & Vetterli 2007; seed paper Eq. 17): c = sigma / ||sigma||_1 over the d prior
  standard deviations of one image, ER = exp(-sum_i c_i log c_i) with 0 log 0 = 0; ER lies in [1, d].

All errors are :class:`probseg_bench.errors.ProbsegError` naming the argument and what was expected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from probseg_bench.errors import ProbsegError

__all__ = [
    "diversity",
    "diversity_from_iou",
    "effective_rank",
    "empirical_wasserstein_distance",
    "ged_from_iou",
    "generalized_energy_distance",
    "hm_iou_from_iou",
    "hungarian_matched_iou",
    "iou_matrix",
]


def _as_masks(x: Any, name: str) -> torch.Tensor:
    """Validate a mask stack and return it as a bool tensor (on its own device for torch input)."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise ProbsegError(f"{name}: expected a numpy array or torch tensor of masks, got {type(x).__name__}")
    if t.ndim not in (3, 4):
        raise ProbsegError(f"{name}: expected shape [N, H, W] or [B, N, H, W], got {tuple(t.shape)}")
    if t.shape[-3] == 0:
        raise ProbsegError(f"{name}: expected at least one mask, got an empty stack {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise ProbsegError(f"{name}: expected bool or {{0, 1}} values, got dtype {t.dtype}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ProbsegError(f"{name}: masks contain NaN or infinite values")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ProbsegError(f"{name}: expected binary masks with values in {{0, 1}} (threshold logits first)")
    return t != 0


_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks a [..., N, H, W] and b [..., M, H, W] -> float64 [..., N, M]."""
    pixels = a.shape[-1] * a.shape[-2]
    # counts are exact in float32 below 2**24 pixels; beyond that use float64
    dtype = torch.float32 if pixels < 2**24 else torch.float64
    fa = a.flatten(-2).to(dtype)
    fb = b.flatten(-2).to(dtype)
    inter = (fa @ fb.transpose(-1, -2)).double()
    union = fa.sum(-1).double()[..., :, None] + fb.sum(-1).double()[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def _check_pair(s: torch.Tensor, y: torch.Tensor) -> None:
    if s.ndim != y.ndim:
        raise ProbsegError(
            f"samples {tuple(s.shape)} and annotations {tuple(y.shape)}: expected the same number of "
            "dimensions ([N, H, W] with [M, H, W], or [B, N, H, W] with [B, M, H, W])"
        )
    if s.shape[-2:] != y.shape[-2:] or (s.ndim == 4 and s.shape[0] != y.shape[0]):
        raise ProbsegError(
            f"samples {tuple(s.shape)} and annotations {tuple(y.shape)}: expected the same batch size and H x W"
        )


def iou_matrix(a: Any, b: Any) -> Any:
    """Pairwise IoU between two stacks of binary masks.

    Args:
        a: [N, H, W] or [B, N, H, W], bool or {0, 1}.
        b: [M, H, W] or [B, M, H, W], same H, W (and B).

    Returns:
        float64 [N, M] (or [B, N, M]); IoU = 1 for two empty masks, 0 when exactly one is empty. A numpy array
        for numpy ``a``, else a torch tensor on ``a``'s device.

    Raises:
        ProbsegError: wrong number of dimensions, mismatched sizes, empty stacks, non-binary or NaN values.
    """
    ta, tb = _as_masks(a, "a"), _as_masks(b, "b")
    _check_pair(ta, tb)
    out = _pairwise_iou(ta, tb.to(ta.device))
    return out.cpu().numpy() if isinstance(a, np.ndarray) else out


def ged_from_iou(iou_sy: torch.Tensor, iou_ss: torch.Tensor, iou_yy: torch.Tensor) -> torch.Tensor:
    """Squared GED (V-statistic) from the three IoU matrices.

    Args:
        iou_sy: [..., N, M] samples x annotations; iou_ss: [..., N, N]; iou_yy: [..., M, M] (float tensors).

    Returns:
        [...] float tensor: 2 mean(1 - iou_sy) - mean(1 - iou_ss) - mean(1 - iou_yy).
    """
    return 2 * (1 - iou_sy).mean((-1, -2)) - (1 - iou_ss).mean((-1, -2)) - (1 - iou_yy).mean((-1, -2))


def hm_iou_from_iou(iou: np.ndarray) -> float:
    """HM-IoU of one image from its sample x annotation IoU matrix.

    Args:
        iou: float [N, M] (``iou_matrix(samples, annotations)``), values in [0, 1].

    Returns:
        The mean IoU of the optimal assignment between the samples repeated L/N times and the annotations repeated
        L/M times, L = lcm(N, M) (Kohl et al. 2019).
    """
    n, m = iou.shape
    lcm = n * m // math.gcd(n, m)
    rows = np.repeat(np.arange(n), lcm // n)
    cols = np.repeat(np.arange(m), lcm // m)
    tiled = iou[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(1.0 - tiled)
    return float(tiled[r, c].mean())


def _reduce(values: torch.Tensor, batched: bool) -> Any:
    arr = values.double().cpu().numpy()
    return arr if batched else float(arr)


def generalized_energy_distance(samples: Any, annotations: Any) -> Any:
    """Squared generalized energy distance with d = 1 - IoU (Kohl et al. 2018, Eq. 4; V-statistic).

    Args:
        samples: [N, H, W] or [B, N, H, W] binary model samples.
        annotations: [M, H, W] or [B, M, H, W] binary annotations.

    Returns:
        float (unbatched) or float64 numpy [B]; 0 for identical sets, at most 2.

    Raises:
        ProbsegError: see :func:`iou_matrix`.
    """
    s, y = _as_masks(samples, "samples"), _as_masks(annotations, "annotations")
    _check_pair(s, y)
    y = y.to(s.device)
    ged = ged_from_iou(_pairwise_iou(s, y), _pairwise_iou(s, s), _pairwise_iou(y, y))
    return _reduce(ged, s.ndim == 4)


def hungarian_matched_iou(samples: Any, annotations: Any) -> Any:
    """Hungarian-matched IoU (Kohl et al. 2019), lcm(N, M) repetition; see the module docstring.

    Args:
        samples: [N, H, W] or [B, N, H, W] binary model samples.
        annotations: [M, H, W] or [B, M, H, W] binary annotations.

    Returns:
        float (unbatched) or float64 numpy [B], in [0, 1]; 1 for identical sets.

    Raises:
        ProbsegError: see :func:`iou_matrix`.
    """
    s, y = _as_masks(samples, "samples"), _as_masks(annotations, "annotations")
    _check_pair(s, y)
    iou = _pairwise_iou(s, y.to(s.device)).cpu().numpy()
    if s.ndim == 3:
        return hm_iou_from_iou(iou)
    return np.array([hm_iou_from_iou(m) for m in iou], dtype=np.float64)


def empirical_wasserstein_distance(samples: Any, annotations: Any) -> Any:
    """The seed paper's EWD (Valiuddin et al. 2024, Section III-E): 1 - :func:`hungarian_matched_iou`.

    Returns:
        float (unbatched) or float64 numpy [B], in [0, 1]; 0 for identical sets (empty vs empty included).
    """
    return 1.0 - hungarian_matched_iou(samples, annotations)


def diversity_from_iou(iou: torch.Tensor) -> torch.Tensor:
    """Mean d = 1 - IoU over the distinct pairs i != i' of one stack, from its IoU matrix [..., K, K] -> [...];
    NaN for K = 1 (d(a, a) = 0, so the i = i' terms add nothing to the sum)."""
    k = iou.shape[-1]
    total = (1 - iou).sum((-1, -2))
    return total / (k * (k - 1)) if k > 1 else torch.full_like(total, float("nan"))


def diversity(masks: Any) -> Any:
    """Mean pairwise distance d = 1 - IoU over the distinct pairs of a stack of masks: the *sample diversity* of
    N model samples or the *annotator diversity* of M annotations (the latter is the annotators' disagreement).

    Args:
        masks: [K, H, W] or [B, K, H, W], bool or {0, 1}.

    Returns:
        float or float64 numpy [B] in [0, 1]; NaN for a single mask (no pair).

    Raises:
        ProbsegError: see :func:`iou_matrix`.
    """
    m = _as_masks(masks, "masks")
    return _reduce(diversity_from_iou(_pairwise_iou(m, m)), m.ndim == 4)


def effective_rank(sigma: Any) -> Any:
    """Effective rank of the latent standard deviations (Roy & Vetterli 2007; seed paper Eq. 17).

    Args:
        sigma: [d] or [B, d] non-negative standard deviations (numpy or torch), not all zero.

    Returns:
        float (for [d]) or float64 numpy [B]; ER in [1, d]: d for equal sigmas, 1 for a single nonzero one.

    Raises:
        ProbsegError: wrong shape, negative / NaN / infinite values, or an all-zero sigma vector.
    """
    t = torch.as_tensor(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else np.asarray(sigma))
    if t.ndim not in (1, 2) or t.shape[-1] == 0:
        raise ProbsegError(f"sigma: expected shape [d] or [B, d] with d >= 1, got {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise ProbsegError(f"sigma: expected real standard deviations, got dtype {t.dtype}")
    t = t.double()
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ProbsegError("sigma: expected finite, non-negative standard deviations")
    total = t.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ProbsegError("sigma: effective rank is undefined for an all-zero sigma vector")
    c = t / total
    entropy = -torch.where(c > 0, c * torch.log(c), torch.zeros_like(c)).sum(-1)
    er = torch.exp(entropy)
    return float(er) if t.ndim == 1 else er.numpy()


def effective_rank_per_level(sigma: Any, level_sizes: tuple[int, ...] | list[int]) -> list[Any]:
    """Effective rank of each latent level of a hierarchical model: :func:`effective_rank` of each consecutive
    block of ``sigma`` [d] or [B, d] (``level_sizes`` as in ``TrainOutput.level_sizes``, summing to d). The
    effective rank over all levels is :func:`effective_rank` of the whole ``sigma``.

    Raises:
        ProbsegError: the sizes do not sum to the last dimension of ``sigma`` (or as :func:`effective_rank`).
    """
    t = torch.as_tensor(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else np.asarray(sigma))
    if not level_sizes or sum(level_sizes) != t.shape[-1] or min(level_sizes) < 1:
        raise ProbsegError(f"level_sizes {tuple(level_sizes)}: expected positive sizes summing to {t.shape[-1]}")
    return [effective_rank(block) for block in torch.split(t, list(level_sizes), -1)]
