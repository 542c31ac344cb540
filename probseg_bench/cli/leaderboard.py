"""``probseg-bench leaderboard``: fold records aggregated per (model, dataset, latent dim)."""

from __future__ import annotations

import typer

from probseg_bench.cli._app import CONFIG_HASH_HELP, FORMAT_HELP, STORAGE_HELP, app
from probseg_bench.cli.common import REFERENCE_HELP, print_rows, resolve_references
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import FORMATS, build_leaderboard
from probseg_bench.metrics.catalogue import ranked_metrics
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore, select_configurations


@app.command()
def leaderboard(
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP, show_default=False),
    dataset: list[str] = typer.Option([], "--dataset", help="Only these datasets (repeatable)."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable)."),
    latent_dim: list[int] = typer.Option([], "--latent-dim", help="Only these latent dimensions (repeatable)."),
    preset: list[str] = typer.Option([], "--preset", help="Only records of these presets (repeatable)."),
    config_hash: list[str] = typer.Option([], "--config-hash", help=CONFIG_HASH_HELP),
    pivot: bool = typer.Option(False, "--pivot", help="The paper's Table II layout: latent dims as columns."),
    pivot_metric: str | None = typer.Option(
        None, "--pivot-metric", help="The metric of the --pivot cells (default: EWD with ER; with only --reference "
                                     "literature, the first published metric the rows have, e.g. ged_16)."),
    test_metric: str = typer.Option(
        "ewd", "--test-metric",
        help=f"Metric of the p-value column (vs. the best): {', '.join(m.name for m in ranked_metrics())}, or a "
             "GED_n / HM-IoU_n the rows have (e.g. ged_100)."),
    reference: list[str] = typer.Option([], "--reference", help=REFERENCE_HELP),
) -> None:
    """Mean +- std over folds of the metric catalogue's ranked metrics (those --test-metric takes) and of the ones
    it only shows, per (model, dataset, latent dim, configuration: the model label names what differs from the
    defaults, the config column starts its hash); best in bold; a paired Wilcoxon p-value against the best row of
    each dataset; with --reference paper / literature, the published values and the differences beside them."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    tables = resolve_references(reference)
    store = ResultsStore(storage, create=False)
    store.check_names(model, dataset)
    records = select_configurations(store.records(model or None, dataset or None, latent_dim or None),
                                    config_hash, preset)
    print_rows(build_leaderboard(records, test_metric), fmt, pivot, test_metric, tables, pivot_metric)
