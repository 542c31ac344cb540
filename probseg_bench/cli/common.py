"""What several commands share: parsing NAME=VALUE options, the ``--reference`` option, and printing a
leaderboard (``run`` ends with one). Command modules import from here and from ``_app``, never from each other."""

from __future__ import annotations

from probseg_bench.cli._app import console, err_console
from probseg_bench.diagnostics import collapse_warning
from probseg_bench.hyperparameters import parse_assignments
from probseg_bench.leaderboard import LeaderboardRow, render
from probseg_bench.published import reference_gap
from probseg_bench.references import REFERENCES, ReferenceTable, get_references


def parse_hp(items: list[str], option: str = "--hp") -> dict[str, str]:
    """``["alpha=5", "beta=50"]`` -> ``{"alpha": "5", "beta": "50"}`` (typed later by the plugin's spec)."""
    return parse_assignments(items, option)


REFERENCE_HELP = (
    f"Show published values beside the measured ones, with the difference measured - published; repeatable "
    f"({', '.join(REFERENCES)}: the seed paper's Table II; the field's LIDC GED_n / HM-IoU_n on the v1 / v2 splits). "
    "A value is shown only beside a row of its dataset, preset (split, n) and model with default settings."
)
MACHINE_FORMATS = ("csv", "json", "latex")  # their notes go to stderr, so that stdout stays parseable


def default_latent_dim(model: str | None) -> int:
    """The d of a run that names none: the model plugin's reference d (``ModelSpec.default_latent_dim``), or
    :data:`~probseg_bench.api.DEFAULT_LATENT_DIM` for a name that is not a model (the run's checks then name it)."""
    from probseg_bench.api import DEFAULT_LATENT_DIM
    from probseg_bench.plugins import get_plugins

    models = get_plugins().models
    return models.get(model).default_latent_dim if model in models.names() else DEFAULT_LATENT_DIM


def resolve_references(names: list[str]) -> list[ReferenceTable]:
    """The ``--reference`` tables, in the given order (none without the option).

    Raises:
        ProbsegError: an unknown reference name (lists the known ones).
    """
    return get_references(names)


def print_rows(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd",
               references: list[ReferenceTable] | None = None, pivot_metric: str | None = None) -> None:
    """Render leaderboard rows to stdout in ``fmt`` (shared by ``run`` and ``leaderboard``). For each reference none
    of whose values pairs with a row, one line says so: after the table on stdout for table and markdown, on
    stderr for csv, json and latex. A row whose samples collapsed gets one warning line on stderr
    (:func:`probseg_bench.diagnostics.collapse_warning`)."""
    out = render(rows, fmt, pivot, test_metric, references, pivot_metric)
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
    for gap in reference_gap(rows, references or []):
        if fmt in MACHINE_FORMATS:
            err_console.print(gap, highlight=False, markup=False, soft_wrap=True)
        else:
            print(gap)
