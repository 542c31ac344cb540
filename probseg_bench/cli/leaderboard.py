"""``probseg-bench leaderboard``: fold records aggregated per (model, dataset, latent dim)."""

from __future__ import annotations

from pathlib import Path

import typer

from probseg_bench.cli._app import app
from probseg_bench.cli.common import print_rows, resolve_references
from probseg_bench.cli.options import (
    DEFAULT_FORMAT,
    ConfigHashFilter,
    DatasetFilter,
    LatentDimFilter,
    LeaderboardFormat,
    ModelFilter,
    Pivot,
    PresetFilter,
    Reference,
    Storage,
)
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.metrics.catalogue import ranked_metrics
from probseg_bench.outputs import check_output_file
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore, select_configurations


@app.command()
def leaderboard(
    fmt: LeaderboardFormat = DEFAULT_FORMAT,
    storage: Storage = DEFAULT_STORAGE,
    dataset: DatasetFilter = [],  # noqa: B006  (typer copies a list default)
    model: ModelFilter = [],  # noqa: B006
    latent_dim: LatentDimFilter = [],  # noqa: B006
    preset: PresetFilter = [],  # noqa: B006
    config_hash: ConfigHashFilter = [],  # noqa: B006
    pivot: Pivot = False,
    pivot_metric: str | None = typer.Option(
        None, "--pivot-metric", help="The metric of the --pivot cells (default: EWD with ER; with only --reference "
                                     "literature, the first published metric the rows have, e.g. ged_16)."),
    test_metric: str = typer.Option(
        "ewd", "--test-metric",
        help=f"Metric of the p-value column (vs. the best): {', '.join(m.name for m in ranked_metrics())}, or a "
             "GED_n / HM-IoU_n the rows have (e.g. ged_100)."),
    reference: Reference = [],  # noqa: B006
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the leaderboard to this file instead of stdout (markdown, csv, json, "
                                     "latex or html: e.g. --format html -o leaderboard.html, a page to share)."),
) -> None:
    """Mean +- std over folds of the metric catalogue's ranked metrics (those --test-metric takes) and of the ones
    it only shows, per (model, dataset, latent dim, configuration: the model label names what differs from the
    defaults, the config column starts its hash); best in bold; a paired Wilcoxon p-value against the best row of
    each dataset; with --reference paper / literature, the published values and the differences beside them.
    --format html -o FILE writes one self-contained page (a sortable table per dataset and preset) to share."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if output is not None:
        if fmt == "table":
            raise ProbsegError(f"--output {output}: expected --format {', '.join(FORMATS[1:])} (the table format "
                               "is for the terminal)")
        check_output_file(output, "--output")
    tables = resolve_references(reference)
    store = ResultsStore(storage, create=False)
    store.check_names(model, dataset)
    records = select_configurations(store.records(model or None, dataset or None, latent_dim or None),
                                    config_hash, preset)
    print_rows(build_leaderboard(records, test_metric), fmt, pivot, test_metric, tables, pivot_metric, output)
