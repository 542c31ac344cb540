"""Metric conventions of DESIGN.md section 4, pinned with hand-computed values and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from probseg_bench.errors import ProbsegError
from probseg_bench.metrics import (
    effective_rank,
    empirical_wasserstein_distance,
    generalized_energy_distance,
    hungarian_matched_iou,
    iou_matrix,
)


def masks(*patterns: list[int], size: int = 4) -> np.ndarray:
    """Stack of size x size masks; each pattern lists the flat pixel indices that are foreground."""
    out = np.zeros((len(patterns), size * size), dtype=bool)
    for i, p in enumerate(patterns):
        out[i, p] = True
    return out.reshape(len(patterns), size, size)


def ref_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
    return 1.0 if union == 0 else inter / union


def ref_ged(s: np.ndarray, y: np.ndarray) -> float:
    d = lambda a, b: 1 - ref_iou(a, b)  # noqa: E731
    sy = np.mean([d(a, b) for a in s for b in y])
    ss = np.mean([d(a, b) for a in s for b in s])
    yy = np.mean([d(a, b) for a in y for b in y])
    return 2 * sy - ss - yy


def ref_hm_iou(s: np.ndarray, y: np.ndarray) -> float:
    """Brute force over all matchings of the lcm-repeated sets (small L only)."""
    lcm = len(s) * len(y) // math.gcd(len(s), len(y))
    ss = [s[i] for i in range(len(s)) for _ in range(lcm // len(s))]
    yy = [y[j] for j in range(len(y)) for _ in range(lcm // len(y))]
    return max(np.mean([ref_iou(ss[i], yy[p[i]]) for i in range(lcm)]) for p in itertools.permutations(range(lcm)))


A, B, C, D = [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]  # four disjoint rows


def test_iou_empty_vs_empty_is_one_and_one_empty_is_zero():
    m = iou_matrix(masks([], [0]), masks([], [0, 1]))
    assert m.dtype == np.float64
    np.testing.assert_array_equal(m, [[1.0, 0.0], [0.0, 0.5]])


def test_iou_hand_computed_partial_overlap():
    # |a & b| = 2, |a | b| = 6
    assert iou_matrix(masks([0, 1, 2, 3]), masks([2, 3, 4, 5]))[0, 0] == pytest.approx(2 / 6)


def test_all_empty_sets_are_a_perfect_match():
    s, y = masks([], [], []), masks([], [])
    assert generalized_energy_distance(s, y) == 0.0
    assert hungarian_matched_iou(s, y) == 1.0
    assert empirical_wasserstein_distance(s, y) == 0.0


def test_one_side_empty():
    s, y = masks(A, A), masks([], [])  # non-empty samples, empty annotations: every d(s, y) = 1
    assert generalized_energy_distance(s, y) == pytest.approx(2.0)
    assert hungarian_matched_iou(s, y) == 0.0
    assert empirical_wasserstein_distance(s, y) == 1.0


def test_identical_sets_have_zero_ged_and_full_hm_iou():
    y = masks(A, A + B, [], C)
    assert generalized_energy_distance(y, y) == pytest.approx(0.0, abs=1e-12)
    assert hungarian_matched_iou(y, y) == 1.0


def test_ged_hand_computed_with_v_statistic():
    # samples {A, B}, annotations {A}: d(A,A)=0, d(B,A)=1 -> cross mean 1/2; samples pairs (i=i' included):
    # [[0,1],[1,0]] -> 1/2; annotations 0.  GED = 2 * 1/2 - 1/2 - 0 = 1/2
    assert generalized_energy_distance(masks(A, B), masks(A)) == pytest.approx(0.5)


def test_hm_iou_16_samples_vs_4_annotations():
    y = masks(A, B, C, D)
    s = masks(*([A] * 16))  # all samples equal annotation A: only 4 of the 16 matched pairs can have IoU 1
    assert hungarian_matched_iou(s, y) == pytest.approx(4 / 16)
    s = masks(*([A, B, C, D] * 4))  # each annotation sampled 4 times: perfect
    assert hungarian_matched_iou(s, y) == 1.0
    assert empirical_wasserstein_distance(s, y) == 0.0


def test_hm_iou_5_vs_2_uses_lcm_repetition():
    # L = lcm(5, 2) = 10: samples x2 -> 6 A + 4 B; annotations x5 -> 5 A + 5 B: 5 + 4 perfect pairs, 1 miss
    s, y = masks(A, A, A, B, B), masks(A, B)
    assert hungarian_matched_iou(s, y) == pytest.approx(0.9)
    assert empirical_wasserstein_distance(s, y) == pytest.approx(0.1)


def test_against_brute_force_references_on_random_masks():
    rng = np.random.default_rng(0)
    for n, m in [(3, 2), (2, 3), (4, 2), (1, 3)]:
        s = rng.random((n, 5, 5)) < 0.3
        y = rng.random((m, 5, 5)) < 0.3
        y[0] = False  # an empty annotation among them
        assert generalized_energy_distance(s, y) == pytest.approx(ref_ged(s, y), abs=1e-12)
        assert hungarian_matched_iou(s, y) == pytest.approx(ref_hm_iou(s, y), abs=1e-12)


def test_batched_torch_equals_per_image_numpy():
    rng = np.random.default_rng(1)
    s = rng.random((3, 16, 8, 8)) < 0.4
    y = rng.random((3, 4, 8, 8)) < 0.4
    ged = generalized_energy_distance(torch.from_numpy(s), torch.from_numpy(y))
    hm = hungarian_matched_iou(torch.from_numpy(s).float(), torch.from_numpy(y).to(torch.uint8))
    assert ged.shape == hm.shape == (3,)
    for b in range(3):
        assert ged[b] == pytest.approx(generalized_energy_distance(s[b], y[b]))
        assert hm[b] == pytest.approx(hungarian_matched_iou(s[b], y[b]))
    assert isinstance(iou_matrix(torch.from_numpy(s), torch.from_numpy(s)), torch.Tensor)


def test_effective_rank():
    assert effective_rank(np.full(6, 0.3)) == pytest.approx(6.0)
    assert effective_rank(np.array([0.0, 0.0, 2.5, 0.0])) == pytest.approx(1.0)
    # c = [1/4, 1/4, 1/2]: H = 1.5 ln 2, ER = 2 ** 1.5
    assert effective_rank(np.array([1.0, 1.0, 2.0])) == pytest.approx(2**1.5)
    batch = effective_rank(torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(batch, [2.0, 1.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iou_matrix(np.zeros((4, 4)), np.zeros((1, 4, 4))), "expected shape"),
        (lambda: iou_matrix(np.zeros((1, 4, 4)), np.zeros((1, 5, 4))), "same batch size and H x W"),
        (lambda: iou_matrix(np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4))), "binary"),
        (lambda: iou_matrix(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4))), "NaN"),
        (lambda: hungarian_matched_iou(np.zeros((0, 4, 4)), np.zeros((1, 4, 4))), "at least one mask"),
        (lambda: generalized_energy_distance(np.zeros((2, 3, 4, 4)), np.zeros((1, 4, 4))), "same number"),
        (lambda: effective_rank(np.zeros(3)), "all-zero"),
        (lambda: effective_rank(np.array([1.0, -1.0])), "non-negative"),
        (lambda: effective_rank(np.array([1.0, np.nan])), "finite"),
        (lambda: iou_matrix([[0]], np.zeros((1, 4, 4))), "numpy array or torch tensor"),
    ],
)
def test_bad_input_raises_one_clear_error(call, message):
    with pytest.raises(ProbsegError, match=message):
        call()
