"""``probseg-bench run``: the standardized protocol for one model on one dataset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probseg_bench.cli._app import FORMAT_HELP, STORAGE_HELP, app, err_console
from probseg_bench.cli.leaderboard import REFERENCE_HELP, print_rows, resolve_reference
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import EXECUTORS
from probseg_bench.grid import load_grid
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.presets import PRESETS, get_preset
from probseg_bench.protocol import RunRequest, run_protocol
from probseg_bench.references import ReferenceTable
from probseg_bench.results import DEFAULT_STORAGE, FoldKey, FoldRecord, ResultsStore
from probseg_bench.tuning import TunedParams, read_params


def parse_hp(items: list[str], option: str = "--hp") -> dict[str, str]:
    """``["alpha=5", "beta=50"]`` -> ``{"alpha": "5", "beta": "50"}`` (typed later by the plugin's spec)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ProbsegError(f"{option} {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


class RichReporter:
    """Fold/epoch progress bars on a terminal; one line per fold otherwise (stderr either way)."""

    def __init__(self, total_folds: int) -> None:
        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=err_console, disable=not self.live,
        )
        self.folds = self.progress.add_task("folds", total=total_folds, status="")
        self.epochs: Any = None
        self.finished = 0

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _label(self, key: FoldKey) -> str:
        return f"{key.model}/{key.dataset} d={key.latent_dim} fold {key.fold}"

    def fold_started(self, key: FoldKey, epochs: int) -> None:
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.epochs = self.progress.add_task(f"  {self._label(key)}", total=epochs, status="")

    def epoch_finished(self, key: FoldKey, epoch: int, train_loss: float, val_loss: float) -> None:
        self.progress.update(self.epochs, completed=epoch, status=f"train {train_loss:.1f} val {val_loss:.1f}")

    def fold_finished(self, record: FoldRecord) -> None:
        self.finished += 1
        self.progress.advance(self.folds)
        m = record.metrics
        err_console.print(
            f"{self._label(record.key)}: GED {m['ged']:.3f}  HM-IoU {m['hm_iou']:.3f}  EWD {m['ewd']:.3f}  "
            f"ER {m['er']:.2f}  (best epoch {record.best_epoch}, {record.timings['train_s']:.0f} s)",
            highlight=False,
        )

    def fold_failed(self, record: FoldRecord) -> None:
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(record.key)}: FAILED, recorded as failed: {record.failure}",
                          highlight=False, markup=False, soft_wrap=True)

    def fold_skipped(self, key: FoldKey) -> None:
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(key)}: already in the results store, skipped", highlight=False)


