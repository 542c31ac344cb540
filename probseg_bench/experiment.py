"""One experiment = one model on one dataset under one preset: everything that is fixed before a fold is
trained (plugins, hyperparameters, the dataset, its split, the device), and the training of one fold.

Used by the cross-validation protocol (:mod:`probseg_bench.protocol`) and by hyperparameter tuning
(:mod:`probseg_bench.tuning`), so that both train exactly the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probseg_bench.api import (
    DatasetSpec,
    HyperValue,
    ModelSpec,
    MultiRaterData,
    ObjectiveTerm,
    resolve_hyperparameters,
)
from probseg_bench.data.crop import center_crop
from probseg_bench.data.fingerprint import data_fingerprint
from probseg_bench.data.loading import dataset_parameters, load_dataset
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.plugins import Plugins, get_plugins
from probseg_bench.presets import Preset, get_preset

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from probseg_bench.data.splits import Splits
    from probseg_bench.training import EpochLog, FoldTrainingResult, Objective


@dataclass(frozen=True)
class RunRequest:
    """What ``probseg-bench run`` asks for.

    ``folds`` None = all folds of the preset; ``hyperparameters``: overrides of the model's and its
    regularizers' hyperparameters (name -> value); ``protocol_overrides``: preset settings replaced for this run
    (e.g. ``{"epochs": 2}`` for a smoke test; stored with the results); ``run_dir``: where best checkpoints are
    written.
    """

    model: str
    dataset: str
    latent_dims: tuple[int, ...] = (6,)
    folds: tuple[int, ...] | None = None
    seed: int = 0
    preset: str = "paper"
    device: str = "auto"
    data_root: Path | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    regularizer: str | None = None
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    variant_name: str | None = None
    protocol_overrides: Mapping[str, Any] = field(default_factory=dict)
    run_dir: Path = Path("probseg-runs")

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


def resolve_run_hyperparameters(
    spec: ModelSpec, plugins: Plugins, overrides: Mapping[str, Any], terms: Sequence[ObjectiveTerm] | None = None
) -> tuple[dict[str, HyperValue], dict[str, dict[str, HyperValue]]]:
    """(model hyperparameters, {regularizer: its hyperparameters}) with ``overrides`` applied to whichever
    declares the name; ``terms`` defaults to the spec's objective.

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


def build_objective(
    spec: ModelSpec, plugins: Plugins, model_hp: Mapping[str, HyperValue],
    reg_hp: Mapping[str, Mapping[str, HyperValue]] | None = None, terms: Sequence[ObjectiveTerm] | None = None,
) -> Objective:
    """The model's objective: reconstruction + each (regularizer, weight hyperparameter) term (``terms``, by
    default the spec's), the regularizers built by their plugins with ``reg_hp[name]`` (defaults when absent)."""
    from probseg_bench.training import Objective

    reg_hp = reg_hp or {}
    return Objective([
        (t.regularizer, float(model_hp[t.weight]),
         plugins.regularizers.get(t.regularizer).factory(**reg_hp.get(t.regularizer, {})))
        for t in (spec.objective if terms is None else terms)
    ])


PROTOCOL_KEYS = ("epochs", "steps", "warmup_epochs", "batch_size", "lr", "weight_decay", "augment", "crop_to_roi",
                 "n_eval_samples")


