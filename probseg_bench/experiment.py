"""One experiment = one model on one dataset under one preset: everything that is fixed before a fold is
trained (plugins, hyperparameters, the dataset, its split, the device), and the training of one fold.

Built from a checked request (:mod:`probseg_bench.request`); used by the cross-validation protocol
(:mod:`probseg_bench.protocol`) and by hyperparameter tuning (:mod:`probseg_bench.tuning`), so that both train
exactly the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probseg_bench.api import DatasetSpec, HyperValue, ModelSpec, MultiRaterData, ObjectiveTerm
from probseg_bench.data.crop import center_crop
from probseg_bench.data.fingerprint import data_fingerprint
from probseg_bench.data.loading import load_dataset
from probseg_bench.plugins import Plugins
from probseg_bench.presets import Preset
from probseg_bench.request import CheckedRequest, RunRequest, merged_hyperparameters, resolve_run_hyperparameters

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from probseg_bench.data.splits import Splits
    from probseg_bench.training import EpochLog, FoldTrainingResult, Objective


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


def fold_seed(seed: int, latent_dim: int, fold: int) -> int:
    """The torch seed of one fold's training (model init and draws), derived from the run seed."""
    return (seed * 1_000_003 + latent_dim * 1009 + fold * 101) % (2**31)


@dataclass
class Experiment:
    """A prepared run: the checked request (:class:`~probseg_bench.request.CheckedRequest`: specs, preset, objective
    terms, hyperparameters, device, folds), the loaded dataset, its grouped split; ``data_fingerprint``:
    :func:`probseg_bench.data.fingerprint.data_fingerprint` of ``data`` (after the preset's crop), computed once by
    :meth:`prepare`. The checked request's fields are read through it (``exp.preset`` is ``exp.checked.preset``),
    never copied.

    Build it with :meth:`prepare`; :meth:`hyperparameters` resolves a configuration, :meth:`train` trains one
    fold of it (the test split is never touched here: only ``splits.train_val(fold)``).
    """

    checked: CheckedRequest
    data: MultiRaterData
    splits: Splits
    data_fingerprint: str = ""

    @classmethod
    def prepare(cls, checked: CheckedRequest) -> Experiment:
        """Load the checked request's dataset, crop it as its preset says, split it, and fingerprint its content
        (one SHA-256 pass over the images and masks: about 1 s for LIDC-sized data). The request is not checked
        again.

        Raises:
            ProbsegError: bad data, an evaluation beyond its memory bound
                (:func:`probseg_bench.evaluation.check_evaluation_memory`).
        """
        from probseg_bench.data.splits import protocol_splits
        from probseg_bench.evaluation import check_evaluation_memory

        c, request = checked, checked.request
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
        return cls(checked, data, splits, data_fingerprint(data))

    # the checked request's fields, read through (not copied)
    @property
    def request(self) -> RunRequest:
        return self.checked.request

    @property
    def plugins(self) -> Plugins:
        return self.checked.plugins

    @property
    def model_spec(self) -> ModelSpec:
        return self.checked.model_spec

    @property
    def dataset_spec(self) -> DatasetSpec:
        return self.checked.dataset_spec

    @property
    def preset(self) -> Preset:
        return self.checked.preset

    @property
    def terms(self) -> tuple[ObjectiveTerm, ...]:
        return self.checked.terms

    @property
    def dataset_params(self) -> dict[str, HyperValue]:
        return self.checked.dataset_params

    @property
    def device(self) -> Any:
        return self.checked.device

    @property
    def folds(self) -> tuple[int, ...]:
        return self.checked.folds

    @property
    def model_hp(self) -> dict[str, HyperValue]:
        return self.checked.model_hp

    @property
    def reg_hp(self) -> dict[str, dict[str, HyperValue]]:
        return self.checked.reg_hp

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
        ``model_hp`` / ``reg_hp``: the checked request's hyperparameters unless given (a tuning trial's,
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


__all__: Sequence[str] = ["Experiment", "build_objective", "fold_seed"]
