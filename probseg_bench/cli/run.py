"""``probseg-bench run``: the standardized protocol for one model on one dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probseg_bench.cli._app import app, err_console
from probseg_bench.cli.common import print_rows, resolve_references
from probseg_bench.cli.options import (
    DEFAULT_EXECUTOR,
    DEFAULT_FORMAT,
    DEFAULT_LOG_DIR,
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
    Log,
    LogDir,
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
from probseg_bench.cli.progress import RichReporter, curves_clause, describe_run, duration, planned_epochs
from probseg_bench.connections import display_url
from probseg_bench.errors import OutputError, ProbsegError
from probseg_bench.executors import Executor as CellExecutor
from probseg_bench.executors import choose_executor, flag_options, get_executor, parse_executor_options
from probseg_bench.grid import GridConfig, load_grid
from probseg_bench.interruption import interrupted_line
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.outputs import check_output_folder, check_storage
from probseg_bench.protocol import run_protocol
from probseg_bench.references import ReferenceTable
from probseg_bench.request import CheckedRequest, CommandLine, build_requests, check_request
from probseg_bench.results import DEFAULT_STORAGE, FoldRecord, ResultsStore, normalize_url


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
    log: Log = None,
    log_dir: LogDir = DEFAULT_LOG_DIR,
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
    grid = load_grid(config) if config is not None else None
    given = CommandLine(
        model=model, dataset=dataset, latent_dims=tuple(latent_dim), folds=tuple(fold), seed=seed, preset=preset,
        protocol_overrides={"epochs": epochs} if epochs is not None else {}, device=device, data_root=data_root,
        dataset_params=dataset_param, hyperparameters=hp,
        regularizer=regularizer, flow=flow, trust_pickle=trust_pickle, run_dir=run_dir, log=log, log_dir=log_dir)
    requests, notes = build_requests(given, params, grid, config)  # the precedence rules: probseg_bench.request
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if jobs < 1:
        raise ProbsegError(f"--jobs: expected >= 1, got {jobs}")
    if retries < 0:
        raise ProbsegError(f"--retries: expected >= 0, got {retries}")
    runner = _executor(executor, executor_option, jobs, address, retries, grid, config, context)
    # every check that needs no data, for every request (grid cell), before anything is written; a Ray or Slurm
    # cell's device is the cluster's, so only its name is checked here
    checked = [check_request(r, check_device=runner.checks_device_here) for r in requests]
    check_storage(storage)  # the output locations, before any data is loaded or any fold trains
    check_output_folder(run_dir, "--run-dir")
    if not runner.in_this_process:
        _run_distributed(checked, storage, runner, fmt, pivot, tables, retry_failed)
        return
    n_folds = sum(len(c.folds) * len(c.request.latent_dims) for c in checked)
    store_url = display_url(normalize_url(storage))  # as shown: a password as ***
    records: list[FoldRecord] = []
    with RichReporter(n_folds) as reporter:
        try:
            for c in checked:  # the store is opened once the request's data is loaded and checked
                records += run_protocol(c, storage, reporter, retry_failed=retry_failed)
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
    flags = flag_options(name, {"jobs": jobs, "address": address, "retries": retries})
    for key, value in flags.items():
        if given(key):
            command_line.setdefault(key, value)
    name, options, dropped = choose_executor(named, command_line, table, DEFAULT_EXECUTOR)
    if dropped and table is not None:
        err_console.print(f"note: --executor {name} replaces the [executor] table of {config} (executor "
                          f"{table[0]}): its options are not used", highlight=False, markup=False, soft_wrap=True)
    return get_executor(name, options)


def _run_distributed(checked: Sequence[CheckedRequest], storage: str, runner: CellExecutor, fmt: str,
                     pivot: bool = False, references: list[ReferenceTable] | None = None, retry_failed: bool = False
                     ) -> None:
    """One task per (model, dataset, latent dim, fold) cell of the checked requests on the chosen executor;
    progress per cell."""
    from probseg_bench.executors import CellResult, cells

    store_url = normalize_url(storage)
    shown = display_url(store_url)  # as shown: a password as ***
    for c in checked:
        err_console.print(describe_run(c.request, c.preset, c.folds, planned_epochs(c.preset, c.dataset_spec),
                                       c.device, shown), highlight=False, markup=False, soft_wrap=True)
    ResultsStore(storage)  # the schema, once, before the cells write to it
    todo = cells(checked)
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
        except KeyboardInterrupt as exc:  # what the cells in progress left on disk (probseg_bench.executors)
            progress.stop()
            err_console.print(interrupted_line(finished, "cell", shown, exc), highlight=False, markup=False,
                              soft_wrap=True)
            raise typer.Exit(130) from None
    records = [FoldRecord(**d) for result in results for d in result.records if d.get("status") == "ok"]
    print_rows(build_leaderboard(records), fmt, pivot, references=references)
    dirs = ", ".join(dict.fromkeys(str(c.request.run_dir) for c in checked))
    curves = list(dict.fromkeys(c.request.log_dir for c in checked if c.request.log is not None))
    err_console.print(f"done in {duration(time.monotonic() - started)}: {len(results) - failures} cell(s) done "
                      f"(trained or already stored), {failures} failed; results in {shown}, checkpoints under "
                      f"{dirs}{curves_clause(curves)}", highlight=False, markup=False, soft_wrap=True)
