"""Grouped splits and joint image/mask augmentation."""

from probseg_bench.data.augment import AffineAugmentation
from probseg_bench.data.splits import Splits, grouped_splits

__all__ = ["AffineAugmentation", "Splits", "grouped_splits"]
