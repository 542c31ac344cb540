"""The seed paper's Table II layout of leaderboard rows (``--pivot``): rows (dataset, model), one column per latent
dimension, cells "EWD ± std (ER)" or another metric's "mean ± std"; published rows and differences under each
model row with a published value (:mod:`probseg_bench.published`); its csv / json form."""

from __future__ import annotations

import math
from typing import Any

from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import (
    CONFIG_PREFIX,
    PARTIAL_NOTE,
    LeaderboardRow,
    data_version_notes,
    mean_std,
    table_metrics,
)
from probseg_bench.metrics.catalogue import find_metric
from probseg_bench.published import match_reference, reference_notes, signed
from probseg_bench.references import PublishedValue, ReferenceTable
from probseg_bench.tables import Table


def pivot_metric(rows: list[LeaderboardRow], references: list[ReferenceTable] | None = None,
                 metric: str | None = None) -> str:
    """The pivot's metric: ``metric`` when given, else EWD, unless the references publish no EWD: then the first
    metric they publish that the rows have (e.g. ``ged_16`` for ``--reference literature``).

    Raises:
        ProbsegError: ``metric`` is not a metric of the suite.
    """
    if metric is not None:
        found = find_metric(metric)
        if found is None:
            raise ProbsegError(f"--pivot-metric: unknown metric {metric!r}")
        return found.name
    references = references or []
    if not references or any("ewd" in r.metrics for r in references):
        return "ewd"
    present = {m.name for m in table_metrics(rows)}
    return next((m for r in references for m in r.metrics if m in present), "ewd")


def pivot_table(rows: list[LeaderboardRow], metric: str = "ewd", references: list[ReferenceTable] | None = None
                ) -> Table:
    """The seed paper's Table II layout: rows (dataset, model), columns latent dimensions, cells 'EWD ± std (ER)'
    (another ``metric``: 'metric ± std'); per dataset the best value over all cells in bold.

    With ``references``: under each model row with at least one published value of ``metric``
    (:func:`match_reference`), a row "<model> — <name> (<source>)" with the published cells as printed
    ("0.451 ± 0.001 (1.68)", preset column: the publication's preset) and a row "<model> — Δ (measured − <name>)"
    with "+0.012 (−0.30)"; cells without a published value stay empty; these rows are never bold.

    Raises:
        ProbsegError: two configurations of one model and latent dim in one dataset (filter them first).
    """
    references = references or []
    extra = "er" if metric == "ewd" else None
    dims = sorted({r.latent_dim for r in rows})
    cells: dict[tuple[str, str, str], dict[int, LeaderboardRow]] = {}
    for r in rows:
        slot = cells.setdefault((r.dataset_label, r.preset, r.label), {})
        if r.latent_dim in slot:
            raise ProbsegError(
                f"--pivot: {r.label} on {r.dataset_label} has several configurations at d={r.latent_dim} (config "
                f"{slot[r.latent_dim].config[:CONFIG_PREFIX]}, {r.config[:CONFIG_PREFIX]}): choose one with "
                "--config-hash PREFIX"
            )
        slot[r.latent_dim] = r

    def text(mean: float, std: float | None, extra_value: float | None) -> str:
        out = mean_std(mean, std) if math.isfinite(mean) else ""
        return out if extra_value is None or not math.isfinite(extra_value) else f"{out} ({extra_value:.2f})"

    body, bold = [], []
    for (dataset, preset, label), by_dim in cells.items():
        row_cells = [dataset, label, preset]
        flags = [False, False, False]
        for d in dims:
            cell = by_dim.get(d)
            row_cells.append("" if cell is None else
                             text(cell.mean.get(metric, math.nan), cell.std.get(metric),
                                  cell.mean.get(extra) if extra else None)
                             + (f" [{cell.folds_label} folds]" if cell.partial else ""))
            flags.append(cell is not None and metric in cell.best)
        body.append(row_cells)
        bold.append(flags)
        for reference in references:
            published = {d: match_reference(cell, reference) for d, cell in by_dim.items()}
            if not any(c is not None and metric in c.values and math.isfinite(by_dim[d].mean.get(metric, math.nan))
                       for d, c in published.items()):
                continue
            paper_cells, delta_cells = [], []
            for d in dims:
                found, cell = published.get(d), by_dim.get(d)
                value = None if found is None else found.values.get(metric)
                if value is None or cell is None or not math.isfinite(cell.mean.get(metric, math.nan)):
                    paper_cells.append("")
                    delta_cells.append("")
                    continue
                extra_value = found.values.get(extra) if found is not None and extra else None
                paper_cells.append(value.printed + (f" ({extra_value.mean_printed})" if extra_value else ""))
                measured = cell.mean.get(metric, math.nan)
                delta = signed(measured - value.mean, value.decimals) if math.isfinite(measured) else ""
                if extra_value is not None:
                    delta += f" ({signed(cell.mean[extra_value.metric] - extra_value.mean, extra_value.decimals)})"
                delta_cells.append(delta)
            reference_preset = next(c.preset for c in published.values() if c is not None)
            body.append([dataset, f"{label} — {reference.name} ({reference.source})", reference_preset, *paper_cells])
            body.append([dataset, f"{label} — Δ (measured − {reference.name})", preset, *delta_cells])
            bold += [[False] * (3 + len(dims)) for _ in range(2)]
    header = ["dataset", "model", "preset", *[f"d={d}" for d in dims]]
    found_metric = find_metric(metric)
    m = found_metric.label if found_metric is not None else metric
    caption = f"{m} mean ± std over folds" + (" (ER mean)" if extra else "") + f"; best {m} per dataset in bold"
    notes = reference_notes(rows, references)
    if any(r.partial for r in rows):
        notes = [PARTIAL_NOTE, *notes]
    notes = [*data_version_notes(rows), *notes]  # first: rows of one dataset on different data
    return Table("probseg-bench (Table II layout)", header, body, bold, caption, notes)


