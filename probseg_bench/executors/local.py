"""``--executor local``: the cells in order in this process, or in ``jobs`` worker processes
(``concurrent.futures.ProcessPoolExecutor``, ``cpu_count // jobs`` torch threads each); tune's workers in this
process or in as many local processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError
from probseg_bench.executors import (
    CellResult,
    Executor,
    ExecutorOption,
    OnStart,
    OnTrial,
    failure_reason,
    positive_int,
    prepare_trials,
    register_executor,
    safe_cell,
    worker_shares,
)
from probseg_bench.request import RunRequest

if TYPE_CHECKING:
    from probseg_bench.tuning.workers import TuneJob


def run_local(requests: list[RunRequest], storage: str, jobs: int = 1,
              on_result: Callable[[CellResult], Any] | None = None, retry_failed: bool = False) -> list[CellResult]:
    """Run cells here (``jobs`` = 1: in order, in this process) or in ``jobs`` processes.

    Raises:
        ProbsegError: jobs < 1.
        FoldInterrupted: Ctrl-C (SIGINT to this process): no further cell starts, the cells in progress are
            interrupted, and its ``on_disk`` joins what each left on disk (:mod:`probseg_bench.interruption`); the
            cells that finished were passed to ``on_result``.
    """
    if jobs < 1:
        raise ProbsegError(f"--jobs: expected >= 1, got {jobs}")
    results = []
    if jobs == 1:
        for r in requests:
            result = safe_cell(r, storage, None, retry_failed)
            results.append(result)
            if on_result:
                on_result(result)
        return results
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    futures = [pool.submit(_worker_cell, r, storage, threads, retry_failed) for r in requests]
    reported: set[Future[CellResult]] = set()

    def report(future: Future[CellResult]) -> None:
        result = future.result()
        reported.add(future)
        results.append(result)
        if on_result:
            on_result(result)

    try:
        for future in as_completed(futures):
            report(future)
    except KeyboardInterrupt:
        raise _stop_workers(pool, futures, reported, report) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


NOT_STARTED = "not started: interrupted"
"""The error of a local worker's cell that an interruption kept from starting."""
_cell_running = False
_stopping = False


