"""Centre cropping of a whole dataset (the protocol's ``crop`` setting, e.g. the ``quick`` preset's 64 x 64)."""

from __future__ import annotations

from probseg_bench.api import MultiRaterData
from probseg_bench.errors import ProbsegError


def center_crop(data: MultiRaterData, size: int) -> MultiRaterData:
    """Every image and mask cropped to the central ``size`` x ``size`` window (a side already at most ``size``
    is kept whole). The window of a side n starts at (n - size) // 2. Memory-mapped arrays stay memory-mapped
    (the crop is a view; nothing is read here).

    Args:
        data: images [N, C, H, W], masks [N, A, H, W].
        size: the side of the window in pixels (>= 1).

    Returns:
        A :class:`MultiRaterData` with images [N, C, min(H, size), min(W, size)] and the masks alike; groups and
        metadata unchanged.

    Raises:
        ProbsegError: ``size`` < 1.
    """
    if int(size) < 1:
        raise ProbsegError(f"crop: expected a positive size in pixels, got {size}")
    h, w = data.images.shape[-2:]
    top, left = max(h - size, 0) // 2, max(w - size, 0) // 2
    rows, cols = slice(top, top + min(h, size)), slice(left, left + min(w, size))
    return MultiRaterData(images=data.images[..., rows, cols], masks=data.masks[..., rows, cols],
                          groups=data.groups, metadata=dict(data.metadata))
