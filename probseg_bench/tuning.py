"""Hyperparameter search with Optuna (``probseg-bench tune``).

The search space comes from the plugins: every tunable hyperparameter with a range (``low``/``high``, ``log``) or
``choices`` that the model and the regularizers of its objective declare (SPU-Net: alpha, beta and the Sinkhorn
epsilon; PU-Net: beta; PU-Net+NF: beta and the number of flows). ``--param name=low:high[:log]`` replaces a range,
``--fix name=value`` removes a parameter from the search.

A trial trains one CV fold (default 0) of the standard protocol (:class:`probseg_bench.experiment.Experiment`:
same model, objective, schedule and checkpoint selection) and scores the checkpoint with the lowest validation
loss on that fold's VALIDATION split: ``val_<metric>`` for each metric the catalogue marks as an objective
(:mod:`probseg_bench.metrics.catalogue`; built in: ``val_ewd``, the default, and ``val_ged``), its mean over the
validation images with the evaluation code of the leaderboard (16 prior samples per image), or ``val_loss``. Every
epoch the objective is reported to the pruner (``trial.report`` / ``trial.should_prune``). The test split is never
used. The study's direction is the objective's (:func:`objective_direction`): a lower-is-better metric and
``val_loss`` are minimised, a higher-is-better metric is maximised; a study keeps the direction it was made with.

Studies live in the results storage (a SQLite file by default, any SQLAlchemy URL): rerunning the command
resumes the study, and several processes or machines on one storage cooperate on one study. A study is bound to
the settings its trials were scored under (:func:`study_settings`: model, dataset and its parameters, latent dim,
fold, seed, preset and protocol overrides, the resolved protocol, split, objective, fixed hyperparameters);
resuming it with other settings is refused (:func:`bind_study`), and the parameters TOML carries them, so that
``run --params`` trains under the protocol the parameters were tuned for.

A worker sends a heartbeat for its running trial every :data:`HEARTBEAT_INTERVAL_S` seconds (Optuna's RDB
heartbeat, on the database's clock: SQLite, PostgreSQL, local processes and Ray actors alike). A running trial
whose worker has sent none for :data:`GRACE_PERIOD_S` seconds belongs to a dead worker (killed, its machine or
connection lost): opening the study (a resumed ``tune``, a worker's next trial, ``tune --show``) marks it failed,
with the reason in its ``failure`` attribute. A running trial without any heartbeat (started by a version without
them) cannot be judged and stays running.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probseg_bench.api import HyperParameter, HyperValue
from probseg_bench.connections import db_connect_args, db_error, display_url
from probseg_bench.data.fingerprint import short
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.experiment import Experiment, RunRequest, fold_seed
from probseg_bench.metrics.catalogue import Metric, objective_metrics
from probseg_bench.results import normalize_url, retry_schema_race

DEFAULT_OBJECTIVE = "val_ewd"
LOSS_OBJECTIVE = "val_loss"  # the validation loss of the checkpoint (always minimised)

#: Seconds between two heartbeats of a running trial. Each is one small write; 30 s costs nothing even on SQLite.
HEARTBEAT_INTERVAL_S = 30
#: Seconds without a heartbeat after which a running trial is a dead worker's and is marked failed. Four intervals:
#: a live worker would have to miss three heartbeats in a row, and one heartbeat delayed by SQLite's 60 s lock
#: wait still arrives in time; a dead worker's trial is failed two minutes after its death.
GRACE_PERIOD_S = 120
FAILURE_ATTR = "failure"


@dataclass(frozen=True)
class SearchParameter:
    """One dimension of the search: a float / int range (``log`` for log-uniform) or categorical choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[HyperValue, ...] | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> HyperValue:
        """The trial's value of this parameter (Optuna's suggest_categorical / _int / _float)."""
        value: HyperValue
        if self.choices is not None:
            value = trial.suggest_categorical(self.name, list(self.choices))
        elif self.integer:
            assert self.low is not None and self.high is not None
            value = int(trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log))
        else:
            assert self.low is not None and self.high is not None
            value = float(trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log))
        return value


