"""``--executor slurm``: one Slurm job per grid cell, submitted through submitit.

The cells go to Slurm as job arrays (submitit's ``map_array``; one array per kind of cell: ``--device cuda`` cells ask
for GPUs, the others for CPUs only), each job running :func:`probseg_bench.executors.run_cell` on its cell into the
shared results store (give a URL that every node reaches: PostgreSQL, or a SQLite file on a shared file system).
submitit writes each job's pickled call, result and logs under ``folder`` (default ``<run dir>/slurm-jobs/%j``) and
runs it with this Python, so the nodes need the same installation at the same path.

A job that fails or is cancelled is recorded like a failed local cell: its folds not stored yet are recorded as
failed with one line, the reason (:func:`failure_line`); a record is written in one transaction when its fold is
evaluated, so nothing is half-written, and a rerun with ``--retry-failed`` trains only those folds (from each fold's
last written training state). Ctrl-C cancels the jobs not finished and records nothing for them (a rerun resumes
them). Facts about submitit's behaviour behind this: ``../shared/SLURM.md``.

``tune --executor slurm``: one job per worker (:meth:`SlurmExecutor.run_trials`), all on the study's shared storage.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError
from probseg_bench.executors import (
    DEFAULT_TUNE_WORKERS,
    CellResult,
    Executor,
    ExecutorOption,
    OnStart,
    OnTrial,
    give_up,
    nonempty,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_trials,
    register_executor,
    safe_cell,
    worker_shares,
)
from probseg_bench.request import RunRequest

if TYPE_CHECKING:
    from probseg_bench.tuning.workers import TuneJob

_STATE = re.compile(r"\(state: ([^)]*)\)")
_RULE = re.compile(r"^-{10,}$", re.MULTILINE)


def failure_line(exc: BaseException, job_id: str) -> str:
    """The one line recorded for a cell whose Slurm job did not return a result.

    - ``FailedJobError`` (the job's Python raised outside the cell, e.g. it could not import the code): the last
      line of the job's traceback (the exception);
    - ``UncompletedJobError`` (no result: cancelled, timed out, killed for memory, node failure): ``cancelled``
      for a CANCELLED state, else ``did not finish``, with Slurm's state;
    - anything else (e.g. the job's files vanished): the exception's type and first line.
    """
    from submitit.core.utils import FailedJobError, UncompletedJobError

    text = str(exc)
    if isinstance(exc, FailedJobError):  # a subclass of UncompletedJobError: first
        parts = _RULE.split(text)
        trace = parts[1] if len(parts) > 2 else text
        lines = [line.strip() for line in trace.splitlines() if line.strip()]
        return f"failed on Slurm (job {job_id}): {lines[-1] if lines else 'no traceback'}"
    if isinstance(exc, UncompletedJobError):
        match = _STATE.search(text)
        state = match.group(1).strip() if match else "unknown"
        what = "cancelled" if state.upper().startswith("CANCELLED") else "did not finish"
        return f"{what} on Slurm (job {job_id}, state {state})"
    first = text.splitlines()[0] if text.strip() else ""
    return f"lost on Slurm (job {job_id}): {type(exc).__name__}: {first}".rstrip(": ")


def stdout_quiet(logger: logging.Logger) -> None:
    """Remove ``logger``'s handlers that write to stdout. submitit configures its logger to print every message
    (warnings too, e.g. "Bypassing sacct error" when Slurm's accounting does not answer) on stdout as well as its
    warnings on stderr; stdout is the leaderboard (``run --format json`` must stay parseable), so its messages go to
    stderr only."""
    for handler in list(logger.handlers):
        stream = getattr(handler, "stream", None)
        if handler.get_name() == "submitit_out" or (
                isinstance(handler, logging.StreamHandler) and stream is not None
                and stream not in (sys.stderr, sys.__stderr__)):
            logger.removeHandler(handler)


def _import_submitit() -> Any:
    """submitit, once a Slurm client is known to be here.

    Raises:
        ProbsegError: submitit is not installed, or ``sbatch`` is not on PATH.
    """
    try:
        import submitit
    except ImportError:
        raise ProbsegError("--executor slurm needs submitit: pip install 'probseg-bench[slurm]'") from None
    stdout_quiet(logging.getLogger("submitit"))
    if shutil.which("sbatch") is None:
        raise ProbsegError("--executor slurm: no Slurm client here (sbatch is not on PATH); run from a machine that "
                           "submits to the cluster (a login node)")
    return submitit


def _submission_error(exc: BaseException) -> ProbsegError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return ProbsegError(f"--executor slurm: sbatch refused the jobs ({lines[-1] if lines else type(exc).__name__})")


@register_executor
class SlurmExecutor(Executor):
    """One Slurm job per cell through submitit (see the module docstring)."""

    name = "slurm"
    description = "a Slurm cluster: one job per cell (job arrays), through submitit"
    checks_device_here = False
    options = (
        ExecutorOption("partition", nonempty, "a partition name", None, "the partition [default: the cluster's]"),
        ExecutorOption("time", positive_int, "minutes (an integer >= 1)", 24 * 60, "a cell's time limit, minutes"),
        ExecutorOption("cpus_per_task", positive_int, "an integer >= 1", 1, "CPUs of a cell's job (torch threads)"),
        ExecutorOption("mem_gb", positive_float, "a number of GB > 0", None, "memory of a cell's job"),
        ExecutorOption("gpus_per_node", nonnegative_int, "an integer >= 0", None,
                       "GPUs of a cell's job [default: 1 for a --device cuda cell, else 0]"),
        ExecutorOption("array_parallelism", positive_int, "an integer >= 1", 256,
                       "at most this many jobs of the array run at once"),
        ExecutorOption("account", nonempty, "an account name", None, "the account charged"),
        ExecutorOption("qos", nonempty, "a QOS name", None, "the quality of service"),
        ExecutorOption("constraint", nonempty, "node features", None, "the nodes' features (sbatch --constraint)"),
        ExecutorOption("job_name", nonempty, "a job name", "probseg-cell", "the jobs' name (squeue, sacct)"),
        ExecutorOption("folder", nonempty, "a folder", None,
                       "submitit's job files and logs [default: <run dir>/slurm-jobs/%j]"),
        ExecutorOption("poll_s", positive_float, "seconds > 0", 1.0, "seconds between checks of the jobs' states"),
    )

    def parameters(self, gpu: bool) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` for a kind of cell (``gpu``: a ``--device cuda`` cell)."""
        s = self.settings
        gpus = s["gpus_per_node"] if s["gpus_per_node"] is not None else int(gpu)
        out: dict[str, Any] = {"job_name": s["job_name"], "time": s["time"], "cpus_per_task": s["cpus_per_task"],
                               "array_parallelism": s["array_parallelism"]}
        if gpus:
            out["gpus_per_node"] = gpus
        if s["mem_gb"] is not None:
            out["mem"] = f"{max(1, round(s['mem_gb'] * 1024))}M"
        out.update({k: s[k] for k in ("partition", "account", "qos", "constraint") if s[k] is not None})
        return out

    def folder(self, cells: list[RunRequest]) -> str:
        return str(self.settings["folder"] or Path(cells[0].run_dir).resolve() / "slurm-jobs" / "%j")

    def submit(self, cells: list[RunRequest], storage: str, retry_failed: bool) -> list[tuple[Any, RunRequest]]:
        """Submit one job per cell (an array per kind of cell); returns (job, cell) pairs.

        Raises:
            ProbsegError: submitit or Slurm is missing, or sbatch refused a job (the jobs submitted before are
                cancelled).
        """
        submitit = _import_submitit()
        submitted: list[tuple[Any, RunRequest]] = []
        for gpu in (False, True):
            group = [c for c in cells if c.device.startswith("cuda") == gpu]
            if not group:
                continue
            executor = submitit.SlurmExecutor(folder=self.folder(cells))
            executor.update_parameters(**self.parameters(gpu))
            n = len(group)
            try:
                jobs = executor.map_array(safe_cell, group, [storage] * n, [self.settings["cpus_per_task"]] * n,
                                          [retry_failed] * n)
            except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
                _cancel([job for job, _ in submitted])
                raise _submission_error(exc) from None
            submitted += list(zip(jobs, group, strict=True))
        return submitted

    def run(self, cells: list[RunRequest], storage: str, on_result: Callable[[CellResult], Any] | None = None,
            retry_failed: bool = False) -> list[CellResult]:
        if not cells:
            return []
        submitted = self.submit(cells, storage, retry_failed)
        from submitit.helpers import as_completed

        pending = {id(job): (job, cell) for job, cell in submitted}
        results = []
        try:
            for job in as_completed([job for job, _ in submitted], poll_frequency=self.settings["poll_s"]):
                _, cell = pending.pop(id(job))
                result = collect(job, cell, storage)
                results.append(result)
                if on_result:
                    on_result(result)
        except KeyboardInterrupt:
            raise _interrupted([pair for pair in pending.values()]) from None
        return results

    def run_trials(self, job: TuneJob, trials: int, seed: int, workers: int | None = None,
                   on_start: OnStart | None = None, on_trial: OnTrial | None = None) -> list[str]:
        """``tune --executor slurm``: one Slurm job per worker (one array), each running its share of the trials
        (:func:`~probseg_bench.executors.worker_shares`) on the study's shared storage (reachable from the nodes),
        with ``cpus_per_task`` torch threads; a worker's running trial keeps a heartbeat, so that of a killed worker
        is failed when the study is next opened. The jobs are named ``probseg-tune`` unless ``job_name`` is given;
        their files go to ``folder`` [default: ./slurm-jobs/%j]. A worker job that failed or was cancelled is one
        line ``worker <i>: <failure_line>``. Ctrl-C cancels the jobs not finished.

        Raises:
            ProbsegError: --trials or --workers < 1, submitit or Slurm is missing, sbatch refused the jobs.
        """
        from probseg_bench.tuning.workers import tune_worker

        shares = worker_shares(trials, seed, DEFAULT_TUNE_WORKERS if workers is None else workers)
        submitit = _import_submitit()
        prepare_trials(job, seed, on_start)
        parameters = self.parameters(job.request.device.startswith("cuda"))
        if parameters["job_name"] == "probseg-cell":  # the default: name the jobs for what they do
            parameters["job_name"] = "probseg-tune"
        executor = submitit.SlurmExecutor(folder=str(self.settings["folder"] or Path.cwd() / "slurm-jobs" / "%j"))
        executor.update_parameters(**parameters)
        n = len(shares)
        try:
            jobs = executor.map_array(tune_worker, [job] * n, [t for t, _ in shares], [s for _, s in shares],
                                      [self.settings["cpus_per_task"]] * n)
        except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
            raise _submission_error(exc) from None
        from submitit.helpers import as_completed

        worker = {id(j): i for i, j in enumerate(jobs)}
        pending = {id(j): j for j in jobs}
        failures: dict[int, str] = {}
        try:
            for done in as_completed(jobs, poll_frequency=self.settings["poll_s"]):
                pending.pop(id(done))
                try:
                    done.result()
                except Exception as exc:
                    failures[worker[id(done)]] = f"worker {worker[id(done)]}: {failure_line(exc, str(done.job_id))}"
        except KeyboardInterrupt:
            _cancel(list(pending.values()))
            raise
        return [failures[i] for i in sorted(failures)]


def collect(job: Any, cell: RunRequest, storage: str) -> CellResult:
    """The result of a finished job, or (it returned none) the cell recorded as failed with :func:`failure_line`."""
    try:
        result = job.result()
    except Exception as exc:
        return give_up(cell, storage, failure_line(exc, str(job.job_id)))
    if not isinstance(result, CellResult):  # not our function's result: never trust it
        return give_up(cell, storage, f"lost on Slurm (job {job.job_id}): unexpected result {type(result).__name__}")
    return result


def _cancel(jobs: list[Any]) -> None:
    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception:  # already gone: nothing to cancel
            pass


def _interrupted(pending: list[tuple[Any, RunRequest]]) -> KeyboardInterrupt:
    """After Ctrl-C: cancel the jobs not finished (nothing is recorded for them: a rerun resumes them). Returns the
    :class:`~probseg_bench.interruption.FoldInterrupted` to raise."""
    from probseg_bench.interruption import NOTHING_IN_PROGRESS, FoldInterrupted

    _cancel([job for job, _ in pending])
    if not pending:
        return FoldInterrupted(NOTHING_IN_PROGRESS)
    ids = ", ".join(str(job.job_id) for job, _ in pending)
    dirs = ", ".join(dict.fromkeys(str(cell.run_dir) for _, cell in pending))
    return FoldInterrupted(f"{len(pending)} cell(s) not finished were cancelled on Slurm (jobs {ids}): each that had "
                           f"written a training state keeps it (its fold<k>.partial.pt under {dirs}, at its last "
                           "written epoch), the others left nothing")