def pivot_dicts(rows: list[LeaderboardRow], metric: str = "ewd",
                references: list[ReferenceTable] | None = None) -> list[dict[str, Any]]:
    """The pivot as flat dicts (for csv / json): dataset, model, preset, and per latent dimension d
    ``<metric>_mean_d<d>``, ``<metric>_std_d<d>`` (and ``er_mean_d<d>`` with EWD). With ``references``, after those,
    per reference publishing the metric and per d: ``<name>_<metric>_mean_d<d>``, ``<name>_<metric>_std_d<d>`` (and
    ``<name>_er_mean_d<d>``), ``delta_<metric>_d<d>`` (and ``delta_er_d<d>``), None where no value matches."""
    pivot_table(rows, metric, references)  # the same consistency check
    references = [r for r in references or [] if metric in r.metrics]
    extra = "er" if metric == "ewd" else None
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault((r.dataset_label, r.label, r.preset),
                               {"dataset": r.dataset_label, "model": r.label, "preset": r.preset})
        d = r.latent_dim
        entry[f"{metric}_mean_d{d}"] = _finite(r.mean.get(metric))
        entry[f"{metric}_std_d{d}"] = r.std.get(metric)
        if extra:
            entry[f"{extra}_mean_d{d}"] = _finite(r.mean.get(extra))
        for reference in references:
            cell = match_reference(r, reference)
            shown: dict[str, PublishedValue | None] = {}
            for m in (metric, extra) if extra else (metric,):
                value = None if cell is None else cell.values.get(m)
                if _finite(r.mean.get(m)) is None:  # only beside a measured value of the same n
                    value = None
                shown[m] = value
                entry[f"{reference.name}_{m}_mean_d{d}"] = None if value is None else value.mean
                if m == metric:
                    entry[f"{reference.name}_{m}_std_d{d}"] = None if value is None else value.std
            for m, value in shown.items():
                measured = _finite(r.mean.get(m))
                entry[f"delta_{m}_d{d}"] = None if value is None or measured is None else measured - value.mean
    return list(out.values())



def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None



__all__ = ["pivot_dicts", "pivot_metric", "pivot_table"]
