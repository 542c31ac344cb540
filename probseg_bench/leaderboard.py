"""Leaderboard: records aggregated over folds per (model, dataset, latent dim, configuration).

Each row gives mean and standard deviation over folds (sample standard deviation, ddof = 1; None with one
fold) of the fold-level metrics (a fold's metric is the mean over its test images). The best row per dataset
(among rows of the same preset) is marked for each ranked metric: GED lower, HM-IoU higher, EWD lower,
ER higher (the seed paper's reading: a more homogeneous latent space).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probseg_bench.results import FoldRecord

# (key, label, higher is better)
RANKED_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ged", "GED", False),
    ("hm_iou", "HM-IoU", True),
    ("ewd", "EWD", False),
    ("er", "ER", True),
)
FORMATS = ("table", "markdown", "csv", "json")


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

    @property
    def label(self) -> str:
        """The model name with its variant, e.g. ``spunet (regularizer=mmd)``."""
        return f"{self.model} ({self.variant})" if self.variant else self.model

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: model, dataset, latent_dim, folds, <m>_mean, <m>_std, plus dataset_label, variant,
        preset, seed, config, n_test and best (the metrics this row is best at)."""
        out: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "latent_dim": self.latent_dim, "folds": self.folds,
        }
        for key, _, _ in RANKED_METRICS:
            out[f"{key}_mean"] = self.mean[key]
            out[f"{key}_std"] = self.std[key]
        out.update(dataset_label=self.dataset_label, variant=self.variant, preset=self.preset, seed=self.seed,
                   config=self.config, n_test=self.n_test,
                   best=sorted(self.best))
        return out


def dataset_label(record: FoldRecord) -> str:
    """The dataset name with its non-default parameters, e.g. ``qubiq-brain-tumor (task=2)``."""
    from probseg_bench.plugins import get_plugins

    params = record.dataset_params
    try:
        defaults = {p.name: p.default for p in get_plugins().datasets.get(record.dataset).parameters}
    except Exception:  # a record of a plugin that is not installed here: show every parameter
        defaults = {}
    shown = {k: v for k, v in sorted(params.items()) if defaults.get(k, object()) != v}
    return f"{record.dataset} ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else record.dataset


def build_leaderboard(records: list[FoldRecord]) -> list[LeaderboardRow]:
    """Aggregate fold records into rows sorted by dataset, model, latent dim (datasets run with other dataset
    parameters are other rows, labelled by :func:`dataset_label`)."""
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
            variant=recs[0].variant, preset=recs[0].preset,
            seed=recs[0].seed,
            config=config, folds=len(recs), n_test=len(recs[0].test_ids), mean=mean, std=std,
        ))
    for key, _, higher in RANKED_METRICS:
        pools: dict[tuple[str, str], list[LeaderboardRow]] = {}
        for row in rows:
            pools.setdefault((row.dataset_label, row.preset), []).append(row)
        for pool in pools.values():
            pool_values = [row.mean[key] for row in pool]
            target = max(pool_values) if higher else min(pool_values)
            for row in pool:
                if math.isclose(row.mean[key], target, rel_tol=0, abs_tol=1e-12):
                    row.best.add(key)
    return rows


def _cell(row: LeaderboardRow, key: str) -> str:
    s = row.std[key]
    return f"{row.mean[key]:.3f} ± {s:.3f}" if s is not None else f"{row.mean[key]:.3f}"


def _header() -> list[str]:
    arrows = [f"{label} {'↑' if higher else '↓'}" for _, label, higher in RANKED_METRICS]
    return ["dataset", "model", "d", "preset", "folds", "test images", *arrows]


def render_markdown(rows: list[LeaderboardRow]) -> str:
    """A Markdown table; best values in bold; mean ± std over folds."""
    lines = ["| " + " | ".join(_header()) + " |", "|" + "---|" * len(_header())]
    for r in rows:
        cells = [r.dataset_label, r.label, str(r.latent_dim), r.preset, str(r.folds), str(r.n_test)]
        for key, _, _ in RANKED_METRICS:
            cells.append(f"**{_cell(r, key)}**" if key in r.best else _cell(r, key))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_csv(rows: list[LeaderboardRow]) -> str:
    """CSV with the JSON keys as columns (``best`` joined by ';')."""
    buf = io.StringIO()
    dicts = [r.as_dict() for r in rows]
    fields = list(dicts[0]) if dicts else [d for d in LeaderboardRow.__dataclass_fields__]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for d in dicts:
        writer.writerow({k: (";".join(v) if isinstance(v, list) else ("" if v is None else v)) for k, v in d.items()})
    return buf.getvalue()


def render_json(rows: list[LeaderboardRow]) -> str:
    """A JSON list of :meth:`LeaderboardRow.as_dict` objects."""
    return json.dumps([r.as_dict() for r in rows], indent=2)


def rich_table(rows: list[LeaderboardRow], title: str = "probseg-bench leaderboard") -> Any:
    """A rich Table (best values bold); import of rich deferred to here."""
    from rich.table import Table

    table = Table(title=title, caption="mean ± std over folds (ddof=1); ↓ lower is better, ↑ higher")
    for h in _header():
        table.add_column(h, justify="right" if h not in ("dataset", "model", "preset") else "left")
    for r in rows:
        cells = [r.dataset_label, r.label, str(r.latent_dim), r.preset, str(r.folds), str(r.n_test)]
        for key, _, _ in RANKED_METRICS:
            cells.append(f"[bold]{_cell(r, key)}[/bold]" if key in r.best else _cell(r, key))
        table.add_row(*cells)
    return table
