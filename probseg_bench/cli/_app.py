"""The Typer application object and the consoles shared by the command modules."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from probseg_bench.results import DEFAULT_STORAGE
from probseg_bench.terminal import to_ascii

# Settings of every Typer app of the CLI (the root and its command groups, such as ``data``). ``--help`` is
# click's plain layout, not typer's Rich panels: Rich markup would parse every help string, so that bracketed
# text such as "[default: all]" vanished, and the panels give each flag a type column ("--pivot <bool>") as if
# it took a value. Plain help prints help strings verbatim and flags without a type, for any help text to come.
APP_SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "no_args_is_help": True}

app = typer.Typer(
    name="probseg-bench",
    help="Benchmark probabilistic segmentation models (PU-Net, PU-Net+NF, SPU-Net, plugins) on "
    "multi-annotator data under one cross-validation protocol.",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"max_content_width": 120},  # help as wide as the terminal, up to 120 columns
    **APP_SETTINGS,
)


class PortableConsole(Console):
    """A rich Console whose text (``print``'s strings, a table's string cells, titles, captions) is ASCII
    (:func:`probseg_bench.terminal.to_ascii`) where the output's encoding lacks a character, before rich measures
    it: tables stay aligned on an ASCII terminal (rich itself draws their boxes in ASCII there)."""

    def render_str(self, text: str, **kwargs: Any) -> Any:
        try:
            text.encode(self.encoding)
        except (UnicodeEncodeError, LookupError):
            text = to_ascii(text)
        return super().render_str(text, **kwargs)


console = PortableConsole() if sys.stdout.isatty() else PortableConsole(width=160)
err_console = PortableConsole(stderr=True) if sys.stderr.isatty() else PortableConsole(stderr=True, width=160)

STORAGE_HELP = (
    "Results store: a SQLAlchemy URL (sqlite:///file.db, postgresql://...) or a SQLite file path "
    f"[default: {DEFAULT_STORAGE}]"
)
FORMAT_HELP = "Output format: table, markdown, csv, json, latex or html (a self-contained page to share)."
CONFIG_HASH_HELP = "Only configurations whose hash starts with this (the leaderboard's config column); repeatable."
