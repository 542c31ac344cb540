"""The parameters TOML: ``tune`` writes its best trial's parameters and the protocol they were tuned under
(:func:`write_params`), ``run --params`` reads them (:func:`read_params`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probseg_bench.errors import ProbsegError
from probseg_bench.tuning.study import describe_settings


def write_params(path: Path, settings: Mapping[str, Any], study: str, trial: Any) -> Path:
    """Write a trial's parameters as the TOML that ``run --params`` reads: model, dataset, study, the
    [hyperparameters] (searched and fixed) and the [protocol] they were tuned under (preset, its overrides, the
    dataset parameters, latent dim, fold, seed, objective); atomically (a failed write leaves no half file and
    raises :class:`~probseg_bench.errors.OutputError` naming ``path``)."""
    from probseg_bench.atomic import atomic_write_text

    objective = settings["objective"]
    lines = [
        f"# probseg-bench tune: study {study!r}, trial {trial.number}, {objective} = {trial.value:.6g}",
        f"# tuned under: {describe_settings(settings)}",
        f"model = {_toml(settings['model'])}", f"dataset = {_toml(settings['dataset'])}", f"study = {_toml(study)}",
        "", "[hyperparameters]",
    ]
    values = {**settings.get("fixed", {}), **trial.params}
    lines += [f"{name} = {_toml(value)}" for name, value in sorted(values.items())]
    lines += ["", "[protocol]", f"preset = {_toml(settings['preset'])}", f"latent_dim = {settings['latent_dim']}",
              f"fold = {settings['fold']}", f"seed = {settings['seed']}", f"objective = {_toml(objective)}",
              "", "[protocol.overrides]"]
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(settings.get("protocol_overrides", {}).items())]
    lines += ["", "[protocol.dataset_params]"]
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(settings.get("dataset_params", {}).items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


@dataclass(frozen=True)
class TunedParams:
    """A ``tune`` parameters TOML: the model it was tuned for, its hyperparameters, and the protocol they were
    tuned under (None for a file of an older version without a [protocol] table)."""

    model: str | None
    dataset: str | None
    hyperparameters: dict[str, Any]
    preset: str | None = None
    protocol_overrides: dict[str, Any] | None = None
    dataset_params: dict[str, Any] | None = None
    latent_dim: int | None = None
    seed: int | None = None


def read_params(path: Path) -> TunedParams:
    """``run --params FILE``.

    Raises:
        ProbsegError: unreadable TOML, no [hyperparameters] table, a malformed [protocol] table.
    """
    from probseg_bench.readback import read_toml

    raw = read_toml(path)
    params = raw.get("hyperparameters")
    if not isinstance(params, dict) or not params:
        raise ProbsegError(f"{path}: expected a [hyperparameters] table")
    protocol = raw.get("protocol")
    if protocol is None:
        return TunedParams(raw.get("model"), raw.get("dataset"), dict(params))
    overrides = protocol.get("overrides", {}) if isinstance(protocol, dict) else None
    dataset_params = protocol.get("dataset_params", {}) if isinstance(protocol, dict) else None
    if (not isinstance(protocol, dict) or not isinstance(protocol.get("preset"), str)
            or not isinstance(overrides, dict) or not isinstance(dataset_params, dict)):
        raise ProbsegError(f"{path}: [protocol] expects preset = \"NAME\" and the tables [protocol.overrides], "
                           "[protocol.dataset_params]")
    for key in ("latent_dim", "seed"):
        if key in protocol and (not isinstance(protocol[key], int) or isinstance(protocol[key], bool)):
            raise ProbsegError(f"{path}: [protocol] {key}: expected an integer, got {protocol[key]!r}")
    return TunedParams(raw.get("model"), raw.get("dataset"), dict(params), protocol["preset"], dict(overrides),
                       dict(dataset_params), protocol.get("latent_dim"), protocol.get("seed"))
