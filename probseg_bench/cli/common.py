"""What several commands share: parsing NAME=VALUE options, the ``--reference`` option, and printing a
leaderboard (``run`` ends with one). Command modules import from here and from ``_app``, never from each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from probseg_bench.atomic import atomic_write_text
from probseg_bench.cli._app import console, err_console
from probseg_bench.diagnostics import collapse_warnings
from probseg_bench.hyperparameters import parse_assignments
from probseg_bench.leaderboard import LeaderboardRow, render
from probseg_bench.published import reference_gap
from probseg_bench.references import REFERENCES, ReferenceTable, get_references

if TYPE_CHECKING:
    from pathlib import Path


def parse_hp(items: list[str], option: str = "--hp") -> dict[str, str]:
    """``["alpha=5", "beta=50"]`` -> ``{"alpha": "5", "beta": "50"}`` (typed later by the plugin's spec)."""
    return parse_assignments(items, option)


REFERENCE_HELP = (
    f"Show published values beside the measured ones, with the difference measured - published; repeatable "
    f"({', '.join(REFERENCES)}: the seed paper's Table II; the field's LIDC GED_n / HM-IoU_n on the v1 / v2 splits). "
    "A value is shown only beside a row of its dataset, preset (split, n) and model with default settings."
)
MACHINE_FORMATS = ("csv", "json", "latex", "html")  # their notes go to stderr, so that stdout stays parseable


def resolve_references(names: list[str]) -> list[ReferenceTable]:
    """The ``--reference`` tables, in the given order (none without the option).

    Raises:
        ProbsegError: an unknown reference name (lists the known ones).
    """
    return get_references(names)


def print_rows(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd",
               references: list[ReferenceTable] | None = None, pivot_metric: str | None = None,
               output: Path | None = None) -> None:
    """Render leaderboard rows to stdout in ``fmt`` (shared by ``run`` and ``leaderboard``), or with ``output`` (a
    text format) to that file, written atomically. For each reference none of whose values pairs with a row, one
    line says so: after the table on stdout for table and markdown, on stderr for csv, json, latex and html and
    with ``output``. A row whose samples collapsed gets one warning line on stderr
    (:func:`probseg_bench.diagnostics.collapse_warning`)."""
    out = render(rows, fmt, pivot, test_metric, references, pivot_metric)
    if output is not None and isinstance(out, str):
        atomic_write_text(output, out)
    elif isinstance(out, str):
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
    for _, warning in collapse_warnings(rows):
        err_console.print(warning, highlight=False, markup=False, soft_wrap=True)
    for gap in reference_gap(rows, references or []):
        if fmt in MACHINE_FORMATS or output is not None:
            err_console.print(gap, highlight=False, markup=False, soft_wrap=True)
        else:
            print(gap)
