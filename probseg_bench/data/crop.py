"""Centre cropping of a whole dataset (the protocol's ``crop`` setting, e.g. the ``quick`` preset's 32 x 32 region
of interest of lidc-sample)."""

from __future__ import annotations

from probseg_bench.api import MultiRaterData
from probseg_bench.errors import ProbsegError


def crop_window(height: int, width: int, size: int) -> tuple[slice, slice]:
    """(rows, cols) of the central ``size`` x ``size`` window of a ``height`` x ``width`` image, in pixels: a
    side of n starts at (n - size) // 2; a side already at most ``size`` is kept whole."""
    top, left = max(height - size, 0) // 2, max(width - size, 0) // 2
    return slice(top, top + min(height, size)), slice(left, left + min(width, size))


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
    rows, cols = crop_window(h, w, int(size))
    return MultiRaterData(images=data.images[..., rows, cols], masks=data.masks[..., rows, cols],
                          groups=data.groups, metadata=dict(data.metadata))
