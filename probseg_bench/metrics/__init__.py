"""Metrics for probabilistic segmentation (DESIGN.md section 4): distribution metrics of the sample set against
the annotation set (:mod:`.distribution`: IoU matrix, GED, HM-IoU, EWD, effective rank, diversity) and
pixel-wise uncertainty metrics of the predictive distribution (:mod:`.pixelwise`: NCC, entropy correlation,
calibration error, Dice / IoU of the mean prediction).

Which metrics a record stores, their labels and directions, and which the leaderboard ranks and ``tune`` may
optimise: the catalogue (:mod:`.catalogue`), which the rest of the suite reads. The metric functions are imported
on first use (they import torch), so that importing the catalogue stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from probseg_bench.metrics.catalogue import Metric, get_metric, register_metric

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.metrics.distribution import (
        diversity,
        effective_rank,
        effective_rank_per_level,
        empirical_wasserstein_distance,
        ged_from_iou,
        generalized_energy_distance,
        hm_iou_from_iou,
        hungarian_matched_iou,
        iou_matrix,
    )
    from probseg_bench.metrics.pixelwise import (
        entropy_correlation,
        expected_calibration_error,
        mean_prediction_overlap,
        ncc,
        pixelwise_metrics,
    )

_LAZY = {
    **dict.fromkeys(("diversity", "effective_rank", "effective_rank_per_level", "empirical_wasserstein_distance",
                     "ged_from_iou", "generalized_energy_distance", "hm_iou_from_iou", "hungarian_matched_iou",
                     "iou_matrix"),
                    "distribution"),
    **dict.fromkeys(("entropy_correlation", "expected_calibration_error", "mean_prediction_overlap", "ncc",
                     "pixelwise_metrics"), "pixelwise"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Metric",
    "diversity",
    "effective_rank",
    "effective_rank_per_level",
    "empirical_wasserstein_distance",
    "entropy_correlation",
    "expected_calibration_error",
    "ged_from_iou",
    "generalized_energy_distance",
    "get_metric",
    "hm_iou_from_iou",
    "hungarian_matched_iou",
    "iou_matrix",
    "mean_prediction_overlap",
    "ncc",
    "pixelwise_metrics",
    "register_metric",
]
