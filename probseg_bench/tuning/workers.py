"""Running a study's trials: one tuning invocation's settings (:class:`TuneJob`, plain data for remote workers), in
this process (:func:`optimize`, also the body of a Slurm worker: :mod:`probseg_bench.slurm`) or as Ray actors
(:func:`optimize_on_ray`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment, RunRequest
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
    experiment = Experiment.prepare(job.request)
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


def optimize_on_ray(job: TuneJob, trials: int, seed: int, workers: int, address: str | None = None) -> int:
    """``workers`` Ray actors (1 CPU each, or 1 GPU with --device cuda) run ``trials`` trials of one study on the
    shared storage between them; each seeds its sampler differently. Returns the number of trials run.

    Raises:
        ProbsegError: Ray is not installed or unreachable, workers < 1.
    """
    if workers < 1:
        raise ProbsegError(f"--workers: expected >= 1, got {workers}")
    from probseg_bench.executors import ray_session

    class TuneWorker:
        def run(self, job: TuneJob, trials: int, seed: int) -> int:
            import torch

            torch.set_num_threads(1)
            return len(optimize(job, trials, seed).trials)

    prepare_study(job, seed)  # schema, study and its settings exist before the workers race to open them
    gpu = job.request.device.startswith("cuda")
    shares = [n for n in (trials // workers + (1 if i < trials % workers else 0) for i in range(workers)) if n]
    with ray_session(address):
        import ray

        actor = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(TuneWorker)
        handles = [actor.remote() for _ in shares]
        ray.get([h.run.remote(job, n, seed + 1000 * i)  # type: ignore[attr-defined]
                 for i, (h, n) in enumerate(zip(handles, shares, strict=True))])
    return trials
