"""Running a study's trials: one tuning invocation's settings (:class:`TuneJob`, plain data for remote workers), in
this process (:func:`optimize`), and one worker's body (:func:`tune_worker`), which every executor runs for each of
its workers (:meth:`probseg_bench.executors.Executor.run_trials`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probseg_bench.experiment import Experiment
from probseg_bench.request import RunRequest, check_request
from probseg_bench.tuning.objective import DEFAULT_OBJECTIVE, make_objective, objective_direction
from probseg_bench.tuning.space import SearchParameter, search_space
from probseg_bench.tuning.storage import open_study
from probseg_bench.tuning.study import bind_study, study_settings


@dataclass(frozen=True)
class TuneJob:
    """One tuning invocation's settings (plain data, so that it can be sent to Ray workers)."""

    request: RunRequest
    study: str
    storage: str
    objective: str = DEFAULT_OBJECTIVE
    ranges: tuple[str, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()


def prepare_study(job: TuneJob, seed: int) -> tuple[Experiment, Any, list[SearchParameter]]:
    """Prepare the experiment, check the search space and the fixed values, open the study (in the objective's
    direction) and bind it to the job's settings (:func:`bind_study`).

    Raises:
        ProbsegError: an unknown objective; bad request, search space or fixed value; a study made with the other
            direction or under other settings.
    """
    objective_direction(job.objective)  # an unknown objective fails before the data is loaded
    experiment = Experiment.prepare(check_request(job.request))  # checked once, in the process that trains
    fixed = dict(job.fixed)
    experiment.hyperparameters(fixed)  # a bad --fix value fails first, named (not as "nothing to tune")
    space = search_space(experiment, job.ranges, fixed)
    settings = study_settings(experiment, job.objective, fixed)
    study = open_study(job.study, job.storage, seed, objective=job.objective)
    bind_study(study, settings)
    return experiment, study, space


def optimize(job: TuneJob, trials: int, seed: int, on_trial: Callable[[int, dict[str, Any]], Any] | None = None,
             on_start: Callable[[Any, list[SearchParameter]], Any] | None = None) -> Any:
    """Prepare the experiment, open the study and run ``trials`` trials in this process; returns the study.
    Diverging trials are recorded as failed (their reason in the trial's ``failure`` attribute)."""
    from probseg_bench.training import TrainingDivergedError

    experiment, study, space = prepare_study(job, seed)
    fixed = dict(job.fixed)
    if on_start is not None:
        on_start(study, space)
    fold, latent_dim = (job.request.folds or (0,))[0], job.request.latent_dims[0]
    run_trial = make_objective(experiment, space, fixed, job.objective, fold, latent_dim, on_trial=on_trial)
    study.optimize(run_trial, n_trials=trials, catch=(TrainingDivergedError,))
    return study


def tune_worker(job: TuneJob, trials: int, seed: int, threads: int) -> int:
    """One of tune's workers, wherever an executor runs it (a local process, a Ray task, a Slurm job:
    :meth:`probseg_bench.executors.Executor.run_trials`): ``trials`` trials of ``job``'s study with ``threads``
    torch threads and its sampler seeded ``seed``. Returns the number of trials the study holds after.

    Raises:
        ProbsegError: the study cannot be opened or bound (as :func:`prepare_study`); whatever a trial raises
            other than a divergence.
    """
    import torch

    torch.set_num_threads(threads)
    return len(optimize(job, trials, seed).trials)
