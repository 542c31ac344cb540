"""Metrics for probabilistic segmentation (DESIGN.md section 4): distribution metrics of the sample set against
the annotation set (:mod:`.distribution`: IoU matrix, GED, HM-IoU, EWD, effective rank, diversity) and
pixel-wise uncertainty metrics of the predictive distribution (:mod:`.pixelwise`: NCC, entropy correlation,
calibration error, Dice / IoU of the mean prediction)."""

from probseg_bench.metrics.distribution import (
    diversity,
    effective_rank,
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

__all__ = [
    "diversity",
    "effective_rank",
    "empirical_wasserstein_distance",
    "entropy_correlation",
    "expected_calibration_error",
    "ged_from_iou",
    "generalized_energy_distance",
    "hm_iou_from_iou",
    "hungarian_matched_iou",
    "iou_matrix",
    "mean_prediction_overlap",
    "ncc",
    "pixelwise_metrics",
]
