"""Leaderboard: records aggregated over folds per (model, dataset, latent dim, configuration).

Each row gives mean and standard deviation over folds (sample standard deviation, ddof = 1; None with one
fold) of the fold-level metrics (a fold's metric is the mean over its test images): the catalogue's ranked metrics,
then the ones it only shows (:mod:`probseg_bench.metrics.catalogue`; built in: GED, HM-IoU, EWD, ER ranked, the
sample and annotator diversity shown). The best row per dataset (among rows of the same preset) is marked for each
ranked metric, in the metric's direction (built in: GED lower, HM-IoU higher, EWD lower, ER higher, the seed
paper's reading: a more homogeneous latent space). Each other row evaluated on the same split as the best row gets
``p_vs_best``: the Wilcoxon signed-rank p-value of its per-image test metric (default EWD) against the best row's,
Holm-corrected over the rows of that dataset (see :mod:`probseg_bench.comparison`).

The pivot layout reproduces the seed paper's Table II: rows dataset x model, one column per latent dimension
with "EWD ± std (ER)".

With a reference table (:mod:`probseg_bench.references`, ``--reference paper``) every format also shows the
published EWD and ER beside the measured ones and the difference measured − published, for the rows that
:func:`match_reference` pairs with a published cell; published values are never bold and never ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probseg_bench.comparison import holm, paired_p_value
from probseg_bench.errors import ProbsegError
from probseg_bench.metrics.catalogue import leaderboard_metrics, ranked_metrics
from probseg_bench.references import ReferenceTable, ReferenceValue
from probseg_bench.results import FoldRecord
from probseg_bench.tables import Table, render_csv, render_json, render_latex, render_markdown, render_rich

FORMATS = ("table", "markdown", "csv", "json", "latex")
CONFIG_PREFIX = 8  # characters of the configuration hash shown in tables (select with --config-hash PREFIX)
NOT_APPLICABLE = "–"
"""The cell of a metric that does not apply to a row's model (:meth:`LeaderboardRow.not_applicable`)."""

PARTIAL_NOTE = ("folds k/n: a partial row (run with --fold), never in bold while a row of the same dataset and "
                "preset has every fold")


