"""Where the cells of a grid run: in this process, in N local processes, or as tasks on a Ray cluster.

A *cell* is one (model, dataset, latent dim, fold): a :class:`RunRequest` with one latent dim and one fold. Every
executor runs the same function on a cell, :func:`run_cell`, which calls the standard protocol and writes to the
shared results store (any SQLAlchemy URL: a SQLite file on one machine, PostgreSQL for a cluster). Cells already
stored are skipped by the protocol itself, so any executor resumes a grid.

- ``local`` (default): the cells in order, in this process (``jobs=1``), or in ``jobs`` worker processes
  (``concurrent.futures.ProcessPoolExecutor``), each with ``cpu_count // jobs`` torch threads.
- ``ray``: one Ray task per cell, requesting 1 GPU with ``--device cuda`` else ``cpus_per_task`` CPUs, on the
  cluster at ``address`` (a new local one when None). A cell that raises is retried up to ``retries`` times
  (Ray's ``max_retries`` with ``retry_exceptions``; a crashed worker process too), then recorded as failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import RunRequest

EXECUTORS = ("local", "ray")


@dataclass
class CellResult:
    """What came back from one cell: its request, the records' dicts, or the error that ended it."""

    request: RunRequest
    records: list[dict[str, Any]]
    error: str | None = None


def cells(requests: Iterable[RunRequest], n_folds: Callable[[RunRequest], int]) -> list[RunRequest]:
    """Split requests into one-latent-dim, one-fold cells (``n_folds(request)`` = the preset's folds)."""
    out = []
    for r in requests:
        folds = r.folds if r.folds is not None else tuple(range(n_folds(r)))
        out += [replace(r, latent_dims=(d,), folds=(f,)) for d in r.latent_dims for f in folds]
    return out


def run_cell(request: RunRequest, storage: str, threads: int | None = None) -> list[dict[str, Any]]:
    """Run one cell through the standard protocol into the store at ``storage``; returns its records as dicts
    (plain data: they cross process boundaries)."""
    from dataclasses import asdict

    from probseg_bench.protocol import run_protocol
    from probseg_bench.results import ResultsStore

    if threads:
        import torch

        torch.set_num_threads(threads)
    return [asdict(r) for r in run_protocol(request, ResultsStore(storage))]


def _give_up(request: RunRequest, storage: str, reason: str) -> CellResult:
    """Record the cell's folds as failed with ``reason`` (when its data can be prepared at all)."""
    from probseg_bench.protocol import record_failure
    from probseg_bench.results import ResultsStore

    try:
        record_failure(request, ResultsStore(storage), reason)
    except ProbsegError as exc:  # the cell cannot even be prepared: nothing to key a record with
        reason = f"{reason} (not recorded: {exc})"
    return CellResult(request, [], reason)


def _safe_cell(request: RunRequest, storage: str, threads: int | None) -> CellResult:
    try:
        return CellResult(request, run_cell(request, storage, threads))
    except ProbsegError as exc:
        return CellResult(request, [], str(exc))
    except Exception as exc:  # a crash inside the cell (e.g. a model plugin's bug): record it, go on
        return _give_up(request, storage, f"{type(exc).__name__}: {exc}".splitlines()[0])


def run_local(requests: list[RunRequest], storage: str, jobs: int = 1,
              on_result: Callable[[CellResult], Any] | None = None) -> list[CellResult]:
    """Run cells here (``jobs`` = 1: in order, in this process) or in ``jobs`` processes.

    Raises:
        ProbsegError: jobs < 1.
    """
    if jobs < 1:
        raise ProbsegError(f"--jobs: expected >= 1, got {jobs}")
    results = []
    if jobs == 1:
        for r in requests:
            result = _safe_cell(r, storage, None)
            results.append(result)
            if on_result:
                on_result(result)
        return results
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_safe_cell, r, storage, threads) for r in requests]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_result:
                on_result(result)
    return results


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``host:port``) or start a local one with this
    machine's CPUs (None); shut down on exit what was started here.

    Raises:
        ProbsegError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ProbsegError("--executor ray needs Ray: pip install 'probseg-bench[ray]'") from None
    if ray.is_initialized():
        yield
        return
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ConnectionError and friends, by Ray version
        raise ProbsegError(f"--address {address}: cannot connect to the Ray cluster ({exc})") from None
    try:
        yield
    finally:
        ray.shutdown()


def run_ray(requests: list[RunRequest], storage: str, address: str | None = None, retries: int = 2,
            cpus_per_task: int = 1, on_result: Callable[[CellResult], Any] | None = None) -> list[CellResult]:
    """Run every cell as a Ray task (see the module docstring); cells that still fail after ``retries`` retries
    are recorded as failed in the store.

    Raises:
        ProbsegError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ProbsegError("--executor ray needs Ray: pip install 'probseg-bench[ray]'") from None
    remote = ray.remote(max_retries=retries, retry_exceptions=True)(run_cell)
    results = []
    with ray_session(address):
        pending = {}
        for r in requests:
            resources = {"num_gpus": 1, "num_cpus": 1} if r.device.startswith("cuda") else {"num_cpus": cpus_per_task}
            pending[remote.options(**resources).remote(r, storage, cpus_per_task)] = r
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            request = pending.pop(ref)
            try:
                result = CellResult(request, ray.get(ref))
            except Exception as exc:  # the task failed after its retries
                cause = getattr(exc, "cause", None) or exc
                reason = f"failed after {retries} retries on Ray: {type(cause).__name__}: {cause}".splitlines()[0]
                result = _give_up(request, storage, reason)
            results.append(result)
            if on_result:
                on_result(result)
    return results
