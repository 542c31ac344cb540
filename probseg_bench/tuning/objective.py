"""What a trial scores (``--objective``: ``val_<metric>`` of each objective metric of the catalogue, or
``val_loss``), its direction, and the Optuna objective that trains and scores one trial."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.experiment import Experiment, fold_seed
from probseg_bench.metrics.catalogue import Metric, objective_metrics
from probseg_bench.tuning.space import SearchParameter

DEFAULT_OBJECTIVE = "val_ewd"
LOSS_OBJECTIVE = "val_loss"  # the validation loss of the checkpoint (always minimised)
#: The trial attribute holding why a trial failed (set by the objective, and by the storage for a dead worker's).
FAILURE_ATTR = "failure"


def objectives() -> list[str]:
    """The names ``--objective`` takes: ``val_<name>`` of each objective metric of the catalogue, and
    ``val_loss``."""
    return [m.objective_name for m in objective_metrics()] + [LOSS_OBJECTIVE]


def objective_metric(objective: str) -> Metric | None:
    """The catalogue metric that ``objective`` scores (None for ``val_loss``).

    Raises:
        ProbsegError: not an objective (the message lists them).
    """
    if objective == LOSS_OBJECTIVE:
        return None
    for metric in objective_metrics():
        if metric.objective_name == objective:
            return metric
    names = objectives()
    raise ProbsegError(f"--objective: expected one of {', '.join(names)}, got {objective!r}"
                       f"{did_you_mean(objective, names)}")


def objective_direction(objective: str) -> str:
    """Optuna's direction for ``objective``: the metric's (``"maximize"`` when higher is better), ``"minimize"``
    for ``val_loss``.

    Raises:
        ProbsegError: not an objective.
    """
    metric = objective_metric(objective)
    return "minimize" if metric is None else metric.direction


def make_objective(
    experiment: Experiment, space: Sequence[SearchParameter], fixed: Mapping[str, Any], objective: str,
    fold: int, latent_dim: int, on_trial: Callable[[int, dict[str, Any]], Any] | None = None,
) -> Callable[[Any], float]:
    """The Optuna objective: one training of ``fold`` per trial, scored on that fold's validation split; with the
    request's ``log`` (``tune --log tensorboard``) each trial's curves are written too
    (:meth:`probseg_bench.curves.Curves.trial`)."""
    import optuna
    import torch

    from probseg_bench.evaluation import evaluate
    from probseg_bench.training import TrainingDivergedError

    metric = objective_metric(objective)
    _, val_idx = experiment.splits.train_val(fold)
    val = experiment.data.subset(val_idx)
    seed = fold_seed(experiment.request.seed, latent_dim, fold)

    def score(model: torch.nn.Module, val_loss: float) -> float:
        if metric is None:
            return val_loss
        result = evaluate(model, val, experiment.device, n_samples=experiment.preset.n_eval_samples,
                          batch_size=experiment.preset.batch_size, seed=seed)
        value = result.aggregate[metric.name]
        return math.nan if value is None else float(value)

    curves = experiment.checked.curves  # --log: each trial's curves under <study>/trial<N>

    def run_trial(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in space}
        if on_trial is not None:
            on_trial(trial.number, values)
        model_hp, reg_hp = experiment.hyperparameters({**fixed, **values})
        holder: dict[str, torch.nn.Module] = {}
        if curves is None:
            return _run_trial(trial, model_hp, reg_hp, holder, None)
        with curves.trial(trial.study.study_name, trial.number, {"values": values, "fixed": dict(fixed)}) as write:
            return _run_trial(trial, model_hp, reg_hp, holder, write)

    def _run_trial(trial: Any, model_hp: Any, reg_hp: Any, holder: dict[str, torch.nn.Module],
                   write: Callable[[Any], Any] | None) -> float:
        def report(log: Any) -> None:
            if write is not None:  # before pruning: a pruned trial's last epoch is kept
                write(log)
            value = log.val_loss if metric is None else score(holder["model"], log.val_loss)
            trial.report(value, log.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {log.epoch}: {objective} {value:.4f}")

        phase = "training"
        try:
            model, result = experiment.train(latent_dim, fold, model_hp, reg_hp, on_epoch=report,
                                             model_hook=lambda m: holder.__setitem__("model", m))
            trial.set_user_attr("best_epoch", result.best_epoch)
            phase = "its evaluation"
            return score(model, result.best_val_loss)
        except TrainingDivergedError as exc:
            trial.set_user_attr(FAILURE_ATTR, str(exc))
            raise
        except KeyboardInterrupt:  # Optuna marks the trial failed; say why
            trial.set_user_attr(FAILURE_ATTR, f"interrupted (Ctrl-C) during {phase}")
            raise

    return run_trial