@dataclass
class LeaderboardRow:
    """One (model, dataset, latent dim, configuration) with its fold statistics."""

    model: str
    dataset: str
    dataset_label: str
    latent_dim: int
    variant: str
    preset: str
    seed: int
    config: str
    folds: int
    expected_folds: int
    n_test: int
    mean: dict[str, float]
    std: dict[str, float | None]
    best: set[str] = field(default_factory=set)
    p_vs_best: float | None = None
    unpaired: str | None = None  # why a row that is not the best has no p_vs_best (another split, no common fold)
    latent_size: int | None = None  # the prior's number of dimensions over all levels (ER is ranked within it)
    records: list[FoldRecord] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """The model name with what differs from its and the preset's defaults (the variant, and the seed when
        not 0), e.g. ``spunet (regularizer=mmd)``, ``spunet (epochs=2, seed=1)``."""
        parts = [self.variant] if self.variant else []
        if self.seed != 0:
            parts.append(f"seed={self.seed}")
        return f"{self.model} ({', '.join(parts)})" if parts else self.model

    def not_applicable(self, metric: str) -> bool:
        """Whether ``metric`` does not apply to the row's model: every record stores it as None (undefined on every
        test image, e.g. the effective rank of a model without latent prior); shown as a dash, never best."""
        return bool(self.records) and all(metric in r.metrics and r.metrics[metric] is None for r in self.records)

    @property
    def partial(self) -> bool:
        """Whether the row has fewer folds than its protocol (a run with ``--fold``)."""
        return self.folds < self.expected_folds

    @property
    def folds_label(self) -> str:
        """``"3"`` for a complete row, ``"1/3"`` for a partial one."""
        return f"{self.folds}/{self.expected_folds}" if self.partial else str(self.folds)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: model, dataset, latent_dim, folds, <m>_mean, <m>_std (the catalogue's leaderboard metrics:
        the ranked ones, then the shown ones such as the sample / annotator diversity), plus label (model with
        variant and seed), dataset_label, variant, preset, seed, config (the full configuration hash),
        expected_folds, partial, n_test, best (the metrics this row is best at), p_vs_best and unpaired (why
        p_vs_best is null for a row that is not the best, else null)."""
        out: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "latent_dim": self.latent_dim, "folds": self.folds,
        }
        for metric in leaderboard_metrics():
            key = metric.name
            out[f"{key}_mean"] = self.mean[key] if math.isfinite(self.mean[key]) else None
            out[f"{key}_std"] = self.std[key]
        out.update(label=self.label, dataset_label=self.dataset_label, variant=self.variant, preset=self.preset,
                   seed=self.seed, config=self.config, expected_folds=self.expected_folds, partial=self.partial,
                   n_test=self.n_test, best=sorted(self.best), p_vs_best=self.p_vs_best, unpaired=self.unpaired)
        return out


def dataset_label(record: FoldRecord) -> str:
    """The dataset name with its non-default parameters, e.g. ``qubiq-brain-tumor (task=2)``."""
    from probseg_bench.plugins import get_plugins

    params = record.dataset_params
    try:
        defaults = {p.name: p.default for p in get_plugins().datasets.get(record.dataset).parameters}
    except ProbsegError:  # a record of a plugin that is not installed here: show every parameter
        defaults = {}
    shown = {k: v for k, v in sorted(params.items()) if defaults.get(k, object()) != v}
    return f"{record.dataset} ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else record.dataset


def build_leaderboard(records: list[FoldRecord], test_metric: str = "ewd") -> list[LeaderboardRow]:
    """Aggregate fold records into rows sorted by dataset, model, latent dim (datasets run with other dataset
    parameters are other rows, labelled by :func:`dataset_label`), mark the best rows and compute
    ``p_vs_best`` for ``test_metric`` (one of the ranked metrics). A metric that no record of a row has (a record
    written before the metric was in the catalogue) is NaN there: shown empty, never best."""
    ranked_names = [m.name for m in ranked_metrics()]
    if test_metric not in ranked_names:
        raise ProbsegError(f"--test-metric: expected one of {', '.join(ranked_names)}")
    groups: dict[tuple[str, str, int, str], list[FoldRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.model, r.latent_dim, r.config_hash), []).append(r)
    rows = []
    for (dataset, model, d, config), recs in sorted(groups.items()):
        mean: dict[str, float] = {}
        std: dict[str, float | None] = {}
        for key in (m.name for m in leaderboard_metrics()):
            # NaN for a record written before the metric was in the catalogue
            values = np.array([r.metrics.get(key, np.nan) for r in recs], dtype=np.float64)
            mean[key] = float(values.mean())
            std[key] = float(values.std(ddof=1)) if len(values) > 1 and np.isfinite(values).all() else None
        rows.append(LeaderboardRow(
            model=model, dataset=dataset, dataset_label=dataset_label(recs[0]), latent_dim=d,
            variant=recs[0].variant, preset=recs[0].preset, seed=recs[0].seed, config=config, folds=len(recs),
            expected_folds=int(recs[0].protocol.get("n_folds", len(recs))), n_test=len(recs[0].test_ids),
            mean=mean, std=std, records=recs,
            # a record written before latent_size was stored: a one-level model, whose size is its latent dim
            latent_size=recs[0].latent_size if recs[0].latent_size is not None else d,
        ))
    pools: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        pools.setdefault((row.dataset_label, row.preset), []).append(row)
    for pool in pools.values():
        ranked = [row for row in pool if not row.partial] or pool  # partial rows only when nothing is complete
        for metric in ranked_metrics():
            key = metric.name
            # a metric bounded by the latent size (ER) is ranked among the rows of one latent size only
            cohorts: dict[int | None, list[LeaderboardRow]] = {}
            for row in ranked:
                cohorts.setdefault(row.latent_size if metric.per_latent_size else None, []).append(row)
            for cohort in cohorts.values():
                finite = [row.mean[key] for row in cohort if math.isfinite(row.mean[key])]
                if not finite or (metric.per_latent_size and len(finite) == 1 and len(ranked) > 1):
                    continue  # nothing to rank, or rows to rank but none other of this latent size: no bold
                target = (max if metric.higher_is_better else min)(finite)
                for row in cohort:
                    if math.isclose(row.mean[key], target, rel_tol=0, abs_tol=1e-12):
                        row.best.add(key)
        best = next((row for row in ranked if test_metric in row.best), None)
        if best is None:  # no row of the pool has the test metric: nothing to pair with
            for row in pool:
                row.unpaired = f"no row has {test_metric}"
            continue
        best_folds = {r.fold for r in best.records}
        paired = [row for row in pool if row is not best
                  and {r.split_hash for r in row.records} == {r.split_hash for r in best.records}
                  and best_folds & {r.fold for r in row.records}]
        for row in pool:
            if row is not best and row not in paired:
                same_split = {r.split_hash for r in row.records} == {r.split_hash for r in best.records}
                row.unpaired = ("no fold in common with the best row" if same_split
                                else "another split than the best row")
        p_values: list[float] = []
        for row in list(paired):
            try:
                p_values.append(paired_p_value(row.records, best.records, test_metric, row.label, best.label))
            except ProbsegError as exc:  # e.g. no test image with the metric defined in both
                paired.remove(row)
                row.unpaired = str(exc)
        for row, p in zip(paired, holm(p_values), strict=True):
            row.p_vs_best = p
    return rows


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _pm_or_empty(mean: float, std: float | None) -> str:
    """:func:`_pm`, or empty for a metric the row's records do not have."""
    return _pm(mean, std) if math.isfinite(mean) else ""


