"""Leaderboard: records aggregated over folds per (model, dataset, latent dim, configuration).

Each row gives mean and standard deviation over folds (sample standard deviation, ddof = 1; None with one
fold) of the fold-level metrics (a fold's metric is the mean over its test images). The best row per dataset
(among rows of the same preset) is marked for each ranked metric: GED lower, HM-IoU higher, EWD lower,
ER higher (the seed paper's reading: a more homogeneous latent space). Each other row evaluated on the same
split as the best row gets ``p_vs_best``: the Wilcoxon signed-rank p-value of its per-image test metric
(default EWD) against the best row's, Holm-corrected over the rows of that dataset (see
:mod:`probseg_bench.comparison`).

The pivot layout reproduces the seed paper's Table II: rows dataset x model, one column per latent dimension
with "EWD ± std (ER)".
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probseg_bench.comparison import holm, paired_p_value
from probseg_bench.errors import ProbsegError
from probseg_bench.results import FoldRecord

# (key, label, higher is better)
RANKED_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ged", "GED", False),
    ("hm_iou", "HM-IoU", True),
    ("ewd", "EWD", False),
    ("er", "ER", True),
)
FORMATS = ("table", "markdown", "csv", "json", "latex")


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
    n_test: int
    mean: dict[str, float]
    std: dict[str, float | None]
    best: set[str] = field(default_factory=set)
    p_vs_best: float | None = None
    records: list[FoldRecord] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """The model name with its variant, e.g. ``spunet (regularizer=mmd)``."""
        return f"{self.model} ({self.variant})" if self.variant else self.model

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: model, dataset, latent_dim, folds, <m>_mean, <m>_std, plus dataset_label, variant,
        preset, seed, config, n_test, best (the metrics this row is best at) and p_vs_best."""
        out: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "latent_dim": self.latent_dim, "folds": self.folds,
        }
        for key, _, _ in RANKED_METRICS:
            out[f"{key}_mean"] = self.mean[key]
            out[f"{key}_std"] = self.std[key]
        out.update(dataset_label=self.dataset_label, variant=self.variant, preset=self.preset, seed=self.seed,
                   config=self.config, n_test=self.n_test, best=sorted(self.best), p_vs_best=self.p_vs_best)
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
    ``p_vs_best`` for ``test_metric`` (one of the ranked metrics)."""
    if test_metric not in {k for k, _, _ in RANKED_METRICS}:
        raise ProbsegError(f"--test-metric: expected one of {', '.join(k for k, _, _ in RANKED_METRICS)}")
    groups: dict[tuple[str, str, int, str], list[FoldRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.model, r.latent_dim, r.config_hash), []).append(r)
    rows = []
    for (dataset, model, d, config), recs in sorted(groups.items()):
        mean: dict[str, float] = {}
        std: dict[str, float | None] = {}
        for key, _, _ in RANKED_METRICS:
            values = np.array([r.metrics[key] for r in recs], dtype=np.float64)
            mean[key] = float(values.mean())
            std[key] = float(values.std(ddof=1)) if len(values) > 1 else None
        rows.append(LeaderboardRow(
            model=model, dataset=dataset, dataset_label=dataset_label(recs[0]), latent_dim=d,
            variant=recs[0].variant, preset=recs[0].preset, seed=recs[0].seed, config=config, folds=len(recs),
            n_test=len(recs[0].test_ids), mean=mean, std=std, records=recs,
        ))
    pools: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        pools.setdefault((row.dataset_label, row.preset), []).append(row)
    for pool in pools.values():
        for key, _, higher in RANKED_METRICS:
            target = (max if higher else min)(row.mean[key] for row in pool)
            for row in pool:
                if math.isclose(row.mean[key], target, rel_tol=0, abs_tol=1e-12):
                    row.best.add(key)
        best = next(row for row in pool if test_metric in row.best)
        paired = [row for row in pool if row is not best
                  and {r.split_hash for r in row.records} == {r.split_hash for r in best.records}]
        p_values = [paired_p_value(row.records, best.records, test_metric) for row in paired]
        for row, p in zip(paired, holm(p_values), strict=True):
            row.p_vs_best = p
    return rows


# ---------------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A rendered-format-neutral table: header cells, body cells (plain text), bold flags."""

    title: str
    header: list[str]
    body: list[list[str]]
    bold: list[list[bool]]
    caption: str


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _p(p: float | None) -> str:
    return "" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def leaderboard_table(rows: list[LeaderboardRow], test_metric: str = "ewd") -> Table:
    """The standard leaderboard layout."""
    arrows = [f"{label} {'↑' if higher else '↓'}" for _, label, higher in RANKED_METRICS]
    header = ["dataset", "model", "d", "preset", "folds", "test images", *arrows, f"p vs best ({test_metric})"]
    body, bold = [], []
    for r in rows:
        cells = [r.dataset_label, r.label, str(r.latent_dim), r.preset, str(r.folds), str(r.n_test)]
        flags = [False] * len(cells)
        for key, _, _ in RANKED_METRICS:
            cells.append(_pm(r.mean[key], r.std[key]))
            flags.append(key in r.best)
        cells.append(_p(r.p_vs_best))
        flags.append(False)
        body.append(cells)
        bold.append(flags)
    caption = ("mean ± std over folds (ddof=1); ↓ lower / ↑ higher is better; best per dataset in bold; p: "
               "Wilcoxon signed-rank over test images vs. the best row, Holm-corrected")
    return Table("probseg-bench leaderboard", header, body, bold, caption)


