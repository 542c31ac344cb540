"""``probseg-bench analyze``: the seed paper's Figures 3-8 and an HTML report for a stored run."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from probseg_bench.cli._app import app, console, err_console
from probseg_bench.cli.options import DEFAULT_DEVICE, DataRoot, Device, Storage, StoredDataset, StoredModel
from probseg_bench.errors import ProbsegError
from probseg_bench.outputs import check_output_folder
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore


@app.command()
def analyze(
    model: StoredModel,
    dataset: StoredDataset,
    latent_dim: int | None = typer.Option(
        None, "--latent-dim", "-d", help="Latent dim (needed when the store holds several for the model)."),
    fold: int | None = typer.Option(None, "--fold", help="Fold (default: the configuration's lowest stored fold)."),
    config_hash: str | None = typer.Option(
        None, "--config-hash", help="The configuration (hash prefix, the leaderboard's config column), needed when "
        "the store holds several for the model, dataset and latent dim."),
    data_root: DataRoot = None,
    storage: Storage = DEFAULT_STORAGE,
    output: Path = typer.Option(Path("probseg-analysis"), "--output", help="Parent folder of the report."),
    samples: int | None = typer.Option(None, "--samples", help="Samples per image [default: the run's, 16]."),
    device: Device = None,
) -> None:
    """The seed paper's Figures 3-8 for a stored run's checkpoint: samples (3), prior statistics (4), latent
    traversal (5), freezing (6), effective rank over training (7) and entropy calibration (8), as PNG + PDF and
    one self-contained HTML report; prints the report's path."""
    from probseg_bench.analysis.analyze import analyze as run_analysis
    from probseg_bench.analysis.loading import find_record, load_run

    if samples is not None and samples < 1:
        raise ProbsegError(f"--samples: expected an integer >= 1, got {samples}")
    check_output_folder(output, "--output")  # before the checkpoint and the data are loaded
    record = find_record(ResultsStore(storage, create=False), model, dataset, latent_dim, fold, config_hash)
    variant = f" ({record.variant})" if record.variant else ""
    err_console.print(f"analysing {record.model}{variant} on {record.dataset}, d={record.latent_dim}, fold "
                      f"{record.fold} (config {record.config_hash[:8]}, {record.preset})", highlight=False,
                      markup=False)
    run = load_run(record, data_root, device or DEFAULT_DEVICE)
    folder = output / f"{record.model}-{record.dataset}-d{record.latent_dim}-fold{record.fold}-{record.config_hash}"
    args = ["analyze", "--model", model, "--dataset", dataset, "--latent-dim", str(record.latent_dim), "--fold",
            str(record.fold), "--config-hash", record.config_hash[:8]]
    for flag, value in (("--data-root", data_root), ("--storage", None if storage == DEFAULT_STORAGE else storage),
                        ("--samples", samples)):
        if value is not None:
            args += [flag, str(value)]
    command = "probseg-bench " + " ".join(shlex.quote(a) for a in args)
    result = run_analysis(run, folder, command, samples)
    for warning in result.warnings:
        err_console.print(warning, highlight=False, markup=False, soft_wrap=True)
    console.print(str(result.report), highlight=False, soft_wrap=True)
