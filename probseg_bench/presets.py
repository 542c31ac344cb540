"""Protocol presets: ``paper`` (the seed paper's settings, Section III-C/D), ``quick`` (a smoke run), and the
field's two LIDC protocols ``lidc-v1`` and ``lidc-v2`` (CCDM, Zbinden et al. ICCV 2023, Section 4.1: fixed splits,
GED and HM-IoU at 16, 32 and 100 samples)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from probseg_bench.api import ProtocolDefaults
from probseg_bench.errors import ProbsegError, did_you_mean


@dataclass(frozen=True)
class Augmentation:
    """Strength of the joint random affine augmentation of image and masks (see
    :class:`probseg_bench.data.augment.AffineAugmentation`; the defaults are the seed paper's, Section III-D).

    Attributes:
        rotation: maximal |angle| in degrees.
        scale: zoom factor drawn in [1 - scale, 1 + scale].
        translate: maximal |shift| per axis, as a fraction of the image size.
        shear: maximal |shear factor| per axis (our reading of the paper's "30%").
    """

    rotation: float = 180.0
    scale: float = 0.2
    translate: float = 0.1
    shear: float = 0.3


@dataclass(frozen=True)
class Preset:
    """Protocol settings.

    Schedule: ``epochs``/``warmup_epochs`` None = the dataset plugin's defaults (LIDC 200/5, QUBIQ 2500/50);
    ``steps``, when set, fixes the training budget in optimisation steps instead, whatever the dataset's size:
    epochs = max(1, round(steps / steps per epoch)), the steps per epoch of the mean training split
    (ceil(items / batch size)). ``crop_to_roi``: every image and mask is centre-cropped to the dataset's region
    of interest (``ProtocolDefaults.roi_size``; no crop when the dataset declares none) before the split.
    ``augmentation``: the strength of the affine augmentation when ``augment``. ``model_defaults``: (name,
    value) pairs that replace a model's hyperparameter defaults where the model declares that name (e.g. a
    smaller U-Net for ``quick``); ``--hp`` still overrides them."""

    name: str
    description: str
    epochs: int | None = None
    warmup_epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    augment: bool = True
    augmentation: Augmentation = Augmentation()
    crop_to_roi: bool = False
    n_folds: int = 3
    test_fraction: float = 0.2
    n_eval_samples: int = 16
    model_defaults: tuple[tuple[str, str], ...] = ()
    split: str = "cv"
    split_seed: int | None = None
    sample_counts: tuple[int, ...] = ()

    @property
    def samples_drawn(self) -> int:
        """Samples per test image of the evaluation's sampling pass: max(n_eval_samples, *sample_counts)."""
        return max((self.n_eval_samples, *self.sample_counts))

    @property
    def fixed_split(self) -> bool:
        """Whether the folds are training runs on one fixed split (``phiseg``, ``dataset``), not CV folds."""
        return self.split != "cv"

    def schedule(self, dataset: ProtocolDefaults, train_items: float | None = None) -> tuple[int, int]:
        """(epochs, warm-up epochs) for a dataset whose training splits hold ``train_items`` items on average
        (needed when ``steps`` is set).

        Raises:
            ProbsegError: ``steps`` set but ``train_items`` not given or not positive.
        """
        if self.steps is not None:
            if not train_items or train_items <= 0:
                raise ProbsegError(f"preset '{self.name}': a step budget needs the training split's size")
            epochs = max(1, round(self.steps / math.ceil(train_items / self.batch_size)))
        else:
            epochs = self.epochs if self.epochs is not None else dataset.epochs
        warmup = self.warmup_epochs if self.warmup_epochs is not None else dataset.warmup_epochs
        return epochs, min(warmup, epochs)

    def crop(self, dataset: ProtocolDefaults) -> int | None:
        """The side of the centre crop applied to the dataset, or None."""
        return dataset.roi_size if self.crop_to_roi else None

    def settings(self, dataset: ProtocolDefaults, train_items: float | None = None,
                 declared: Collection[str] | None = None) -> dict[str, object]:
        """The resolved settings, as stored with every result record (``epochs``, ``warmup_epochs`` and ``crop``
        resolved for the dataset; ``model_defaults`` only those a model declaring ``declared`` takes). The split
        and sample-count settings are left out where they have their defaults (``cv``, no ``split_seed``, no
        ``sample_counts``), so that records made before these settings existed keep their configuration hash."""
        epochs, warmup = self.schedule(dataset, train_items)
        out = asdict(self)
        out.pop("description")
        out["model_defaults"] = {k: v for k, v in self.model_defaults if declared is None or k in declared}
        for key, default in (("split", "cv"), ("split_seed", None), ("sample_counts", ())):
            if out[key] == default:
                out.pop(key)
        out.update(epochs=epochs, warmup_epochs=warmup, crop=self.crop(dataset))
        return out


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=(
            "the seed paper's protocol: 20% grouped test split, 3-fold CV, Adam lr 1e-4, wd 1e-5, batch 32, "
            "warm-up + cosine, the dataset's epochs (LIDC 200, QUBIQ 2500), affine augmentation (rotation "
            "±180°, scale ±0.2, translation 0.1, shear 0.3), no extra crop (the datasets' 128 x 128 crops), 16 samples"
        ),
    ),
    "quick": Preset(
        name="quick",
        description=(
            "a few CPU minutes, NOT paper numbers; differs from paper in: 1600 optimisation steps of batch 4 "
            "(lidc-sample: 400 epochs, 2 warm-up) instead of the dataset's epochs at batch 32; lr 3e-4 instead "
            "of 1e-4; milder augmentation (rotation ±180°, scale ±0.1, translation 0.05, shear 0.1 instead of "
            "±0.2, 0.1, 0.3); the dataset's region of interest as a centre crop (lidc-sample: 32 x 32 centre "
            "crop, which holds every annotation); a half-width U-Net (filters 16,32,64,96); for ccdm also one "
            "residual block per level, a weight average of decay 0.99 (the reference's 0.9999 would still be 85% "
            "initial weights after 1600 steps) and 4 validation steps (res_blocks 1, ema_decay 0.99, "
            "validation_timesteps 4)"
        ),
        steps=1600,
        warmup_epochs=2,
        batch_size=4,
        lr=3e-4,
        augmentation=Augmentation(rotation=180.0, scale=0.1, translate=0.05, shear=0.1),
        crop_to_roi=True,
        model_defaults=(("filters", "16,32,64,96"), ("res_blocks", "1"), ("ema_decay", "0.99"),
                        ("validation_timesteps", "4")),
    ),
    "lidc-v1": Preset(
        name="lidc-v1",
        description=(
            "the field's LIDC v1 protocol (CCDM Section 4.1; for the lidc pickle): the PHiSeg code's split by "
            "series (test 20% of the series, validation 20% of the rest, numpy RandomState(0)), 3 training runs "
            "on it with their own seeds (not CV folds), the best-validation checkpoint, GED and HM-IoU at 16, 32 "
            "and 100 samples; training as the paper preset"
        ),
        split="phiseg",
        split_seed=0,
        sample_counts=(16, 32, 100),
    ),
    "lidc-v2": Preset(
        name="lidc-v2",
        description=(
            "the field's LIDC v2 protocol (CCDM Section 4.1; for lidc-crops): the crops' own train/val/test "
            "folders, 3 training runs on them with their own seeds (not CV folds), the best-validation "
            "checkpoint, GED and HM-IoU at 16, 32 and 100 samples; training as the paper preset"
        ),
        split="dataset",
        sample_counts=(16, 32, 100),
    ),
}


def get_preset(name: str) -> Preset:
    """Raises ProbsegError for an unknown preset, listing the known ones."""
    if name not in PRESETS:
        raise ProbsegError(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


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
