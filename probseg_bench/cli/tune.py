"""``probseg-bench tune``: Optuna searches over the plugins' hyperparameters, resumable and shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from probseg_bench.cli._app import app, console, err_console
from probseg_bench.cli.common import parse_hp
from probseg_bench.cli.options import (
    DEFAULT_EXECUTOR,
    DEFAULT_LOG_DIR,
    DEFAULT_SEED,
    Address,
    DataRoot,
    Dataset,
    DatasetParam,
    Device,
    Epochs,
    Executor,
    ExecutorOptions,
    Flow,
    LatentDim,
    Log,
    LogDir,
    Model,
    Preset,
    Regularizer,
    Seed,
    Storage,
    TrustPickle,
)
from probseg_bench.cli.progress import curves_clause
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import executor_with_flags
from probseg_bench.outputs import check_output_file, check_storage
from probseg_bench.results import DEFAULT_STORAGE
from probseg_bench.tuning import (
    DEFAULT_OBJECTIVE,
    FAILURE_ATTR,
    LOSS_OBJECTIVE,
    SETTINGS_ATTR,
    describe_settings,
    objective_metric,
    objectives,
    study_verdict,
)


def objective_help() -> str:
    """``--objective``'s help: each objective with its direction (from the metric catalogue)."""
    metrics = [m for m in (objective_metric(name) for name in objectives()) if m is not None]
    listed = ", ".join(f"{m.objective_name} ({'maximised' if m.higher_is_better else 'minimised'})" for m in metrics)
    return (f"{listed}: the metric's mean over the fold's validation images; {LOSS_OBJECTIVE} (minimised): the "
            "validation loss.")


def _show(study: Any, top: int, verdict_line: bool = True) -> None:
    """The study's trials (best first), its settings, failed trials' reasons, running trials' heartbeats, and a line
    when it is degenerate."""
    import optuna

    from probseg_bench import tuning

    trials = study.get_trials(deepcopy=False)
    done = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value,
                  reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    table = Table(title=f"study {study.study_name}: {len(trials)} trials "
                        f"({', '.join(f'{n} {k}' for k, n in counts.items() if n)})")
    names = sorted({k for t in done for k in t.params})
    for col in ("trial", "value", *names, "best epoch"):
        table.add_column(col, justify="right")
    for t in done[:top]:
        cells = [f"{t.params[n]:.4g}" if isinstance(t.params.get(n), float) else str(t.params.get(n, ""))
                 for n in names]
        table.add_row(str(t.number), f"{t.value:.4f}", *cells, str(t.user_attrs.get("best_epoch", "")))
    console.print(table)
    settings = study.user_attrs.get(SETTINGS_ATTR)
    if settings is not None:
        console.print(f"tuned under: {describe_settings(settings)}", markup=False, highlight=False, soft_wrap=True)
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL:
            reason = t.user_attrs.get(FAILURE_ATTR) or t.system_attrs.get("fail_reason", "failed")
            err_console.print(f"trial {t.number} failed: {reason}", markup=False, highlight=False)
    running = tuning.heartbeat_ages(study)
    if running:
        err_console.print(_running_line(running), markup=False, highlight=False, soft_wrap=True)
    verdict = study_verdict(study, settings["objective"] if settings else "the objective")
    if verdict is not None and verdict_line:
        err_console.print(f"study {study.study_name}: {verdict}", markup=False, highlight=False, soft_wrap=True)


def _running_line(ages: dict[int, float | None]) -> str:
    """What is known of the running trials: their workers' last heartbeats, and when a silent one is failed."""
    from probseg_bench.tuning import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S

    trials = ", ".join(f"trial {n} (" + ("no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago") + ")"
                       for n, age in sorted(ages.items()))
    line = (f"{len(ages)} running: {trials}. A live worker sends a heartbeat every {HEARTBEAT_INTERVAL_S} s; a trial "
            f"without one for {GRACE_PERIOD_S} s is a dead worker's and is marked failed by the next tune or "
            "tune --show of this study")
    if None in ages.values():
        line += (". A trial with no heartbeat at all was started by a version without heartbeats: whether its worker "
                 "is alive cannot be told, so it stays running (it does not count in the ranking)")
    return line


