"""Experiment grids declared in TOML (``probseg-bench run --config GRID.toml``).

Keys (all but ``models`` and ``datasets`` optional)::

    models = ["punet", "punet-nf", "spunet"]
    datasets = ["lidc", "qubiq-pancreas"]
    latent_dims = [4, 5, 6, 7]          # default: each model's reference d (6; phiseg 2, hpunet 1)
    folds = [0, 1, 2]                   # default: all folds of the preset
    preset = "paper"                    # default "paper"
    seed = 0
    device = "auto"
    [data_roots]                        # per dataset; relative paths are relative to this TOML file
    lidc = "data/lidc-converted"
    [dataset_params.qubiq-brain-tumor]  # per dataset
    task = 2
    [hyperparameters.spunet]            # per model, as --hp
    beta = 50
    [protocol]                          # preset settings replaced for every cell (e.g. a smoke test)
    epochs = 2
    [executor]                          # where the cells run, as --executor / --executor-option (which win)
    name = "slurm"
    partition = "gpu"
    time = 600

Every (model, dataset) pair becomes one :class:`probseg_bench.protocol.RunRequest` over the latent dims and
folds; cells already in the results store are skipped by the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.readback import read_toml
from probseg_bench.request import DEFAULT_RUN_DIR, RunRequest, default_latent_dim

_KEYS = {"models", "datasets", "latent_dims", "folds", "preset", "seed", "device", "data_roots", "dataset_params",
         "hyperparameters", "protocol", "executor"}


@dataclass(frozen=True)
class GridConfig:
    """A parsed grid file."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    latent_dims: tuple[int, ...] | None = None  # None: each model's ``ModelSpec.default_latent_dim``
    folds: tuple[int, ...] | None = None
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    data_roots: dict[str, Path] = field(default_factory=dict)
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    executor: tuple[str, dict[str, str]] | None = None
    """The ``[executor]`` table: its name and its options as ``--executor-option`` texts (checked); None: absent."""

    def requests(self, run_dir: Path = DEFAULT_RUN_DIR) -> list[RunRequest]:
        """One request per (dataset, model), datasets outermost (the cells' precedence over the command line:
        :func:`probseg_bench.request.build_requests`)."""
        return [
            RunRequest(
                model=m, dataset=d, latent_dims=self.latent_dims or (default_latent_dim(m),),
                folds=self.folds, seed=self.seed,
                preset=self.preset, device=self.device, data_root=self.data_roots.get(d),
                hyperparameters=self.hyperparameters.get(m, {}), dataset_params=self.dataset_params.get(d, {}),
                run_dir=run_dir, protocol_overrides=self.protocol,
            )
            for d in self.datasets for m in self.models
        ]


def _names(path: Path, raw: dict[str, Any], key: str, required: bool) -> tuple[str, ...]:
    value = raw.get(key, [] if not required else None)
    if value is None or not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (
            required and not value):
        raise ProbsegError(f"{path}: '{key}' must be a non-empty list of names")
    return tuple(value)


