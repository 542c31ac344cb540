"""Pixel-wise metrics and diversity: hand-computed values and an independent port of the PHiSeg NCC code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probseg_bench.errors import ProbsegError
from probseg_bench.metrics import (
    diversity,
    entropy_correlation,
    expected_calibration_error,
    mean_prediction_overlap,
    ncc,
)


def row(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)[None, :]  # a 1 x W image


def test_entropy_correlation_hand_computed():
    # annotations y1 = 1100, y2 = 1000 -> y_bar = [1, .5, 0, 0] -> H = [0, ln2, 0, 0]
    y = np.stack([row(1, 1, 0, 0), row(1, 0, 0, 0)]).astype(np.uint8)
    # samples 1101 and 0001 -> p_bar = [.5, .5, 0, 1] -> H = [ln2, ln2, 0, 0]
    p = np.stack([row(1, 1, 0, 1), row(0, 0, 0, 1)])
    pearson, spearman = entropy_correlation(p, y)
    assert pearson == pytest.approx(1 / math.sqrt(3))
    assert spearman == pytest.approx(1 / math.sqrt(3))  # ranks with ties averaged: the same two-level pattern


def test_entropy_correlation_is_nan_for_a_constant_map():
    y = np.stack([row(1, 1, 0, 0)] * 2).astype(np.uint8)  # annotators agree: entropy 0 everywhere
    pearson, spearman = entropy_correlation(np.stack([row(0.3, 0.2, 0.1, 0.9)]), y)
    assert math.isnan(pearson) and math.isnan(spearman)


def test_expected_calibration_error_hand_computed():
    y = np.stack([row(0, 1)]).astype(np.uint8)
    assert expected_calibration_error(np.stack([row(0.05, 0.95)]), y) == pytest.approx(0.05)
    # both pixels in bin [0.1, 0.2): |mean p - mean y| = |0.15 - 0.5|, weight 1
    assert expected_calibration_error(np.stack([row(0.12, 0.18)]), y) == pytest.approx(0.35)
    assert expected_calibration_error(np.stack([row(0.12, 0.18)]), y, bins=1) == pytest.approx(0.35)
    assert expected_calibration_error(np.stack([row(0.0, 1.0)]), y) == pytest.approx(0.0)


def test_mean_prediction_dice_and_iou_hand_computed():
    # majority of 3 annotators: 1100 ; p_bar >= .5: 0110
    y = np.stack([row(1, 1, 0, 0), row(1, 1, 1, 0), row(0, 1, 0, 0)]).astype(np.uint8)
    p = np.stack([row(0.2, 0.9, 0.6, 0.1)])
    dice, iou = mean_prediction_overlap(p, y)
    assert dice == pytest.approx(2 * 1 / (2 + 2)) and iou == pytest.approx(1 / 3)
    empty = mean_prediction_overlap(np.zeros((2, 1, 4)), np.zeros((3, 1, 4), np.uint8))
    assert empty == (1.0, 1.0)


def test_diversity_over_distinct_pairs():
    a, b = np.zeros((1, 4), bool), np.zeros((1, 4), bool)
    a[0, :2], b[0, 2:] = True, True
    assert diversity(np.stack([a, b, a])) == pytest.approx(4 / 6)  # ordered pairs i != j: 1,0,1,1,0,1
    assert math.isnan(diversity(np.stack([a])))
    assert diversity(np.stack([a, a])) == 0.0


def phiseg_ncc(sample_arr: np.ndarray, gt_arr: np.ndarray) -> float:
    """A port of `variance_ncc_dist` of the PHiSeg code (two-class one-hot/probability maps, loops, np.std)."""
    def pixel_wise_xent(m_samp, m_gt, eps=1e-8):
        return -1.0 * np.sum(m_gt * np.log(m_samp + eps), axis=-1)

    def two_class(x):
        return np.stack([1 - x, x], axis=-1)

    def ncc_(a, v):
        a, v = a.flatten(), v.flatten()
        a = (a - np.mean(a)) / (np.std(a) * len(a))
        v = (v - np.mean(v)) / np.std(v)
        return np.correlate(a, v)[0]

    samples, gts = two_class(sample_arr), two_class(gt_arr.astype(np.float64))
    mean_seg = samples.mean(0)
    e_ss = np.mean([pixel_wise_xent(samples[i], mean_seg) for i in range(len(samples))], axis=0)
    e_sy = np.array([[pixel_wise_xent(samples[i], gts[j]) for i in range(len(samples))] for j in range(len(gts))])
    e_sy = e_sy.mean(1)
    return float(np.mean([ncc_(e_ss, e_sy[j]) for j in range(len(gts))]))


def test_ncc_matches_the_phiseg_code():
    rng = np.random.default_rng(0)
    p = rng.random((16, 12, 12))
    y = rng.random((4, 12, 12)) > 0.6
    assert ncc(p, y) == pytest.approx(phiseg_ncc(p, y), rel=1e-9)
    hard = (rng.random((6, 12, 12)) > 0.5).astype(np.float64)  # binary samples, as thresholded
    assert ncc(hard, y) == pytest.approx(phiseg_ncc(hard, y), rel=1e-9)


def test_batched_torch_equals_per_image():
    rng = np.random.default_rng(1)
    p, y = rng.random((3, 8, 10, 10)), rng.random((3, 4, 10, 10)) > 0.5
    batched = ncc(torch.from_numpy(p), torch.from_numpy(y))
    assert batched.shape == (3,)
    for b in range(3):
        assert batched[b] == pytest.approx(ncc(p[b], y[b]))
        assert expected_calibration_error(p, y)[b] == pytest.approx(expected_calibration_error(p[b], y[b]))
        assert entropy_correlation(p, y)[1][b] == pytest.approx(entropy_correlation(p[b], y[b])[1])


@pytest.mark.parametrize("bad", [np.full((2, 4, 4), 1.5), np.full((2, 4, 4), np.nan), np.zeros((0, 4, 4))])
def test_bad_probabilities(bad):
    with pytest.raises(ProbsegError, match="probabilities"):
        ncc(bad, np.zeros((2, 4, 4), np.uint8))


def test_spearman_with_ties_matches_scipy_and_all_metrics_agree_with_the_single_functions():
    from scipy.stats import spearmanr

    from probseg_bench.metrics import pixelwise_metrics
    from probseg_bench.metrics.pixelwise import _average_ranks

    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 4, (3, 50)).astype(np.float64))  # many ties
    from scipy.stats import rankdata

    np.testing.assert_allclose(_average_ranks(x).numpy(), rankdata(x.numpy(), axis=1))
    p, y = rng.random((2, 8, 9, 9)) ** 3, rng.random((2, 3, 9, 9)) > 0.7
    everything = pixelwise_metrics(p, y)
    pear, spear = entropy_correlation(p, y)
    for b in range(2):
        h_pred = -(lambda q: q * np.log(q) + (1 - q) * np.log(1 - q))(p[b].mean(0)).ravel()
        y_bar = y[b].mean(0).ravel()
        h_ann = -(np.where(y_bar > 0, y_bar * np.log(np.where(y_bar > 0, y_bar, 1)), 0)
                  + np.where(y_bar < 1, (1 - y_bar) * np.log(np.where(y_bar < 1, 1 - y_bar, 1)), 0))
        assert spear[b] == pytest.approx(spearmanr(h_pred, h_ann).statistic)
    np.testing.assert_allclose(everything["entropy_spearman"], spear)
    np.testing.assert_allclose(everything["entropy_pearson"], pear)
    np.testing.assert_allclose(everything["ncc"], ncc(p, y))
    np.testing.assert_allclose(everything["ece"], expected_calibration_error(p, y))


def test_ncc_of_a_perfect_anticorrelation_stays_in_range():
    """The fuzz test's failing input: three samples of a 1 x 2 image against one empty annotation gave
    S_NCC = -1.0000000317612543 (the moment expansion rounds past -1)."""
    from probseg_bench.metrics.pixelwise import ncc

    probabilities = np.array([[[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]], dtype=np.float32)
    value = float(ncc(probabilities, np.array([[[0, 0]]], dtype=np.uint8)))
    assert -1.0 <= value <= 1.0 and value == pytest.approx(-1.0, abs=1e-6)