def parse_range(text: str) -> tuple[str, float, float, bool]:
    """``"beta=1:1000:log"`` -> ("beta", 1.0, 1000.0, True).

    Raises:
        ProbsegError: not NAME=LOW:HIGH[:log], an infinite bound (or range), LOW >= HIGH, or a non-positive bound
            of a log range.
    """
    name, sep, spec = text.partition("=")
    parts = spec.split(":")
    try:
        if not sep or not name or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ProbsegError(f"--param {text!r}: expected NAME=LOW:HIGH or NAME=LOW:HIGH:log") from None
    log = len(parts) == 3
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(high - low)):
        # Optuna's samplers need a finite range (1:inf raised OverflowError: Range exceeds valid bounds)
        raise ProbsegError(f"--param {text!r}: expected finite bounds whose difference is finite too")
    if not low < high or (log and low <= 0):
        raise ProbsegError(f"--param {text!r}: expected LOW < HIGH (and LOW > 0 for a log range)")
    return name, low, high, log


def search_space(
    experiment: Experiment, ranges: Sequence[str] = (), fixed: Mapping[str, Any] | None = None
) -> list[SearchParameter]:
    """The search parameters of the experiment's model and objective regularizers.

    Raises:
        ProbsegError: a --param or --fix name that is not tunable here, a --param range outside the setting's own
            bounds (``HyperParameter.minimum`` / ``maximum``), or an empty search space.
    """
    fixed = dict(fixed or {})
    declared: dict[str, HyperParameter] = {hp.name: hp for hp in experiment.model_spec.hyperparameters}
    for term in experiment.terms:
        for hp in experiment.plugins.regularizers.get(term.regularizer).hyperparameters:
            declared.setdefault(hp.name, hp)
    tunable = {name: hp for name, hp in declared.items()
               if hp.tunable and (hp.choices is not None or (hp.low is not None and hp.high is not None))}
    overrides = {}
    for text in ranges:
        name, low, high, log = parse_range(text)
        if name not in declared:
            raise ProbsegError(f"--param {name}: not a hyperparameter of this model or its regularizers"
                               f"{did_you_mean(name, declared)}; tunable: {', '.join(sorted(tunable))}")
        hp = declared[name]
        if hp.choices is not None or not isinstance(hp.default, int | float) or isinstance(hp.default, bool):
            what = f"one of {list(hp.choices)}" if hp.choices is not None else f"a {type(hp.default).__name__}"
            raise ProbsegError(f"--param {text!r}: '{name}' is {what}, not a number: a range does not apply "
                               f"(fix it with --fix {name}=VALUE)")
        if isinstance(hp.default, int) and not (low.is_integer() and high.is_integer()):
            raise ProbsegError(f"--param {text!r}: '{name}' is an integer: expected integer bounds")
        try:  # a range of values the setting refuses would fail every trial
            hp.check_bounds(low)
            hp.check_bounds(high)
        except ProbsegError as exc:
            raise ProbsegError(f"--param {text!r}: {exc}") from None
        overrides[name] = (low, high, log)
    for name in fixed:
        if name not in declared:
            raise ProbsegError(f"--fix {name}: not a hyperparameter of this model or its regularizers"
                               f"{did_you_mean(name, declared)}")
    space = []
    for name in sorted(set(tunable) | set(overrides)):
        if name in fixed:
            continue
        hp = declared[name]
        integer = isinstance(hp.default, int) and not isinstance(hp.default, bool)
        if name in overrides:
            low, high, log = overrides[name]
            space.append(SearchParameter(name, low, high, log, None, integer))
        else:
            space.append(SearchParameter(name, hp.low, hp.high, hp.log, hp.choices, integer))
    if not space:
        raise ProbsegError("nothing to tune: every tunable hyperparameter is fixed")
    return space


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


def default_study_name(model: str, dataset: str, objective: str) -> str:
    return f"{model}-{dataset}-{objective}"


