"""``probseg-bench run``: the standardized protocol for one model on one dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probseg_bench.cli._app import FORMAT_HELP, STORAGE_HELP, app, err_console
from probseg_bench.cli.leaderboard import REFERENCE_HELP, print_rows, resolve_reference
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import EXECUTORS
from probseg_bench.experiment import CheckedRequest, Experiment, RunRequest
from probseg_bench.grid import load_grid
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.metrics.catalogue import ranked_metrics
from probseg_bench.presets import PRESETS, Preset, get_preset
from probseg_bench.protocol import run_protocol
from probseg_bench.references import ReferenceTable
from probseg_bench.results import DEFAULT_STORAGE, FoldKey, FoldRecord, ResultsStore, normalize_url
from probseg_bench.tuning import TunedParams, read_params

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.api import DatasetSpec
    from probseg_bench.protocol import RunPlan
    from probseg_bench.training import EpochLog


def parse_hp(items: list[str], option: str = "--hp") -> dict[str, str]:
    """``["alpha=5", "beta=50"]`` -> ``{"alpha": "5", "beta": "50"}`` (typed later by the plugin's spec)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ProbsegError(f"{option} {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def duration(seconds: float) -> str:
    """``42s``, ``3m10s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


TERM_ABBREVIATIONS = {"reconstruction": "rec"}


def metrics_text(metrics: dict[str, float | None]) -> str:
    """A fold's ranked metrics (the catalogue's, each with its decimals), e.g. ``GED 0.312  HM-IoU 0.512  EWD 0.488
    ER 1.93``; ``n/a`` for a metric undefined on every test image."""
    return "  ".join(f"{m.label} " + ("n/a" if metrics.get(m.name) is None else f"{metrics[m.name]:.{m.decimals}f}")
                     for m in ranked_metrics())


def loss_text(value: float) -> str:
    """A loss for a progress line: one decimal from 100 on, else 3 significant digits (a KL of 0.0312)."""
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def describe_run(request: RunRequest, preset: Preset, folds: Sequence[int], epochs: str, device: object,
                 store_url: str) -> str:
    """One line saying what a request will run (printed after every check), e.g. ``run punet on lidc-sample:
    d=6, folds 0 1 2, 400 epochs, preset quick (not paper numbers), device cpu; results in sqlite:///..., checkpoints
    under probseg-runs``."""
    variant = request.variant(with_protocol=False)  # the preset part names the overrides
    model = f"{request.model} ({variant})" if variant else request.model
    overrides = [f"{k}={v}" for k, v in request.protocol_overrides.items()]
    if preset.name == "quick":
        overrides.append("not paper numbers")
    preset_text = f"preset {preset.name}" + (f" ({'; '.join(overrides)})" if overrides else "")
    dims = ", ".join(str(d) for d in request.latent_dims)
    return (f"run {model} on {request.dataset}: d={dims}, fold{'s' if len(folds) > 1 else ''} "
            f"{' '.join(map(str, folds))}, {epochs}, {preset_text}, device {device}; results in {store_url}, "
            f"checkpoints under {request.run_dir}")


def planned_epochs(preset: Preset, dataset: DatasetSpec) -> str:
    """The training length of a request whose data is not loaded here (distributed cells): epochs, or the
    preset's step budget."""
    if preset.steps is not None:
        return f"{preset.steps} steps of batch {preset.batch_size}"
    return f"{preset.schedule(dataset.protocol)[0]} epochs"