def _p(p: float | None) -> str:
    return "" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


# -------------------------------------------------------------------------------------------------- references
DELTA_DECIMALS = {"ewd": 3, "er": 2}  # the paper's precision (Table II)


def match_reference(row: LeaderboardRow, reference: ReferenceTable | None) -> ReferenceValue | None:
    """The published value comparable with ``row``, or None.

    A row matches a reference cell when its dataset name, model and latent dim are those of the cell, its
    dataset has no non-default dataset parameters (``dataset_label == dataset``), it has no variant (``variant == ""``:
    the model's default hyperparameters and no protocol override such as ``--epochs``) and it was run under the
    reference's preset (``paper``): a quick-preset row is not comparable with a published value and gets none.
    """
    if reference is None or row.variant or row.dataset_label != row.dataset:
        return None
    if row.preset != reference.protocol.get("preset", row.preset):
        return None
    return reference.lookup(row.dataset, row.model, row.latent_dim)


def signed(value: float, decimals: int) -> str:
    """``value`` with an explicit sign and a true minus sign, e.g. ``+0.012``, ``−0.30`` (never ``−0.000``)."""
    text = f"{value:+.{decimals}f}"
    if float(text) == 0:
        text = f"+{0:.{decimals}f}"
    return text.replace("-", "−")


def reference_fields(row: LeaderboardRow, reference: ReferenceTable | None) -> dict[str, Any]:
    """The JSON keys a reference adds to a row: ``reference`` (name, ewd_mean, ewd_std, er_mean, er_std of the
    published cell, or None when the row has none), ``delta_ewd`` and ``delta_er`` (measured mean − published
    mean, or None)."""
    value = match_reference(row, reference)
    if value is None or reference is None:
        return {"reference": None, "delta_ewd": None, "delta_er": None}
    return {
        "reference": {"name": reference.name, "ewd_mean": value.ewd_mean, "ewd_std": value.ewd_std,
                      "er_mean": value.er_mean, "er_std": value.er_std},
        "delta_ewd": row.mean["ewd"] - value.ewd_mean,
        "delta_er": row.mean["er"] - value.er_mean,
    }


def reference_gap(rows: list[LeaderboardRow], reference: ReferenceTable | None) -> str | None:
    """One line when there are rows but none of them has a published value (e.g. only ``lidc-sample`` rows),
    naming what the reference reports; None otherwise."""
    if reference is None or not rows or any(match_reference(r, reference) for r in rows):
        return None
    return (f"no published value for these rows: the {reference.name} ({reference.source}) reports "
            f"{reference.coverage()}, default hyperparameters and dataset parameters")