def open_study(name: str, storage: str, seed: int, create: bool = True, objective: str | None = None) -> Any:
    """Load (or create) the named study in ``storage`` with a TPE sampler and a median pruner, and mark the trials
    of dead workers failed (:func:`fail_stale_trials`).

    A new study optimises in the direction of ``objective`` (:func:`objective_direction`); an existing study must
    have been made with that direction. Without ``objective``: an existing study's own direction (a new one
    minimises).

    The sampler is seeded with ``seed`` + the number of trials already in the study, so that a fresh study is
    reproducible and a resumed one does not replay the proposals of its first run. Trials record a heartbeat every
    :data:`HEARTBEAT_INTERVAL_S` seconds while they run.

    Raises:
        ProbsegError: an unknown objective, the study does not exist (``create=False``), it was made with the other
            direction, or the storage is unusable (a database server that does not answer: within
            :func:`probseg_bench.connections.connect_timeout` seconds).
    """
    import optuna

    direction = None if objective is None else objective_direction(objective)
    # ERROR: Optuna's warning for a failed trial repeats, with a traceback, the reason `tune` prints in one line
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = normalize_url(storage)
    # SQLite: wait up to 60 s for a lock; a server: its driver's connect timeout bounds connecting
    # (probseg_bench.connections, 10 s by default)
    kwargs = {"connect_args": {"timeout": 60} if url.startswith("sqlite") else db_connect_args(url)}
    rdb = _open_rdb_storage(optuna, url, storage, kwargs)
    # the first epochs are noisy (warm-up): judge a trial against the median only after 10 epochs, and only
    # once 4 trials have completed
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=10)
    if not create and name not in {s.study_name for s in optuna.get_all_study_summaries(rdb)}:
        raise ProbsegError(f"no study named '{name}' in {storage}")
    # an existing study is loaded with its stored direction, whatever direction is passed here
    study = optuna.create_study(study_name=name, storage=rdb, pruner=pruner,
                                direction=optuna.study.StudyDirection[(direction or "minimize").upper()],
                                load_if_exists=True)
    stored = study.direction.name.lower()
    if direction is not None and stored != direction:
        made_for = study.user_attrs.get(SETTINGS_ATTR, {}).get("objective", "its objective")
        raise ProbsegError(f"study '{name}' {_VERBS[stored][0]} {made_for}, but --objective {objective} is "
                           f"{_VERBS[direction][1]}: their trials cannot be ranked together; give --study NAME for a "
                           "new study")
    fail_stale_trials(study)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=4)
    return study


_VERBS = {"minimize": ("minimises", "minimised"), "maximize": ("maximises", "maximised")}


def _open_rdb_storage(optuna: Any, url: str, storage: str, engine_kwargs: dict[str, Any]) -> Any:
    """Open Optuna's RDB storage with heartbeats; workers started together on a fresh storage race to create its
    schema."""
    def create() -> Any:
        with warnings.catch_warnings():  # heartbeat_interval is an "experimental" argument
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _heartbeat_storage_class(optuna.storages.RDBStorage)(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S)

    try:
        return retry_schema_race(create)
    except Exception as exc:
        shown = display_url(storage)
        raise ProbsegError(f"--storage {shown!r}: cannot open it for Optuna ({db_error(exc, url)})") from None


def stale_reason(grace_period: int) -> str:
    """The ``failure`` of a trial marked failed because its worker went silent."""
    return (f"its worker stopped sending heartbeats (killed, or its machine or connection lost): none for over "
            f"{grace_period} s")


def _heartbeat_storage_class(base: type) -> type:
    """``base`` (Optuna's RDBStorage) that records why a stale trial fails, and reports heartbeat ages.

    Optuna fails a stale trial (at the start of each trial of ``study.optimize``, and in ``fail_stale_trials``)
    without a reason, and a failed trial's attributes can no longer be set: the reason is recorded in the trial's
    ``failure`` attribute as it is found stale, while it is still running.
    """
    import optuna

    class HeartbeatStorage(base):  # type: ignore[misc]  # Optuna's storage class, only known at run time
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = []
            for trial_id in super()._get_stale_trial_ids(study_id):
                try:
                    self.set_trial_user_attr(trial_id, FAILURE_ATTR, stale_reason(self.grace_period))
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # it finished meanwhile (or another worker failed it)
                stale.append(trial_id)
            return stale

        def heartbeat_ages(self, study_id: int) -> dict[int, float | None]:
            """Running trial number -> seconds since its last heartbeat (database clock); None: no heartbeat."""
            import sqlalchemy
            from optuna.storages._rdb import models
            from sqlalchemy.orm import Session

            with Session(self.engine) as session:
                now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
                running = (session.query(models.TrialModel)
                           .filter(models.TrialModel.study_id == study_id,
                                   models.TrialModel.state == optuna.trial.TrialState.RUNNING).all())
                ages: dict[int, float | None] = {}
                for trial in running:
                    beats = trial.heartbeats
                    ages[int(trial.number)] = (None if not beats or now is None else max(0.0, (
                        now.replace(tzinfo=None) - beats[0].heartbeat.replace(tzinfo=None)).total_seconds()))
                return ages

    return HeartbeatStorage


