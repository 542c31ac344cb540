"""``example-blobs``: generated multi-annotator images, deterministic for the parameters.

Each image is one blurred disc on a noisy background (float32 [1, size, size], intensities in [0, 1]); three
annotators outline it at different radii (each annotator's radius factor is drawn per image from 0.6..1.4), so the
annotations of one image disagree on the boundary. Every image is its own group (case).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probseg_bench.api import MultiRaterData
from probseg_bench.errors import ProbsegError

ANNOTATORS = 3


def make_blobs(data_root: Path | None = None, n_images: int = 24, size: int = 32, seed: int = 0) -> MultiRaterData:
    """Generate the dataset.

    Raises:
        ProbsegError: a ``data_root`` (the data is generated), ``n_images`` < 8 or ``size`` outside 16..256.
    """
    if data_root is not None:
        raise ProbsegError("dataset 'example-blobs' is generated and takes no --data-root")
    if n_images < 8:
        raise ProbsegError(f"dataset 'example-blobs': n_images must be >= 8 (for the splits), got {n_images}")
    if not 16 <= size <= 256:
        raise ProbsegError(f"dataset 'example-blobs': size must be in 16..256, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n_images, 1, size, size), np.float32)
    masks = np.empty((n_images, ANNOTATORS, size, size), np.uint8)
    for i in range(n_images):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        radius = rng.uniform(0.12, 0.25) * size
        distance = np.hypot(yy - cy, xx - cx) / radius
        blob = 1.0 / (1.0 + np.exp(4.0 * (distance - 1.0)))  # soft edge around distance 1
        images[i, 0] = np.clip(0.8 * blob + rng.normal(0.1, 0.05, (size, size)), 0.0, 1.0)
        for a, factor in enumerate(rng.uniform(0.6, 1.4, ANNOTATORS)):
            masks[i, a] = distance <= factor
    return MultiRaterData(images=images, masks=masks, groups=np.arange(n_images))
