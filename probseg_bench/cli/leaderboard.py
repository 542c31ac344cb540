"""``probseg-bench leaderboard``: fold records aggregated per (model, dataset, latent dim)."""

from __future__ import annotations

import typer

from probseg_bench.cli._app import FORMAT_HELP, STORAGE_HELP, app, console
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import FORMATS, LeaderboardRow, build_leaderboard, render
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore


def print_rows(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd") -> None:
    """Render leaderboard rows to stdout in ``fmt`` (shared by ``run`` and ``leaderboard``)."""
    out = render(rows, fmt, pivot, test_metric)
    if isinstance(out, str):
        print(out, end="")
    else:
        console.print(out)


@app.command()
def leaderboard(
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP, show_default=False),
    dataset: list[str] = typer.Option([], "--dataset", help="Only these datasets (repeatable)."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable)."),
    latent_dim: list[int] = typer.Option([], "--latent-dim", help="Only these latent dimensions (repeatable)."),
    pivot: bool = typer.Option(False, "--pivot", help="The paper's Table II layout: latent dims as columns."),
    test_metric: str = typer.Option("ewd", "--test-metric", help="Metric of the p-value column (vs. the best)."),
) -> None:
    """Mean ± std over folds of GED, HM-IoU, EWD and ER per (model, dataset, latent dim); best in bold; a
    paired Wilcoxon p-value against the best row of each dataset."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    records = ResultsStore(storage).records(model or None, dataset or None, latent_dim or None)
    print_rows(build_leaderboard(records, test_metric), fmt, pivot, test_metric)