def fail_stale_trials(study: Any) -> None:
    """Mark failed the running trials whose worker has sent no heartbeat for :data:`GRACE_PERIOD_S` seconds (the
    reason in their ``failure`` attribute). Trials without any heartbeat are left alone: they cannot be judged."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def heartbeat_ages(study: Any) -> dict[int, float | None]:
    """The study's running trials: number -> seconds since the last heartbeat, None for a trial without any (or a
    storage that cannot tell)."""
    import optuna

    storage = getattr(study._storage, "_backend", study._storage)
    if hasattr(storage, "heartbeat_ages"):
        try:
            return dict(storage.heartbeat_ages(study._study_id))
        except Exception:  # a display aid only: never fail --show for it
            pass
    return {t.number: None for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}


SETTINGS_ATTR = "probseg_settings"


def study_settings(experiment: Experiment, objective: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes a trial's score besides the searched values (JSON-able): model, dataset,
    dataset_params (resolved), latent_dim, fold, seed, preset, protocol_overrides, protocol (resolved), split
    (hash), data (the content fingerprint of the data the trials are scored on), objective and fixed (the ``--fix``
    values, resolved), and regularizer where ``--regularizer`` replaced the model's swappable term."""
    r = experiment.request
    model_hp, reg_hp = experiment.hyperparameters(fixed)
    resolved = {**{k: v for hp in reg_hp.values() for k, v in hp.items()}, **model_hp}
    settings: dict[str, Any] = json.loads(json.dumps({
        "model": r.model, "dataset": r.dataset, "dataset_params": experiment.dataset_params,
        "latent_dim": r.latent_dims[0], "fold": (r.folds or (0,))[0], "seed": r.seed, "preset": r.preset,
        "protocol_overrides": dict(r.protocol_overrides), "protocol": experiment.protocol_settings(),
        "split": experiment.splits.split_hash, "data": experiment.data_fingerprint, "objective": objective,
        "fixed": {k: resolved[k] for k in sorted(fixed)},
    }, default=str))
    if r.regularizer is not None:  # tune --regularizer; absent otherwise, as in the studies made before it
        settings["regularizer"] = r.regularizer
    return settings


def describe_settings(settings: Mapping[str, Any]) -> str:
    """One line, e.g. ``punet on synthetic (n_images=40), d=2, fold 0, seed 0, preset quick (epochs=4), val_ewd,
    fixed filters=4,8``."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("dataset_params", {}).items()))
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("protocol_overrides", {}).items()))
    fixed = ", ".join(f"{k}={v}" for k, v in settings.get("fixed", {}).items())
    regularizer = f" (regularizer={settings['regularizer']})" if settings.get("regularizer") else ""
    return (f"{settings.get('model')}{regularizer} on {settings.get('dataset')}{f' ({params})' if params else ''}, "
            f"d={settings.get('latent_dim')}, fold {settings.get('fold')}, seed {settings.get('seed')}, preset "
            f"{settings.get('preset')}{f' ({overrides})' if overrides else ''}, {settings.get('objective')}"
            f"{f', fixed {fixed}' if fixed else ''}")


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{path}{k}.")]
    return [] if old == new else [f"{path.rstrip('.')} {old!r} -> {new!r}"]


def bind_study(study: Any, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in a new study; check a resumed study was made with the same ones.

    A study of an older version without recorded settings is bound to ``settings`` now. A study whose settings
    predate data fingerprints (no ``data``) is refused: its trials may have been scored on other data.

    Raises:
        ProbsegError: the study was made with other settings (the message names each difference; the data by
            their fingerprints' first characters), or before data fingerprints.
    """
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, dict(settings))
        return
    if "data" in settings and "data" not in stored:
        raise ProbsegError(
            f"study '{study.study_name}' was made before studies recorded the data they are scored on: it cannot be "
            "told whether its trials were scored on this data; give --study NAME for a new study")
    changed = _differences({**stored, "data": None}, {**settings, "data": None})
    if stored.get("data") != settings.get("data"):
        changed.insert(0, f"the data differ (content fingerprint {short(stored.get('data'))} -> "
                          f"{short(settings.get('data'))})")
    if changed:
        raise ProbsegError(
            f"study '{study.study_name}' was made under other settings ({'; '.join(changed)}); its trials would be "
            "ranked with trials scored differently: rerun with the study's settings to resume it, or give "
            "--study NAME for a new study"
        )