def leaderboard_table(rows: list[LeaderboardRow], test_metric: str = "ewd",
                      reference: ReferenceTable | None = None) -> Table:
    """The standard leaderboard layout. With ``reference``: after the EWD and ER columns, the published value
    ("EWD (paper)", mean ± std as printed) and the difference ("Δ EWD", measured − published, signed), empty
    for rows without a published value (:func:`match_reference`)."""
    columns = leaderboard_metrics()
    header = ["dataset", "model", "d", "preset", "config", "folds", "test images"]
    for metric in columns:
        header.append(f"{metric.label} {metric.arrow}" if metric.ranked else metric.label)
        if metric.ranked and reference is not None and metric.name in DELTA_DECIMALS:
            header += [f"{metric.label} ({reference.name})", f"Δ {metric.label}"]
    header.append(f"p vs best ({test_metric})")
    body, bold = [], []
    for r in rows:
        cells = [r.dataset_label, r.label, str(r.latent_dim), r.preset, r.config[:CONFIG_PREFIX], r.folds_label,
                 str(r.n_test)]
        flags = [False] * len(cells)
        value = match_reference(r, reference)
        for metric in columns:
            key = metric.name
            cells.append(NOT_APPLICABLE if r.not_applicable(key) else _pm_or_empty(r.mean[key], r.std[key]))
            flags.append(key in r.best)  # only ranked metrics are ever best
            if metric.ranked and reference is not None and key in DELTA_DECIMALS:
                if value is None:
                    cells += ["", ""]
                else:
                    printed, published = ((value.ewd_printed, value.ewd_mean) if key == "ewd"
                                          else (value.er_printed, value.er_mean))
                    cells += [printed, signed(r.mean[key] - published, DELTA_DECIMALS[key])]
                flags += [False, False]
        cells.append(_p(r.p_vs_best))
        flags.append(False)
        body.append(cells)
        bold.append(flags)
    caption = ("mean ± std over folds (ddof=1); ↓ lower / ↑ higher is better; best per dataset in bold (ER: "
               "among rows of one latent size, none alone); div.: mean 1 - IoU over distinct pairs of a test "
               "image's samples / annotations (not ranked); p: "
               "Wilcoxon signed-rank over test images vs. the best row, Holm-corrected")
    notes = reference.footnotes() if reference is not None else []
    if any(r.partial for r in rows):
        notes = [PARTIAL_NOTE, *notes]
    unpaired = sorted({f"{r.label} on {r.dataset_label}, d={r.latent_dim}: {r.unpaired}" for r in rows if r.unpaired})
    if unpaired:
        notes = [f"p empty (not paired with the best row): {'; '.join(unpaired)}", *notes]
    return Table("probseg-bench leaderboard", header, body, bold, caption, notes)


def _check_reference_metrics(reference: ReferenceTable | None, metric: str, extra: str) -> None:
    if reference is not None and (metric, extra) != ("ewd", "er"):
        raise ProbsegError(f"--reference {reference.name}: the published values are EWD and ER; the pivot must "
                           f"show ewd (er), not {metric} ({extra})")


def pivot_table(rows: list[LeaderboardRow], metric: str = "ewd", extra: str = "er",
                reference: ReferenceTable | None = None) -> Table:
    """The seed paper's Table II: rows (dataset, model), columns latent dimensions, cells 'EWD ± std (ER)'; per
    dataset the best EWD over all cells in bold.

    With ``reference``: under each model row with at least one published value (:func:`match_reference`), a
    row "<model> — <name> (<source>)" with the published cells as printed ("0.451 ± 0.001 (1.68)", preset
    column: the reference's preset) and a row "<model> — Δ (measured − <name>)" with "+0.012 (−0.30)"; cells
    without a published value stay empty; these rows are never bold.

    Raises:
        ProbsegError: two configurations of one model and latent dim in one dataset (filter them first); a
            reference with a metric other than ewd / er.
    """
    _check_reference_metrics(reference, metric, extra)
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
    body, bold = [], []
    for (dataset, preset, label), by_dim in cells.items():
        row_cells = [dataset, label, preset]
        flags = [False, False, False]
        for d in dims:
            cell = by_dim.get(d)
            row_cells.append("" if cell is None else
                             f"{_pm(cell.mean[metric], cell.std[metric])} ({cell.mean[extra]:.2f})"
                             + (f" [{cell.folds_label} folds]" if cell.partial else ""))
            flags.append(cell is not None and metric in cell.best)
        body.append(row_cells)
        bold.append(flags)
        if reference is None:
            continue
        published = {d: match_reference(cell, reference) for d, cell in by_dim.items()}
        if not any(published.values()):
            continue
        paper_cells, delta_cells = [], []
        for d in dims:
            value, cell = published.get(d), by_dim.get(d)
            if value is None or cell is None:
                paper_cells.append("")
                delta_cells.append("")
                continue
            paper_cells.append(f"{value.ewd_printed} ({value.er_mean_printed})")
            delta_cells.append(f"{signed(cell.mean['ewd'] - value.ewd_mean, DELTA_DECIMALS['ewd'])} "
                               f"({signed(cell.mean['er'] - value.er_mean, DELTA_DECIMALS['er'])})")
        reference_preset = str(reference.protocol.get("preset", ""))
        body.append([dataset, f"{label} — {reference.name} ({reference.source})", reference_preset, *paper_cells])
        body.append([dataset, f"{label} — Δ (measured − {reference.name})", preset, *delta_cells])
        bold += [[False] * (3 + len(dims)) for _ in range(2)]
    header = ["dataset", "model", "preset", *[f"d={d}" for d in dims]]
    m, e = metric.upper(), extra.upper()
    caption = f"{m} mean ± std over folds ({e} mean); best {m} per dataset in bold"
    notes = reference.footnotes() if reference is not None else []
    if any(r.partial for r in rows):
        notes = [PARTIAL_NOTE, *notes]
    return Table("probseg-bench (Table II layout)", header, body, bold, caption, notes)


