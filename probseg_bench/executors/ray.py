"""``--executor ray``: one Ray task per cell (1 GPU with ``--device cuda``, else ``cpus_per_task`` CPUs) on the
cluster at ``address`` (a new local one when None), a failing cell retried ``retries`` times then recorded as
failed; tune's workers as Ray tasks. Connecting is bounded (:func:`ray_session`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError
from probseg_bench.executors import (
    DEFAULT_TUNE_WORKERS,
    CellResult,
    Executor,
    ExecutorOption,
    OnStart,
    OnTrial,
    failure_reason,
    give_up,
    nonempty,
    nonnegative_int,
    positive_int,
    prepare_trials,
    register_executor,
    run_cell,
    worker_shares,
)
from probseg_bench.request import RunRequest

if TYPE_CHECKING:
    from probseg_bench.tuning.workers import TuneJob


def _import_ray(address: str | None) -> Any:
    """Import Ray, with the settings that bound connecting to ``address`` (:func:`ray_connect_settings`) in the
    environment while it is imported (Ray reads some of them then).

    Raises:
        ProbsegError: Ray is not installed.
    """
    from probseg_bench.connections import environment, ray_connect_settings

    try:
        with environment(ray_connect_settings() if address else {}):
            import ray
    except ImportError:
        raise ProbsegError("--executor ray needs Ray: pip install 'probseg-bench[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``) or start a local one
    with this machine's CPUs (None); shut down on exit what was started here.

    Connecting is bounded (:mod:`probseg_bench.connections`): the head's port is tried with a TCP connection first
    (fails within :func:`~probseg_bench.connections.connect_timeout` seconds, 10 by default), then Ray makes one
    GCS connection attempt bounded by the same timeout (+ about 10 s of Ray's own waits), not its 20 retries.

    Raises:
        ProbsegError: Ray is not installed, or the cluster cannot be reached (one line naming the address).
    """
    from probseg_bench.connections import (
        RAY_EXTRA_S,
        check_reachable,
        connect_timeout,
        environment,
        error_line,
        ray_connect_settings,
        ray_target,
    )

    ray = _import_ray(address)
    if ray.is_initialized():
        yield
        return
    try:
        if address:
            target = ray_target(address)
            if target is not None:
                check_reachable(*target, what=f"--address {address}: the Ray cluster's head")
            with environment(ray_connect_settings()), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Ray Client's multi-line advice: the one line below says it
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except ProbsegError:
        raise
    except Exception as exc:  # ConnectionError and friends, by Ray version
        within = f" within about {connect_timeout() + RAY_EXTRA_S:g} s" if address else ""
        raise ProbsegError(f"--address {address}: cannot connect to the Ray cluster{within} ({error_line(exc)})"
                           ) from None
    try:
        yield
    finally:
        ray.shutdown()


def run_ray(requests: list[RunRequest], storage: str, address: str | None = None, retries: int = 2,
            cpus_per_task: int = 1, on_result: Callable[[CellResult], Any] | None = None, retry_failed: bool = False
            ) -> list[CellResult]:
    """Run every cell as a Ray task (see the module docstring); cells that still fail after ``retries`` retries
    are recorded as failed in the store.

    Raises:
        ProbsegError: Ray is not installed, or the cluster cannot be reached.
        FoldInterrupted: Ctrl-C: the cells not finished are cancelled (:func:`_cancel_ray`).
    """
    ray = _import_ray(address)
    remote = ray.remote(max_retries=retries, retry_exceptions=True)(run_cell)
    results = []
    with ray_session(address):
        pending = {}
        for r in requests:
            resources = {"num_gpus": 1, "num_cpus": 1} if r.device.startswith("cuda") else {"num_cpus": cpus_per_task}
            pending[remote.options(**resources).remote(r, storage, cpus_per_task, retry_failed)] = r

        def collect(ref: Any) -> None:
            request = pending.pop(ref)
            try:
                result = CellResult(request, ray.get(ref))
            except Exception as exc:  # the task failed after its retries
                cause = getattr(exc, "cause", None) or exc
                reason = f"failed after {retries} retries on Ray: {failure_reason(cause)}"
                result = give_up(request, storage, reason)
            results.append(result)
            if on_result:
                on_result(result)

        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                collect(done[0])
        except KeyboardInterrupt:
            raise _cancel_ray(ray, pending, collect) from None
    return results


