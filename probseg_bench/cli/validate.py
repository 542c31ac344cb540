"""``probseg-bench validate``: train models on data with a known true distribution and compare them with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from probseg_bench.cli._app import app, console, err_console
from probseg_bench.cli.common import parse_hp
from probseg_bench.cli.options import (
    DEFAULT_DEVICE,
    DEFAULT_LOG_DIR,
    DEFAULT_RUN_DIR,
    DEFAULT_SEED,
    DEFAULT_VALIDATE_PRESET,
    DatasetParam,
    Device,
    Epochs,
    LatentDim,
    Log,
    LogDir,
    RunDir,
    Seed,
    Storage,
    ValidatePreset,
)
from probseg_bench.cli.progress import RichReporter, curves_clause
from probseg_bench.comparison import TEST_NAME
from probseg_bench.connections import display_url
from probseg_bench.diagnostics import collapse_warning
from probseg_bench.errors import ProbsegError
from probseg_bench.interruption import interrupted_line
from probseg_bench.outputs import check_output_folder, check_storage
from probseg_bench.protocol import config_hash
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore
from probseg_bench.validation import ModelValidation, ValidationReport, validate, validation_requests, write_report

# the seed paper's three models and the four baselines (issue 18): about 20 minutes on 2 CPU cores
DEFAULT_MODELS = ["punet", "punet-nf", "spunet", "ssn", "unet-ensemble", "phiseg", "hpunet", "ccdm"]
HIERARCHICAL_ER = ("†: a hierarchical model's ER runs over all its levels' latent dimensions, not comparable "
                   "with the intrinsic dimension or a one-level model's ER")
VALIDATE_FORMATS = ("table", "markdown", "json")


def _num(value: float, digits: int = 3) -> str:
    """A number, or "–" where the metric does not apply (NaN: no latent prior / posterior)."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _er(m: ModelValidation) -> str:
    """ER next to the intrinsic dimension: only for a model with one latent level (a hierarchical model's ER runs
    over all its levels' dimensions and is shown with a dagger)."""
    return _num(m.metrics["er"], 2) + ("" if m.single_level or not math.isfinite(m.metrics["er"]) else " †")


def _markdown(report: ValidationReport) -> str:
    o = report.oracle
    lines = [
        "| model | d | EWD ↓ | oracle EWD | EWD / oracle | GED ↓ | oracle GED | GED / oracle | ER | intrinsic dim "
        "| sample diversity | true diversity | annotator diversity | nearest true mask IoU | true-mask TV "
        "| reconstruction IoU |",
        "|" + "---|" * 16,
    ]
    for m in report.models:
        x = m.metrics
        lines.append(
            f"| {m.label} | {m.latent_dim} | {x['ewd']:.3f} | {o['ewd']:.3f} | {m.ewd_ratio:.2f} | {x['ged']:.3f} "
            f"| {o['ged']:.3f} | {m.ged_ratio:.2f} | {_er(m)} | {report.intrinsic_dimension} "
            f"| {x['sample_diversity']:.3f} | {o['diversity']:.3f} | {x['annotator_diversity']:.3f} "
            f"| {x['nearest_true_iou']:.3f} | {x['true_mask_tv']:.3f} | {_num(x['reconstruction_iou'])} |"
        )
    lines.append(f"| oracle (true distribution) | | {o['ewd']:.3f} | | 1 | {o['ged']:.3f} | | 1 | | "
                 f"{report.intrinsic_dimension} | {o['diversity']:.3f} | | | {o['nearest_true_iou']:.3f} "
                 f"| {o['true_mask_tv']:.3f} | |")
    lines += ["", "| A | B | metric | median A - B [95% CI] | p | p (Holm) |", "|---|---|---|---|---|---|"]
    for c in report.comparisons:
        lines.append(f"| {c.a} | {c.b} | {c.metric} | {c.median_difference:+.4f} [{c.ci_low:+.4f}, "
                     f"{c.ci_high:+.4f}] | {c.p_value:.3g} | {c.p_holm:.3g} |")
    if any(not m.single_level for m in report.models):
        lines += ["", HIERARCHICAL_ER]
    return "\n".join(lines) + "\n"