def study_verdict(study: Any, objective: str) -> str | None:
    """A line when the study cannot name a best trial meaningfully: every trial failed or was pruned, or every
    complete trial (at least two) scored the same; None otherwise (also for a study without trials)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    done = [t for t in trials if t.state == state.COMPLETE]
    failed = sum(t.state == state.FAIL for t in trials)
    pruned = sum(t.state == state.PRUNED for t in trials)
    if trials and not done:
        if failed == len(trials):
            return f"all {failed} trial(s) failed"
        if pruned == len(trials):
            return f"all {pruned} trial(s) were pruned"
        return f"no trial completed ({failed} failed, {pruned} pruned)"
    values = [t.value for t in done]
    if len(done) >= 2 and max(values) - min(values) <= 1e-9 * max(1.0, abs(values[0])):
        return (f"all {len(done)} complete trials scored {objective} {values[0]:.4f}: the study learned nothing "
                "(the searched hyperparameters made no difference; e.g. train longer or widen the ranges)")
    return None


def make_objective(
    experiment: Experiment, space: Sequence[SearchParameter], fixed: Mapping[str, Any], objective: str,
    fold: int, latent_dim: int, on_trial: Callable[[int, dict[str, Any]], Any] | None = None,
) -> Callable[[Any], float]:
    """The Optuna objective: one training of ``fold`` per trial, scored on that fold's validation split."""
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

    def run_trial(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in space}
        if on_trial is not None:
            on_trial(trial.number, values)
        model_hp, reg_hp = experiment.hyperparameters({**fixed, **values})
        holder: dict[str, torch.nn.Module] = {}

        def report(log: Any) -> None:
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


def study_on_disk(name: str, storage: str, seed: int, trial: int | None = None) -> str:
    """After Ctrl-C: one clause saying what the study holds in ``storage``, read back now: its trials by state,
    and what became of ``trial`` (the trial that was in progress, when one was). A tuning trial writes no
    training state (it is not resumed: a rerun adds new trials), so nothing else is on disk.

    A trial of a local ``tune`` is recorded as failed when interrupted (Optuna); a Ray worker's running trial stays
    "running" until its heartbeats are :data:`GRACE_PERIOD_S` s old, then the next opening of the study marks it
    failed."""
    shown = display_url(normalize_url(storage))
    try:
        study = open_study(name, storage, seed, create=False)
    except ProbsegError:
        return f"the study {name} is not in {shown} (interrupted before it was created)"
    words = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running"}
    states: dict[str, int] = {}
    for t in study.trials:
        states[words.get(t.state.name, t.state.name.lower())] = states.get(
            words.get(t.state.name, t.state.name.lower()), 0) + 1
    held = ", ".join(f"{n} {state}" for state, n in states.items())
    clause = f"the study {name} in {shown} holds {len(study.trials)} trial(s)" + (
        f" ({held})" if held else "")
    running = states.get("running", 0)
    if running:
        clause += (f"; a running trial whose worker was stopped is marked failed when the study is next opened, "
                   f"{GRACE_PERIOD_S} s after its last heartbeat")
    found = next((t for t in study.trials if t.number == trial), None) if trial is not None else None
    if found is not None:
        how = words.get(found.state.name, found.state.name.lower())
        reason = found.user_attrs.get(FAILURE_ATTR)
        clause += (f"; trial {trial}, the last one started, is recorded as {how}"
                   + (f" ({reason})" if reason else "") + " and kept no training state")
    return clause


