"""Per-image functions of the catalogue's metrics (:mod:`probseg_bench.metrics.catalogue`), on an evaluation batch.

A :class:`SampleBatch` holds the n prior samples of B test images, their annotations and the prior's standard
deviations; what several metrics share (the binary samples, the three IoU matrices, the Hungarian matching, the
pixel-wise statistics) is computed once, on first use, on the model's device. Each function here maps a batch to
B values (float64 numpy or a torch tensor; NaN where undefined for an image).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch

from probseg_bench.metrics.distribution import (
    diversity_from_iou,
    effective_rank,
    ged_from_iou,
    hm_iou_from_iou,
    iou_matrix,
)
from probseg_bench.metrics.pixelwise import pixelwise_metrics


class MissingPriorScale(LookupError):
    """A metric read :attr:`SampleBatch.prior_scale` of a batch made without one."""


class SampleBatch:
    """One evaluation batch.

    Args:
        logits: float [B, n, H, W], the logits of n prior samples per image (foreground channel).
        annotations: [B, A, H, W] binary.
        prior_scale: float [B, d], the standard deviations of the prior p(z|x); None when not drawn (the metrics
            that need it, the effective rank, then cannot be computed).
    """

    def __init__(self, logits: torch.Tensor, annotations: torch.Tensor,
                 prior_scale: torch.Tensor | None = None) -> None:
        self.logits = logits
        self.annotations = annotations
        self._prior_scale = prior_scale

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def prior_scale(self) -> torch.Tensor:
        """float [B, d]: the prior's standard deviations.

        Raises:
            MissingPriorScale: the batch was made without them.
        """
        if self._prior_scale is None:
            raise MissingPriorScale("this batch has no prior scale")
        return self._prior_scale

    @cached_property
    def samples(self) -> torch.Tensor:
        """bool [B, n, H, W]: the binary samples, logits > 0."""
        return self.logits > 0

    @cached_property
    def probabilities(self) -> torch.Tensor:
        """float [B, n, H, W]: each sample's foreground probability, the sigmoid of its logits."""
        return torch.sigmoid(self.logits.float())

    @cached_property
    def masks(self) -> torch.Tensor:
        """bool [B, A, H, W]: the annotations."""
        return self.annotations.bool()

    @cached_property
    def iou_samples_annotations(self) -> torch.Tensor:
        """[B, n, A]: IoU of each sample with each annotation."""
        iou: torch.Tensor = iou_matrix(self.samples, self.masks)
        return iou

    @cached_property
    def iou_samples(self) -> torch.Tensor:
        """[B, n, n]: IoU between samples."""
        iou: torch.Tensor = iou_matrix(self.samples, self.samples)
        return iou

    @cached_property
    def iou_annotations(self) -> torch.Tensor:
        """[B, A, A]: IoU between annotations."""
        iou: torch.Tensor = iou_matrix(self.masks, self.masks)
        return iou

    @cached_property
    def hungarian_iou(self) -> np.ndarray:
        """float64 [B]: HM-IoU, one ``linear_sum_assignment`` per image."""
        return np.array([hm_iou_from_iou(m) for m in self.iou_samples_annotations.cpu().numpy()])

    @cached_property
    def pixelwise(self) -> dict[str, Any]:
        """:func:`probseg_bench.metrics.pixelwise_metrics` of the probabilities and the annotations."""
        return pixelwise_metrics(self.probabilities, self.masks)


def ged(batch: SampleBatch) -> Any:
    return ged_from_iou(batch.iou_samples_annotations, batch.iou_samples, batch.iou_annotations).cpu().numpy()


def hm_iou(batch: SampleBatch) -> Any:
    return batch.hungarian_iou


def ewd(batch: SampleBatch) -> Any:
    return 1.0 - batch.hungarian_iou


def er(batch: SampleBatch) -> Any:
    return np.atleast_1d(effective_rank(batch.prior_scale))


def sample_diversity(batch: SampleBatch) -> Any:
    return diversity_from_iou(batch.iou_samples).cpu().numpy()


def annotator_diversity(batch: SampleBatch) -> Any:
    return diversity_from_iou(batch.iou_annotations).cpu().numpy()


def ncc(batch: SampleBatch) -> Any:
    return batch.pixelwise["ncc"]


def entropy_pearson(batch: SampleBatch) -> Any:
    return batch.pixelwise["entropy_pearson"]


def entropy_spearman(batch: SampleBatch) -> Any:
    return batch.pixelwise["entropy_spearman"]


def ece(batch: SampleBatch) -> Any:
    return batch.pixelwise["ece"]


def mean_dice(batch: SampleBatch) -> Any:
    return batch.pixelwise["mean_dice"]


def mean_iou(batch: SampleBatch) -> Any:
    return batch.pixelwise["mean_iou"]


def empty_fraction(batch: SampleBatch) -> Any:
    return (~batch.samples.flatten(2).any(-1)).double().mean(1).cpu().numpy()
