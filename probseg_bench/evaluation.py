"""Evaluation of a trained model on the test set: n prior samples per image, per-image metrics.

For each test image: n samples are drawn from the PRIOR (``model.sample``), thresholded at logit 0, and
compared with all annotations (:mod:`probseg_bench.metrics` conventions). Stored per image: ``ged``,
``hm_iou``, ``ewd``, ``er`` (effective rank of the prior sigma), ``sample_diversity`` (mean_ii' d(s_i, s_i')),
``annotator_diversity`` (mean_jj' d(y_j, y_j')), V-statistics with d = 1 - IoU. The aggregate is the mean over
test images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from probseg_bench.api import LatentSegmentationModel, MultiRaterData
from probseg_bench.metrics import effective_rank, ged_from_iou, hm_iou_from_iou, iou_matrix

METRIC_NAMES = ("ged", "hm_iou", "ewd", "er", "sample_diversity", "annotator_diversity")


@dataclass
class EvaluationResult:
    """Per-image metrics (lists of length N, in test-set order), their means, and timings in seconds."""

    per_image: dict[str, list[float]]
    aggregate: dict[str, float]
    seconds_sampling: float
    seconds_metrics: float


def evaluate(
    model: torch.nn.Module,
    data: MultiRaterData,
    device: torch.device,
    n_samples: int = 16,
    batch_size: int = 8,
    seed: int = 0,
) -> EvaluationResult:
    """Evaluate ``model`` on every item of ``data`` with ``n_samples`` prior samples per image.

    The draws are made with torch's generator seeded with ``seed`` (restored afterwards), so the same model,
    data and seed give the same numbers.
    """
    model.to(device).eval()
    latent_model = cast(LatentSegmentationModel, model)
    out: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    t_sample = t_metric = 0.0
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(data), batch_size):
            x = torch.as_tensor(data.images[start : start + batch_size], device=device).float()
            y = torch.as_tensor(data.masks[start : start + batch_size], device=device).bool()
            t0 = time.perf_counter()
            s = latent_model.sample(x, n_samples)[:, :, 0] > 0  # [B, n, H, W]
            sigma = latent_model.prior(x).scale
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            iou_sy, iou_ss, iou_yy = iou_matrix(s, y), iou_matrix(s, s), iou_matrix(y, y)
            ged = ged_from_iou(iou_sy, iou_ss, iou_yy).cpu().numpy()
            hm = np.array([hm_iou_from_iou(m) for m in iou_sy.cpu().numpy()])
            out["ged"] += ged.tolist()
            out["hm_iou"] += hm.tolist()
            out["ewd"] += (1.0 - hm).tolist()
            out["er"] += np.atleast_1d(effective_rank(sigma)).tolist()
            out["sample_diversity"] += (1 - iou_ss).mean((-1, -2)).cpu().tolist()
            out["annotator_diversity"] += (1 - iou_yy).mean((-1, -2)).cpu().tolist()
            t_sample += t1 - t0
            t_metric += time.perf_counter() - t1
    aggregate = {k: float(np.mean(v)) for k, v in out.items()}
    return EvaluationResult(out, aggregate, t_sample, t_metric)
