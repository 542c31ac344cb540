"""Where the cells of a grid run: in this process, in N local processes, as tasks on a Ray cluster or as Slurm jobs.

A *cell* is one (model, dataset, latent dim, fold): a :class:`RunRequest` with one latent dim and one fold. Every
executor runs the same function on a cell, :func:`run_cell`, which calls the standard protocol and writes to the
shared results store (any SQLAlchemy URL: a SQLite file on one machine, PostgreSQL for a cluster). Cells already
stored are skipped by the protocol itself, so any executor resumes a grid.

- ``local`` (default): the cells in order, in this process (``jobs=1``), or in ``jobs`` worker processes
  (``concurrent.futures.ProcessPoolExecutor``), each with ``cpu_count // jobs`` torch threads.
- ``ray``: one Ray task per cell, requesting 1 GPU with ``--device cuda`` else ``cpus_per_task`` CPUs, on the
  cluster at ``address`` (a new local one when None). A cell that raises is retried up to ``retries`` times
  (Ray's ``max_retries`` with ``retry_exceptions``; a crashed worker process too), then recorded as failed.
  Connecting to ``address`` fails within a bounded time with one line naming it (:func:`ray_session`).
- ``slurm``: one Slurm job per cell, through submitit (:mod:`probseg_bench.slurm`).

Each is an :class:`Executor` registered by name (:data:`EXECUTOR_TYPES`); its settings come from
``--executor-option KEY=VALUE`` (:attr:`Executor.options`).
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import RunRequest
from probseg_bench.hyperparameters import parse_assignments


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


def run_cell(request: RunRequest, storage: str, threads: int | None = None, retry_failed: bool = False
             ) -> list[dict[str, Any]]:
    """Run one cell through the standard protocol into the store at ``storage``; returns its records as dicts
    (plain data: they cross process boundaries). ``retry_failed``: train again a fold recorded as failed."""
    from dataclasses import asdict

    from probseg_bench.protocol import run_protocol
    from probseg_bench.results import ResultsStore

    if threads:
        import torch

        torch.set_num_threads(threads)
    return [asdict(r) for r in run_protocol(request, ResultsStore(storage), retry_failed=retry_failed)]


def _give_up(request: RunRequest, storage: str, reason: str) -> CellResult:
    """Record the cell's folds as failed with ``reason`` (when its data can be prepared at all)."""
    from probseg_bench.protocol import record_failure
    from probseg_bench.results import ResultsStore

    try:
        record_failure(request, ResultsStore(storage), reason)
    except ProbsegError as exc:  # the cell cannot even be prepared: nothing to key a record with
        reason = f"{reason} (not recorded: {exc})"
    return CellResult(request, [], reason)


def _safe_cell(request: RunRequest, storage: str, threads: int | None, retry_failed: bool = False) -> CellResult:
    try:
        return CellResult(request, run_cell(request, storage, threads, retry_failed))
    except ProbsegError as exc:
        return CellResult(request, [], str(exc))
    except Exception as exc:  # a crash inside the cell (e.g. a model plugin's bug): record it, go on
        return _give_up(request, storage, f"{type(exc).__name__}: {exc}".splitlines()[0])


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
            result = _safe_cell(r, storage, None, retry_failed)
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
    """:func:`_safe_cell` in a local worker, unless the run was interrupted (then :data:`NOT_STARTED`)."""
    global _cell_running
    _cell_running = True
    try:
        if _stopping:
            return CellResult(request, [], NOT_STARTED)
        return _safe_cell(request, storage, threads, retry_failed)
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
                reason = f"failed after {retries} retries on Ray: {type(cause).__name__}: {cause}".splitlines()[0]
                result = _give_up(request, storage, reason)
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


# --- the executor interface: where the checked cells of `run` go -------------------------------------------------


@dataclass(frozen=True)
class ExecutorOption:
    """One ``--executor-option KEY=VALUE`` an executor takes: its key, how its value is read (``parse`` raises
    ValueError on a bad one), what is expected (for the error line), its default and its help."""

    key: str
    parse: Callable[[str], Any]
    expected: str
    default: Any
    help: str


def positive_int(value: str) -> int:
    """An integer >= 1 (ValueError otherwise)."""
    n = int(value)
    if n < 1:
        raise ValueError(value)
    return n


def nonnegative_int(value: str) -> int:
    """An integer >= 0 (ValueError otherwise)."""
    n = int(value)
    if n < 0:
        raise ValueError(value)
    return n


def positive_float(value: str) -> float:
    """A finite number > 0 (ValueError otherwise)."""
    x = float(value)
    if not 0 < x < float("inf"):
        raise ValueError(value)
    return x


def nonempty(value: str) -> str:
    """A non-empty string (ValueError otherwise)."""
    if not value.strip():
        raise ValueError(value)
    return value.strip()