def write_params(path: Path, settings: Mapping[str, Any], study: str, trial: Any) -> Path:
    """Write a trial's parameters as the TOML that ``run --params`` reads: model, dataset, study, the
    [hyperparameters] (searched and fixed) and the [protocol] they were tuned under (preset, its overrides, the
    dataset parameters, latent dim, fold, seed, objective); atomically (a failed write leaves no half file and
    raises :class:`~probseg_bench.errors.OutputError` naming ``path``)."""
    from probseg_bench.atomic import atomic_write_text

    objective = settings["objective"]
    lines = [
        f"# probseg-bench tune: study {study!r}, trial {trial.number}, {objective} = {trial.value:.6g}",
        f"# tuned under: {describe_settings(settings)}",
        f"model = {_toml(settings['model'])}", f"dataset = {_toml(settings['dataset'])}", f"study = {_toml(study)}",
        "", "[hyperparameters]",
    ]
    values = {**settings.get("fixed", {}), **trial.params}
    lines += [f"{name} = {_toml(value)}" for name, value in sorted(values.items())]
    lines += ["", "[protocol]", f"preset = {_toml(settings['preset'])}", f"latent_dim = {settings['latent_dim']}",
              f"fold = {settings['fold']}", f"seed = {settings['seed']}", f"objective = {_toml(objective)}",
              "", "[protocol.overrides]"]
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(settings.get("protocol_overrides", {}).items())]
    lines += ["", "[protocol.dataset_params]"]
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(settings.get("dataset_params", {}).items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


@dataclass(frozen=True)
class TunedParams:
    """A ``tune`` parameters TOML: the model it was tuned for, its hyperparameters, and the protocol they were
    tuned under (None for a file of an older version without a [protocol] table)."""

    model: str | None
    dataset: str | None
    hyperparameters: dict[str, Any]
    preset: str | None = None
    protocol_overrides: dict[str, Any] | None = None
    dataset_params: dict[str, Any] | None = None
    latent_dim: int | None = None
    seed: int | None = None


def read_params(path: Path) -> TunedParams:
    """``run --params FILE``.

    Raises:
        ProbsegError: unreadable TOML, no [hyperparameters] table, a malformed [protocol] table.
    """
    import tomllib

    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))  # TOML is UTF-8, whatever the locale
    except OSError as exc:
        raise ProbsegError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ProbsegError(f"{path}: not UTF-8 text at byte {exc.start} (a TOML file is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProbsegError(f"{path}: not valid TOML ({exc})") from None
    params = raw.get("hyperparameters")
    if not isinstance(params, dict) or not params:
        raise ProbsegError(f"{path}: expected a [hyperparameters] table")
    protocol = raw.get("protocol")
    if protocol is None:
        return TunedParams(raw.get("model"), raw.get("dataset"), dict(params))
    overrides = protocol.get("overrides", {}) if isinstance(protocol, dict) else None
    dataset_params = protocol.get("dataset_params", {}) if isinstance(protocol, dict) else None
    if (not isinstance(protocol, dict) or not isinstance(protocol.get("preset"), str)
            or not isinstance(overrides, dict) or not isinstance(dataset_params, dict)):
        raise ProbsegError(f"{path}: [protocol] expects preset = \"NAME\" and the tables [protocol.overrides], "
                           "[protocol.dataset_params]")
    for key in ("latent_dim", "seed"):
        if key in protocol and (not isinstance(protocol[key], int) or isinstance(protocol[key], bool)):
            raise ProbsegError(f"{path}: [protocol] {key}: expected an integer, got {protocol[key]!r}")
    return TunedParams(raw.get("model"), raw.get("dataset"), dict(params), protocol["preset"], dict(overrides),
                       dict(dataset_params), protocol.get("latent_dim"), protocol.get("seed"))


__all__ = ["DEFAULT_OBJECTIVE", "FAILURE_ATTR", "GRACE_PERIOD_S", "HEARTBEAT_INTERVAL_S", "LOSS_OBJECTIVE",
           "SearchParameter", "TuneJob", "TunedParams", "bind_study", "default_study_name",
           "describe_settings", "fail_stale_trials", "heartbeat_ages", "make_objective", "objective_direction",
           "objective_metric", "objectives", "open_study", "optimize", "optimize_on_ray", "parse_range",
           "prepare_study", "read_params", "search_space", "study_settings", "study_verdict", "write_params"]
