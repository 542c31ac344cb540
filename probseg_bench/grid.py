"""Experiment grids declared in TOML (``probseg-bench run --config GRID.toml``).

Keys (all but ``models`` and ``datasets`` optional)::

    models = ["punet", "punet-nf", "spunet"]
    datasets = ["lidc", "qubiq-pancreas"]
    latent_dims = [4, 5, 6, 7]          # default [6]
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

Every (model, dataset) pair becomes one :class:`probseg_bench.protocol.RunRequest` over the latent dims and
folds; cells already in the results store are skipped by the protocol.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.protocol import RunRequest

_KEYS = {"models", "datasets", "latent_dims", "folds", "preset", "seed", "device", "data_roots", "dataset_params",
         "hyperparameters", "protocol"}


@dataclass(frozen=True)
class GridConfig:
    """A parsed grid file."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    latent_dims: tuple[int, ...] = (6,)
    folds: tuple[int, ...] | None = None
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    data_roots: dict[str, Path] = field(default_factory=dict)
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    def requests(self, run_dir: Path = Path("probseg-runs")) -> list[RunRequest]:
        """One request per (dataset, model), datasets outermost."""
        return [
            RunRequest(
                model=m, dataset=d, latent_dims=self.latent_dims, folds=self.folds, seed=self.seed,
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


def _ints(path: Path, raw: dict[str, Any], key: str) -> tuple[int, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
        raise ProbsegError(f"{path}: '{key}' must be a non-empty list of integers")
    return tuple(value)


def _tables(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ProbsegError(f"{path}: '{key}' must be a table")
    return value


def _check_dataset_params(path: Path, datasets: tuple[str, ...], params: dict[str, Any]) -> None:
    """Each ``[dataset_params.NAME]`` table belongs to one of the grid's datasets and names only parameters that
    dataset declares, with values of their types: checked before any cell trains, the message naming the file
    and the table. (An unknown dataset plugin is left to the run, which says so with the known names.)"""
    from probseg_bench.data.loading import dataset_parameters
    from probseg_bench.plugins import get_plugins

    registry = get_plugins().datasets
    for name, table in params.items():
        where = f"{path}: [dataset_params.{name}]"
        if name not in datasets:
            raise ProbsegError(f"{where}: '{name}' is not one of the grid's datasets{did_you_mean(name, datasets)}; "
                               f"they are: {', '.join(datasets)}")
        if name in registry.names():
            try:
                dataset_parameters(registry.get(name), table)
            except ProbsegError as exc:
                raise ProbsegError(f"{where}: {exc}") from None


def load_grid(path: Path) -> GridConfig:
    """Parse a grid file.

    Raises:
        ProbsegError: unreadable TOML, an unknown key, a value of the wrong type (the message names the file and
            the key), a ``[dataset_params.NAME]`` table of a dataset not in the grid or with a parameter that the
            dataset does not declare.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ProbsegError(f"{path}: cannot read the grid file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProbsegError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ProbsegError(f"{path}: unknown key '{unknown[0]}'; expected some of {', '.join(sorted(_KEYS))}")
    for key, kind in (("preset", str), ("seed", int), ("device", str)):
        if key in raw and not isinstance(raw[key], kind):
            raise ProbsegError(f"{path}: '{key}' must be a {kind.__name__}")
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
        latent_dims=_ints(path, raw, "latent_dims") or (6,),
        folds=_ints(path, raw, "folds"),
        preset=raw.get("preset", "paper"),
        seed=raw.get("seed", 0),
        device=raw.get("device", "auto"),
        data_roots={k: (path.parent / v).resolve() for k, v in roots.items()},
        dataset_params={k: dict(v) for k, v in params.items()},
        hyperparameters={k: dict(v) for k, v in hps.items()},
        protocol=dict(protocol),
    )
    _check_dataset_params(path, grid.datasets, params)
    return grid
