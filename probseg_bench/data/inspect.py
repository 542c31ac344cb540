"""Summary statistics of a multi-annotator dataset (``probseg-bench data inspect``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from probseg_bench.api import MultiRaterData

CHUNK = 256


def summarize(data: MultiRaterData) -> dict[str, Any]:
    """Counts and annotator statistics, computed in chunks (memory-mapped sets are not loaded at once).

    Returns a dict with ``images``, ``groups``, ``annotators``, ``channels``, ``height``, ``width``,
    ``intensity_min``, ``intensity_max`` (the range of the intensities fed to the model: the loaders' rule of
    :mod:`probseg_bench.data.intensity` applied), ``image_dtype``, ``empty_mask_fraction`` (fraction of the N x A masks
    with no foreground), ``foreground_fraction`` (mean fraction of foreground pixels per mask) and
    ``mean_pairwise_annotator_iou`` (per image, the mean IoU over the unordered annotator pairs j < j', with
    IoU = 1 for two empty masks; then the mean over images; None with a single annotator).
    """
    import torch

    from probseg_bench.metrics import iou_matrix

    n, a, h, w = data.masks.shape
    lo, hi = np.inf, -np.inf
    empty = 0
    fg = 0.0
    pair_iou: list[float] = []
    iu = np.triu_indices(a, k=1)
    for start in range(0, n, CHUNK):
        images = np.asarray(data.images[start : start + CHUNK], dtype=np.float32)
        masks = np.array(data.masks[start : start + CHUNK])  # a writable copy of the chunk
        lo, hi = min(lo, float(images.min())), max(hi, float(images.max()))
        counts = masks.reshape(masks.shape[0], a, -1).sum(-1)
        empty += int((counts == 0).sum())
        fg += float(counts.sum()) / (h * w)
        if a > 1:
            iou = iou_matrix(torch.from_numpy(masks), torch.from_numpy(masks)).numpy()
            pair_iou += iou[:, iu[0], iu[1]].mean(-1).tolist()
    return {
        "images": int(n),
        "groups": len(np.unique(np.asarray(data.groups).astype(str))),
        "annotators": int(a),
        "channels": int(data.images.shape[1]),
        "height": int(h),
        "width": int(w),
        "image_dtype": str(data.images.dtype),
        "intensity_min": lo,
        "intensity_max": hi,
        "empty_mask_fraction": empty / (n * a),
        "foreground_fraction": fg / (n * a),
        "mean_pairwise_annotator_iou": float(np.mean(pair_iou)) if pair_iou else None,
    }
