"""Group-aware splits: no patient on two sides, deterministic for a seed, ~20% test, balanced folds."""

from __future__ import annotations

import numpy as np
import pytest

from probseg_bench.data.splits import grouped_splits
from probseg_bench.errors import ProbsegError


def patients(n_patients: int = 40, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_patients)  # 1..11 slices per patient
    return np.repeat([f"patient-{i:03d}" for i in range(n_patients)], sizes)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_patient_is_never_on_two_sides(seed):
    groups = patients()
    s = grouped_splits(groups, n_folds=3, test_fraction=0.2, seed=seed)
    parts = [s.test, *s.folds]
    sets = [set(groups[p]) for p in parts]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j]
    # every item in exactly one part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(groups)))
    for fold in range(3):
        train, val = s.train_val(fold)
        assert not set(groups[train]) & set(groups[val])
        assert not set(groups[train]) & set(groups[s.test])
        assert len(train) + len(val) + len(s.test) == len(groups)


def test_test_fraction_and_fold_balance():
    groups = patients()
    s = grouped_splits(groups, seed=0)
    n = len(groups)
    assert 0.2 * n <= len(s.test) < 0.2 * n + 11  # the smallest prefix of whole patients reaching 20%
    sizes = [len(f) for f in s.folds]
    assert max(sizes) - min(sizes) <= 11  # greedy balance: within one patient's size


def test_one_item_per_group_gives_the_expected_counts():
    s = grouped_splits(np.arange(28), seed=0)  # lidc-sample: 28 cases, each its own patient
    assert len(s.test) == 6  # ceil(0.2 * 28)
    assert sorted(len(f) for f in s.folds) == [7, 7, 8]


def test_deterministic_for_a_seed_and_different_across_seeds():
    groups = patients()
    a, b, c = grouped_splits(groups, seed=5), grouped_splits(groups, seed=5), grouped_splits(groups, seed=6)
    np.testing.assert_array_equal(a.test, b.test)
    assert a.split_hash == b.split_hash
    assert a.split_hash != c.split_hash


def test_too_few_groups_and_bad_arguments():
    with pytest.raises(ProbsegError, match="distinct groups"):
        grouped_splits(np.array(["a", "a", "b", "c"]), n_folds=3)
    with pytest.raises(ProbsegError, match="test_fraction"):
        grouped_splits(np.arange(10), test_fraction=1.0)
    with pytest.raises(ProbsegError, match="fold"):
        grouped_splits(np.arange(10)).train_val(3)
