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

A worker sends a heartbeat for its running trial; a running trial of a dead worker is marked failed when the study
is opened (:mod:`~probseg_bench.tuning.storage` says how and when).

The package, one module per concern: :mod:`~probseg_bench.tuning.space` (the search space),
:mod:`~probseg_bench.tuning.objective` (what a trial scores, and the Optuna objective),
:mod:`~probseg_bench.tuning.storage` (Optuna's RDB storage and its heartbeats), :mod:`~probseg_bench.tuning.study`
(a study's settings and verdict), :mod:`~probseg_bench.tuning.workers` (running trials: in this process, one
worker's body for the executors) and :mod:`~probseg_bench.tuning.params_toml` (the parameters TOML).
"""

from probseg_bench.tuning.objective import (
    DEFAULT_OBJECTIVE,
    FAILURE_ATTR,
    LOSS_OBJECTIVE,
    make_objective,
    objective_direction,
    objective_metric,
    objectives,
)
from probseg_bench.tuning.params_toml import TunedParams, read_params, write_params
from probseg_bench.tuning.space import SearchParameter, parse_range, search_space
from probseg_bench.tuning.storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    SETTINGS_ATTR,
    fail_stale_trials,
    heartbeat_ages,
    open_study,
    stale_reason,
)
from probseg_bench.tuning.study import (
    bind_study,
    default_study_name,
    describe_settings,
    study_on_disk,
    study_settings,
    study_verdict,
)
from probseg_bench.tuning.workers import TuneJob, optimize, prepare_study, tune_worker

__all__ = ["DEFAULT_OBJECTIVE", "FAILURE_ATTR", "GRACE_PERIOD_S", "HEARTBEAT_INTERVAL_S", "LOSS_OBJECTIVE",
           "SETTINGS_ATTR", "SearchParameter", "TuneJob", "TunedParams", "bind_study", "default_study_name",
           "describe_settings", "fail_stale_trials", "heartbeat_ages", "make_objective", "objective_direction",
           "objective_metric", "objectives", "open_study", "optimize", "parse_range", "prepare_study",
           "read_params", "search_space", "stale_reason", "study_on_disk", "study_settings", "study_verdict",
           "tune_worker", "write_params"]
