"""Leaderboard: records aggregated over folds per (model, dataset, latent dim, configuration).

Each row gives mean and standard deviation over folds (sample standard deviation, ddof = 1; None with one
fold) of the fold-level metrics (a fold's metric is the mean over its test images): the catalogue's ranked metrics,
then the ones it only shows (:mod:`probseg_bench.metrics.catalogue`; built in: GED, HM-IoU, EWD, ER ranked, the
sample and annotator diversity shown). The best row per dataset (among rows of the same preset) is marked for each
ranked metric, in the metric's direction (built in: GED lower, HM-IoU higher, EWD lower, ER higher, the seed
paper's reading: a more homogeneous latent space). Each other row evaluated on the same split as the best row gets
``p_vs_best``: the Wilcoxon signed-rank p-value of its per-image test metric (default EWD) against the best row's,
Holm-corrected over the rows of that dataset (see :mod:`probseg_bench.comparison`).

Rows are never ranked or paired across versions of a dataset's data: where rows of one dataset were computed on
data with different content fingerprints (:mod:`probseg_bench.data.fingerprint`; a record stored before
fingerprints is the version ``unrecorded``), each such row's dataset reads ``<dataset> [data <fingerprint>]``, the
versions are ranked apart, and a footnote (table, markdown, latex; ``data_versions`` > 1 in csv / json) names them.

The pivot layout reproduces the seed paper's Table II: rows dataset x model, one column per latent dimension
with "EWD ± std (ER)".

Rows of a preset with ``sample_counts`` (the LIDC protocols) also have GED_n and HM-IoU_n columns (``ged_16``,
``hm_iou_100``, ...: ranked like their base metric); every row shows the sampling time per test image (the
evaluation's sampling pass, ``n`` samples per image, on the run's device; not ranked).

With reference tables (:mod:`probseg_bench.references`, ``--reference paper``, ``--reference literature``) every
format also shows the published values beside the measured ones and the difference measured − published, for the
rows that :func:`match_reference` pairs with a published cell; published values are never bold and never ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probseg_bench.comparison import holm, paired_p_value
from probseg_bench.data.fingerprint import short
from probseg_bench.errors import ProbsegError
from probseg_bench.metrics.catalogue import (
    Metric,
    find_metric,
    leaderboard_metrics,
    ranked_metrics,
    sample_count_metrics,
)
from probseg_bench.published import paired_cell, published_columns, reference_fields, reference_notes, signed
from probseg_bench.references import ReferenceTable
from probseg_bench.results import FoldRecord
from probseg_bench.tables import Table, render_csv, render_json, render_latex, render_markdown, render_rich

FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
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
    sampling_s_per_image: float | None = None  # mean over folds of the sampling seconds per test image
    sampling_samples: int | None = None  # the samples per image of that sampling pass
    data_fingerprint: str | None = None  # the data's content fingerprint (None: stored before fingerprints)
    data_versions: int = 1  # versions of this dataset's data among the table's rows (> 1: marked, ranked apart)
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

    def as_dict(self, columns: list[Metric] | None = None) -> dict[str, Any]:
        """The JSON form: model, dataset, latent_dim, folds, <m>_mean, <m>_std (``columns``, by default the
        catalogue's leaderboard metrics: the ranked ones, then the shown ones such as the sample / annotator
        diversity; a table of rows with GED_n / HM-IoU_n adds those), plus label (model with variant and seed),
        dataset_label, variant, preset, seed, config (the full configuration hash), expected_folds, partial,
        n_test, sampling_s_per_image and sampling_samples, best (the metrics this row is best at), p_vs_best and
        unpaired (why p_vs_best is null for a row that is not the best, else null), data_fingerprint (the 64-hex
        content fingerprint of the data, null for records stored before fingerprints) and data_versions (how many
        versions of the row's dataset the table's rows were computed on: above 1, ``dataset_label`` ends in
        ``[data <fingerprint>]``, see :func:`mark_data_versions`)."""
        out: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "latent_dim": self.latent_dim, "folds": self.folds,
        }
        for metric in columns if columns is not None else leaderboard_metrics():
            key = metric.name
            value = self.mean.get(key, math.nan)
            out[f"{key}_mean"] = value if math.isfinite(value) else None
            out[f"{key}_std"] = self.std.get(key)
        out.update(label=self.label, dataset_label=self.dataset_label, variant=self.variant, preset=self.preset,
                   seed=self.seed, config=self.config, expected_folds=self.expected_folds, partial=self.partial,
                   n_test=self.n_test, sampling_s_per_image=self.sampling_s_per_image,
                   sampling_samples=self.sampling_samples, best=sorted(self.best), p_vs_best=self.p_vs_best,
                   unpaired=self.unpaired, data_fingerprint=self.data_fingerprint, data_versions=self.data_versions)
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


def table_metrics(rows: list[LeaderboardRow]) -> list[Metric]:
    """The metric columns of a table of ``rows``: the catalogue's leaderboard metrics, then GED_n and HM-IoU_n for
    each n some row has (:func:`probseg_bench.metrics.catalogue.sample_count_metrics`)."""
    present = {k for r in rows for k, v in r.mean.items() if math.isfinite(v)}
    return leaderboard_metrics() + sample_count_metrics(present)


def _sampling(recs: list[FoldRecord], n_test: int) -> tuple[float | None, int | None]:
    """(mean over folds of sampling seconds / test image, samples per image) of a row's records; None for records
    without a sampling time."""
    seconds = [r.timings["sampling_s"] / n_test for r in recs if "sampling_s" in r.timings and n_test]
    if not seconds:
        return None, None
    drawn = recs[0].timings.get("samples_per_image", recs[0].protocol.get("n_eval_samples"))
    return float(np.mean(seconds)), None if drawn is None else int(drawn)


def build_leaderboard(records: list[FoldRecord], test_metric: str = "ewd") -> list[LeaderboardRow]:
    """Aggregate fold records into rows sorted by dataset, model, latent dim (datasets run with other dataset
    parameters are other rows, labelled by :func:`dataset_label`), mark the best rows and compute
    ``p_vs_best`` for ``test_metric`` (a ranked metric: one of the catalogue's, or a GED_n / HM-IoU_n the records
    have). A metric that no record of a row has (a record written before the metric was in the catalogue) is NaN
    there: shown empty, never best."""
    per_n = sample_count_metrics({k for r in records for k in r.metrics})
    ranked = ranked_metrics() + per_n
    chosen = find_metric(test_metric)
    if chosen is None or not chosen.ranked:
        raise ProbsegError(f"--test-metric: expected one of {', '.join(m.name for m in ranked)}")
    groups: dict[tuple[str, str, int, str], list[FoldRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.model, r.latent_dim, r.config_hash), []).append(r)
    rows = []
    for (dataset, model, d, config), recs in sorted(groups.items()):
        mean: dict[str, float] = {}
        std: dict[str, float | None] = {}
        for key in (m.name for m in leaderboard_metrics() + per_n):
            # NaN for a record written before the metric was in the catalogue
            values = np.array([r.metrics.get(key, np.nan) for r in recs], dtype=np.float64)
            mean[key] = float(values.mean())
            std[key] = float(values.std(ddof=1)) if len(values) > 1 and np.isfinite(values).all() else None
        n_test = len(recs[0].test_ids)
        sampling, drawn = _sampling(recs, n_test)
        rows.append(LeaderboardRow(
            model=model, dataset=dataset, dataset_label=dataset_label(recs[0]), latent_dim=d,
            variant=recs[0].variant, preset=recs[0].preset, seed=recs[0].seed, config=config, folds=len(recs),
            expected_folds=int(recs[0].protocol.get("n_folds", len(recs))), n_test=n_test,
            mean=mean, std=std, records=recs, sampling_s_per_image=sampling, sampling_samples=drawn,
            # a record written before latent_size was stored: a one-level model, whose size is its latent dim
            latent_size=recs[0].latent_size if recs[0].latent_size is not None else d,
            data_fingerprint=recs[0].data_fingerprint,
        ))
    mark_data_versions(rows)  # rows of one dataset on other data: other labels, so other ranking pools
    pools: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        pools.setdefault((row.dataset_label, row.preset), []).append(row)
    for pool in pools.values():
        complete = [row for row in pool if not row.partial] or pool  # partial rows only when nothing is complete
        for metric in ranked:
            key = metric.name
            # a metric bounded by the latent size (ER) is ranked among the rows of one latent size only
            cohorts: dict[int | None, list[LeaderboardRow]] = {}
            for row in complete:
                cohorts.setdefault(row.latent_size if metric.per_latent_size else None, []).append(row)
            for cohort in cohorts.values():
                finite = [row.mean[key] for row in cohort if math.isfinite(row.mean[key])]
                if not finite or (metric.per_latent_size and len(finite) == 1 and len(complete) > 1):
                    continue  # nothing to rank, or rows to rank but none other of this latent size: no bold
                target = (max if metric.higher_is_better else min)(finite)
                for row in cohort:
                    if math.isclose(row.mean[key], target, rel_tol=0, abs_tol=1e-12):
                        row.best.add(key)
        best = next((row for row in complete if test_metric in row.best), None)
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


def mark_data_versions(rows: list[LeaderboardRow]) -> None:
    """Where the rows of one dataset (one :func:`dataset_label`) were computed on more than one version of its data
    (different content fingerprints; a record stored before fingerprints counts as the version ``unrecorded``), set
    each such row's ``data_versions`` and append `` [data <first 8 hex>]`` to its ``dataset_label``: every format
    then shows the versions apart, and the best rows and p-values are taken within one version only."""
    versions: dict[str, set[str | None]] = {}
    for row in rows:
        versions.setdefault(row.dataset_label, set()).add(row.data_fingerprint)
    for row in rows:
        row.data_versions = len(versions[row.dataset_label])
        if row.data_versions > 1:
            row.dataset_label = f"{row.dataset_label} [data {short(row.data_fingerprint)}]"


def data_version_notes(rows: list[LeaderboardRow]) -> list[str]:
    """One footnote per dataset whose rows were computed on several versions of its data, naming each version's
    rows (see :func:`mark_data_versions`); none when every dataset has one version."""
    mixed: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        if row.data_versions > 1:
            base = row.dataset_label.rsplit(" [data ", 1)[0]
            mixed.setdefault(base, {}).setdefault(short(row.data_fingerprint), []).append(
                f"{row.label} d={row.latent_dim} (config {row.config[:CONFIG_PREFIX]})")
    notes = []
    for base, by_version in sorted(mixed.items()):
        listing = "; ".join(f"[data {fp}]{' (stored before data fingerprints)' if fp == short(None) else ''}: "
                            f"{', '.join(labels)}" for fp, labels in sorted(by_version.items()))
        notes.append(f"warning: {base} rows were computed on {len(by_version)} different versions of its data "
                     f"(content fingerprints), shown apart and never ranked or compared across them: {listing}; "
                     "rerun them on one version, or select one with --config-hash")
    return notes


def mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _pm_or_empty(mean: float, std: float | None) -> str:
    """:func:`mean_std`, or empty for a metric the row's records do not have."""
    return mean_std(mean, std) if math.isfinite(mean) else ""


