"""A request: what is asked to run (:class:`RunRequest`), built from its sources with the precedence rules written
once (:func:`build_requests`), and checked once (:func:`check_request` -> :class:`CheckedRequest`, which is what
trains: :func:`probseg_bench.protocol.run_protocol` and tuning take it and never check or resolve it again).

The sources of a request, highest precedence first (:func:`build_requests`; ``tests/test_request.py``):

1. **The command line** (:class:`CommandLine`: ``--hp``, ``--preset``, ``--epochs``, ``--dataset-param``,
   ``--latent-dim``, ``--seed``, ``--device``, ...): what a user types wins.
2. **A parameters file** (``run --params FILE``, written by ``tune``): its hyperparameters, and the preset, protocol
   overrides, dataset parameters, latent dim and seed they were tuned under; a command-line value that then
   differs from the tuning's gives one note (``--hp`` replacing a tuned value too).
3. **A grid cell** (``run --config GRID.toml``): the file's settings of each (model, dataset); of the command line
   only ``--epochs`` and ``--device`` apply (to every cell), any other option given with a grid is refused.
4. **The defaults**: preset ``paper`` (:data:`DEFAULT_PRESET`), seed 0, device ``auto``, the model's reference
   latent dimension (``ModelSpec.default_latent_dim``); then, when the request is checked, the model's
   hyperparameters are its spec's defaults, under the preset's model defaults, under the request's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probseg_bench.api import DatasetSpec, HyperValue, ModelSpec, ObjectiveTerm, resolve_hyperparameters
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.hyperparameters import parse_assignments
from probseg_bench.plugins import Plugins, get_plugins
from probseg_bench.presets import Preset, apply_protocol_overrides, get_preset

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.curves import Curves
    from probseg_bench.grid import GridConfig
    from probseg_bench.tuning.params_toml import TunedParams

DEFAULT_PRESET = "paper"
"""The preset of ``run`` and ``tune`` without --preset (``run --params FILE``: the file's): the seed paper's
protocol, so that a result is comparable with the published table unless asked otherwise."""
DEFAULT_SEED = 0
"""The seed of ``run``, ``tune`` and ``validate`` without --seed (``run --params FILE``: the file's)."""
DEFAULT_DEVICE = "auto"
"""The device without --device (``run --config``: the grid's)."""
DEFAULT_RUN_DIR = Path("probseg-runs")
"""Where checkpoints go without --run-dir."""
DEFAULT_LOG_DIR = Path("probseg-curves")
"""Where ``--log`` writes training curves without --log-dir (``tensorboard --logdir probseg-curves``)."""
MAX_LATENT_DIM = 1024
"""The largest latent dimension a run accepts (the paper's grid: 4..7; larger ones only allocate without end)."""


@dataclass(frozen=True)
class RunRequest:
    """What ``probseg-bench run`` asks for (plain data: it crosses process boundaries to executors' workers).

    ``folds`` None = all folds of the preset; ``hyperparameters``: overrides of the model's and its
    regularizers' hyperparameters (name -> value); ``protocol_overrides``: preset settings replaced for this run
    (e.g. ``{"epochs": 2}`` for a smoke test; stored with the results); ``run_dir``: where best checkpoints are
    written; ``log``: the training-curve logger (``--log tensorboard``, :mod:`probseg_bench.curves`; None: no
    curves) and ``log_dir`` where it writes. ``run_dir``, ``log`` and ``log_dir`` say where outputs go: they are not
    part of a result's identity.
    """

    model: str
    dataset: str
    latent_dims: tuple[int, ...] = (6,)
    folds: tuple[int, ...] | None = None
    seed: int = 0
    preset: str = DEFAULT_PRESET
    device: str = DEFAULT_DEVICE
    data_root: Path | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    regularizer: str | None = None
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    variant_name: str | None = None
    protocol_overrides: Mapping[str, Any] = field(default_factory=dict)
    run_dir: Path = DEFAULT_RUN_DIR
    log: str | None = None
    log_dir: Path = DEFAULT_LOG_DIR

    def variant(self, with_protocol: bool = True) -> str:
        """A short label of what the user changed from the model's and the preset's defaults (``--regularizer``,
        ``--hp``, then the protocol overrides such as ``--epochs``), e.g. ``"regularizer=mmd, beta=50, epochs=2"``;
        ``variant_name`` replaces the first part when set (``run --params FILE`` sets ``params=FILE``); empty for
        the defaults (``with_protocol=False``: without the protocol overrides). Shown beside the model in the
        leaderboard; a run with a non-empty variant is never paired with a published value."""
        if self.variant_name is not None:
            parts = [self.variant_name]
        else:
            parts = [f"regularizer={self.regularizer}"] if self.regularizer else []
            parts += [f"{k}={v}" for k, v in sorted(self.hyperparameters.items())]
        if with_protocol:
            parts += [f"{k}={v}" for k, v in sorted(self.protocol_overrides.items())]
        return ", ".join(parts)


# --- building: the sources and their precedence -------------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """What a command's options give (None / empty / False: not given), before any precedence is applied.

    ``hyperparameters`` (``--hp``) and ``dataset_params`` (``--dataset-param``): the options' ``NAME=VALUE`` texts
    (split by :func:`build_requests`) or a NAME -> value mapping; either way typed once, when the request is
    checked, by the plugin's declaration. ``protocol_overrides``: ``{"epochs": n}`` for ``--epochs``.
    """

    model: str | None = None
    dataset: str | None = None
    latent_dims: tuple[int, ...] = ()
    folds: tuple[int, ...] = ()
    seed: int | None = None
    preset: str | None = None
    protocol_overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None
    data_root: Path | None = None
    dataset_params: Mapping[str, Any] | Sequence[str] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] | Sequence[str] = field(default_factory=dict)
    regularizer: str | None = None
    flow: str | None = None
    trust_pickle: bool = False
    run_dir: Path = DEFAULT_RUN_DIR
    log: str | None = None
    log_dir: Path = DEFAULT_LOG_DIR


def build_requests(
    given: CommandLine, params: Path | None = None, grid: GridConfig | None = None, config: Path | None = None,
    default_preset: str = DEFAULT_PRESET, plugins: Plugins | None = None,
) -> tuple[list[RunRequest], list[str]]:
    """The requests of one command, from the command line ``given``, a parameters file ``params`` (tune's TOML)
    and a grid ``grid`` (read from ``config``), with the precedence of the module docstring. Returns (requests,
    notes): one note per setting where the command line replaces a parameters file's value (the caller shows
    them; the core prints nothing).

    Raises:
        ProbsegError: a grid with options it does not take; no model or dataset; a parameters file of another
            model, unreadable, or with hyperparameters the model does not declare (naming the file); ``--flow`` for
            a model without a posterior flow or given twice.
    """
    hp_given = _assignments(given.hyperparameters, "--hp")
    params_given = _assignments(given.dataset_params, "--dataset-param")
    if grid is not None:
        return _grid_requests(given, grid, config), []
    if given.model is None or given.dataset is None:
        raise ProbsegError("run: give --model and --dataset (or --config GRID.toml)")
    plugins = plugins or get_plugins()
    model, dataset = given.model, given.dataset
    preset, seed, dims = given.preset, given.seed, list(given.latent_dims)
    protocol_overrides, dataset_params = dict(given.protocol_overrides), params_given
    hyperparameters: dict[str, Any] = {}
    variant_name, notes = None, []
    if params is not None:
        from probseg_bench.tuning.params_toml import read_params

        tuned = read_params(params)
        if tuned.model is not None and tuned.model != model:
            raise ProbsegError(f"{params}: parameters of model '{tuned.model}', not '{model}'")
        _check_tuned_hyperparameters(params, tuned, model, given.regularizer, plugins)
        hyperparameters.update(tuned.hyperparameters)
        variant_name = f"params={params.name}"
        preset, protocol_overrides, dataset_params, protocol_notes = _tuned_protocol(
            tuned, dataset, preset, protocol_overrides, dataset_params)
        dims, seed, dim_notes = _tuned_dim_and_seed(tuned, dims, seed)
        replaced = sorted(set(hp_given) & set(tuned.hyperparameters))
        notes += [f"{params}: {n} (as the command line asks)" for n in protocol_notes + dim_notes]
        if replaced:
            notes.append(f"{params}: --hp replaces the tuned {', '.join(replaced)}")
    hyperparameters.update(hp_given)
    if given.flow is not None:
        hyperparameters = with_flow(plugins.models.get(model) if model in plugins.models.names() else None,
                                    model, given.flow, hyperparameters, "--hp")
    request = RunRequest(
        model=model, dataset=dataset, latent_dims=tuple(dims or [default_latent_dim(model, plugins)]),
        folds=tuple(given.folds) or None, seed=DEFAULT_SEED if seed is None else seed,
        preset=preset or default_preset, device=given.device or DEFAULT_DEVICE, data_root=given.data_root,
        hyperparameters=hyperparameters, regularizer=given.regularizer, dataset_params=dataset_params,
        trust_pickle=given.trust_pickle, run_dir=given.run_dir, log=given.log, log_dir=given.log_dir,
        variant_name=variant_name if variant_name and not hp_given and not given.regularizer
        and given.flow is None else None,
        protocol_overrides=protocol_overrides,
    )
    return [request], notes


def _assignments(values: Mapping[str, Any] | Sequence[str], option: str) -> dict[str, Any]:
    """``NAME=VALUE`` texts of ``option`` -> {NAME: text} (a mapping is taken as it is).

    Raises:
        ProbsegError: an item without ``=`` or with an empty name.
    """
    if isinstance(values, Mapping):
        return dict(values)
    return parse_assignments(list(values), option)


GRID_TAKES = ("--epochs", "--device")
"""The options that apply to every cell of ``run --config``; the grid file gives everything else."""


def _grid_requests(given: CommandLine, grid: GridConfig, config: Path | None) -> list[RunRequest]:
    """The grid's cells, with the command line's ``--epochs`` and ``--device`` over every cell's."""
    refused = [flag for flag, value in (
        ("--model", given.model), ("--dataset", given.dataset), ("--latent-dim", given.latent_dims),
        ("--fold", given.folds), ("--seed", given.seed is not None), ("--preset", given.preset),
        ("--data-root", given.data_root), ("--dataset-param", given.dataset_params),
        ("--trust-pickle", given.trust_pickle), ("--hp", given.hyperparameters), ("--regularizer", given.regularizer),
        ("--flow", given.flow)) if value]
    if refused:
        raise ProbsegError(f"--config runs the grid of the file, which sets {', '.join(refused)}: give those in the "
                           f"file (only {' and '.join(GRID_TAKES)} apply to every cell)")
    requests = [replace(r, log=given.log, log_dir=given.log_dir) for r in grid.requests(given.run_dir)]
    if given.protocol_overrides:
        requests = [replace(r, protocol_overrides={**r.protocol_overrides, **given.protocol_overrides})
                    for r in requests]
    if given.device is not None:
        requests = [replace(r, device=given.device) for r in requests]
    return requests


def with_flow(spec: ModelSpec | None, model: str, flow: str, values: Mapping[str, Any], option: str
              ) -> dict[str, Any]:
    """``values`` with ``flow`` set (``--flow``: punet-nf's posterior flow; run puts it among the ``--hp`` values,
    tune among the ``--fix`` values, ``option``, so that stored studies keep their settings).

    Raises:
        ProbsegError: a model without a posterior flow, or ``flow`` also given in ``values``.
    """
    if spec is not None and "flow" not in {h.name for h in spec.hyperparameters}:
        raise ProbsegError(f"--flow {flow}: model '{model}' has no posterior flow (punet-nf has)")
    if "flow" in values:
        raise ProbsegError(f"--flow and {option} flow=... both given: use one")
    return {**values, "flow": flow}


def default_latent_dim(model: str | None, plugins: Plugins | None = None) -> int:
    """The d of a request that names none: the model plugin's reference d (``ModelSpec.default_latent_dim``), or
    :data:`~probseg_bench.api.DEFAULT_LATENT_DIM` for a name that is not a model (the check then names it)."""
    from probseg_bench.api import DEFAULT_LATENT_DIM

    models = (plugins or get_plugins()).models
    return models.get(model).default_latent_dim if model in models.names() else DEFAULT_LATENT_DIM


def _kv(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def _tuned_protocol(tuned: TunedParams, dataset: str, preset: str | None, protocol_overrides: dict[str, Any],
                    dataset_params: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any], list[str]]:
    """(preset, protocol overrides, dataset parameters, notes) of a ``run --params FILE``: the file's, each replaced
    by what the command line gives, with one note per setting that then differs from the tuning's."""
    if tuned.preset is None:  # a file of an older version: nothing to apply
        return preset, protocol_overrides, dataset_params, []
    notes = []
    if tuned.dataset is not None and tuned.dataset != dataset:
        notes.append(f"tuned on dataset {tuned.dataset}, run on {dataset}")
    if preset is not None and preset != tuned.preset:
        notes.append(f"tuned under preset {tuned.preset}, run under {preset}")
    file_overrides = tuned.protocol_overrides or {}
    if protocol_overrides and protocol_overrides != file_overrides:
        notes.append(f"tuned with {_kv(file_overrides) or 'no protocol overrides'}, run with {_kv(protocol_overrides)}")
    file_params = tuned.dataset_params or {} if tuned.dataset in (None, dataset) else {}
    merged_params = {**file_params, **dataset_params}
    if any(str(file_params.get(k)) != str(v) for k, v in dataset_params.items()):
        notes.append(f"tuned with dataset parameters {_kv(file_params) or 'the defaults'}, run with "
                     f"{_kv(merged_params)}")
    return preset or tuned.preset, protocol_overrides or dict(file_overrides), merged_params, notes


def _tuned_dim_and_seed(tuned: TunedParams, latent_dims: list[int], seed: int | None,
                        ) -> tuple[list[int], int | None, list[str]]:
    """The latent dims and seed of a ``run --params FILE``: the ones the parameters were tuned at unless the
    command line gives others (then with a note)."""
    notes = []
    if tuned.latent_dim is not None and latent_dims and latent_dims != [tuned.latent_dim]:
        notes.append(f"tuned at d={tuned.latent_dim}, run at d={', '.join(map(str, latent_dims))}")
    if tuned.seed is not None and seed is not None and seed != tuned.seed:
        notes.append(f"tuned with seed {tuned.seed}, run with seed {seed}")
    dims = latent_dims or ([tuned.latent_dim] if tuned.latent_dim is not None else [])
    return dims, seed if seed is not None else tuned.seed, notes


def _check_tuned_hyperparameters(path: Path, tuned: TunedParams, model: str, regularizer: str | None,
                                 plugins: Plugins) -> None:
    """The file's hyperparameters alone, so that an error names the file.

    Raises:
        ProbsegError: an unknown model, a name the model and its regularizers do not declare, or a bad value
            (prefixed by ``path``).
    """
    spec = plugins.models.get(model)
    try:
        resolve_run_hyperparameters(spec, plugins, tuned.hyperparameters, objective_terms(spec, plugins, regularizer))
    except ProbsegError as exc:
        raise ProbsegError(f"{path}: [hyperparameters]: {exc}") from None


# --- checking: once, without the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedRequest:
    """A request checked and resolved without its data (:func:`check_request`), once: the request itself, the
    plugins, the specs, the preset with the protocol overrides, the objective terms, the dataset parameters (typed),
    the device, the folds, and the model's and its regularizers' hyperparameters (the specs' defaults, then the
    preset's model defaults, then the request's). What :func:`probseg_bench.protocol.run_protocol` and tuning
    train; :class:`probseg_bench.experiment.Experiment` adds the data to it."""

    request: RunRequest
    plugins: Plugins
    model_spec: ModelSpec
    dataset_spec: DatasetSpec
    preset: Preset
    terms: tuple[ObjectiveTerm, ...]
    dataset_params: dict[str, HyperValue]
    device: Any
    folds: tuple[int, ...]
    model_hp: dict[str, HyperValue]
    reg_hp: dict[str, dict[str, HyperValue]]
    curves: Curves | None = None
    """The request's ``log`` logger and ``log_dir``, checked (None: no ``--log``)."""


def check_request(request: RunRequest, plugins: Plugins | None = None, check_device: bool = True) -> CheckedRequest:
    """Every check of a request that needs no data (so that a command can make them all before it writes anything),
    and the request resolved once. ``check_device`` False: the device's name only (for cells that run on other
    machines, see :func:`resolve_device`).

    Raises:
        ProbsegError: unknown plugin / preset / fold / regularizer / hyperparameter / dataset parameter, bad
            latent dims or seed, no device; an unknown ``log`` logger, its package missing, or a ``log_dir`` that
            cannot be written.
    """
    from probseg_bench.data.loading import dataset_parameters

    plugins = plugins or get_plugins()
    model_spec = plugins.models.get(request.model)
    dataset_spec = plugins.datasets.get(request.dataset)
    preset = apply_protocol_overrides(get_preset(request.preset), request.protocol_overrides)
    if not request.latent_dims or any(not _is_int(d) or d < 1 for d in request.latent_dims):
        raise ProbsegError(f"--latent-dim: expected integers >= 1, got {list(request.latent_dims)}")
    if any(d > MAX_LATENT_DIM for d in request.latent_dims):
        raise ProbsegError(f"--latent-dim: expected integers <= {MAX_LATENT_DIM}, got {list(request.latent_dims)}")
    if not _is_int(request.seed) or request.seed < 0:
        raise ProbsegError(f"--seed: expected an integer >= 0, got {request.seed!r}")
    folds = tuple(range(preset.n_folds)) if request.folds is None else tuple(request.folds)
    bad = [f for f in folds if not _is_int(f) or not 0 <= f < preset.n_folds]
    if bad:
        raise ProbsegError(f"--fold: expected values in 0..{preset.n_folds - 1}, got {bad[0]}")
    terms = objective_terms(model_spec, plugins, request.regularizer)
    model_hp, reg_hp = resolve_run_hyperparameters(
        model_spec, plugins, merged_hyperparameters(model_spec, preset, request.hyperparameters), terms)
    device = resolve_device(request.device, check_available=check_device)
    params = dataset_parameters(dataset_spec, request.dataset_params)
    curves = None
    if request.log is not None:  # the logger, its package and its folder
        from probseg_bench.curves import Curves

        curves = Curves.open(request.log, request.log_dir, plugins)
    return CheckedRequest(request, plugins, model_spec, dataset_spec, preset, terms, params, device, folds, model_hp,
                          reg_hp, curves)


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (a file's ``true`` is not a latent dimension, a fold or a seed)."""
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_device(name: str, check_available: bool = True) -> Any:
    """``auto`` | ``cpu`` | ``cuda`` (or ``cuda:N``) -> torch.device. ``check_available`` False: only the name is
    checked (for cells that run on other machines; ``auto`` then stays ``auto``, a str).

    Raises:
        ProbsegError: unknown name, or CUDA asked for but not available.
    """
    import torch

    if name == "auto":
        if not check_available:
            return name
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if check_available and not torch.cuda.is_available():
            raise ProbsegError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
        return torch.device(name)
    raise ProbsegError(f"--device: expected auto, cpu or cuda, got {name!r}")


def objective_terms(spec: ModelSpec, plugins: Plugins, regularizer: str | None = None) -> tuple[ObjectiveTerm, ...]:
    """The model's objective terms, with the swappable term's regularizer replaced by ``regularizer`` if given.

    Raises:
        ProbsegError: unknown regularizer, or a model without a swappable term.
    """
    if regularizer is None:
        return spec.objective
    plugins.regularizers.get(regularizer)  # unknown name -> error with the known ones
    if not any(t.swappable for t in spec.objective):
        fixed = ", ".join(t.regularizer for t in spec.objective) or "none"
        raise ProbsegError(
            f"--regularizer {regularizer}: model '{spec.name}' has no swappable regularizer term (its terms: {fixed})"
        )
    return tuple(replace(t, regularizer=regularizer) if t.swappable else t for t in spec.objective)


def merged_hyperparameters(spec: ModelSpec, preset: Preset, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's model defaults that ``spec`` declares, updated with each of ``layers`` in turn (the request's
    ``--hp``, a tuning trial's values)."""
    declared = {hp.name for hp in spec.hyperparameters}
    merged: dict[str, Any] = {k: v for k, v in preset.model_defaults if k in declared}
    for layer in layers:
        merged.update(layer)
    return merged


def resolve_run_hyperparameters(
    spec: ModelSpec, plugins: Plugins, overrides: Mapping[str, Any], terms: Sequence[ObjectiveTerm] | None = None
) -> tuple[dict[str, HyperValue], dict[str, dict[str, HyperValue]]]:
    """(model hyperparameters, {regularizer: its hyperparameters}) with ``overrides`` applied to whichever
    declares the name (each value typed once, by its declaration); ``terms`` defaults to the spec's objective.

    Raises:
        ProbsegError: an override that neither the model nor its regularizers declare, or a bad value.
    """
    terms = spec.objective if terms is None else terms
    regs = {t.regularizer: plugins.regularizers.get(t.regularizer) for t in terms}
    owners: dict[str, str] = {hp.name: spec.name for hp in spec.hyperparameters}
    for rname, rspec in regs.items():
        for hp in rspec.hyperparameters:
            owners.setdefault(hp.name, rname)
    unknown = [k for k in overrides if k not in owners]
    if unknown:
        raise ProbsegError(
            f"model '{spec.name}' and its regularizers have no hyperparameter '{unknown[0]}'"
            f"{did_you_mean(unknown[0], owners)}; they have: {', '.join(sorted(owners))}"
        )
    model_hp = resolve_hyperparameters(
        f"model '{spec.name}'", spec.hyperparameters, {k: v for k, v in overrides.items() if owners[k] == spec.name}
    )
    reg_hp = {
        rname: resolve_hyperparameters(
            f"regularizer '{rname}'", rspec.hyperparameters,
            {k: v for k, v in overrides.items() if owners[k] == rname},
        )
        for rname, rspec in regs.items()
    }
    for term in terms:  # a negative weight would reward the divergence it should penalise
        weight = model_hp.get(term.weight)
        if isinstance(weight, int | float) and not isinstance(weight, bool) and weight < 0:
            raise ProbsegError(f"hyperparameter '{term.weight}' (the weight of the {term.regularizer} term of model "
                               f"'{spec.name}'): expected a value >= 0, got {weight}")
    return model_hp, reg_hp


__all__: Sequence[str] = [
    "DEFAULT_PRESET", "CheckedRequest", "CommandLine", "RunRequest", "build_requests", "check_request",
    "default_latent_dim", "merged_hyperparameters", "objective_terms", "resolve_device",
    "resolve_run_hyperparameters", "with_flow",
]