def _worker_init() -> None:
    """In a local worker process: ignore SIGINT (a terminal's Ctrl-C reaches every process of the group; the parent
    decides), and let SIGTERM from the parent (:func:`_stop_workers`) interrupt the cell in progress as Ctrl-C would
    (so that it says what it left on disk) and keep any later cell from starting; a second SIGTERM ends it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_stop)


def _on_stop(signum: int, frame: Any) -> None:
    """The first SIGTERM interrupts the cell in progress (or keeps the next from starting); a second one ends the
    process as SIGTERM does by default (e.g. a worker left without its parent)."""
    import signal

    global _stopping
    if _stopping:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _stopping = True
    if _cell_running:
        raise KeyboardInterrupt


def _worker_cell(request: RunRequest, storage: str, threads: int | None, retry_failed: bool = False) -> CellResult:
    """:func:`safe_cell` in a local worker, unless the run was interrupted (then :data:`NOT_STARTED`)."""
    global _cell_running
    _cell_running = True
    try:
        if _stopping:
            return CellResult(request, [], NOT_STARTED)
        return safe_cell(request, storage, threads, retry_failed)
    finally:
        _cell_running = False


def _stop_workers(pool: Any, futures: list[Future[CellResult]], reported: set[Future[CellResult]],
                  report: Callable[[Future[CellResult]], None]) -> KeyboardInterrupt:
    """After Ctrl-C in the parent of local workers: no new cell starts, each worker's cell in progress is
    interrupted (SIGTERM, :func:`_worker_init`) and says what it left on disk, and a cell that finished meanwhile is
    reported. Returns the :class:`~probseg_bench.interruption.FoldInterrupted` to raise (the cells' clauses)."""
    import signal
    from concurrent.futures import wait

    from probseg_bench.interruption import NOTHING_IN_PROGRESS, FoldInterrupted

    processes = list((getattr(pool, "_processes", None) or {}).values())  # CPython's; shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        wait([f for f in futures if not f.cancelled()])
    except KeyboardInterrupt:
        return FoldInterrupted("interrupted again while the cells in progress were stopping: each keeps the training "
                               "state of its last written epoch (its fold<k>.partial.pt under the run dir), or "
                               "nothing if it had written none")
    clauses = []
    for future in futures:
        if future.cancelled() or future in reported:
            continue
        try:
            result = future.result()
        except FoldInterrupted as exc:
            clauses.append(exc.on_disk)
            continue
        except BaseException:  # a plain KeyboardInterrupt (the cell was being prepared: nothing on disk), a crash
            continue
        if result.error != NOT_STARTED:  # finished before the interruption reached it
            report(future)
    return FoldInterrupted("; ".join(c for c in clauses if c != NOTHING_IN_PROGRESS) or NOTHING_IN_PROGRESS)


@register_executor
class LocalExecutor(Executor):
    """The cells in order in this process, or in ``jobs`` worker processes (:func:`run_local`)."""

    name = "local"
    description = "this machine: in this process, or in --jobs N processes"
    options = (ExecutorOption("jobs", positive_int, "an integer >= 1", 1, "cells run in this many processes"),)

    @property
    def in_this_process(self) -> bool:
        return bool(self.settings["jobs"] == 1)

    def run(self, cells: list[RunRequest], storage: str, on_result: Callable[[CellResult], Any] | None = None,
            retry_failed: bool = False) -> list[CellResult]:
        return run_local(cells, storage, self.settings["jobs"], on_result=on_result, retry_failed=retry_failed)

    def run_trials(self, job: TuneJob, trials: int, seed: int, workers: int | None = None,
                   on_start: OnStart | None = None, on_trial: OnTrial | None = None) -> list[str]:
        """One worker (``workers`` or else ``jobs`` is 1): the trials in this process (:func:`~probseg_bench.tuning.
        optimize`, an exception propagating; ``on_trial`` is called for each). More: that many processes
        (:func:`trials_in_processes`)."""
        shares = worker_shares(trials, seed, self.settings["jobs"] if workers is None else workers)
        if len(shares) > 1:
            return trials_in_processes(job, shares, seed, on_start)
        from probseg_bench.tuning import optimize

        optimize(job, trials, seed, on_trial=on_trial, on_start=on_start)
        return []


def trials_in_processes(job: TuneJob, shares: list[tuple[int, int]], seed: int, on_start: OnStart | None = None
                        ) -> list[str]:
    """tune's workers as local processes (``spawn``: the parent has loaded the data, and a forked child of a process
    that used torch's thread pool can hang), one per share of :func:`worker_shares`, each with ``cpu_count //
    workers`` torch threads, on the study's storage. Each worker is a pool of its own, so that one that dies (the
    OOM killer) fails alone. Returns one line per worker that raised or died.

    Raises:
        KeyboardInterrupt: Ctrl-C; each worker is interrupted too (its running trial is recorded as failed by
            Optuna) and waited for.
    """
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor, wait

    from probseg_bench.tuning.workers import tune_worker

    prepare_trials(job, seed, on_start)
    threads = max(1, (os.cpu_count() or 1) // len(shares))
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in shares]
    try:
        futures = [pool.submit(tune_worker, job, n, worker_seed, threads)
                   for pool, (n, worker_seed) in zip(pools, shares, strict=True)]
        wait(futures)
    except KeyboardInterrupt:
        for pool in pools:  # a SIGINT to this process alone (not to its terminal's group) reaches them from here
            for process in list((getattr(pool, "_processes", None) or {}).values()):  # CPython's
                if process.is_alive() and process.pid is not None:
                    try:
                        os.kill(process.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
        raise
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return [f"worker {i}: failed: {failure_reason(exc)}" for i, exc in enumerate(f.exception() for f in futures)
            if exc is not None]
