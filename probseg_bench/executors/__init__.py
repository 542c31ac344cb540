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
- ``slurm``: one Slurm job per cell, through submitit (:mod:`probseg_bench.executors.slurm`).

The same executors run ``tune``'s workers (:meth:`Executor.run_trials`): each worker runs its share of the trials
(:func:`worker_shares`) of one Optuna study on the study's shared storage: ``local`` in this process, or in
``jobs`` processes; ``ray``: one task per worker; ``slurm``: one job per worker.

Each is an :class:`Executor` registered by name (:data:`EXECUTOR_TYPES`); its settings come from
``--executor-option KEY=VALUE`` (:attr:`Executor.options`), and a command's shorthand flags (``--jobs``,
``--address``, ``--retries``) become the options of the same key where the executor has one (:func:`flag_options`).

This package holds the interface, the registry and what every executor shares; each executor is one module:
:mod:`~probseg_bench.executors.local`, :mod:`~probseg_bench.executors.ray`, :mod:`~probseg_bench.executors.slurm`
(``slurm``: registered on first use).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from probseg_bench.errors import ProbsegError
from probseg_bench.hyperparameters import parse_assignments
from probseg_bench.request import CheckedRequest, RunRequest

if TYPE_CHECKING:
    from probseg_bench.tuning.workers import TuneJob

OnStart = Callable[[Any, list[Any]], Any]
"""``tune``'s ``on_start(study, search space)``: the study is prepared and the workers are about to start."""
OnTrial = Callable[[int, dict[str, Any]], Any]
"""``tune``'s ``on_trial(number, values)``: a trial started in this process, with its sampled values."""


@dataclass
class CellResult:
    """What came back from one cell: its request, the records' dicts, or the error that ended it."""

    request: RunRequest
    records: list[dict[str, Any]]
    error: str | None = None


def cells(checked: Iterable[CheckedRequest]) -> list[RunRequest]:
    """Split checked requests into one-latent-dim, one-fold cells (the folds as the check resolved them)."""
    return [replace(c.request, latent_dims=(d,), folds=(f,)) for c in checked for d in c.request.latent_dims
            for f in c.folds]


def run_cell(request: RunRequest, storage: str, threads: int | None = None, retry_failed: bool = False
             ) -> list[dict[str, Any]]:
    """Run one cell through the standard protocol into the store at ``storage``; returns its records as dicts
    (plain data: they cross process boundaries). The cell is checked here, once, where it runs (this machine's
    plugins and device). ``retry_failed``: train again a fold recorded as failed."""
    from dataclasses import asdict

    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import check_request
    from probseg_bench.results import ResultsStore

    if threads:
        import torch

        torch.set_num_threads(threads)
    checked = check_request(request)
    return [asdict(r) for r in run_protocol(checked, ResultsStore(storage), retry_failed=retry_failed)]


def give_up(request: RunRequest, storage: str, reason: str) -> CellResult:
    """Record the cell's folds as failed with ``reason`` (when its data can be prepared at all)."""
    from probseg_bench.protocol import record_failure
    from probseg_bench.results import ResultsStore

    try:
        record_failure(request, ResultsStore(storage), reason)
    except ProbsegError as exc:  # the cell cannot even be prepared: nothing to key a record with
        reason = f"{reason} (not recorded: {exc})"
    return CellResult(request, [], reason)


def safe_cell(request: RunRequest, storage: str, threads: int | None, retry_failed: bool = False) -> CellResult:
    """:func:`run_cell` that never raises for a cell: a :class:`~probseg_bench.errors.ProbsegError` (a bad cell, a
    fold recorded as failed already) comes back as the result's ``error``; any other exception (a model plugin's
    bug) is recorded as the cell's failure (:func:`give_up`, its :func:`failure_reason`) and comes back the same way.
    What every executor runs on a cell (in this process, a worker process, a Ray task or a Slurm job)."""
    try:
        return CellResult(request, run_cell(request, storage, threads, retry_failed))
    except ProbsegError as exc:
        return CellResult(request, [], str(exc))
    except Exception as exc:  # a crash inside the cell (e.g. a model plugin's bug): record it, go on
        return give_up(request, storage, failure_reason(exc))


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
    stored are skipped by the protocol, so a rerun trains only what is missing. It also runs ``tune``'s workers
    (:meth:`run_trials`): the trials of one Optuna study, shared through the study's storage.

    Adding an executor, in one module: subclass; set :attr:`name`, :attr:`description`, :attr:`options` (the
    ``--executor-option`` keys; a key named like a command's shorthand flag, ``jobs``, ``address`` or ``retries``,
    also takes that flag) and :attr:`checks_device_here`; implement :meth:`run` (grid cells: call
    :func:`run_cell`, or :func:`safe_cell` / :func:`give_up` to record a failure, on each cell) and
    :meth:`run_trials` (tune's workers: :func:`worker_shares` first, then :func:`prepare_trials`, then
    :func:`~probseg_bench.tuning.workers.tune_worker` once per share, a failed worker becoming one line); decorate
    with :func:`register_executor`; for a module of its own, add it to ``_REGISTERED_ON_IMPORT`` (imported on
    first use). :mod:`probseg_bench.executors.slurm` is the example.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[ExecutorOption, ...]] = ()
    checks_device_here: ClassVar[bool] = True
    """Whether a cell's ``--device`` is checked on this machine (False where cells run on other machines)."""

    @property
    def in_this_process(self) -> bool:
        """Whether the cells run in this process, one after the other (then ``run`` shows each fold's epochs as
        they train, not only each cell's end)."""
        return False

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

    @abstractmethod
    def run_trials(self, job: TuneJob, trials: int, seed: int, workers: int | None = None,
                   on_start: OnStart | None = None, on_trial: OnTrial | None = None) -> list[str]:
        """Run ``trials`` trials of ``job``'s study (``tune``) with ``workers`` workers (None: the executor's
        default), split by :func:`worker_shares` (worker ``i``'s sampler seeded ``seed + 1000 * i``), each on the
        study's shared storage. The study is prepared here first (:func:`prepare_trials`: its schema, the study and
        its settings exist before the workers race to open them), then ``on_start(study, space)`` is called;
        ``on_trial(number, values)`` is called for each trial started in this process (none where the workers run
        elsewhere).

        Returns one line per worker that failed, ``worker <i>: <reason>`` (the study keeps the trials completed,
        a dead worker's running trial is failed by its heartbeat); [] when every worker finished.

        Raises:
            ProbsegError: --trials or --workers < 1; the study cannot be prepared (bad request, search space or
                settings); the executor cannot start (not installed, cluster unreachable, submission refused).
            KeyboardInterrupt: Ctrl-C; the workers not finished are stopped or cancelled.
        """


