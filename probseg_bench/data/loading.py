"""Loading a dataset for a run or a ``data`` command: resolve the dataset parameters, read a converted folder
memory-mapped when ``--data-root`` is one, else call the plugin's loader.

What a loader did to the data that the user must know about (a case dropped because it has fewer annotator files
than the others, ...) is a :class:`DatasetWarning`: one line, raised with Python's :func:`warnings.warn`, so
that the core prints nothing itself. The CLI prints each as ``warning: <message>`` on stderr (``run``,
``tune``, ``data ...``); ``data inspect`` also lists them; ``data convert`` stores them in the converted folder,
and every later load of that folder raises them again.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from probseg_bench.api import DatasetSpec, HyperValue, MultiRaterData, resolve_hyperparameters
from probseg_bench.data.converted import is_converted, read_converted
from probseg_bench.errors import ProbsegError

TRUST_PICKLE = "trust_pickle"
"""A dataset that reads pickles declares a boolean parameter of this name; ``--trust-pickle`` sets it. It is a
permission, not a property of the data: it is not stored with results."""


class DatasetWarning(UserWarning):
    """A dataset loader changed what the user gave it (e.g. dropped a case with fewer annotators than the others).

    The message is one line that starts with the dataset name and names the case or file and the numbers
    involved, so that no data is lost silently. Raise it with ``warnings.warn(message, DatasetWarning)``.
    """


@contextmanager
def dataset_warnings() -> Iterator[list[str]]:
    """Collect the :class:`DatasetWarning` messages raised inside the block (every one, in order, even one raised
    before in this process); other warnings pass through to the usual display.

    The yielded list is filled when the block ends::

        with dataset_warnings() as notes:
            data = load_dataset(...)
        for note in notes: ...
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        try:
            yield notes
        finally:
            others = [w for w in caught if not issubclass(w.category, DatasetWarning)]
            notes += [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


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
    this dataset with the same parameters. The :class:`DatasetWarning` lines stored with it (what the loader
    dropped when it was converted) are raised again.

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
        for note in info.get("warnings", []):
            warnings.warn(f"{note} (when {data_root} was converted)", DatasetWarning, stacklevel=2)
        return data
    takes_trust = any(p.name == TRUST_PICKLE for p in spec.parameters)
    if trust_pickle and not takes_trust:
        raise ProbsegError(f"--trust-pickle: dataset '{spec.name}' reads no pickles")
    extra = {TRUST_PICKLE: trust_pickle} if takes_trust else {}
    data = spec.load(data_root, **params, **extra)
    if not isinstance(data, MultiRaterData):
        raise ProbsegError(f"dataset plugin '{spec.name}': load returned {type(data).__name__}, not MultiRaterData")
    return data