class RichReporter:
    """What a run does, on stderr: a line per request saying what will run; per fold, a progress bar (epoch, loss
    terms, validation loss, ETA) on a terminal, else one plain line every ~tenth of the fold's epochs (and at
    least every ``plain_interval_s`` seconds); a line per finished / failed / skipped fold; :meth:`summary`."""

    def __init__(self, total_folds: int, plain_interval_s: float = 60.0) -> None:
        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=err_console, disable=not self.live,
        )
        self.folds = self.progress.add_task("folds", total=total_folds, status="")
        self.epochs: Any = None
        self.plain_interval_s = plain_interval_s
        self.started = time.monotonic()
        self.finished = self.skipped = self.failed = 0
        self.run_dirs: list[Path] = []
        self._fold: tuple[float, int, int] = (0.0, 0, 0)  # (start time, resumed from, epochs) of the current fold
        self._last_line = 0.0

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _label(self, key: FoldKey) -> str:
        return f"{key.model}/{key.dataset} d={key.latent_dim} fold {key.fold}"

    def _print(self, text: str) -> None:
        err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    def run_started(self, plan: RunPlan, store: ResultsStore) -> None:
        if plan.request.run_dir not in self.run_dirs:
            self.run_dirs.append(plan.request.run_dir)
        exp = plan.exp
        self._print(describe_run(plan.request, exp.preset, exp.folds, f"{exp.schedule[0]} epochs", exp.device,
                                 store.url))

    def fold_started(self, key: FoldKey, epochs: int, resumed_from: int) -> None:
        now = time.monotonic()
        self._fold, self._last_line = (now, resumed_from, epochs), now
        if resumed_from:
            self._print(f"{self._label(key)}: resumed from epoch {resumed_from}/{epochs} (its saved training state)")
        elif not self.live:
            self._print(f"{self._label(key)}: training {epochs} epochs")
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.epochs = self.progress.add_task(f"  {self._label(key)}", total=epochs, completed=resumed_from,
                                             status="")

    def epoch_finished(self, key: FoldKey, log: EpochLog) -> None:
        now = time.monotonic()
        start, resumed_from, epochs = self._fold
        done = log.epoch - resumed_from
        eta = (now - start) / done * (epochs - log.epoch) if done > 0 else 0.0
        terms = ", ".join(f"{TERM_ABBREVIATIONS.get(k, k)} {loss_text(v)}" for k, v in log.train_terms.items())
        status = (f"train {loss_text(log.train_loss)}" + (f" ({terms})" if terms else "")
                  + f"  val {loss_text(log.val_loss)}")
        if log.epoch < epochs:
            status += f"  ETA {duration(eta)}"
        if self.live:
            self.progress.update(self.epochs, completed=log.epoch, status=status)
            return
        every = max(1, epochs // 10)
        if log.epoch % every == 0 or log.epoch == epochs or now - self._last_line >= self.plain_interval_s:
            self._last_line = now
            self._print(f"{self._label(key)}: epoch {log.epoch}/{epochs}  {status}")

    def fold_finished(self, record: FoldRecord) -> None:
        self.finished += 1
        self.progress.advance(self.folds)
        err_console.print(
            f"{self._label(record.key)}: {metrics_text(record.metrics)}  (best epoch {record.best_epoch}, "
            f"{record.timings['train_s']:.0f} s)",
            highlight=False,
        )

    def fold_failed(self, record: FoldRecord) -> None:
        self.failed += 1
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(record.key)}: FAILED, recorded as failed: {record.failure}",
                          highlight=False, markup=False, soft_wrap=True)

    def fold_skipped(self, key: FoldKey) -> None:
        self.skipped += 1
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(key)}: already in the results store, skipped", highlight=False)

    def summary(self, store_url: str) -> str:
        """``done in 3m10s: 2 fold(s) trained, 1 skipped (already stored), 0 failed; results in URL, checkpoints
        under DIR``."""
        dirs = ", ".join(str(d) for d in self.run_dirs) or "-"
        return (f"done in {duration(time.monotonic() - self.started)}: {self.finished} fold(s) trained, "
                f"{self.skipped} skipped (already stored), {self.failed} failed; results in {store_url}, "
                f"checkpoints under {dirs}")


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
        requests = [RunRequest(
            model=model, dataset=dataset, latent_dims=tuple(latent_dim or [6]), folds=tuple(fold) or None,
            seed=seed or 0, preset=preset, device=device or "auto", data_root=data_root, hyperparameters=overrides,
            regularizer=regularizer, dataset_params=dataset_params,
            trust_pickle=trust_pickle, run_dir=run_dir,
            variant_name=variant_name if variant_name and not hp and not regularizer and flow is None else None,
            protocol_overrides=protocol_overrides,
        )]
    if executor not in EXECUTORS:
        raise ProbsegError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if jobs < 1:
        raise ProbsegError(f"--jobs: expected >= 1, got {jobs}")
    # every check that needs no data, for every request (grid cell), before anything is written; a Ray cell's
    # device is the cluster's, so only its name is checked here
    checked = [Experiment.check(r, check_device=executor != "ray") for r in requests]
    if executor == "ray" or jobs > 1:
        _run_distributed(requests, checked, storage, executor, jobs, address, retries, fmt, pivot, table)
        return
    n_folds = sum(len(c.folds) * len(r.latent_dims) for r, c in zip(requests, checked, strict=True))
    store_url = normalize_url(storage)
    records: list[FoldRecord] = []
    with RichReporter(n_folds) as reporter:
        try:
            for request in requests:  # the store is opened once the request's data is loaded and checked
                records += run_protocol(request, storage, reporter, retry_failed=retry_failed)
        except KeyboardInterrupt:
            reporter.progress.stop()
            err_console.print(
                f"interrupted: {reporter.finished} fold(s) finished in this run are stored in {store_url}; the fold "
                f"in progress is saved at its last written epoch (at most ~30 s old) under {run_dir}; rerun the same "
                "command to resume",
                highlight=False, markup=False, soft_wrap=True,
            )
            raise typer.Exit(130) from None
    print_rows(build_leaderboard(records), fmt, pivot, reference=table)
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