def _add_column(table: Table, header: str) -> None:
    """A model column that wraps long labels; number columns that never cut a number."""
    if header == "model":
        table.add_column(header, justify="left", min_width=12, overflow="fold")
    else:
        table.add_column(header, justify="right", min_width=5)


def _print_table(report: ValidationReport) -> None:
    """Two tables of at most 9 columns (readable in a 120-column terminal): the metrics against the truth, then
    diversity and what bounds each model; then the paired tests."""
    o = report.oracle
    params = ", ".join(f"{k}={v}" for k, v in sorted(report.dataset_params.items()))
    dims = f"d={report.latent_dim}" if report.latent_dim is not None else "d per model"
    title = (f"validity against the true distribution: {report.dataset} ({params}), {dims}, "
             f"preset {report.preset_label}, {report.n_test} test images")
    caption = "oracle: 16 draws per image from the true distribution, scored like a model; ratio: model / oracle"
    if any(not m.single_level for m in report.models):
        caption += "; " + HIERARCHICAL_ER
    truth = Table(title=title, caption=caption)
    for col in ("model", "d", "fold(s)", "EWD ↓", "oracle", "ratio", "GED ↓", "oracle ", "ratio ", "ER",
                "intrinsic\ndim"):
        _add_column(truth, col)
    for m in report.models:
        x = m.metrics
        truth.add_row(m.label, str(m.latent_dim), ",".join(map(str, m.folds)), f"{x['ewd']:.3f}", f"{o['ewd']:.3f}",
                      f"{m.ewd_ratio:.2f}", f"{x['ged']:.3f}", f"{o['ged']:.3f}", f"{m.ged_ratio:.2f}",
                      _er(m), str(report.intrinsic_dimension))
    truth.add_row("oracle (true distribution)", "", "", f"{o['ewd']:.3f}", "", "1", f"{o['ged']:.3f}", "", "1", "",
                  str(report.intrinsic_dimension), style="dim")
    console.print(truth)
    bounds = Table(
        title="diversity and what bounds each model",
        caption="diversity: mean 1 - IoU over distinct pairs (true: its exact expectation); closest true IoU: IoU of "
                "a sample with the closest true mask; true-mask TV: total variation between the frequencies of those "
                "masks and the true probabilities; recon. IoU: the posterior reconstruction of an annotation",
    )
    for col in ("model", "sample\ndiv.", "true\ndiv.", "annotator\ndiv.", "closest\ntrue IoU", "true-mask\nTV",
                "recon.\nIoU", "train\ns"):
        _add_column(bounds, col)
    for m in report.models:
        x = m.metrics
        bounds.add_row(m.label, f"{x['sample_diversity']:.3f}", f"{o['diversity']:.3f}",
                       f"{x['annotator_diversity']:.3f}", f"{x['nearest_true_iou']:.3f}", f"{x['true_mask_tv']:.3f}",
                       _num(x['reconstruction_iou']), f"{m.train_seconds:.0f}")
    bounds.add_row("oracle (true distribution)", f"{o['diversity']:.3f}", "", "", f"{o['nearest_true_iou']:.3f}",
                   f"{o['true_mask_tv']:.3f}", "", "", style="dim")
    console.print(bounds)
    if report.comparisons:
        tests = Table(title="paired comparisons between the models (difference = A - B)",
                      caption=f"{TEST_NAME}; 95% CI: percentile bootstrap over images; Holm over the model pairs "
                              "of each metric")
        for col in ("A", "B", "metric", "n images", "median diff [95% CI]", "p", "p (Holm)"):
            tests.add_column(col, justify="left" if col in ("A", "B", "metric") else "right", no_wrap=col != "metric")
        for c in report.comparisons:
            tests.add_row(c.a, c.b, c.metric, str(c.n_images),
                          f"{c.median_difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
                          f"{c.p_value:.3g}", f"{c.p_holm:.3g}")
        console.print(tests)