def _cancel_ray(ray: Any, pending: dict[Any, RunRequest], collect: Callable[[Any], None]) -> KeyboardInterrupt:
    """After Ctrl-C in the driver: the cells that finished are collected, the others cancelled (``force=False``: a
    Ctrl-C in the task, whose fold then stops at a Python step; its last written training state stays). Ray does not
    return what a cancelled task left, so the clause names the files (on the machines that ran the cells), not
    their epochs. Returns the :class:`~probseg_bench.interruption.FoldInterrupted` to raise."""
    from probseg_bench.interruption import NOTHING_IN_PROGRESS, FoldInterrupted

    try:
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in done:
            collect(ref)
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=30)  # let the cancelled tasks stop cleanly
    except KeyboardInterrupt:
        pass
    if not pending:
        return FoldInterrupted(NOTHING_IN_PROGRESS)
    cells = ", ".join(f"{r.model}/{r.dataset} d={r.latent_dims[0]} fold {r.folds[0] if r.folds else 0}"
                      for r in pending.values())
    dirs = ", ".join(dict.fromkeys(str(r.run_dir) for r in pending.values()))
    return FoldInterrupted(f"{len(pending)} cell(s) not finished were cancelled on Ray ({cells}): each that had "
                           f"written a training state keeps it (its fold<k>.partial.pt under {dirs} on the machine "
                           "that ran it, at its last written epoch), the others left nothing")


def trials_on_ray(job: TuneJob, shares: list[tuple[int, int]], seed: int, address: str | None, cpus: int = 1,
                  on_start: OnStart | None = None) -> list[str]:
    """tune's workers as Ray tasks, one per share of :func:`worker_shares` (``cpus`` CPUs and torch threads each, or
    1 GPU with --device cuda; never retried: a retry would run more trials than asked), on the cluster at
    ``address``. A worker that raises, or whose process dies, is one line ``worker <i>: failed on Ray: ...``.

    Raises:
        ProbsegError: Ray is not installed, or the cluster cannot be reached.
        KeyboardInterrupt: Ctrl-C; the workers not finished are cancelled.
    """
    from probseg_bench.tuning.workers import tune_worker

    prepare_trials(job, seed, on_start)
    ray = _import_ray(address)
    gpu = job.request.device.startswith("cuda")
    remote = ray.remote(num_cpus=1 if gpu else cpus, num_gpus=1 if gpu else 0, max_retries=0)(tune_worker)
    failures: dict[int, str] = {}
    with ray_session(address):
        refs = {remote.remote(job, n, worker_seed, cpus): i for i, (n, worker_seed) in enumerate(shares)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(done[0])
                except Exception as exc:  # a RayTaskError (its cause: the worker's exception), a dead worker
                    cause = getattr(exc, "cause", None) or exc
                    failures[refs[done[0]]] = f"worker {refs[done[0]]}: failed on Ray: {failure_reason(cause)}"
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            raise
    return [failures[i] for i in sorted(failures)]


@register_executor
class RayExecutor(Executor):
    """One Ray task per cell (:func:`run_ray`)."""

    name = "ray"
    description = "a Ray cluster: one task per cell"
    checks_device_here = False
    options = (
        ExecutorOption("address", nonempty, "a Ray address (auto, host:port, ray://host:port)", None,
                       "the cluster [default: a new local one]"),
        ExecutorOption("retries", nonnegative_int, "an integer >= 0", 2, "retries of a failing cell"),
        ExecutorOption("cpus_per_task", positive_int, "an integer >= 1", 1, "CPUs of a CPU cell's task"),
    )

    def run(self, cells: list[RunRequest], storage: str, on_result: Callable[[CellResult], Any] | None = None,
            retry_failed: bool = False) -> list[CellResult]:
        s = self.settings
        return run_ray(cells, storage, s["address"], s["retries"], s["cpus_per_task"], on_result=on_result,
                       retry_failed=retry_failed)

    def run_trials(self, job: TuneJob, trials: int, seed: int, workers: int | None = None,
                   on_start: OnStart | None = None, on_trial: OnTrial | None = None) -> list[str]:
        """One Ray task per worker (:func:`trials_on_ray`; ``retries`` does not apply)."""
        shares = worker_shares(trials, seed, DEFAULT_TUNE_WORKERS if workers is None else workers)
        s = self.settings
        return trials_on_ray(job, shares, seed, s["address"], s["cpus_per_task"], on_start)
