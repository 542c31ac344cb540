"""``probseg-bench run``: the standardized protocol for one model on one dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probseg_bench.cli._app import app, err_console
from probseg_bench.cli.common import default_latent_dim, parse_hp, print_rows, resolve_references
from probseg_bench.cli.options import (
    DEFAULT_EXECUTOR,
    DEFAULT_FORMAT,
    DEFAULT_RUN_DIR,
    Address,
    DataRoot,
    Dataset,
    DatasetParam,
    Device,
    Epochs,
    Executor,
    ExecutorOptions,
    Flow,
    Hp,
    LatentDims,
    LeaderboardFormat,
    Model,
    Pivot,
    Preset,
    Reference,
    Regularizer,
    RunDir,
    Seed,
    Storage,
    TrustPickle,
)
from probseg_bench.cli.progress import RichReporter, describe_run, duration, planned_epochs
from probseg_bench.connections import display_url
from probseg_bench.errors import OutputError, ProbsegError
from probseg_bench.executors import Executor as CellExecutor
from probseg_bench.executors import choose_executor, get_executor, parse_executor_options
from probseg_bench.experiment import CheckedRequest, Experiment, RunRequest
from probseg_bench.grid import GridConfig, load_grid
from probseg_bench.interruption import interrupted_line
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.outputs import check_output_folder, check_storage
from probseg_bench.presets import get_preset
from probseg_bench.protocol import run_protocol
from probseg_bench.references import ReferenceTable
from probseg_bench.results import DEFAULT_STORAGE, FoldRecord, ResultsStore, normalize_url
from probseg_bench.tuning import TunedParams, read_params

if TYPE_CHECKING:  # pragma: no cover
    pass


@app.command()
def run(
    context: typer.Context,
    model: Model = None,
    dataset: Dataset = None,
    config: Path | None = typer.Option(None, "--config", help="A grid (TOML) of models x datasets x latent dims."),
    latent_dim: LatentDims = [],  # noqa: B006  (typer copies a list default)
    fold: list[int] = typer.Option(
        [], "--fold", help="Only these folds: CV folds, or training runs of a fixed-split preset (lidc-v1, "
                           "lidc-v2) (repeatable) [default: all]."),
    seed: Seed = None,
    preset: Preset = None,
    epochs: Epochs = None,
    device: Device = None,
    data_root: DataRoot = None,
    dataset_param: DatasetParam = [],  # noqa: B006
    trust_pickle: TrustPickle = False,
    hp: Hp = [],  # noqa: B006
    params: Path | None = typer.Option(
        None, "--params", help="Hyperparameters from tune's TOML, with the preset, protocol overrides (--epochs) and "
        "dataset parameters they were tuned under (options given here take precedence, with a note)."),
    regularizer: Regularizer = None,
    flow: Flow = None,
    storage: Storage = DEFAULT_STORAGE,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    fmt: LeaderboardFormat = DEFAULT_FORMAT,
    pivot: Pivot = False,
    reference: Reference = [],  # noqa: B006
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Train again the folds recorded as failed."),
    executor: Executor = DEFAULT_EXECUTOR,
    jobs: int = typer.Option(1, "--jobs", help="With --executor local: cells run in this many processes."),
    address: Address = None,
    retries: int = typer.Option(2, "--retries", help="With --executor ray: retries of a failing cell."),
    executor_option: ExecutorOptions = [],  # noqa: B006  (typer copies a list default)
) -> None:
    """Train and evaluate MODEL on DATASET (or every cell of a --config grid): grouped 20% test split, 3-fold CV,
    best-validation checkpoint, 16 prior samples per test image; one record per fold in the results store.
    Reruns skip stored folds. At the end, the leaderboard of the requested folds (--pivot: Table II layout;
    --reference paper / literature: the published values beside them)."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    tables = resolve_references(reference)  # an unknown name fails before any training
    grid: GridConfig | None = None
    if config is not None:
        given = [flag for flag, value in (
            ("--model", model), ("--dataset", dataset), ("--latent-dim", latent_dim), ("--fold", fold),
            ("--seed", seed), ("--preset", preset), ("--data-root", data_root), ("--dataset-param", dataset_param),
            ("--trust-pickle", trust_pickle), ("--hp", hp), ("--params", params), ("--regularizer", regularizer),
            ("--flow", flow)) if value]
        if given or seed is not None:
            raise ProbsegError(f"--config runs the grid of the file, which sets {', '.join(given or ['--seed'])}: "
                               "give those in the file (only --epochs and --device apply to every cell)")
        grid = load_grid(config)
        requests, preset = grid.requests(run_dir), grid.preset
        # --epochs and --device apply to every cell; the grid's own [protocol] epochs / device are replaced
        if epochs is not None:
            requests = [replace(r, protocol_overrides={**r.protocol_overrides, "epochs": epochs}) for r in requests]
        if device is not None:
            requests = [replace(r, device=device) for r in requests]
    elif model is None or dataset is None:
        raise ProbsegError("run: give --model and --dataset (or --config GRID.toml)")
    else:
        overrides: dict[str, Any] = {}
        variant_name = None
        protocol_overrides: dict[str, Any] = {"epochs": epochs} if epochs is not None else {}
        dataset_params = parse_hp(dataset_param, "--dataset-param")
        if params is not None:
            tuned = read_params(params)
            if tuned.model is not None and tuned.model != model:
                raise ProbsegError(f"{params}: parameters of model '{tuned.model}', not '{model}'")
            overrides.update(tuned.hyperparameters)
            variant_name = f"params={params.name}"
            preset, protocol_overrides, dataset_params = _tuned_protocol(
                params, tuned, dataset, preset, protocol_overrides, dataset_params)
            latent_dim, seed = _tuned_dim_and_seed(params, tuned, latent_dim, seed)
            _check_tuned_hyperparameters(params, tuned, model, regularizer)
            replaced = sorted(set(parse_hp(hp)) & set(tuned.hyperparameters))
            if replaced:
                err_console.print(f"note: {params}: --hp replaces the tuned {', '.join(replaced)}",
                                  highlight=False, markup=False, soft_wrap=True)
        preset = preset or "paper"
        overrides.update(parse_hp(hp))
        if flow is not None:
            from probseg_bench.plugins import get_plugins

            spec = get_plugins().models.get(model)
            if "flow" not in {h.name for h in spec.hyperparameters}:
                raise ProbsegError(f"--flow {flow}: model '{model}' has no posterior flow (punet-nf has)")
            if "flow" in overrides:
                raise ProbsegError("--flow and --hp flow=... both given: use one")
            overrides["flow"] = flow
        latent_dim = latent_dim or [default_latent_dim(model)]
        requests = [RunRequest(
            model=model, dataset=dataset, latent_dims=tuple(latent_dim), folds=tuple(fold) or None,
            seed=seed or 0, preset=preset, device=device or "auto", data_root=data_root, hyperparameters=overrides,
            regularizer=regularizer, dataset_params=dataset_params,
            trust_pickle=trust_pickle, run_dir=run_dir,
            variant_name=variant_name if variant_name and not hp and not regularizer and flow is None else None,
            protocol_overrides=protocol_overrides,
        )]
    if jobs < 1:
        raise ProbsegError(f"--jobs: expected >= 1, got {jobs}")
    if retries < 0:
        raise ProbsegError(f"--retries: expected >= 0, got {retries}")
    runner = _executor(executor, executor_option, jobs, address, retries, grid, config, context)
    # every check that needs no data, for every request (grid cell), before anything is written; a Ray or Slurm
    # cell's device is the cluster's, so only its name is checked here
    checked = [Experiment.check(r, check_device=runner.checks_device_here) for r in requests]
    check_storage(storage)  # the output locations, before any data is loaded or any fold trains
    check_output_folder(run_dir, "--run-dir")
    if runner.name != "local" or runner.settings["jobs"] > 1:
        _run_distributed(requests, checked, storage, runner, fmt, pivot, tables, retry_failed)
        return
    n_folds = sum(len(c.folds) * len(r.latent_dims) for r, c in zip(requests, checked, strict=True))
    store_url = display_url(normalize_url(storage))  # as shown: a password as ***
    records: list[FoldRecord] = []
    with RichReporter(n_folds) as reporter:
        try:
            for request in requests:  # the store is opened once the request's data is loaded and checked
                records += run_protocol(request, storage, reporter, retry_failed=retry_failed)
        except OutputError as exc:  # a checkpoint or record that could not be written (no space, ...)
            reporter.progress.stop()
            raise OutputError(f"{exc}; the {reporter.finished} fold(s) finished before in this run are stored in "
                              f"{store_url}; rerun the same command to resume once it can be written") from None
        except KeyboardInterrupt as exc:  # what is on disk, read after the interruption (interruption.py)
            reporter.progress.stop()
            err_console.print(interrupted_line(reporter.finished, "fold", store_url, exc),
                              highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
    print_rows(build_leaderboard(records), fmt, pivot, references=tables)
    err_console.print(reporter.summary(store_url), highlight=False, markup=False, soft_wrap=True)


def _tuned_protocol(path: Path, tuned: TunedParams, dataset: str, preset: str | None,
                    protocol_overrides: dict[str, Any], dataset_params: dict[str, Any],
                    ) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """(preset, protocol overrides, dataset parameters) of a ``run --params FILE``: the file's, each replaced by
    what the command line gives, with one note per setting that then differs from the tuning's."""
    if tuned.preset is None:  # a file of an older version: nothing to apply
        return preset, protocol_overrides, dataset_params
    notes = []
    if tuned.dataset is not None and tuned.dataset != dataset:
        notes.append(f"tuned on dataset {tuned.dataset}, run on {dataset}")
    if preset is not None and preset != tuned.preset:
        notes.append(f"tuned under preset {tuned.preset}, run under {preset}")
    file_overrides = tuned.protocol_overrides or {}
    if protocol_overrides and protocol_overrides != file_overrides:
        notes.append(f"tuned with {_kv(file_overrides) or 'no protocol overrides'}, run with {_kv(protocol_overrides)}")
    file_params = tuned.dataset_params or {} if tuned.dataset in (None, dataset) else {}
    merged_params = {**file_params, **dataset_params}
    if any(str(file_params.get(k)) != str(v) for k, v in dataset_params.items()):
        notes.append(f"tuned with dataset parameters {_kv(file_params) or 'the defaults'}, run with "
                     f"{_kv(merged_params)}")
    for note in notes:
        err_console.print(f"note: {path}: {note} (as the command line asks)", highlight=False, markup=False,
                          soft_wrap=True)
    return preset or tuned.preset, protocol_overrides or dict(file_overrides), merged_params


def _tuned_dim_and_seed(path: Path, tuned: TunedParams, latent_dim: list[int], seed: int | None,
                        ) -> tuple[list[int], int | None]:
    """The latent dims and seed of a ``run --params FILE``: the ones the parameters were tuned at unless the
    command line gives others (then with a note)."""
    notes = []
    if tuned.latent_dim is not None and latent_dim and latent_dim != [tuned.latent_dim]:
        notes.append(f"tuned at d={tuned.latent_dim}, run at d={', '.join(map(str, latent_dim))}")
    if tuned.seed is not None and seed is not None and seed != tuned.seed:
        notes.append(f"tuned with seed {tuned.seed}, run with seed {seed}")
    for note in notes:
        err_console.print(f"note: {path}: {note} (as the command line asks)", highlight=False, markup=False,
                          soft_wrap=True)
    dims = latent_dim or ([tuned.latent_dim] if tuned.latent_dim is not None else [])
    return dims, seed if seed is not None else tuned.seed


def _check_tuned_hyperparameters(path: Path, tuned: TunedParams, model: str, regularizer: str | None) -> None:
    """The file's hyperparameters alone, so that an error names the file (the model is checked by the caller).

    Raises:
        ProbsegError: a name the model and its regularizers do not declare, or a bad value (prefixed by ``path``).
    """
    from probseg_bench.experiment import objective_terms, resolve_run_hyperparameters
    from probseg_bench.plugins import get_plugins

    plugins = get_plugins()
    spec = plugins.models.get(model)
    try:
        resolve_run_hyperparameters(spec, plugins, tuned.hyperparameters, objective_terms(spec, plugins, regularizer))
    except ProbsegError as exc:
        raise ProbsegError(f"{path}: [hyperparameters]: {exc}") from None


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def _executor(name: str, items: list[str], jobs: int, address: str | None, retries: int,
              grid: GridConfig | None = None, config: Path | None = None, context: typer.Context | None = None,
              ) -> CellExecutor:
    """The ``--executor`` with its ``--executor-option`` items; the command's --jobs (local), --address and
    --retries (ray) are its options too, an --executor-option of the same key replacing them. A grid's
    ``[executor]`` table comes under what the command line gives (:func:`choose_executor`): then --executor,
    --jobs, --address and --retries count only when given."""
    table = grid.executor if grid is not None else None

    def given(param: str) -> bool:  # on the command line (or its environment variable), not by default
        if table is None or context is None:
            return True
        source = context.get_parameter_source(param)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    command_line = parse_executor_options(items)
    named = name if given("executor") else None
    name = choose_executor(named, {}, table, DEFAULT_EXECUTOR)[0]
    flags: dict[str, object] = {}
    if name == "local":
        flags = {"jobs": jobs}
    elif name == "ray":
        flags = {"address": address, "retries": retries}
    for key, value in flags.items():
        if value is not None and given(key):
            command_line.setdefault(key, str(value))
    name, options, dropped = choose_executor(named, command_line, table, DEFAULT_EXECUTOR)
    if dropped and table is not None:
        err_console.print(f"note: --executor {name} replaces the [executor] table of {config} (executor "
                          f"{table[0]}): its options are not used", highlight=False, markup=False, soft_wrap=True)
    return get_executor(name, options)


def _run_distributed(requests: list[RunRequest], checked: Sequence[CheckedRequest], storage: str,
                     runner: CellExecutor, fmt: str, pivot: bool = False,
                     references: list[ReferenceTable] | None = None, retry_failed: bool = False) -> None:
    """One task per (model, dataset, latent dim, fold) cell on the chosen executor; progress per cell.
    ``checked``: :meth:`Experiment.check` of each request."""
    from probseg_bench.executors import CellResult, cells

    store_url = normalize_url(storage)
    shown = display_url(store_url)  # as shown: a password as ***
    for r, c in zip(requests, checked, strict=True):
        err_console.print(describe_run(r, c.preset, c.folds, planned_epochs(c.preset, c.dataset_spec), c.device,
                                       shown), highlight=False, markup=False, soft_wrap=True)
    ResultsStore(storage)  # the schema, once, before the cells write to it
    todo = cells(requests, lambda r: get_preset(r.preset).n_folds)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, disable=not err_console.is_terminal)
    task = progress.add_task(f"cells ({runner.name})", total=len(todo))
    started = time.monotonic()
    failures = finished = 0

    def report(result: CellResult) -> None:
        nonlocal failures, finished
        r = result.request
        label = f"{r.model}/{r.dataset} d={r.latent_dims[0]} fold {r.folds[0] if r.folds else 0}"
        progress.advance(task)
        status = f"FAILED: {result.error}" if result.error else "done"
        failed = [x for x in result.records if x.get("status") == "failed"]
        if failed:
            status = f"FAILED, recorded as failed: {failed[0]['failure']}"
        failures += status.startswith("FAILED")
        finished += not status.startswith("FAILED")
        err_console.print(f"{label}: {status}", highlight=False, markup=False, soft_wrap=True)

    with progress:
        try:
            results = runner.run(todo, store_url, on_result=report, retry_failed=retry_failed)
        except KeyboardInterrupt as exc:  # what the cells in progress left on disk (executors.py)
            progress.stop()
            err_console.print(interrupted_line(finished, "cell", shown, exc), highlight=False, markup=False,
                              soft_wrap=True)
            raise typer.Exit(130) from None
    records = [FoldRecord(**d) for result in results for d in result.records if d.get("status") == "ok"]
    print_rows(build_leaderboard(records), fmt, pivot, references=references)
    dirs = ", ".join(dict.fromkeys(str(r.run_dir) for r in requests))
    err_console.print(f"done in {duration(time.monotonic() - started)}: {len(results) - failures} cell(s) done "
                      f"(trained or already stored), {failures} failed; results in {shown}, checkpoints under "
                      f"{dirs}", highlight=False, markup=False, soft_wrap=True)
