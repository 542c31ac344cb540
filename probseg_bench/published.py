"""Published values beside measured leaderboard rows: which published cell a row is comparable with
(:func:`match_reference`), the differences measured − published, and the lines a table adds for them.

A row is a :class:`probseg_bench.leaderboard.LeaderboardRow`; the published tables are
:class:`probseg_bench.references.ReferenceTable` (``--reference paper``, ``--reference literature``). Published values
are never bold and never ranked.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError
from probseg_bench.references import PublishedCell, ReferenceTable

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.leaderboard import LeaderboardRow
    from probseg_bench.metrics.catalogue import Metric


def _reference_d(model: str) -> int | None:
    """The model plugin's reference latent dimension (``ModelSpec.default_latent_dim``); None when the plugin is
    not installed here."""
    from probseg_bench.plugins import get_plugins

    try:
        return get_plugins().models.get(model).default_latent_dim
    except ProbsegError:
        return None


def match_reference(row: LeaderboardRow, reference: ReferenceTable | None) -> PublishedCell | None:
    """The published cell comparable with ``row``, or None.

    A row matches a cell when its dataset name, model, preset (the protocol: split, sample counts) and latent dim
    are the cell's (a cell published for any d, as the literature's, needs the model's reference d: the
    configuration the methods are published in), its dataset has no non-default dataset parameters
    (``dataset_label == dataset``) and it has no variant (``variant == ""``: the model's default hyperparameters
    and no protocol override such as ``--epochs``). A quick-preset row is never comparable with a published value.
    """
    if reference is None or row.variant or row.dataset_label != row.dataset:
        return None
    cell = reference.lookup(row.dataset, row.model, row.preset, row.latent_dim)
    if cell is None or (cell.latent_dim is None and row.latent_dim != _reference_d(row.model)):
        return None
    return cell


def paired_cell(row: LeaderboardRow, references: list[ReferenceTable]) -> tuple[ReferenceTable, PublishedCell] | None:
    """The first reference with a cell comparable with ``row``, and the cell."""
    for reference in references:
        cell = match_reference(row, reference)
        if cell is not None:
            return reference, cell
    return None


def signed(value: float, decimals: int) -> str:
    """``value`` with an explicit sign and a true minus sign, e.g. ``+0.012``, ``−0.30`` (never ``−0.000``)."""
    text = f"{value:+.{decimals}f}"
    if float(text) == 0:
        text = f"+{0:.{decimals}f}"
    return text.replace("-", "−")


def published_columns(columns: list[Metric], references: list[ReferenceTable]) -> dict[str, list[ReferenceTable]]:
    """metric name -> the references that publish it, for the table's metric columns."""
    return {m.name: [r for r in references if m.name in r.metrics] for m in columns
            if any(m.name in r.metrics for r in references)}


def reference_fields(row: LeaderboardRow, references: list[ReferenceTable],
                     columns: list[Metric] | None = None) -> dict[str, Any]:
    """The JSON keys references add to a row: ``reference`` (the published cell paired with the row, or None:
    ``name``, and per published metric ``<m>_mean``, ``<m>_std`` and ``<m>_source``) and ``delta_<m>`` (measured mean
    − published mean, or None) for every metric a reference publishes among ``columns`` (default: the catalogue's
    leaderboard metrics and the row's GED_n / HM-IoU_n)."""
    if columns is None:
        from probseg_bench.leaderboard import table_metrics

        columns = table_metrics([row])
    metrics = list(published_columns(columns, references))
    out: dict[str, Any] = {"reference": None, **{f"delta_{m}": None for m in metrics}}
    paired = paired_cell(row, references)
    if paired is None:
        return out
    reference, cell = paired
    published: dict[str, Any] = {"name": reference.name}
    for m in metrics:
        value, measured = cell.values.get(m), row.mean.get(m, math.nan)
        if value is None or not math.isfinite(measured):  # only beside a measured value of the same n
            continue
        published.update({f"{m}_mean": value.mean, f"{m}_std": value.std, f"{m}_source": value.source})
        out[f"delta_{m}"] = measured - value.mean
    out["reference"] = published
    return out


def reference_gap(rows: list[LeaderboardRow], references: list[ReferenceTable]) -> list[str]:
    """One line per reference none of whose values pairs with a row (e.g. only ``lidc-sample`` rows), naming what
    it reports; nothing when there are no rows."""
    from probseg_bench.plugins import get_plugins

    installed = set(get_plugins().models.names())
    return [f"no published value for these rows: the {r.name} ({r.source}) reports {r.coverage(installed)}, default "
            "hyperparameters and dataset parameters"
            for r in references if rows and not any(match_reference(row, r) for row in rows)]


def reference_notes(rows: list[LeaderboardRow], references: list[ReferenceTable]) -> list[str]:
    """The footnotes of the references, with the sources of the cells the rows are paired with."""
    notes: list[str] = []
    for reference in references:
        shown: list[PublishedCell] = []
        for cell in (match_reference(r, reference) for r in rows):
            if cell is not None and all(cell is not c for c in shown):
                shown.append(cell)
        notes += reference.footnotes(shown)
    return notes


__all__ = ["match_reference", "paired_cell", "published_columns", "reference_fields", "reference_gap",
           "reference_notes", "signed"]
