"""Optuna's RDB storage of the studies, with heartbeats.

A worker sends a heartbeat for its running trial every :data:`HEARTBEAT_INTERVAL_S` seconds (Optuna's RDB
heartbeat, on the database's clock: SQLite, PostgreSQL, local processes, Ray tasks and Slurm jobs alike). A
running trial whose worker has sent none for :data:`GRACE_PERIOD_S` seconds belongs to a dead worker (killed, its
machine or connection lost): opening the study (a resumed ``tune``, a worker's next trial, ``tune --show``) marks it
failed, with the reason in its ``failure`` attribute. A running trial without any heartbeat (started by a version
without them) cannot be judged and stays running.
"""

from __future__ import annotations

import warnings
from typing import Any

from probseg_bench.connections import db_connect_args, db_error, display_url
from probseg_bench.errors import ProbsegError
from probseg_bench.results import normalize_url, retry_schema_race
from probseg_bench.tuning.objective import FAILURE_ATTR, objective_direction

#: Seconds between two heartbeats of a running trial. Each is one small write; 30 s costs nothing even on SQLite.
HEARTBEAT_INTERVAL_S = 30
#: Seconds without a heartbeat after which a running trial is a dead worker's and is marked failed. Four intervals:
#: a live worker would have to miss three heartbeats in a row, and one heartbeat delayed by SQLite's 60 s lock
#: wait still arrives in time; a dead worker's trial is failed two minutes after its death.
GRACE_PERIOD_S = 120
#: The study attribute holding the settings its trials were scored under (:mod:`probseg_bench.tuning.study`).
SETTINGS_ATTR = "probseg_settings"


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