def pivot_dicts(rows: list[LeaderboardRow], metric: str = "ewd", extra: str = "er",
                reference: ReferenceTable | None = None) -> list[dict[str, Any]]:
    """The pivot as flat dicts (for csv / json): dataset, model, preset, and per latent dimension d
    ``<metric>_mean_d<d>``, ``<metric>_std_d<d>``, ``<extra>_mean_d<d>``. With ``reference``, after those, per
    d: ``paper_ewd_mean_d<d>``, ``paper_ewd_std_d<d>``, ``paper_er_mean_d<d>`` (the published cell) and
    ``delta_ewd_d<d>``, ``delta_er_d<d>`` (measured − published), None where no published value matches."""
    pivot_table(rows, metric, extra, reference)  # the same consistency check
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault((r.dataset_label, r.label, r.preset),
                               {"dataset": r.dataset_label, "model": r.label, "preset": r.preset})
        d = r.latent_dim
        entry[f"{metric}_mean_d{d}"] = r.mean[metric]
        entry[f"{metric}_std_d{d}"] = r.std[metric]
        entry[f"{extra}_mean_d{d}"] = r.mean[extra]
        if reference is not None:
            value = match_reference(r, reference)
            entry.update({
                f"paper_ewd_mean_d{d}": None if value is None else value.ewd_mean,
                f"paper_ewd_std_d{d}": None if value is None else value.ewd_std,
                f"paper_er_mean_d{d}": None if value is None else value.er_mean,
                f"delta_ewd_d{d}": None if value is None else r.mean["ewd"] - value.ewd_mean,
                f"delta_er_d{d}": None if value is None else r.mean["er"] - value.er_mean,
            })
    return list(out.values())


def row_dicts(rows: list[LeaderboardRow], reference: ReferenceTable | None = None,
              flat: bool = False) -> list[dict[str, Any]]:
    """The standard layout as dicts: :meth:`LeaderboardRow.as_dict`, plus with ``reference`` the keys of
    :func:`reference_fields`; ``flat`` (for csv) spreads ``reference`` into ``reference_name``,
    ``reference_ewd_mean``, ``reference_ewd_std``, ``reference_er_mean``, ``reference_er_std``."""
    out = []
    for r in rows:
        d = r.as_dict()
        if reference is not None:
            extra = reference_fields(r, reference)
            if flat:
                published = extra.pop("reference") or {}
                d.update({f"reference_{k}": published.get(k)
                          for k in ("name", "ewd_mean", "ewd_std", "er_mean", "er_std")})
            d.update(extra)
        out.append(d)
    return out


def render(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd",
           reference: ReferenceTable | None = None) -> Any:
    """Rows in ``fmt`` (table -> a rich Table object, others -> str), in the standard or pivot layout, with the
    published values of ``reference`` beside the measured ones when given (see :func:`leaderboard_table`,
    :func:`pivot_table`, :func:`pivot_dicts`, :func:`row_dicts`).

    Raises:
        ProbsegError: unknown format.
    """
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in ("csv", "json"):
        if pivot:
            dicts = pivot_dicts(rows, reference=reference)
        else:
            dicts = row_dicts(rows, reference, flat=fmt == "csv")
        return render_csv(dicts) if fmt == "csv" else render_json(dicts)
    table = pivot_table(rows, reference=reference) if pivot else leaderboard_table(rows, test_metric, reference)
    return {"table": render_rich, "markdown": render_markdown, "latex": render_latex}[fmt](table)