def _p(p: float | None) -> str:
    return "" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _sampling_cell(row: LeaderboardRow) -> str:
    if row.sampling_s_per_image is None:
        return ""
    return f"{row.sampling_s_per_image:.3g}" + (f" (n={row.sampling_samples})" if row.sampling_samples else "")


def leaderboard_table(rows: list[LeaderboardRow], test_metric: str = "ewd",
                      references: list[ReferenceTable] | None = None) -> Table:
    """The standard leaderboard layout. With ``references``: after each metric column that a reference publishes,
    the published value ("EWD (paper)", "GED_16 (literature)", as printed) and the difference ("Δ EWD", measured −
    published, signed, at the publication's precision), empty for rows without a published value
    (:func:`match_reference`)."""
    references = references or []
    columns = table_metrics(rows)
    published = published_columns(columns, references)
    header = ["dataset", "model", "d", "preset", "config", "folds", "test images"]
    for metric in columns:
        header.append(f"{metric.label} {metric.arrow}" if metric.ranked else metric.label)
        for reference in published.get(metric.name, []):
            header += [f"{metric.label} ({reference.name})", f"Δ {metric.label}"]
    header += ["sampling s/image", f"p vs best ({test_metric})"]
    body, bold = [], []
    for r in rows:
        cells = [r.dataset_label, r.label, str(r.latent_dim), r.preset, r.config[:CONFIG_PREFIX], r.folds_label,
                 str(r.n_test)]
        flags = [False] * len(cells)
        paired = paired_cell(r, references)
        for metric in columns:
            key = metric.name
            mean = r.mean.get(key, math.nan)
            cells.append(NOT_APPLICABLE if r.not_applicable(key) else _pm_or_empty(mean, r.std.get(key)))
            flags.append(key in r.best)  # only ranked metrics are ever best
            for reference in published.get(key, []):
                value = paired[1].values.get(key) if paired is not None and paired[0] is reference else None
                if value is None or not math.isfinite(mean):  # only beside a measured value of the same n
                    cells += ["", ""]
                else:
                    delta = signed(mean - value.mean, value.decimals) if math.isfinite(mean) else ""
                    cells += [value.printed, delta]
                flags += [False, False]
        cells += [_sampling_cell(r), _p(r.p_vs_best)]
        flags += [False, False]
        body.append(cells)
        bold.append(flags)
    caption = ("mean ± std over folds (ddof=1; on a fixed split, over its training runs); ↓ lower / ↑ higher is "
               "better; best per dataset in bold (ER: among rows of one latent size, none alone); div.: mean 1 - "
               "IoU over distinct pairs of a test image's samples / annotations (not ranked); GED and HM-IoU with a "
               "sample count n: on the first n samples per test image; sampling s/image: seconds per test image for "
               "n samples on the run's device (not ranked); p: Wilcoxon signed-rank over test images vs. the best "
               "row, Holm-corrected")
    notes = reference_notes(rows, references)
    if any(r.partial for r in rows):
        notes = [PARTIAL_NOTE, *notes]
    unpaired = sorted({f"{r.label} on {r.dataset_label}, d={r.latent_dim}: {r.unpaired}" for r in rows if r.unpaired})
    if unpaired:
        notes = [f"p empty (not paired with the best row): {'; '.join(unpaired)}", *notes]
    notes = [*data_version_notes(rows), *notes]  # first: rows of one dataset on different data
    return Table("probseg-bench leaderboard", header, body, bold, caption, notes)


