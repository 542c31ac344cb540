"""Group-aware test split and cross-validation folds (the seed paper's protocol, Section III-C).

About ``test_fraction`` of the items (whole groups = patients) are held out as the test set; the remaining
groups are dealt into ``n_folds`` folds of balanced item counts. A group never appears in two parts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from probseg_bench.errors import ProbsegError


@dataclass(frozen=True)
class Splits:
    """Item indices (int64, sorted) of the test set and of each CV fold, and a hash identifying them."""

    test: np.ndarray
    folds: tuple[np.ndarray, ...]
    split_hash: str

    def train_val(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) indices of CV fold ``fold``: validate on that fold, train on the others.

        Raises:
            ProbsegError: fold outside 0..n_folds-1.
        """
        if not 0 <= fold < len(self.folds):
            raise ProbsegError(f"fold: expected 0..{len(self.folds) - 1}, got {fold}")
        train = np.sort(np.concatenate([f for i, f in enumerate(self.folds) if i != fold]))
        return train, self.folds[fold]


def grouped_splits(groups: np.ndarray, n_folds: int = 3, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Deterministic (for ``seed``) group-aware split.

    The distinct groups are sorted, then shuffled with ``numpy.random.default_rng(seed)``; the shortest prefix
    of that order holding at least ``test_fraction * N`` items is the test set; each remaining group, in that
    order, goes to the fold with the fewest items so far (ties: the lowest fold index).

    Args:
        groups: [N] group (patient) id per item.
        n_folds: number of CV folds (>= 2).
        test_fraction: fraction of items held out, in (0, 1).
        seed: split seed.

    Raises:
        ProbsegError: bad arguments, or fewer than n_folds + 1 groups.
    """
    groups = np.asarray(groups).astype(str)
    if groups.ndim != 1 or groups.size == 0:
        raise ProbsegError(f"groups: expected a non-empty 1-D array, got shape {groups.shape}")
    if n_folds < 2:
        raise ProbsegError(f"n_folds: expected >= 2, got {n_folds}")
    if not 0 < test_fraction < 1:
        raise ProbsegError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if unique.size < n_folds + 1:
        raise ProbsegError(
            f"groups: {unique.size} distinct groups cannot fill a test set and {n_folds} folds "
            f"(need at least {n_folds + 1})"
        )
    order = np.random.default_rng(seed).permutation(unique.size)
    target = math.ceil(test_fraction * groups.size - 1e-9)
    cum = np.cumsum(counts[order])
    n_test = int(np.searchsorted(cum, target) + 1)
    n_test = min(max(n_test, 1), unique.size - n_folds)  # leave at least one group per fold
    part = np.empty(unique.size, dtype=np.int64)  # -1 = test, else the fold
    part[order[:n_test]] = -1
    load = np.zeros(n_folds, dtype=np.int64)
    for g in order[n_test:]:
        f = int(np.argmin(load))
        part[g] = f
        load[f] += counts[g]
    item_part = part[inverse]
    test = np.flatnonzero(item_part == -1)
    folds = tuple(np.flatnonzero(item_part == f) for f in range(n_folds))
    payload = {
        "n_items": int(groups.size),
        "test": sorted(unique[part == -1].tolist()),
        "folds": [sorted(unique[part == f].tolist()) for f in range(n_folds)],
        "test_items": test.tolist(),
        "fold_items": [f.tolist() for f in folds],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return Splits(test=test, folds=folds, split_hash=digest)