def apply_protocol_overrides(preset: Preset, overrides: Mapping[str, Any]) -> Preset:
    """``preset`` with some settings replaced (``--epochs``, a grid's ``[protocol]`` table). ``epochs`` replaces a
    preset's step budget too (``quick``: ``--epochs 2`` trains 2 epochs), ``steps`` a preset's epochs.

    Raises:
        ProbsegError: an unknown setting, a value of the wrong type / range, or both epochs and steps.
    """
    if not overrides:
        return preset
    if "epochs" in overrides and "steps" in overrides:
        raise ProbsegError("protocol settings 'epochs' and 'steps' both given: the training length is one of them")
    unknown = [k for k in overrides if k not in PROTOCOL_KEYS]
    if unknown:
        raise ProbsegError(f"protocol setting '{unknown[0]}'{did_you_mean(unknown[0], PROTOCOL_KEYS)}: expected "
                           f"some of {', '.join(PROTOCOL_KEYS)}")
    values: dict[str, Any] = {}
    for k, v in overrides.items():
        current = getattr(preset, k)
        kind = bool if isinstance(current, bool) else float if isinstance(current, float) else int
        expected = f"protocol setting '{k}': expected {'an' if kind is int else 'a'} {kind.__name__}, got {v!r}"
        if (kind is bool) != isinstance(v, bool) or (kind is int and isinstance(v, float) and not v.is_integer()):
            raise ProbsegError(expected)  # no bool as a number, no 2.5 epochs as 2
        try:
            values[k] = kind(v)
        except (TypeError, ValueError, OverflowError):
            raise ProbsegError(expected) from None
        if kind is not bool and values[k] <= 0:
            raise ProbsegError(f"protocol setting '{k}': expected a positive value, got {v!r}")
    if "epochs" in values:
        values["steps"] = None
    return replace(preset, **values)


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (a file's ``true`` is not a latent dimension, a fold or a seed)."""
    return isinstance(value, int) and not isinstance(value, bool)


MAX_LATENT_DIM = 1024
"""The largest latent dimension a run accepts (the paper's grid: 4..7; larger ones only allocate without end)."""


def fold_seed(seed: int, latent_dim: int, fold: int) -> int:
    """The torch seed of one fold's training (model init and draws), derived from the run seed."""
    return (seed * 1_000_003 + latent_dim * 1009 + fold * 101) % (2**31)


@dataclass(frozen=True)
class CheckedRequest:
    """A request resolved without its data (:meth:`Experiment.check`): the specs, the preset with the protocol
    overrides, the objective terms, the dataset parameters, the device, the folds, and the model's and its
    regularizers' hyperparameters (the specs' defaults, then the preset's model defaults, then the request's)."""

    model_spec: ModelSpec
    dataset_spec: DatasetSpec
    preset: Preset
    terms: tuple[ObjectiveTerm, ...]
    dataset_params: dict[str, HyperValue]
    device: Any
    folds: tuple[int, ...]
    model_hp: dict[str, HyperValue]
    reg_hp: dict[str, dict[str, HyperValue]]


def merged_hyperparameters(spec: ModelSpec, preset: Preset, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's model defaults that ``spec`` declares, updated with each of ``layers`` in turn (the request's
    ``--hp``, a tuning trial's values)."""
    declared = {hp.name for hp in spec.hyperparameters}
    merged: dict[str, Any] = {k: v for k, v in preset.model_defaults if k in declared}
    for layer in layers:
        merged.update(layer)
    return merged


@dataclass
class Experiment:
    """A prepared run: specs, preset, objective terms, the loaded dataset, its grouped split and the device;
    ``data_fingerprint``: :func:`probseg_bench.data.fingerprint.data_fingerprint` of ``data`` (after the preset's
    crop), computed once by :meth:`prepare`.

    Build it with :meth:`prepare`; :meth:`hyperparameters` resolves a configuration, :meth:`train` trains one
    fold of it (the test split is never touched here: only ``splits.train_val(fold)``).
    """

    request: RunRequest
    plugins: Plugins
    model_spec: ModelSpec
    dataset_spec: DatasetSpec
    preset: Preset
    terms: tuple[ObjectiveTerm, ...]
    dataset_params: dict[str, HyperValue]
    data: MultiRaterData
    splits: Splits
    device: Any
    folds: tuple[int, ...] = field(default=())
    model_hp: dict[str, HyperValue] = field(default_factory=dict)
    reg_hp: dict[str, dict[str, HyperValue]] = field(default_factory=dict)
    data_fingerprint: str = ""

    @classmethod
    def prepare(cls, request: RunRequest, plugins: Plugins | None = None) -> Experiment:
        """Check the request, load the dataset, split it, and fingerprint its content (one SHA-256 pass over the
        images and masks: about 2 s for LIDC-sized data).

        Raises:
            ProbsegError: unknown plugin / preset / fold / regularizer, bad latent dims, bad data, no device, an
                evaluation beyond its memory bound (:func:`probseg_bench.evaluation.check_evaluation_memory`).
        """
        from probseg_bench.data.splits import protocol_splits
        from probseg_bench.evaluation import check_evaluation_memory

        plugins = plugins or get_plugins()
        c = cls.check(request, plugins)
        data = load_dataset(c.dataset_spec, request.data_root, c.dataset_params, request.trust_pickle)
        data.validate(f"dataset '{request.dataset}'")
        crop = c.preset.crop(c.dataset_spec.protocol)
        if crop is not None:  # the preset crops to the dataset's region of interest (quick)
            data = center_crop(data, crop)
        _, annotators, height, width = data.masks.shape  # the evaluation must fit before any fold trains
        n_eval, batch = c.preset.samples_drawn, min(c.preset.batch_size, len(data))
        check_evaluation_memory(n_eval, annotators, height, width, batch,
                                f"protocol setting 'n_eval_samples' ({n_eval} samples per image)")
        splits = protocol_splits(data.groups, data.metadata, c.preset.split, c.preset.n_folds, c.preset.test_fraction,
                                 request.seed, c.preset.split_seed, f"dataset '{request.dataset}'")
        return cls(request, plugins, c.model_spec, c.dataset_spec, c.preset, c.terms, c.dataset_params, data, splits,
                   c.device, c.folds, c.model_hp, c.reg_hp, data_fingerprint(data))

    @staticmethod
    def check(request: RunRequest, plugins: Plugins | None = None, check_device: bool = True) -> CheckedRequest:
        """The checks of :meth:`prepare` that need no data (so that a command can make them all before it writes
        anything), and the request resolved once (:class:`CheckedRequest`). ``check_device`` False: the device's
        name only (see :func:`resolve_device`).

        Raises:
            ProbsegError: unknown plugin / preset / fold / regularizer / hyperparameter / dataset parameter, bad
                latent dims, no device.
        """
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
        return CheckedRequest(model_spec, dataset_spec, preset, terms, params, device, folds, model_hp, reg_hp)

    @property
    def train_items(self) -> float:
        """The mean number of items of the folds' training splits."""
        return self.splits.train_items

    @property
    def schedule(self) -> tuple[int, int]:
        """(epochs, warm-up epochs) of this dataset under this preset (a step budget resolved with the mean
        training split, so that every fold trains the same number of epochs)."""
        return self.preset.schedule(self.dataset_spec.protocol, self.train_items)

    def protocol_settings(self) -> dict[str, Any]:
        """The resolved preset settings stored with every record (epochs, warm-up and crop resolved)."""
        return self.preset.settings(self.dataset_spec.protocol, self.train_items,
                                    declared={hp.name for hp in self.model_spec.hyperparameters})

    def hyperparameters(
        self, overrides: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, HyperValue], dict[str, dict[str, HyperValue]]]:
        """(model hyperparameters, {regularizer: hyperparameters}): without ``overrides``, the request's, resolved
        once by :meth:`prepare` (the specs' defaults, then the preset's model defaults, then the request's
        ``--hp``); with ``overrides`` (e.g. a tuning trial's values) those applied on top and resolved again.

        Raises:
            ProbsegError: an override that neither the model nor its regularizers declare, or a bad value.
        """
        if not overrides:
            return dict(self.model_hp), {k: dict(v) for k, v in self.reg_hp.items()}
        merged = merged_hyperparameters(self.model_spec, self.preset, self.request.hyperparameters, overrides)
        return resolve_run_hyperparameters(self.model_spec, self.plugins, merged, self.terms)

    def train(
        self, latent_dim: int, fold: int, model_hp: Mapping[str, HyperValue] | None = None,
        reg_hp: Mapping[str, Mapping[str, HyperValue]] | None = None,
        on_epoch: Callable[[EpochLog], Any] | None = None,
        model_hook: Callable[[torch.nn.Module], Any] | None = None,
        checkpoint: Path | None = None, checkpoint_key: dict[str, Any] | None = None,
    ) -> tuple[torch.nn.Module, FoldTrainingResult]:
        """Build the model (seeded with :func:`fold_seed`), check its outputs on two training images
        (:func:`probseg_bench.plugin_check.check_model`), train it on the fold's training split, select the
        lowest validation loss; returns the model with the best weights loaded, and the training result.
        ``model_hook`` receives the model before training (e.g. for per-epoch evaluations in ``on_epoch``);
        ``checkpoint`` / ``checkpoint_key``: the per-epoch training state to resume from (see ``train_fold``).
        ``model_hp`` / ``reg_hp``: the hyperparameters resolved by :meth:`prepare` unless given (a tuning trial's,
        from :meth:`hyperparameters`)."""
        import torch

        from probseg_bench.data.augment import AffineAugmentation
        from probseg_bench.plugin_check import check_model
        from probseg_bench.training import TrainConfig, train_fold

        model_hp = self.model_hp if model_hp is None else model_hp
        reg_hp = self.reg_hp if reg_hp is None else reg_hp
        train_idx, val_idx = self.splits.train_val(fold)
        train_data = self.data.subset(train_idx)
        seed = fold_seed(self.request.seed, latent_dim, fold)
        torch.manual_seed(seed)
        model = self.model_spec.factory(latent_dim=latent_dim, in_channels=self.data.images.shape[1], **model_hp)
        # the plugin's outputs on two training images, before any training (draws no random numbers of the run)
        check_model(self.model_spec.name, model, latent_dim,
                    torch.as_tensor(train_data.images[:2], device=self.device).float(),
                    torch.as_tensor(train_data.masks[:2], device=self.device))
        if model_hook is not None:
            model_hook(model)
        epochs, warmup = self.schedule
        clip = float(model_hp[self.model_spec.grad_clip]) if self.model_spec.grad_clip else 0.0
        strength = self.preset.augmentation
        config = TrainConfig(
            epochs=epochs, warmup_epochs=warmup, batch_size=self.preset.batch_size, lr=self.preset.lr,
            weight_decay=self.preset.weight_decay, grad_clip=clip, augment=self.preset.augment,
            augmentation=AffineAugmentation(rotation=strength.rotation, scale=(1 - strength.scale, 1 + strength.scale),
                                            translate=strength.translate, shear=strength.shear),
            seed=seed, amp=self.device.type == "cuda", channels_last=True,
        )
        objective = build_objective(self.model_spec, self.plugins, model_hp, reg_hp, self.terms)
        result = train_fold(model, objective, train_data, self.data.subset(val_idx), config,
                            self.device, on_epoch=on_epoch, checkpoint=checkpoint, checkpoint_key=checkpoint_key)
        model.load_state_dict(result.best_state)
        return model, result


__all__: Sequence[str] = [
    "Experiment", "RunRequest", "build_objective", "fold_seed", "objective_terms", "resolve_device",
    "resolve_run_hyperparameters",
]