def pivot_table(rows: list[LeaderboardRow], metric: str = "ewd", extra: str = "er") -> Table:
    """The seed paper's Table II: rows (dataset, model), columns latent dimensions, cells 'EWD ± std (ER)'; per
    dataset the best EWD over all cells in bold.

    Raises:
        ProbsegError: two configurations of one model and latent dim in one dataset (filter them first).
    """
    dims = sorted({r.latent_dim for r in rows})
    cells: dict[tuple[str, str, str], dict[int, LeaderboardRow]] = {}
    for r in rows:
        slot = cells.setdefault((r.dataset_label, r.preset, r.label), {})
        if r.latent_dim in slot:
            raise ProbsegError(
                f"--pivot: {r.label} on {r.dataset_label} has several configurations at d={r.latent_dim}; "
                "filter with --model / --preset"
            )
        slot[r.latent_dim] = r
    body, bold = [], []
    for (dataset, preset, label), by_dim in cells.items():
        row_cells = [dataset, label, preset]
        flags = [False, False, False]
        for d in dims:
            cell = by_dim.get(d)
            row_cells.append("" if cell is None else
                             f"{_pm(cell.mean[metric], cell.std[metric])} ({cell.mean[extra]:.2f})")
            flags.append(cell is not None and metric in cell.best)
        body.append(row_cells)
        bold.append(flags)
    header = ["dataset", "model", "preset", *[f"d={d}" for d in dims]]
    m, e = metric.upper(), extra.upper()
    caption = f"{m} mean ± std over folds ({e} mean); best {m} per dataset in bold"
    return Table("probseg-bench (Table II layout)", header, body, bold, caption)


def pivot_dicts(rows: list[LeaderboardRow], metric: str = "ewd", extra: str = "er") -> list[dict[str, Any]]:
    """The pivot as flat dicts (for csv / json): dataset, model, preset, and per latent dimension d
    ``<metric>_mean_d<d>``, ``<metric>_std_d<d>``, ``<extra>_mean_d<d>``."""
    pivot_table(rows, metric, extra)  # the same consistency check
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault((r.dataset_label, r.label, r.preset),
                               {"dataset": r.dataset_label, "model": r.label, "preset": r.preset})
        entry[f"{metric}_mean_d{r.latent_dim}"] = r.mean[metric]
        entry[f"{metric}_std_d{r.latent_dim}"] = r.std[metric]
        entry[f"{extra}_mean_d{r.latent_dim}"] = r.mean[extra]
    return list(out.values())


# ------------------------------------------------------------------------------------------------- renderers
def render_markdown(table: Table) -> str:
    """A Markdown table; bold cells as **x**."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for cells, flags in zip(table.body, table.bold, strict=True):
        lines.append("| " + " | ".join(f"**{c}**" if f else c for c, f in zip(cells, flags, strict=True)) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "<": r"$<$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters and write ±, arrows and < in math mode."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    for symbol, latex in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out


def render_latex(table: Table) -> str:
    """A ``tabular`` (booktabs rules) to ``\\input`` inside a ``table`` environment (needs booktabs)."""
    spec = "l" * 2 + "r" * (len(table.header) - 2)
    ascii_caption = table.caption.replace("±", "+-").replace("↓", "(lower)").replace("↑", "(higher)")
    lines = [f"% {ascii_caption}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in table.header) + " \\\\", "\\midrule"]
    for cells, flags in zip(table.body, table.bold, strict=True):
        lines.append(" & ".join(f"\\textbf{{{latex_escape(c)}}}" if f else latex_escape(c)
                                for c, f in zip(cells, flags, strict=True)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_rich(table: Table) -> Any:
    """A rich Table (bold cells bold); rich imported here."""
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(title=table.title, caption=table.caption)
    for i, h in enumerate(table.header):
        out.add_column(h, justify="left" if i < 2 or h == "preset" else "right")
    for cells, flags in zip(table.body, table.bold, strict=True):
        out.add_row(*[Text(c, style="bold" if f else "") for c, f in zip(cells, flags, strict=True)])
    return out


def render_csv(dicts: list[dict[str, Any]]) -> str:
    """CSV with the dict keys as columns (lists joined by ';', None as empty)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for d in dicts for k in d))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for d in dicts:
        writer.writerow({k: (";".join(v) if isinstance(v, list) else ("" if v is None else v)) for k, v in d.items()})
    return buf.getvalue()


def render_json(dicts: list[dict[str, Any]]) -> str:
    return json.dumps(dicts, indent=2) + "\n"


def render(rows: list[LeaderboardRow], fmt: str, pivot: bool = False, test_metric: str = "ewd") -> Any:
    """Rows in ``fmt`` (table -> a rich Table object, others -> str), in the standard or pivot layout.

    Raises:
        ProbsegError: unknown format.
    """
    if fmt not in FORMATS:
        raise ProbsegError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in ("csv", "json"):
        dicts = pivot_dicts(rows) if pivot else [r.as_dict() for r in rows]
        return render_csv(dicts) if fmt == "csv" else render_json(dicts)
    table = pivot_table(rows) if pivot else leaderboard_table(rows, test_metric)
    return {"table": render_rich, "markdown": render_markdown, "latex": render_latex}[fmt](table)
