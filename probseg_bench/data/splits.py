"""The protocols' splits of a dataset into training, validation and test items (:func:`protocol_splits`).

* ``cv`` (the seed paper's protocol, Section III-C; :func:`grouped_splits`): about ``test_fraction`` of the items
  (whole groups = patients) are held out as the test set; the remaining groups are dealt into ``n_folds`` folds
  of balanced item counts; fold k trains on the others and validates on fold k.
* ``phiseg`` (the field's LIDC "v1" split, CCDM Section 4.1; :func:`phiseg_split`): the procedure of the PHiSeg
  code (``data/lidc_data_loader.py``, ``prepare_data``; the same lines in CCDM's ``datasets/lidc.py``) on the
  groups (LIDC: ``series_uid``): 20 % of the distinct groups are the test set, 20 % of the rest the validation
  set, the remainder the training set, seeded as MoSE's copy of that code seeds it.
* ``dataset``: the dataset's own assignment, its metadata column ``split`` (``train`` / ``val`` / ``test``; the
  LIDC "v2" crops of the Hierarchical PU-Net release come in these three folders).

A fixed split (``phiseg``, ``dataset``) has one training and one validation set: its ``n_folds`` "folds" are
that many training runs on the same split, each with its own seed (the field reports the mean over seeds). A
group never appears in two parts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from probseg_bench.errors import ProbsegError

SPLITS = ("cv", "phiseg", "dataset")
"""The split procedures a preset may name (see the module docstring)."""

PHISEG_TEST_SIZE = 0.2
PHISEG_VAL_SIZE = 0.2
"""The two ``test_size`` arguments of the PHiSeg code's ``train_test_split`` calls (test, then validation of the
rest)."""


@dataclass(frozen=True)
class Splits:
    """Item indices (int64, sorted) of the test set and of each fold, and a hash identifying them.

    ``train`` None (cross-validation): fold k validates on ``folds[k]`` and trains on the other folds. A fixed
    split sets ``train``: every fold (a training run) trains on ``train`` and validates on ``folds[k]``, the same
    validation items for every k.
    """

    test: np.ndarray
    folds: tuple[np.ndarray, ...]
    split_hash: str
    train: np.ndarray | None = None

    def train_val(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) indices of fold ``fold``.

        Raises:
            ProbsegError: fold outside 0..n_folds-1.
        """
        if not 0 <= fold < len(self.folds):
            raise ProbsegError(f"fold: expected 0..{len(self.folds) - 1}, got {fold}")
        if self.train is not None:
            return self.train, self.folds[fold]
        train = np.sort(np.concatenate([f for i, f in enumerate(self.folds) if i != fold]))
        return train, self.folds[fold]

    @property
    def train_items(self) -> float:
        """The mean number of items of the folds' training splits (CV: all but one fold of the non-test items)."""
        if self.train is not None:
            return float(len(self.train))
        n_folds = len(self.folds)
        return sum(len(f) for f in self.folds) * (n_folds - 1) / max(n_folds, 1)


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