@app.command()
def run(
    model: str | None = typer.Option(None, "--model", "-m", help="Model plugin (see `probseg-bench list`)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset plugin (see `probseg-bench list`)."),
    config: Path | None = typer.Option(None, "--config", help="A grid (TOML) of models x datasets x latent dims."),
    latent_dim: list[int] = typer.Option(
        [], "--latent-dim", "-d", help="Latent dimension; repeat for a grid (default: 6)."),
    fold: list[int] = typer.Option([], "--fold", help="Only these CV folds (repeatable) [default: all]."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the split, initialisation and sampling (default: 0)."),
    preset: str | None = typer.Option(
        None, "--preset", help=f"Protocol preset: {', '.join(PRESETS)} (default: paper, or the --params file's)."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Replace the preset's epochs (e.g. a smoke test); with --config, in every cell."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda (default: auto; with --config, the grid's device)."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Dataset folder, for plugins that need one."),
    dataset_param: list[str] = typer.Option([], "--dataset-param", help="Dataset parameter NAME=VALUE (repeatable)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling the dataset's files."),
    hp: list[str] = typer.Option([], "--hp", help="Hyperparameter override NAME=VALUE (repeatable)."),
    params: Path | None = typer.Option(
        None, "--params", help="Hyperparameters from tune's TOML, with the preset, protocol overrides (--epochs) and "
        "dataset parameters they were tuned under (options given here take precedence, with a note)."),
    regularizer: str | None = typer.Option(
        None, "--regularizer", help="Regularizer plugin in the model's swappable term (spunet: sinkhorn -> mmd)."
    ),
    flow: str | None = typer.Option(None, "--flow", help="Posterior flow of punet-nf: planar, radial or maf."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP, show_default=False),
    run_dir: Path = typer.Option(Path("probseg-runs"), "--run-dir", help="Where best checkpoints are written."),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
    pivot: bool = typer.Option(False, "--pivot", help="Final leaderboard in the paper's Table II layout."),
    reference: str | None = typer.Option(None, "--reference", help=REFERENCE_HELP),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Train again the folds recorded as failed."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) or ray (a Ray cluster)."),
    jobs: int = typer.Option(1, "--jobs", help="With --executor local: cells run in this many processes."),
    address: str | None = typer.Option(None, "--address", help="With --executor ray: the cluster [default: new]."),
    retries: int = typer.Option(2, "--retries", help="With --executor ray: retries of a failing cell."),
) -> None:
    """Train and evaluate MODEL on DATASET (or every cell of a --config grid): grouped 20% test split, 3-fold CV,
    best-validation checkpoint, 16 prior samples per test image; one record per fold in the results store.
    Reruns skip stored folds. At the end, the leaderboard of the requested folds (--pivot: Table II layout;
    --reference paper: the paper's published values beside them)."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    table = resolve_reference(reference)  # an unknown name fails before any training
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
        preset = preset or "paper"
        overrides.update(parse_hp(hp))
        if flow is not None:
            if "flow" in overrides:
                raise ProbsegError("--flow and --hp flow=... both given: use one")
            overrides["flow"] = flow
        requests = [RunRequest(
            model=model, dataset=dataset, latent_dims=tuple(latent_dim or [6]), folds=tuple(fold) or None,
            seed=seed or 0, preset=preset, device=device or "auto", data_root=data_root, hyperparameters=overrides,
            regularizer=regularizer, dataset_params=dataset_params,
            trust_pickle=trust_pickle, run_dir=run_dir,
            variant_name=variant_name if variant_name and not hp and not regularizer and flow is None else None,
            protocol_overrides=protocol_overrides,
        )]
    chosen = get_preset(preset)
    if preset == "quick":
        err_console.print(f"preset quick: {chosen.description}", highlight=False)
    store = ResultsStore(storage)
    if executor not in EXECUTORS:
        raise ProbsegError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray" or jobs > 1:
        _run_distributed(requests, store, executor, jobs, address, retries, fmt, pivot, table)
        return
    n_folds = sum(len(r.folds or range(chosen.n_folds)) * len(r.latent_dims) for r in requests)
    records: list[FoldRecord] = []
    with RichReporter(n_folds) as reporter:
        try:
            for request in requests:
                records += run_protocol(request, store, reporter, retry_failed=retry_failed)
        except KeyboardInterrupt:
            reporter.progress.stop()
            err_console.print(
                f"interrupted: {reporter.finished} fold(s) finished in this run are stored in {store.url}; the fold "
                f"in progress is saved at its last written epoch (at most ~30 s old) under {run_dir}; rerun the same "
                "command to resume",
                highlight=False, markup=False, soft_wrap=True,
            )
            raise typer.Exit(130) from None
    print_rows(build_leaderboard(records), fmt, pivot, reference=table)


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


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def _run_distributed(requests: list[RunRequest], store: ResultsStore, executor: str, jobs: int,
                     address: str | None, retries: int, fmt: str, pivot: bool = False,
                     reference: ReferenceTable | None = None) -> None:
    """One task per (model, dataset, latent dim, fold) cell on the chosen executor; progress per cell."""
    from probseg_bench.executors import CellResult, cells, run_local, run_ray

    todo = cells(requests, lambda r: get_preset(r.preset).n_folds)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, disable=not err_console.is_terminal)
    task = progress.add_task(f"cells ({executor})", total=len(todo))

    def report(result: CellResult) -> None:
        r = result.request
        label = f"{r.model}/{r.dataset} d={r.latent_dims[0]} fold {r.folds[0] if r.folds else 0}"
        progress.advance(task)
        status = f"FAILED: {result.error}" if result.error else "done"
        failed = [x for x in result.records if x.get("status") == "failed"]
        if failed:
            status = f"FAILED, recorded as failed: {failed[0]['failure']}"
        err_console.print(f"{label}: {status}", highlight=False, markup=False, soft_wrap=True)

    with progress:
        if executor == "ray":
            results = run_ray(todo, store.url, address, retries, on_result=report)
        else:
            results = run_local(todo, store.url, jobs, on_result=report)
    records = [FoldRecord(**d) for result in results for d in result.records if d.get("status") == "ok"]
    print_rows(build_leaderboard(records), fmt, pivot, reference=reference)
