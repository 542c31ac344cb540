"""The ``probseg-bench`` command line (Typer; one module per command). The CLI parses, calls the core and
renders; a :class:`ProbsegError` becomes one line on stderr and exit status 2."""

from __future__ import annotations

import sys

from probseg_bench.cli import analyze as _analyze  # noqa: F401  (registers the command)
from probseg_bench.cli import compare as _compare  # noqa: F401
from probseg_bench.cli import data as _data  # noqa: F401  (registers the command group)
from probseg_bench.cli import leaderboard as _leaderboard  # noqa: F401  (registers the command)
from probseg_bench.cli import list_plugins as _list  # noqa: F401
from probseg_bench.cli import run as _run  # noqa: F401
from probseg_bench.cli import tune as _tune  # noqa: F401
from probseg_bench.cli import validate as _validate  # noqa: F401
from probseg_bench.cli._app import app, err_console
from probseg_bench.errors import ProbsegError


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ProbsegError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