@app.command()
def tune(
    model: Model = None,
    dataset: Dataset = None,
    trials: int = typer.Option(20, "--trials", help="Trials to add in this invocation."),
    study: str | None = typer.Option(None, "--study", help="Study name [default: MODEL-DATASET-OBJECTIVE]."),
    objective: str = typer.Option(DEFAULT_OBJECTIVE, "--objective", help=objective_help()),
    fold: int = typer.Option(0, "--fold", help="The CV fold whose validation split scores a trial."),
    latent_dim: LatentDim = None,
    param: list[str] = typer.Option([], "--param", help="Search range NAME=LOW:HIGH[:log] (repeatable)."),
    fix: list[str] = typer.Option([], "--fix", help="Fixed hyperparameter NAME=VALUE (repeatable)."),
    regularizer: Regularizer = None,
    flow: Flow = None,
    seed: Seed = None,
    preset: Preset = None,
    epochs: Epochs = None,
    device: Device = None,
    data_root: DataRoot = None,
    dataset_param: DatasetParam = [],  # noqa: B006  (typer copies a list default)
    trust_pickle: TrustPickle = False,
    log: Log = None,
    log_dir: LogDir = DEFAULT_LOG_DIR,
    storage: Storage = DEFAULT_STORAGE,
    output: Path | None = typer.Option(None, "--output", help="TOML for the best parameters [default: STUDY.toml]."),
    show: bool = typer.Option(False, "--show", help="Only show the existing study."),
    executor: Executor = DEFAULT_EXECUTOR,
    executor_option: ExecutorOptions = [],  # noqa: B006  (typer copies a list default)
    workers: int | None = typer.Option(
        None, "--workers", help="Workers running trials at once, on the study's storage: processes (local; default: "
                                "its jobs option, 1: in this process), Ray tasks or Slurm jobs (default: 2)."),
    address: Address = None,
    top: int = typer.Option(10, "--top", help="Trials shown."),
) -> None:
    """Search the model's and its regularizers' hyperparameters with TPE on one fold's validation split (never
    the test split); resumes the named study; several processes on one storage share it. Writes the best
    parameters to a TOML that `probseg-bench run --params FILE` takes into the standard protocol."""
    from probseg_bench.request import CommandLine, build_requests, with_flow
    from probseg_bench.tuning import (
        TuneJob,
        default_study_name,
        open_study,
        study_on_disk,
        write_params,
    )

    if model is None or dataset is None:
        raise ProbsegError("tune: give --model and --dataset")
    seed = DEFAULT_SEED if seed is None else seed
    name = study or default_study_name(model, dataset, objective)
    if show:
        _show(open_study(name, storage, seed, create=False), top)
        return
    if trials < 1:
        raise ProbsegError(f"--trials: expected >= 1, got {trials}")
    for flag, value in (("--workers", workers), ("--top", top)):
        if value is not None and value < 1:
            raise ProbsegError(f"{flag}: expected >= 1, got {value}")
    # every output location before the data is loaded and a trial trains
    check_storage(storage)
    params_path = check_output_file(output or Path(f"{name}.toml"), "--output")
    fixed = parse_hp(fix, "--fix")
    if flow is not None:  # as run's --flow: punet-nf's flow hyperparameter, fixed for every trial
        from probseg_bench.plugins import get_plugins

        models = get_plugins().models
        fixed = with_flow(models.get(model) if model in models.names() else None, model, flow, fixed, "--fix")
    given = CommandLine(model=model, dataset=dataset, latent_dims=(latent_dim,) if latent_dim is not None else (),
                        folds=(fold,), seed=seed, preset=preset, device=device, data_root=data_root,
                        protocol_overrides={"epochs": epochs} if epochs is not None else {},
                        regularizer=regularizer, dataset_params=dataset_param,
                        trust_pickle=trust_pickle, log=log, log_dir=log_dir)
    (request,), _ = build_requests(given)  # the precedence rules: probseg_bench.request
    job = TuneJob(request, name, storage, objective, tuple(param), tuple(fixed.items()))
    runner = executor_with_flags(executor, executor_option, {"address": address})  # checked before data loads
    started: list[int] = []  # the trials this process started (local, in this process)

    def start(study: Any, space: list[Any]) -> None:
        err_console.print(f"study {name}: searching {', '.join(p.name for p in space)} on fold {fold}'s "
                          f"validation split ({objective}); {len(study.trials)} trials so far; tuned under: "
                          f"{describe_settings(study.user_attrs[SETTINGS_ATTR])}", highlight=False,
                          markup=False, soft_wrap=True)

    def trial_started(number: int, values: dict[str, Any]) -> None:
        started.append(number)
        err_console.print(f"trial {number}: {values}", highlight=False)

    try:
        failures = runner.run_trials(job, trials, seed, workers, on_start=start, on_trial=trial_started)
    except KeyboardInterrupt:  # what the storage holds, read back after the interruption
        on_disk = study_on_disk(name, storage, seed, started[-1] if started else None)
        err_console.print(f"interrupted: {on_disk}; rerun the same command to add trials",
                          highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    for line in failures:
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    failed = f"; {len(failures)} worker(s) failed (above), the study keeps its completed trials" if failures else ""
    opened = open_study(name, storage, seed, create=False)
    _show(opened, top, verdict_line=False)
    verdict = study_verdict(opened, objective)
    if verdict is None and not opened.trials:  # every worker failed before its first trial
        verdict = "it has no trial"
    if verdict is not None:
        raise ProbsegError(f"study {name}: no best parameters to write ({verdict}){failed}")
    best = opened.best_trial
    settings = opened.user_attrs[SETTINGS_ATTR]
    path = write_params(params_path, settings, name, best)
    console.print(f"best trial {best.number}: {objective} {best.value:.4f}; parameters and protocol written to "
                  f"{path}; use: {follow_up_command(settings, path)}{curves_clause([log_dir] if log else [])}",
                  highlight=False, markup=False, soft_wrap=True)
    if failures:  # what the study has is written, but this invocation did not run all it was asked to
        err_console.print(f"tune: exit 1{failed}: the parameters written are the best of those; rerun the same "
                          "command to add trials", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


def follow_up_command(settings: dict[str, Any], path: Path) -> str:
    """The ``run`` command that trains the full protocol with a study's best parameters, and what the file makes
    it apply (the preset and its overrides, the latent dim, the seed, the dataset parameters)."""
    import shlex

    args = ["probseg-bench", "run", "--model", settings["model"], "--dataset", settings["dataset"],
            "--params", str(path)]
    if settings.get("regularizer") is not None:  # the file's hyperparameters include that regularizer's
        args[4:4] = ["--regularizer", settings["regularizer"]]
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("protocol_overrides", {}).items()))
    return (" ".join(shlex.quote(a) for a in args) + f" (the file applies preset {settings['preset']}"
            f"{f' ({overrides})' if overrides else ''}, d={settings['latent_dim']}, seed {settings['seed']} and the "
            "dataset parameters; all folds of the protocol)")