def _sklearn_train_test_split(items: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``train_test_split(items, test_size=test_size, random_state=seed)`` (its ``ShuffleSplit``:
    n_test = ceil(test_size * n), one ``numpy.random.RandomState(seed).permutation(n)``, test = the first n_test of
    it, train the rest, both in the permuted order)."""
    n_test = math.ceil(test_size * items.size)
    permutation = np.random.RandomState(seed).permutation(items.size)
    return items[permutation[n_test:]], items[permutation[:n_test]]


def phiseg_split(groups: np.ndarray, runs: int = 1, seed: int = 0) -> Splits:
    """The LIDC "v1" split of the PHiSeg code (``data/lidc_data_loader.py``, ``prepare_data``), as MoSE's copy of it
    seeds it (github.com/gaozhitong/MoSE-AUSeg, ``data/preprocess/lidc_data_loader.py``: "Add random_state to ensure
    same splits")::

        unique_subjects = np.unique(series_uid)
        train_and_val_ids, test_ids = train_test_split(unique_subjects, test_size=0.2, random_state=0)
        train_ids, val_ids = train_test_split(train_and_val_ids, test_size=0.2, random_state=0)

    with ``seed`` in place of 0 (seed 0 reproduces MoSE's split of the same pickle, which CCDM's authors also used
    for their CIMD re-run). The PHiSeg, SSN and CCDM code make the same two calls without a random state, so their
    splits cannot be reproduced. 20 % of the groups are test, 16 % validation, 64 % training (CCDM's "60:20:20" is
    not what the code does); items follow their group.

    Args:
        groups: [N] group (patient / series) id per item.
        runs: the number of training runs on the split (``Splits.folds`` repeats the validation items).
        seed: the ``random_state`` of both calls.

    Raises:
        ProbsegError: fewer than 3 groups (a part would be empty), runs < 1.
    """
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups)
    if unique.size < 3:
        raise ProbsegError(f"groups: {unique.size} distinct groups cannot fill the training, validation and test "
                           "sets of the PHiSeg split (need at least 3)")
    if runs < 1:
        raise ProbsegError(f"runs: expected >= 1, got {runs}")
    train_val, test = _sklearn_train_test_split(unique, PHISEG_TEST_SIZE, seed)
    train, val = _sklearn_train_test_split(train_val, PHISEG_VAL_SIZE, seed)
    if train.size == 0:
        raise ProbsegError(f"groups: {unique.size} distinct groups leave no training group in the PHiSeg split")
    return _fixed_split(groups, {"procedure": "phiseg", "seed": seed, "test": sorted(test.tolist()),
                                 "val": sorted(val.tolist()), "train": sorted(train.tolist())},
                        np.isin(groups, train), np.isin(groups, val), np.isin(groups, test), runs)


def dataset_split(assignment: np.ndarray, groups: np.ndarray, runs: int = 1, source: str = "dataset") -> Splits:
    """The dataset's own split: ``assignment`` [N] holds ``train``, ``val`` or ``test`` per item (e.g. the folder
    an LIDC v2 crop came from).

    Raises:
        ProbsegError: another value, an empty part, or a group in two parts (the message names ``source``).
    """
    assignment = np.asarray(assignment).astype(str)
    groups = np.asarray(groups).astype(str)
    other = sorted(set(assignment.tolist()) - {"train", "val", "test"})
    if other:
        raise ProbsegError(f"{source}: metadata column 'split' holds {other[0]!r}; expected train, val or test for "
                           "every item")
    parts = {name: assignment == name for name in ("train", "val", "test")}
    for name, mask in parts.items():
        if not mask.any():
            raise ProbsegError(f"{source}: no {name} item in the metadata column 'split' (expected train, val and "
                               "test items)")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = np.intersect1d(groups[parts[a]], groups[parts[b]])
        if shared.size:
            raise ProbsegError(f"{source}: group {str(shared[0])!r} has {a} and {b} items (a split must not cut a "
                               "group)")
    return _fixed_split(groups, {"procedure": "dataset"}, parts["train"], parts["val"], parts["test"], max(runs, 1))


def _fixed_split(groups: np.ndarray, payload: dict[str, object], train: np.ndarray, val: np.ndarray,
                 test: np.ndarray, runs: int) -> Splits:
    """Splits of a fixed split from boolean item masks; the hash covers ``payload`` and the item indices."""
    train_items, val_items, test_items = (np.flatnonzero(m) for m in (train, val, test))
    payload = {**payload, "n_items": int(groups.size), "train_items": train_items.tolist(),
               "val_items": val_items.tolist(), "test_items": test_items.tolist()}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return Splits(test=test_items, folds=(val_items,) * runs, split_hash=digest, train=train_items)


def protocol_splits(groups: np.ndarray, metadata: dict[str, np.ndarray], split: str, n_folds: int,
                    test_fraction: float, seed: int, split_seed: int | None = None,
                    source: str = "dataset") -> Splits:
    """The splits of a preset's split procedure (``cv``, ``phiseg`` or ``dataset``; see the module docstring) for
    a dataset's ``groups`` [N] and ``metadata`` (``dataset`` reads its ``split`` column); ``n_folds``: the CV
    folds, or the training runs on a fixed split; the procedure's seed is ``split_seed`` when given (a preset's
    fixed split), else the run's ``seed`` (``dataset`` has none).

    Raises:
        ProbsegError: an unknown procedure, a ``dataset`` split without a ``split`` column, and the errors of
            :func:`grouped_splits`, :func:`phiseg_split` and :func:`dataset_split`.
    """
    seed = seed if split_seed is None else split_seed
    if split == "cv":
        return grouped_splits(groups, n_folds, test_fraction, seed)
    if split == "phiseg":
        return phiseg_split(groups, n_folds, seed)
    if split == "dataset":
        if "split" not in metadata:
            raise ProbsegError(f"{source}: the preset uses the dataset's own train/val/test split, and this dataset "
                               "has none (no metadata column 'split'; e.g. lidc-crops has one, from its folders)")
        return dataset_split(metadata["split"], groups, n_folds, source)
    raise ProbsegError(f"split procedure {split!r}: expected one of {', '.join(SPLITS)}")
