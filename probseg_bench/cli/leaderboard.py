"""``probseg-bench leaderboard``: fold records aggregated per (model, dataset, latent dim)."""

from __future__ import annotations

import typer

from probseg_bench.cli._app import FORMAT_HELP, STORAGE_HELP, app, console
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import (
    FORMATS,
    LeaderboardRow,
    build_leaderboard,
    render_csv,
    render_json,
    render_markdown,
    rich_table,
)
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore


def print_rows(rows: list[LeaderboardRow], fmt: str) -> None:
    """Render leaderboard rows to stdout in ``fmt`` (shared by ``run`` and ``leaderboard``)."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "table":
        console.print(rich_table(rows))
    else:
        text = {"markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt](rows)
        print(text, end="" if text.endswith("\n") else "\n")


@app.command()
def leaderboard(
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP, show_default=False),
    dataset: list[str] = typer.Option([], "--dataset", help="Only these datasets (repeatable)."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable)."),
    latent_dim: list[int] = typer.Option([], "--latent-dim", help="Only these latent dimensions (repeatable)."),
) -> None:
    """Mean ± std over folds of GED, HM-IoU, EWD and ER per (model, dataset, latent dim); best marked."""
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    records = ResultsStore(storage).records(model or None, dataset or None, latent_dim or None)
    print_rows(build_leaderboard(records), fmt)
