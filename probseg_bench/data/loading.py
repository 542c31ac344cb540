"""Loading a dataset for a run or a ``data`` command: resolve the dataset parameters, read a converted folder
memory-mapped when ``--data-root`` is one, else call the plugin's loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probseg_bench.api import DatasetSpec, HyperValue, MultiRaterData, resolve_hyperparameters
from probseg_bench.data.converted import is_converted, read_converted
from probseg_bench.errors import ProbsegError

TRUST_PICKLE = "trust_pickle"
"""A dataset that reads pickles declares a boolean parameter of this name; ``--trust-pickle`` sets it. It is a
permission, not a property of the data: it is not stored with results."""


def dataset_parameters(spec: DatasetSpec, overrides: Mapping[str, Any]) -> dict[str, HyperValue]:
    """The dataset's parameters (defaults updated with ``overrides``), without ``trust_pickle``.

    Raises:
        ProbsegError: an unknown parameter or a bad value.
    """
    if TRUST_PICKLE in overrides:
        raise ProbsegError("trust_pickle is not a dataset parameter: use --trust-pickle")
    declared = tuple(p for p in spec.parameters if p.name != TRUST_PICKLE)
    return resolve_hyperparameters(f"dataset '{spec.name}'", declared, overrides, "dataset parameter")


def load_dataset(
    spec: DatasetSpec, data_root: Path | None, params: Mapping[str, HyperValue], trust_pickle: bool = False
) -> MultiRaterData:
    """Load ``spec``'s data from ``data_root`` with resolved ``params`` (see :func:`dataset_parameters`).

    A converted folder (``probseg-bench data convert``) is read memory-mapped; it must have been written from
    this dataset with the same parameters.

    Raises:
        ProbsegError: whatever the loader raises, a converted folder of another dataset or other parameters,
            ``--trust-pickle`` for a dataset that reads no pickles.
    """
    if is_converted(data_root):
        assert data_root is not None
        data, info = read_converted(data_root)
        if info.get("dataset") != spec.name:
            raise ProbsegError(
                f"{data_root}: a converted '{info.get('dataset')}' dataset, not '{spec.name}'"
            )
        if dict(info.get("parameters", {})) != dict(params):
            raise ProbsegError(
                f"{data_root}: converted with parameters {info.get('parameters')}, but {dict(params)} were asked for"
            )
        return data
    takes_trust = any(p.name == TRUST_PICKLE for p in spec.parameters)
    if trust_pickle and not takes_trust:
        raise ProbsegError(f"--trust-pickle: dataset '{spec.name}' reads no pickles")
    extra = {TRUST_PICKLE: trust_pickle} if takes_trust else {}
    data = spec.load(data_root, **params, **extra)
    if not isinstance(data, MultiRaterData):
        raise ProbsegError(f"dataset plugin '{spec.name}': load returned {type(data).__name__}, not MultiRaterData")
    return data
