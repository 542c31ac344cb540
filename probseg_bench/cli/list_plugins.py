"""``probseg-bench list``: every plugin with its kind, description and providing distribution."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from probseg_bench.cli._app import app, console, err_console
from probseg_bench.errors import ProbsegError
from probseg_bench.plugins import get_plugins


@app.command("list")
def list_plugins(
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """List the registered dataset, model and regularizer plugins (and plugins that failed to load)."""
    plugins = get_plugins()
    infos = plugins.all_info()
    if fmt == "json":
        print(json.dumps({
            "plugins": [i.__dict__ for i in infos],
            "failures": [f.__dict__ for f in plugins.failures],
        }, indent=2))
        return
    if fmt != "table":
        raise ProbsegError(f"--format: expected table or json, got {fmt!r}")
    table = Table(title="probseg-bench plugins")
    for col in ("kind", "name", "description", "provided by"):
        table.add_column(col, overflow="fold")
    for i in infos:
        table.add_row(i.kind, i.name, i.description, i.distribution)
    console.print(table)
    for f in plugins.failures:
        err_console.print(f"plugin {f.entry_point} ({f.distribution}) failed to load: {f.error}",
                          markup=False, highlight=False)