def _run_distributed(requests: list[RunRequest], checked: Sequence[CheckedRequest], storage: str, executor: str,
                     jobs: int, address: str | None, retries: int, fmt: str, pivot: bool = False,
                     reference: ReferenceTable | None = None) -> None:
    """One task per (model, dataset, latent dim, fold) cell on the chosen executor; progress per cell.
    ``checked``: :meth:`Experiment.check` of each request."""
    from probseg_bench.executors import CellResult, cells, run_local, run_ray

    store_url = normalize_url(storage)
    for r, c in zip(requests, checked, strict=True):
        err_console.print(describe_run(r, c.preset, c.folds, planned_epochs(c.preset, c.dataset_spec), c.device,
                                       store_url), highlight=False, markup=False, soft_wrap=True)
    ResultsStore(storage)  # the schema, once, before the cells write to it
    todo = cells(requests, lambda r: get_preset(r.preset).n_folds)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, disable=not err_console.is_terminal)
    task = progress.add_task(f"cells ({executor})", total=len(todo))
    started = time.monotonic()
    failures = 0

    def report(result: CellResult) -> None:
        nonlocal failures
        r = result.request
        label = f"{r.model}/{r.dataset} d={r.latent_dims[0]} fold {r.folds[0] if r.folds else 0}"
        progress.advance(task)
        status = f"FAILED: {result.error}" if result.error else "done"
        failed = [x for x in result.records if x.get("status") == "failed"]
        if failed:
            status = f"FAILED, recorded as failed: {failed[0]['failure']}"
        failures += status.startswith("FAILED")
        err_console.print(f"{label}: {status}", highlight=False, markup=False, soft_wrap=True)

    with progress:
        if executor == "ray":
            results = run_ray(todo, store_url, address, retries, on_result=report)
        else:
            results = run_local(todo, store_url, jobs, on_result=report)
    records = [FoldRecord(**d) for result in results for d in result.records if d.get("status") == "ok"]
    print_rows(build_leaderboard(records), fmt, pivot, reference=reference)
    dirs = ", ".join(dict.fromkeys(str(r.run_dir) for r in requests))
    err_console.print(f"done in {duration(time.monotonic() - started)}: {len(results) - failures} cell(s) done "
                      f"(trained or already stored), {failures} failed; results in {store_url}, checkpoints under "
                      f"{dirs}", highlight=False, markup=False, soft_wrap=True)
