"""``probseg-bench leaderboard``: fold records aggregated per (model, dataset, latent dim)."""

from __future__ import annotations

import typer

from probseg_bench.cli._app import CONFIG_HASH_HELP, FORMAT_HELP, STORAGE_HELP, app, console, err_console
from probseg_bench.diagnostics import collapse_warning
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import FORMATS, LeaderboardRow, build_leaderboard, reference_gap, render
from probseg_bench.metrics.catalogue import ranked_metrics
from probseg_bench.references import REFERENCES, ReferenceTable, get_reference
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore, select_configurations

REFERENCE_HELP = (
    f"Show published values ({', '.join(REFERENCES)}: the seed paper's Table II) beside the measured ones, with "
    "the difference measured − published."
)
MACHINE_FORMATS = ("csv", "json", "latex")  # their notes go to stderr, so that stdout stays parseable


def resolve_reference(name: str | None) -> ReferenceTable | None:
    """The ``--reference`` table, or None without the option.

    Raises:
        ProbsegError: an unknown reference name (lists the known ones).
    """
    return None if name is None else get_reference(name)


def print_rows(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd",
               reference: ReferenceTable | None = None) -> None:
    """Render leaderboard rows to stdout in ``fmt`` (shared by ``run`` and ``leaderboard``). With ``reference``
    and no row that has a published value, one line says so: after the table on stdout for table and markdown,
    on stderr for csv, json and latex. A row whose samples collapsed gets one warning line on stderr
    (:func:`probseg_bench.diagnostics.collapse_warning`)."""
    out = render(rows, fmt, pivot, test_metric, reference)
    if isinstance(out, str):
        print(out, end="")
    elif not console.is_terminal:
        # labels with hyperparameters and reference columns are wider than the 160 columns used for pipes and
        # files: print them at their natural width rather than cutting or wrapping cells
        width = console.width
        console.width = max(width, console.measure(out, options=console.options.update_width(10_000)).maximum)
        try:
            console.print(out)
        finally:
            console.width = width
    else:
        console.print(out)
    for row in rows:
        label = f"{row.label} on {row.dataset_label}, d={row.latent_dim}, {row.preset}"
        warning = collapse_warning(label, row.mean["sample_diversity"], row.mean["annotator_diversity"])
        if warning is not None:
            err_console.print(warning, highlight=False, markup=False, soft_wrap=True)
    gap = reference_gap(rows, reference)
    if gap is not None:
        if fmt in MACHINE_FORMATS:
            err_console.print(gap, highlight=False, markup=False, soft_wrap=True)
        else:
            print(gap)


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
    test_metric: str = typer.Option(
        "ewd", "--test-metric",
        help=f"Metric of the p-value column (vs. the best): {', '.join(m.name for m in ranked_metrics())}."),
    reference: str | None = typer.Option(None, "--reference", help=REFERENCE_HELP),
) -> None:
    """Mean ± std over folds of the metric catalogue's ranked metrics (those --test-metric takes) and of the ones
    it only shows, per (model, dataset, latent dim, configuration: the model label names what differs from the
    defaults, the config column starts its hash); best in bold; a paired Wilcoxon p-value against the best row of
    each dataset; with --reference paper, the paper's Table II values and the differences beside them."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    table = resolve_reference(reference)
    store = ResultsStore(storage, create=False)
    store.check_names(model, dataset)
    records = select_configurations(store.records(model or None, dataset or None, latent_dim or None),
                                    config_hash, preset)
    print_rows(build_leaderboard(records, test_metric), fmt, pivot, test_metric, table)
