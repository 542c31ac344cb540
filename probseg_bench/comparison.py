"""Paired comparisons of two configurations on the same test images (``probseg-bench compare``).

Two leaderboard rows are comparable when they share the dataset, the split (split hash, hence the same test
images), the data (content fingerprint; records stored before fingerprints pair only with each other) and, for
``compare``, the latent dimension. For each test image the metric is averaged over the folds
both rows have (each fold trains a model; all folds are evaluated on the same test set), and the paired
differences A - B are tested with the Wilcoxon signed-rank test (two-sided; scipy.stats.wilcoxon, zero
differences dropped: ``zero_method="wilcox"``). Also reported: the median difference with a percentile bootstrap
confidence interval over images (10,000 resamples, seeded), and a Wilcoxon test over the folds' mean metrics
(with 3 folds its smallest possible two-sided p is 0.25: reported, not relied on). Several comparisons are
corrected with Holm's step-down method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

from probseg_bench.data.fingerprint import short
from probseg_bench.errors import ProbsegError
from probseg_bench.memory import check_fits
from probseg_bench.results import FoldRecord

TEST_NAME = "Wilcoxon signed-rank, two-sided, paired by test image (metric averaged over folds)"


@dataclass
class PairedComparison:
    """The result of comparing configuration A with B on one metric (difference = A - B)."""

    a: str
    b: str
    metric: str
    dataset: str
    latent_dim: int
    n_images: int
    n_folds: int
    median_difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    p_holm: float
    fold_p_value: float | None
    test: str = TEST_NAME


def _per_image(records: Sequence[FoldRecord], folds: set[int], metric: str) -> dict[str, float]:
    """test id -> the metric averaged over ``folds`` (NaN where undefined in every fold)."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.fold not in folds:
            continue
        if metric not in r.per_image:
            raise ProbsegError(f"metric '{metric}' is not stored for {r.model} (stored: {', '.join(r.per_image)})")
        for tid, v in zip(r.test_ids, r.per_image[metric], strict=True):
            values.setdefault(tid, []).append(np.nan if v is None else float(v))
    return {tid: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for tid, v in values.items()}


def _wilcoxon(diff: np.ndarray) -> tuple[float, float]:
    if diff.size == 0 or np.all(diff == 0):
        return 0.0, 1.0
    result = wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as the input)."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_differences(
    a: Sequence[FoldRecord], b: Sequence[FoldRecord], metric: str, label_a: str, label_b: str
) -> tuple[np.ndarray, list[int]]:
    """Per-image differences A - B of ``metric`` averaged over the common folds, and those folds.

    Raises:
        ProbsegError: different splits, no common fold, no test image with both values.
    """
    if {r.split_hash for r in a} != {r.split_hash for r in b} or len({r.split_hash for r in a}) != 1:
        raise ProbsegError(f"{label_a} and {label_b} were not evaluated on the same split: not paired")
    data_a, data_b = {r.data_fingerprint for r in a}, {r.data_fingerprint for r in b}
    if data_a != data_b or len(data_a) != 1:  # None (stored before fingerprints) pairs only with None, as before
        shown = " vs ".join(", ".join(sorted(short(f) for f in d)) for d in (data_a, data_b))
        raise ProbsegError(f"{label_a} and {label_b} were not evaluated on the same data (data {shown}): not paired")
    folds = sorted({r.fold for r in a} & {r.fold for r in b})
    if not folds:
        raise ProbsegError(f"{label_a} and {label_b} have no fold in common")
    va, vb = _per_image(a, set(folds), metric), _per_image(b, set(folds), metric)
    ids = [t for t in va if t in vb and np.isfinite(va[t]) and np.isfinite(vb[t])]
    if not ids:
        raise ProbsegError(f"{label_a} and {label_b}: no test image with '{metric}' defined for both")
    return np.array([va[t] - vb[t] for t in ids]), folds


def paired_p_value(a: Sequence[FoldRecord], b: Sequence[FoldRecord], metric: str, label_a: str,
                   label_b: str) -> float:
    """The two-sided Wilcoxon signed-rank p-value of A vs. B over the test images (see the module docstring);
    the labels name the two configurations in errors.

    Raises:
        ProbsegError: see :func:`paired_differences`.
    """
    return _wilcoxon(paired_differences(a, b, metric, label_a, label_b)[0])[1]


def compare_pair(
    a: Sequence[FoldRecord], b: Sequence[FoldRecord], metric: str, label_a: str, label_b: str,
    n_bootstrap: int = 10_000, seed: int = 0,
) -> PairedComparison:
    """Compare the fold records of configuration A with those of B (same dataset and split).

    Raises:
        ProbsegError: see :func:`paired_differences`; ``n_bootstrap`` < 1 or ``seed`` < 0; bootstrap resamples
            (int64 indices and the resampled values, 16 bytes per image and resample) that cannot fit in memory.
    """
    if n_bootstrap < 1:
        raise ProbsegError(f"--bootstrap: expected >= 1, got {n_bootstrap}")
    if seed < 0:
        raise ProbsegError(f"--seed: expected an integer >= 0, got {seed}")
    diff, folds = paired_differences(a, b, metric, label_a, label_b)
    check_fits(16 * n_bootstrap * diff.size, f"--bootstrap {n_bootstrap} ({diff.size} paired test images)")
    statistic, p = _wilcoxon(diff)
    rng = np.random.default_rng(seed)
    boot = np.median(diff[rng.integers(0, diff.size, (n_bootstrap, diff.size))], axis=1)
    def fold_mean(records: Sequence[FoldRecord], fold: int) -> float:
        value = next(r for r in records if r.fold == fold).metrics.get(metric)
        return np.nan if value is None else float(value)

    fold_diff = np.array([fold_mean(a, f) - fold_mean(b, f) for f in folds])
    fold_p = _wilcoxon(fold_diff[np.isfinite(fold_diff)])[1] if len(folds) > 1 else None
    return PairedComparison(
        a=label_a, b=label_b, metric=metric, dataset=a[0].dataset, latent_dim=a[0].latent_dim,
        n_images=int(diff.size), n_folds=len(folds), median_difference=float(np.median(diff)),
        ci_low=float(np.percentile(boot, 2.5)), ci_high=float(np.percentile(boot, 97.5)),
        statistic=statistic, p_value=p, p_holm=p, fold_p_value=fold_p,
    )
