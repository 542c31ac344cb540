"""``probseg-bench compare``: paired significance tests between models on the same test images."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from probseg_bench.cli._app import app, console
from probseg_bench.cli.options import (
    DEFAULT_FORMAT,
    ConfigHashFilter,
    LatentDimFilter,
    PresetFilter,
    Storage,
    StoredDataset,
    TableOrJson,
)
from probseg_bench.comparison import TEST_NAME, compare_pair, holm
from probseg_bench.errors import ProbsegError
from probseg_bench.leaderboard import CONFIG_PREFIX, LeaderboardRow, build_leaderboard
from probseg_bench.metrics.catalogue import find_metric, metric_names
from probseg_bench.results import DEFAULT_STORAGE, ResultsStore, select_configurations


def _select(rows: list[LeaderboardRow], name: str, d: int) -> LeaderboardRow | None:
    """The row that ``name`` selects at latent dim ``d``: a model, a leaderboard label (``spunet (beta=50)``) or
    ``MODEL@HASH`` (a configuration hash prefix, as the leaderboard's config column shows it).

    Raises:
        ProbsegError: several configurations match (the message lists them with their hashes).
    """
    model, _, prefix = name.partition("@")
    found = [r for r in rows if (r.label == model or r.model == model) and r.latent_dim == d
             and r.config.startswith(prefix.strip().lower())]
    if len(found) > 1:
        configs = "; ".join(f"{r.model}@{r.config[:CONFIG_PREFIX]} = {r.label} [{r.preset}, {r.folds_label} folds]"
                            for r in found)
        raise ProbsegError(f"'{name}' has several configurations at d={d}: {configs}; choose with MODEL@HASH or "
                           "--config-hash")
    return found[0] if found else None


def _name(row: LeaderboardRow, selected: list[LeaderboardRow | None]) -> str:
    """The row's label, with its configuration hash when another selected row has the same label."""
    same = [s for s in selected if s is not None and s.label == row.label and s.config != row.config]
    return f"{row.label} @{row.config[:CONFIG_PREFIX]}" if same else row.label


@app.command()
def compare(
    models: Annotated[list[str], typer.Argument(
        help="MODEL_A MODEL_B [...]: A is compared with each other one. Each is a model, a leaderboard label "
        "('spunet (beta=50)') or MODEL@HASH (a configuration hash prefix from the leaderboard's config column).")],
    dataset: StoredDataset,
    metric: str = typer.Option("ewd", "--metric", help=f"Per-image metric: {', '.join(metric_names())}."),
    latent_dim: LatentDimFilter = [],  # noqa: B006  (typer copies a list default)
    preset: PresetFilter = [],  # noqa: B006
    config_hash: ConfigHashFilter = [],  # noqa: B006
    storage: Storage = DEFAULT_STORAGE,
    bootstrap: int = typer.Option(10_000, "--bootstrap", help="Bootstrap resamples for the CI."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    fmt: TableOrJson = DEFAULT_FORMAT,
) -> None:
    """Wilcoxon signed-rank test of MODEL_A against each other model over the per-image metric of the test set
    (same split and latent dim), median difference with a bootstrap 95% CI, Holm-corrected p-values. Without
    --latent-dim, at every latent dim where all the models have records."""
    if len(models) < 2:
        raise ProbsegError("compare: give at least two models (MODEL_A MODEL_B ...)")
    if fmt not in ("table", "json"):
        raise ProbsegError(f"--format: expected table or json, got {fmt!r}")
    if bootstrap < 1:
        raise ProbsegError(f"--bootstrap: expected >= 1, got {bootstrap}")
    if seed < 0:
        raise ProbsegError(f"--seed: expected an integer >= 0, got {seed}")
    store = ResultsStore(storage, create=False)
    store.check_names([], [dataset])
    records = select_configurations(store.records(datasets=[dataset]), config_hash, preset)
    rows = build_leaderboard(records)
    dims = sorted(set(latent_dim) or {r.latent_dim for r in rows})
    results = []
    for d in dims:
        selected = [_select(rows, name, d) for name in models]
        if any(s is None for s in selected):
            if latent_dim:
                missing = [n for n, s in zip(models, selected, strict=True) if s is None]
                raise ProbsegError(f"no records of {', '.join(missing)} on {dataset} at d={d} (see leaderboard)")
            continue
        ref = selected[0]
        assert ref is not None
        for other in selected[1:]:
            assert other is not None
            if other is ref:
                raise ProbsegError(f"'{models[0]}' and '{models[selected.index(other)]}' select the same "
                                   f"configuration ({ref.label} @{ref.config[:CONFIG_PREFIX]}) at d={d}: nothing to "
                                   "compare; choose another with MODEL@HASH")
            results.append(compare_pair(ref.records, other.records, metric, _name(ref, selected),
                                        _name(other, selected), bootstrap, seed))
    if not results:
        filters = [f"--config-hash {', '.join(config_hash)}"] if config_hash else []
        filters += [f"--preset {', '.join(preset)}"] if preset else []
        raise ProbsegError(f"no latent dimension at which all of {', '.join(models)} have records on {dataset}"
                           + (f" (only configurations kept by {' and '.join(filters)})" if filters else ""))
    for r, p in zip(results, holm([r.p_value for r in results]), strict=True):
        r.p_holm = p
    if fmt == "json":
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    known = find_metric(metric)  # a stored metric may be one this installation's catalogue lacks
    direction = ("" if known is None or known.higher_is_better is None
                 else f" ({'higher' if known.higher_is_better else 'lower'} is better)")
    table = Table(title=f"paired comparison on {dataset}: {metric}{direction}, difference = A - B",
                  caption=f"test: {TEST_NAME}; 95% CI: percentile bootstrap over images ({bootstrap} resamples); "
                          f"p (Holm) over the {len(results)} comparison(s); p over folds: Wilcoxon on fold means")
    for col in ("A", "B", "d", "n images", "folds", "median diff [95% CI]", "W", "p", "p (Holm)", "p over folds"):
        table.add_column(col, justify="left" if col in ("A", "B") else "right")
    for r in results:
        table.add_row(r.a, r.b, str(r.latent_dim), str(r.n_images), str(r.n_folds),
                      f"{r.median_difference:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]", f"{r.statistic:g}",
                      f"{r.p_value:.4g}", f"{r.p_holm:.4g}", "" if r.fold_p_value is None else f"{r.fold_p_value:.3g}")
    console.print(table)
