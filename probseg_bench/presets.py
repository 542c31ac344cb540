"""Protocol presets: ``paper`` (the seed paper's settings, Section III-C/D) and ``quick`` (a smoke run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from probseg_bench.api import ProtocolDefaults
from probseg_bench.errors import ProbsegError, did_you_mean


@dataclass(frozen=True)
class Preset:
    """Protocol settings. ``epochs``/``warmup_epochs`` None = the dataset plugin's defaults (LIDC 200/5,
    QUBIQ 2500/50). ``model_defaults``: (name, value) pairs that replace a model's hyperparameter defaults
    where the model declares that name (e.g. a smaller U-Net for ``quick``); ``--hp`` still overrides them."""

    name: str
    description: str
    epochs: int | None = None
    warmup_epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    augment: bool = True
    n_folds: int = 3
    test_fraction: float = 0.2
    n_eval_samples: int = 16
    model_defaults: tuple[tuple[str, str], ...] = ()

    def schedule(self, dataset: ProtocolDefaults) -> tuple[int, int]:
        """(epochs, warm-up epochs) for a dataset."""
        epochs = self.epochs if self.epochs is not None else dataset.epochs
        warmup = self.warmup_epochs if self.warmup_epochs is not None else dataset.warmup_epochs
        return epochs, min(warmup, epochs)

    def settings(self, dataset: ProtocolDefaults) -> dict[str, object]:
        """The resolved settings, as stored with every result record."""
        epochs, warmup = self.schedule(dataset)
        out = asdict(self)
        out.pop("description")
        out["model_defaults"] = dict(self.model_defaults)
        out.update(epochs=epochs, warmup_epochs=warmup)
        return out


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=(
            "the seed paper's protocol: 20% grouped test split, 3-fold CV, Adam lr 1e-4, wd 1e-5, batch 32, "
            "warm-up + cosine, the dataset's epochs (LIDC 200, QUBIQ 2500), affine augmentation, 16 samples"
        ),
    ),
    "quick": Preset(
        name="quick",
        description=(
            "a smoke run, NOT paper numbers: the paper protocol with a half-width U-Net (filters 16,32,64,96), "
            "lr 3e-4, batch 4, 60 epochs (2 warm-up); spunet on lidc-sample takes under 10 minutes on 2 CPU cores"
        ),
        epochs=60,
        warmup_epochs=2,
        batch_size=4,
        lr=3e-4,
        model_defaults=(("filters", "16,32,64,96"),),
    ),
}


def get_preset(name: str) -> Preset:
    """Raises ProbsegError for an unknown preset, listing the known ones."""
    if name not in PRESETS:
        raise ProbsegError(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
