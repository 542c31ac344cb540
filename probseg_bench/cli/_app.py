"""The Typer application object and the consoles shared by the command modules."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from probseg_bench.results import DEFAULT_STORAGE

app = typer.Typer(
    name="probseg-bench",
    help="Benchmark probabilistic segmentation models (PU-Net, PU-Net+NF, SPU-Net, plugins) on "
    "multi-annotator data under one cross-validation protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

STORAGE_HELP = (
    "Results store: a SQLAlchemy URL (sqlite:///file.db, postgresql://...) or a SQLite file path "
    f"[default: {DEFAULT_STORAGE}]"
)
FORMAT_HELP = "Output format: table, markdown, csv, json or latex."
CONFIG_HASH_HELP = "Only configurations whose hash starts with this (the leaderboard's config column); repeatable."
