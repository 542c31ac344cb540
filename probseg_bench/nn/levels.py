"""The flattened latent layout of hierarchical models (``TrainOutput.level_sizes``): each level's tensor
[N, d, h_l, w_l] flattened and concatenated, coarsest level first, into one latent [N, D], D = sum of the levels'
d * h_l * w_l. PHiSeg and the HPU-Net use it; the KL regularizer and the per-level effective rank split by it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Normal


def flatten_levels(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level tensors [N, ...] -> one [N, D] (each flattened after its first axis, concatenated in order)."""
    return torch.cat([p.flatten(1) for p in parts], 1)


def flatten_normals(dists: Sequence[Normal]) -> Normal:
    """Per-level diagonal Gaussians -> one Normal with loc / scale [N, D] (see :func:`flatten_levels`)."""
    return Normal(flatten_levels([d.loc for d in dists]), flatten_levels([d.scale for d in dists]),
                  validate_args=False)


def split_levels(z: torch.Tensor, shapes: Sequence[tuple[int, int, int]]) -> list[torch.Tensor]:
    """z [N, D] -> per level [N, d_l, h_l, w_l] for ``shapes`` (d_l, h_l, w_l), the inverse of
    :func:`flatten_levels`.

    Raises:
        RuntimeError: D is not the sum of the shapes' sizes (from ``torch.split``).
    """
    sizes = [a * b * c for a, b, c in shapes]
    return [p.reshape(-1, *s) for p, s in zip(torch.split(z, sizes, 1), shapes, strict=True)]