def _ints(path: Path, raw: dict[str, Any], key: str, minimum: int) -> tuple[int, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(_is_int(v) and v >= minimum for v in value):
        raise ProbsegError(f"{path}: '{key}' must be a non-empty list of integers >= {minimum}, got {value!r}")
    return tuple(value)


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (TOML's ``true`` is not a latent dimension)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _tables(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ProbsegError(f"{path}: '{key}' must be a table")
    return value


def _check_grid(path: Path, grid: GridConfig) -> None:
    """Every name and value of a grid, before any cell trains; the message names the file and the key.

    Models, datasets, the preset and the device must exist; each ``[hyperparameters.NAME]``,
    ``[dataset_params.NAME]`` and ``[data_roots.NAME]`` table must belong to one of the grid's models / datasets and
    name only what that plugin (or the model's regularizers) declares, with values of the declared types; the
    ``[protocol]`` settings must be preset settings of the right type; folds must exist in the preset.
    """
    from probseg_bench.data.loading import dataset_parameters
    from probseg_bench.plugins import get_plugins
    from probseg_bench.presets import apply_protocol_overrides, get_preset
    from probseg_bench.request import resolve_device, resolve_run_hyperparameters

    plugins = get_plugins()
    for key, names, registry in (("models", grid.models, plugins.models), ("datasets", grid.datasets,
                                                                            plugins.datasets)):
        for name in names:
            try:
                registry.get(name)
            except ProbsegError as exc:
                raise ProbsegError(f"{path}: '{key}': {exc}") from None
    try:
        preset = apply_protocol_overrides(get_preset(grid.preset), grid.protocol)
    except ProbsegError as exc:
        raise ProbsegError(f"{path}: {'[protocol]' if grid.protocol else 'preset'}: {exc}") from None
    try:
        resolve_device(grid.device, check_available=False)
    except ProbsegError as exc:
        raise ProbsegError(f"{path}: 'device': {exc}") from None
    if grid.folds is not None and any(not 0 <= f < preset.n_folds for f in grid.folds):
        raise ProbsegError(f"{path}: 'folds': expected values in 0..{preset.n_folds - 1}, got {list(grid.folds)}")
    for key, tables, owners in (("hyperparameters", grid.hyperparameters, grid.models),
                                ("dataset_params", grid.dataset_params, grid.datasets),
                                ("data_roots", grid.data_roots, grid.datasets)):
        for name in tables:
            if name not in owners:
                what = "models" if key == "hyperparameters" else "datasets"
                raise ProbsegError(f"{path}: [{key}.{name}]: '{name}' is not one of the grid's {what}"
                                   f"{did_you_mean(name, owners)}; they are: {', '.join(owners)}")
    for name, table in grid.hyperparameters.items():
        try:
            resolve_run_hyperparameters(plugins.models.get(name), plugins, table)
        except ProbsegError as exc:
            raise ProbsegError(f"{path}: [hyperparameters.{name}]: {exc}") from None
    for name, table in grid.dataset_params.items():
        try:
            dataset_parameters(plugins.datasets.get(name), table)
        except ProbsegError as exc:
            raise ProbsegError(f"{path}: [dataset_params.{name}]: {exc}") from None


def load_grid(path: Path) -> GridConfig:
    """Parse a grid file.

    Raises:
        ProbsegError: unreadable TOML, an unknown key, a value of the wrong type or out of range, an unknown
            plugin / preset / device, a table of a model or dataset not in the grid, a hyperparameter, dataset
            parameter or protocol setting that is not declared or has a bad value (see :func:`_check_grid`; the
            message names the file and the key).
    """
    path = Path(path)
    raw = read_toml(path, "the grid file")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ProbsegError(f"{path}: unknown key '{unknown[0]}'{did_you_mean(unknown[0], _KEYS)}; expected some "
                           f"of {', '.join(sorted(_KEYS))}")
    for key, kind in (("preset", str), ("seed", int), ("device", str)):
        if key in raw and (not isinstance(raw[key], kind) or isinstance(raw[key], bool)):
            raise ProbsegError(f"{path}: '{key}' must be a{'n' if kind is int else ''} {kind.__name__}, "
                               f"got {raw[key]!r}")
    if "seed" in raw and raw["seed"] < 0:
        raise ProbsegError(f"{path}: 'seed' must be >= 0, got {raw['seed']}")
    roots = _tables(path, raw, "data_roots")
    if not all(isinstance(v, str) for v in roots.values()):
        raise ProbsegError(f"{path}: 'data_roots' values must be paths (strings)")
    params, hps = _tables(path, raw, "dataset_params"), _tables(path, raw, "hyperparameters")
    protocol = _tables(path, raw, "protocol")
    for key, table in (("dataset_params", params), ("hyperparameters", hps)):
        if not all(isinstance(v, dict) for v in table.values()):
            raise ProbsegError(f"{path}: '{key}' must hold one table per name ([{key}.NAME])")
    grid = GridConfig(
        models=_names(path, raw, "models", True),
        datasets=_names(path, raw, "datasets", True),
        latent_dims=_ints(path, raw, "latent_dims", 1),
        folds=_ints(path, raw, "folds", 0),
        preset=raw.get("preset", "paper"),
        seed=raw.get("seed", 0),
        device=raw.get("device", "auto"),
        data_roots={k: (path.parent / v).resolve() for k, v in roots.items()},
        dataset_params={k: dict(v) for k, v in params.items()},
        hyperparameters={k: dict(v) for k, v in hps.items()},
        protocol=dict(protocol),
        executor=_executor_table(path, raw),
    )
    _check_grid(path, grid)
    return grid


def _executor_table(path: Path, raw: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """The ``[executor]`` table: ``name`` and that executor's options, checked as ``--executor-option`` items are
    (:meth:`~probseg_bench.executors.Executor.from_options`); None when absent."""
    from probseg_bench.executors import executor_names, executor_type

    if "executor" not in raw:
        return None
    table = dict(_tables(path, raw, "executor"))
    name = table.pop("name", None)
    if not isinstance(name, str):
        raise ProbsegError(f"{path}: [executor]: 'name' must be one of {', '.join(executor_names())}, got {name!r}")
    try:
        cls = executor_type(name)
    except ProbsegError:
        raise ProbsegError(f"{path}: [executor] name: expected one of {', '.join(executor_names())}, "
                           f"got {name!r}") from None
    options = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ProbsegError(f"{path}: [executor] {key}: expected a string or a number, got {value!r}")
        options[key] = str(value)
    cls.from_options(options, where=f"{path}: [executor]")
    return name, options