DEFAULT_TUNE_WORKERS = 2
"""tune's workers on a cluster (``ray``, ``slurm``) without --workers."""


def worker_shares(trials: int, seed: int, workers: int) -> list[tuple[int, int]]:
    """tune's workers: ``(trials, sampler seed)`` of each worker that gets at least one trial. The trials are split
    as evenly as possible (the first ``trials % workers`` workers run one more) and worker ``i`` seeds its sampler
    ``seed + 1000 * i``, so that the workers do not draw the same points; e.g. ``worker_shares(7, 5, 3)`` ==
    ``[(3, 5), (2, 1005), (2, 2005)]``, ``worker_shares(2, 0, 3)`` == ``[(1, 0), (1, 1000)]``.

    Raises:
        ProbsegError: trials < 1 (--trials) or workers < 1 (--workers).
    """
    for flag, value in (("--trials", trials), ("--workers", workers)):
        if value < 1:
            raise ProbsegError(f"{flag}: expected >= 1, got {value}")
    shares = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
    return [(n, seed + 1000 * i) for i, n in enumerate(shares) if n]


def prepare_trials(job: TuneJob, seed: int, on_start: OnStart | None = None) -> None:
    """Before tune's workers start: prepare ``job``'s study here (:func:`~probseg_bench.tuning.prepare_study`), then
    call ``on_start(study, search space)``.

    Raises:
        ProbsegError: a bad request, search space or fixed value, a study bound to other settings.
    """
    from probseg_bench.tuning import prepare_study

    _, study, space = prepare_study(job, seed)
    if on_start is not None:
        on_start(study, space)


def failure_reason(exc: BaseException) -> str:
    """An exception as one line: ``Type: first line of its message``."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def flag_options(name: str, flags: Mapping[str, object]) -> dict[str, str]:
    """A command's shorthand flags (``{"jobs": 2, "address": None, ...}``) that executor ``name`` takes: those with
    a value (not None) whose key is one of its options, as ``--executor-option`` texts. The others are not its
    business (``--jobs`` with ``--executor ray``) and are left out.

    Raises:
        ProbsegError: an unknown executor name.
    """
    keys = {o.key for o in executor_type(name).options}
    return {key: str(value) for key, value in flags.items() if value is not None and key in keys}


def executor_with_flags(name: str, items: Sequence[str], flags: Mapping[str, object]) -> Executor:
    """The ``--executor`` ``name`` with its ``--executor-option`` ``items`` over the command's shorthand ``flags``
    (:func:`flag_options`; an item of the same key wins).

    Raises:
        ProbsegError: an unknown executor, an unknown option key or a bad value.
    """
    return get_executor(name, {**flag_options(name, flags), **parse_executor_options(items)})


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


_REGISTERED_ON_IMPORT = {"slurm": "probseg_bench.executors.slurm"}
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


# the built-in executors register themselves when imported (slurm: on first use, _REGISTERED_ON_IMPORT)
from probseg_bench.executors.local import LocalExecutor as LocalExecutor  # noqa: E402
from probseg_bench.executors.local import run_local as run_local  # noqa: E402
from probseg_bench.executors.ray import RayExecutor as RayExecutor  # noqa: E402
from probseg_bench.executors.ray import ray_session as ray_session  # noqa: E402
from probseg_bench.executors.ray import run_ray as run_ray  # noqa: E402

EXECUTORS = executor_names()
"""The ``--executor`` names."""