class Executor(ABC):
    """Where the cells of a run go. An executor is named (:attr:`name`, the ``--executor`` value), declares the
    ``--executor-option`` keys it takes (:attr:`options`), and runs a list of checked one-fold cells (:func:`cells`)
    into the results store at a URL, passing each :class:`CellResult` to ``on_result`` as it comes back. A cell that
    fails is recorded as failed in the store (one line, the reason) and reported with ``error``; cells already
    stored are skipped by the protocol, so a rerun trains only what is missing.

    Adding an executor: subclass, set the class attributes, implement :meth:`run`, decorate with
    :func:`register_executor`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[ExecutorOption, ...]] = ()
    checks_device_here: ClassVar[bool] = True
    """Whether a cell's ``--device`` is checked on this machine (False where cells run on other machines)."""

    def __init__(self, **settings: Any) -> None:
        known = {o.key: o.default for o in self.options}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ProbsegError(_unknown_key_line(self.name, unknown[0], known))
        self.settings: dict[str, Any] = {**known, **settings}

    @classmethod
    def from_options(cls, raw: Mapping[str, str], where: str = "--executor-option") -> Executor:
        """The executor with ``--executor-option`` values ``raw`` (key -> text), each checked and parsed;
        ``where`` starts the error line (e.g. a grid file's ``[executor]`` table).

        Raises:
            ProbsegError: an unknown key (naming the known ones) or a bad value (naming what is expected).
        """
        by_key = {o.key: o for o in cls.options}
        settings = {}
        for key, value in raw.items():
            if key not in by_key:
                raise ProbsegError(_unknown_key_line(cls.name, key, by_key, where))
            try:
                settings[key] = by_key[key].parse(value)
            except ValueError:
                raise ProbsegError(f"{where} {key}={value}: expected {by_key[key].expected}") from None
        return cls(**settings)

    @abstractmethod
    def run(self, cells: list[RunRequest], storage: str, on_result: Callable[[CellResult], Any] | None = None,
            retry_failed: bool = False) -> list[CellResult]:
        """Run every cell into the store at ``storage`` (a normalized URL); ``retry_failed``: train again the folds
        recorded as failed.

        Raises:
            ProbsegError: the executor cannot start (not installed, cluster unreachable, submission refused).
            FoldInterrupted: Ctrl-C; the finished cells were passed to ``on_result``.
        """


def _unknown_key_line(name: str, key: str, known: Iterable[str], where: str = "--executor-option") -> str:
    keys = ", ".join(sorted(known)) or "none"
    return f"{where} {key}: executor {name} has no option {key!r} (known: {keys})"


EXECUTOR_TYPES: dict[str, type[Executor]] = {}
"""The executors by name, in registration order (:func:`register_executor`)."""

E = TypeVar("E", bound=type[Executor])


def register_executor(cls: E) -> E:
    """Class decorator: make ``cls`` available as ``--executor <cls.name>``.

    Raises:
        ProbsegError: another executor has that name.
    """
    if cls.name in EXECUTOR_TYPES and EXECUTOR_TYPES[cls.name] is not cls:
        raise ProbsegError(f"executor {cls.name!r}: registered twice ({EXECUTOR_TYPES[cls.name].__qualname__}, "
                           f"{cls.__qualname__})")
    EXECUTOR_TYPES[cls.name] = cls
    return cls


def parse_executor_options(items: Sequence[str]) -> dict[str, str]:
    """``--executor-option KEY=VALUE`` items -> {key: value} (a later key replaces an earlier one).

    Raises:
        ProbsegError: an item without ``=`` or with an empty key.
    """
    return parse_assignments(items, "--executor-option", "KEY=VALUE (e.g. partition=gpu)")


_REGISTERED_ON_IMPORT = {"slurm": "probseg_bench.slurm"}
"""Executors in their own modules, which register them when imported (on first use: no import cost, no cycle)."""


def executor_names() -> tuple[str, ...]:
    """Every ``--executor`` name: the registered ones and those registered on import."""
    return tuple(dict.fromkeys([*EXECUTOR_TYPES, *_REGISTERED_ON_IMPORT]))


def executor_type(name: str) -> type[Executor]:
    """The executor class named ``name`` (importing its module on first use).

    Raises:
        ProbsegError: an unknown name (listing the known ones).
    """
    if name not in EXECUTOR_TYPES and name in _REGISTERED_ON_IMPORT:
        import importlib

        importlib.import_module(_REGISTERED_ON_IMPORT[name])
    if name not in EXECUTOR_TYPES:
        raise ProbsegError(f"--executor: expected one of {', '.join(executor_names())}, got {name!r}")
    return EXECUTOR_TYPES[name]


def choose_executor(command_line: str | None, command_line_options: Mapping[str, str],
                    table: tuple[str, Mapping[str, str]] | None, default: str) -> tuple[str, dict[str, str], bool]:
    """The executor a run uses and its option texts: ``--executor`` / ``--executor-option`` (``command_line``:
    None when not given) win over a grid file's ``[executor]`` table (``table``: its name and options, None when
    absent), the table over ``default`` and each executor's own option defaults. An ``--executor`` naming another
    executor than the table's drops the table's options. Returns (name, options, whether the table was dropped).
    """
    if table is None or (command_line is not None and command_line != table[0]):
        return command_line or default, dict(command_line_options), table is not None
    return table[0], {**table[1], **command_line_options}, False


def get_executor(name: str, options: Mapping[str, str] | Sequence[str] = ()) -> Executor:
    """The executor registered as ``name`` with its ``--executor-option`` values (a mapping, or KEY=VALUE items).

    Raises:
        ProbsegError: an unknown name (listing the known ones), an unknown option key or a bad value.
    """
    cls = executor_type(name)
    raw = options if isinstance(options, Mapping) else parse_executor_options(options)
    return cls.from_options(raw)


@register_executor
class LocalExecutor(Executor):
    """The cells in order in this process, or in ``jobs`` worker processes (:func:`run_local`)."""

    name = "local"
    description = "this machine: in this process, or in --jobs N processes"
    options = (ExecutorOption("jobs", positive_int, "an integer >= 1", 1, "cells run in this many processes"),)

    def run(self, cells: list[RunRequest], storage: str, on_result: Callable[[CellResult], Any] | None = None,
            retry_failed: bool = False) -> list[CellResult]:
        return run_local(cells, storage, self.settings["jobs"], on_result=on_result, retry_failed=retry_failed)


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


EXECUTORS = executor_names()
"""The ``--executor`` names."""