@app.command("validate")
def validate_command(
    model: list[str] = typer.Option(
        DEFAULT_MODELS, "--model", "-m", help="Models to validate (repeatable; default: the eight built-ins)."),
    dataset: str = typer.Option("synthetic", "--dataset", help="A dataset with a known true distribution."),
    dataset_param: DatasetParam = [],  # noqa: B006  (typer copies a list default)
    latent_dim: LatentDim = None,
    fold: list[int] = typer.Option([0], "--fold", help="CV folds to train (repeatable)."),
    seed: Seed = None,
    preset: ValidatePreset = DEFAULT_VALIDATE_PRESET,
    epochs: Epochs = None,
    device: Device = None,
    storage: Storage = DEFAULT_STORAGE,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    log: Log = None,
    log_dir: LogDir = DEFAULT_LOG_DIR,
    output: Path = typer.Option(Path("probseg-validation"), "--output", help="Folder for the JSON and figure."),
    fmt: str = typer.Option("table", "--format", help="table, markdown or json (stdout)."),
) -> None:
    """Train each model with the standard protocol on a dataset whose true distribution over masks is known
    (default: synthetic, 64 x 64, 160 images, 4 annotators, 3 blobs x 3 radius levels) and report, on the same
    test images, EWD and GED next to the oracle's, effective rank next to the intrinsic dimension, sample
    diversity next to the true and annotator diversity, and paired Wilcoxon tests (Holm) between the models.
    Writes validation.json and validation.png/pdf into --output; stored folds are reused. --dataset-param values
    replace the validation defaults; each model trains at its own reference d unless --latent-dim is given."""
    seed = DEFAULT_SEED if seed is None else seed
    device = device or DEFAULT_DEVICE
    if fmt not in VALIDATE_FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(VALIDATE_FORMATS)}, got {fmt!r}")
    # built and checked once, every check that needs no data before the store file is written
    checked = validation_requests(
        model, dataset, parse_hp(dataset_param, "--dataset-param"), preset, latent_dim, fold, seed,
        {"epochs": epochs} if epochs is not None else {}, device, run_dir, log=log, log_dir=log_dir,
    )
    requests = [c.request for c in checked]
    check_storage(storage)  # every output location, before any data is loaded or any model trains
    check_output_folder(run_dir, "--run-dir")
    check_output_folder(output, "--output")
    store = ResultsStore(storage)
    dims = ", ".join(f"{r.model} d={r.latent_dims[0]}" for r in requests)
    err_console.print(f"validate on {dataset} "
                      f"({', '.join(f'{k}={v}' for k, v in requests[0].dataset_params.items())}), "
                      f"preset {preset}, {dims}, fold(s) {', '.join(map(str, fold))}", highlight=False)
    with RichReporter(len(requests) * len(fold)) as reporter:
        try:
            report = validate(checked, store, reporter)
        except KeyboardInterrupt as exc:  # what is on disk, read after the interruption (interruption.py)
            reporter.progress.stop()
            err_console.print(interrupted_line(reporter.finished, "fold", display_url(store.url), exc,
                                               [f"no report was written to {output}"]),
                              highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
    identity = {"models": model, "dataset": dataset, "params": report.dataset_params, "protocol": report.protocol,
                "d": [r.latent_dims[0] for r in requests], "folds": fold, "seed": seed}
    folder = output / f"{dataset}-d{report.latent_dim or 'model'}-{preset}-{config_hash(identity)}"
    paths = write_report(report, folder)
    if fmt == "json":
        print(json.dumps(report.as_dict(), indent=2, default=float))
    elif fmt == "markdown":
        print(_markdown(report), end="")
    else:
        _print_table(report)
    for m in report.models:
        warning = collapse_warning(m.label, m.metrics["sample_diversity"], m.metrics["annotator_diversity"])
        if warning is not None:
            err_console.print(warning, highlight=False, markup=False, soft_wrap=True)
    curves = curves_clause([log_dir] if log is not None else [])
    err_console.print(f"report: {', '.join(str(p) for p in paths)}{curves}", highlight=False, soft_wrap=True)