def row_dicts(rows: list[LeaderboardRow], references: list[ReferenceTable] | None = None,
              flat: bool = False) -> list[dict[str, Any]]:
    """The standard layout as dicts: :meth:`LeaderboardRow.as_dict` (the table's metric columns), plus with
    ``references`` the keys of :func:`reference_fields`; ``flat`` (for csv) spreads ``reference`` into
    ``reference_name`` and ``reference_<m>_mean`` / ``_std`` / ``_source`` per published metric."""
    columns = table_metrics(rows)
    published = list(published_columns(columns, references or []))
    out = []
    for r in rows:
        d = r.as_dict(columns)
        if references:
            extra = reference_fields(r, references, columns)
            if flat:
                cell = extra.pop("reference") or {}
                d["reference_name"] = cell.get("name")
                for m in published:
                    d.update({f"reference_{m}_{k}": cell.get(f"{m}_{k}") for k in ("mean", "std", "source")})
            d.update(extra)
        out.append(d)
    return out


def render(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd",
           references: list[ReferenceTable] | None = None, metric: str | None = None) -> Any:
    """Rows in ``fmt`` (table -> a rich Table object, others -> str; html: the page of
    :func:`probseg_bench.leaderboard_page.render_page`), in the standard or pivot layout (the pivot's
    metric: :func:`pivot_metric`), with the published values of ``references`` beside the measured ones when
    given (see :func:`leaderboard_table`, :func:`pivot_table`, :func:`pivot_dicts`, :func:`row_dicts`).

    Raises:
        ProbsegError: unknown format.
    """
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    from probseg_bench.pivot import pivot_dicts, pivot_metric, pivot_table

    references = references or []
    chosen = pivot_metric(rows, references, metric)
    if fmt == "html":  # one self-contained page, a table per dataset and preset
        from probseg_bench.leaderboard_page import render_page

        return render_page(rows, pivot, test_metric, references, chosen)
    if fmt in ("csv", "json"):
        if pivot:
            dicts = pivot_dicts(rows, chosen, references)
        else:
            dicts = row_dicts(rows, references, flat=fmt == "csv")
        return render_csv(dicts) if fmt == "csv" else render_json(dicts)
    table = pivot_table(rows, chosen, references) if pivot else leaderboard_table(rows, test_metric, references)
    return {"table": render_rich, "markdown": render_markdown, "latex": render_latex}[fmt](table)
