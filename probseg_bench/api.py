"""The plugin contract (DESIGN.md section 2): every type a plugin author implements, returns or is handed.

A plugin imports only :data:`probseg_bench.hookimpl` and the names in this module (``__all__``); they keep this
import path wherever they are defined. What lives where:

- here: the specs a plugin registers (:class:`ModelSpec`, :class:`RegularizerSpec`, :class:`DatasetSpec` with
  :class:`ProtocolDefaults` and :class:`KnownDistribution`, :class:`ObjectiveTerm`) and the protocols a model
  or regularizer implements (:class:`LatentSegmentationModel` returning :class:`TrainOutput`,
  :class:`LatentRegularizer`);
- :mod:`probseg_bench.curves`: :class:`LoggerSpec` and :class:`CurveLogger`, what a training-curve logger plugin
  (``--log NAME``: TensorBoard built in, MLflow or W&B by a plugin) registers and implements;
- :mod:`probseg_bench.hyperparameters`: :class:`HyperParameter`, :data:`HyperValue`,
  :func:`resolve_hyperparameters` (declaration and coercion of model, regularizer and dataset settings);
- :mod:`probseg_bench.data.container`: :class:`MultiRaterData`, the data container a dataset plugin returns;
- :mod:`probseg_bench.registry`: :class:`Registry` (``Registry[ModelSpec]`` etc.), the argument of the
  registration hooks of :mod:`probseg_bench.hookspecs`; the plugin manager's bookkeeping (``PluginInfo``,
  ``PluginFailure``) stays there.

Nothing here imports torch at module level, so ``probseg-bench list`` starts fast; torch types appear in
annotations only.

Shapes use these letters: B batch, A annotators, N images, C image channels, H x W pixels, d latent dimension,
n samples per image, K output channels (1 for a binary foreground mask: logits > 0 is foreground).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from probseg_bench.curves import CurveLogger, LoggerSpec
from probseg_bench.data.container import MultiRaterData
from probseg_bench.errors import ProbsegError
from probseg_bench.hyperparameters import HyperParameter, HyperValue, resolve_hyperparameters
from probseg_bench.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.distributions import Normal

__all__ = [
    "CurveLogger",
    "DatasetSpec",
    "HyperParameter",
    "HyperValue",
    "KnownDistribution",
    "LatentRegularizer",
    "LatentSegmentationModel",
    "LoggerSpec",
    "ModelSpec",
    "MultiRaterData",
    "ObjectiveTerm",
    "ProtocolDefaults",
    "Registry",
    "RegularizerSpec",
    "TrainOutput",
    "resolve_hyperparameters",
]


# ------------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class ProtocolDefaults:
    """A dataset's training schedule under the paper protocol (Section III-D of the seed paper), and its region
    of interest: ``roi_size`` is the side in pixels of the centred square window that holds every annotation of
    the dataset (None = unknown / the whole image); presets that crop to the region of interest (``quick``) use
    it, the paper protocol does not."""

    epochs: int = 200
    warmup_epochs: int = 5
    roi_size: int | None = None


@dataclass(frozen=True)
class KnownDistribution:
    """What a generated dataset knows about its TRUE per-image distribution over masks, for the validity
    benchmark (``probseg-bench validate``).

    ``true_distribution(index, **dataset_parameters)`` returns image ``index``'s support and probabilities:
    (masks bool [M, H, W], float [M] summing to 1). ``oracle_metrics(n_samples=n, indices=[...],
    **dataset_parameters)`` scores ``n`` draws per image from the true distribution against the image's
    annotations with the suite's metric code and returns a mapping with at least ``ged``, ``hm_iou``, ``ewd``
    (means over the images) and ``diversity`` (the exact expected 1 - IoU between two independent draws, mean over
    the images). ``intrinsic_dimension(**dataset_parameters)`` is the number of independent factors of variation
    of the masks (to read an effective rank against). ``validation_params``: the dataset parameters ``validate``
    uses unless the user overrides them.
    """

    true_distribution: Callable[..., tuple[np.ndarray, np.ndarray]]
    oracle_metrics: Callable[..., Mapping[str, float]]
    intrinsic_dimension: Callable[..., int]
    validation_params: Mapping[str, HyperValue] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset plugin.

    ``load(data_root, **parameters)`` returns a :class:`MultiRaterData` (``data_root`` is None when the user
    gave no ``--data-root``; a plugin that needs one raises :class:`ProbsegError` saying so and showing
    ``layout``). ``parameters`` declares the dataset's options (``--dataset-param NAME=VALUE``), e.g. the task
    of a multi-task QUBIQ folder; their resolved values are stored with every result. ``known_distribution``:
    only for generated data whose true distribution over masks is known (see :class:`KnownDistribution`).
    """

    name: str
    description: str
    load: Callable[..., MultiRaterData]
    license: str = ""
    citation: str = ""
    protocol: ProtocolDefaults = ProtocolDefaults()
    parameters: tuple[HyperParameter, ...] = ()
    layout: str = ""
    known_distribution: KnownDistribution | None = None


# ---------------------------------------------------------------------------------------------------- models
@dataclass
class TrainOutput:
    """What a model's ``forward(image, masks)`` returns for one training batch.

    Attributes:
        logits: float [B, K, H, W], the reconstruction of annotation ``annotation_index`` from a posterior sample.
        target: float [B, K, H, W] in {0, 1}, that annotation.
        prior: ``Normal`` with loc/scale [B, d], p(z|x); None for a model without latent prior
            (``latent_dim == 0``: then ``posterior``, ``posterior_samples`` and ``prior_samples`` are None too).
        posterior: ``Normal`` with loc/scale [B, d], q(z|x, y_k) of the reconstructed annotation k.
        posterior_samples: [B, S, d] posterior samples; S = A when the model encodes every annotation
            (SPU-Net), else 1. For a flow posterior these are the samples after the flow (z_K).
        prior_samples: [B, S, d] samples of p(z|x), as many as ``posterior_samples``.
        annotation_index: long [B], the annotation k reconstructed for each image.
        base_samples: [B, d] the base sample z_0 of the reconstructed annotation before a flow (None without one).
        log_det: [B] sum_k log|det J_k| of the flow (None without one).
        sample_blocks: ``posterior_samples`` (and ``prior_samples``) hold this many independent draws of the same
            layout, one after the other along S (SPU-Net: ``samples_per_annotation``; default 1); a regularizer
            that splits the points into independent halves (``sinkhorn_correction = "split"``) needs it even.
        reconstruction: float [B], the model's own per-image reconstruction loss (e.g. SSN's Monte-Carlo
            -log p(y|x), an ensemble's summed member losses), used by the objective in place of the binary
            cross-entropy of ``logits`` against ``target``; None (default): that cross-entropy.
        level_sizes: a hierarchical model (several latent levels, e.g. PHiSeg, HPU-Net): the sizes of the levels'
            consecutive blocks of the flattened latent, whose length D = sum(level_sizes) replaces d in every
            latent shape above (and in ``prior(x)`` and ``decode``); () (default): one level of size d.
        level_weights: per-level weights of the KL term (``kl`` returns sum_l w_l KL_l); () (default): all 1.
    """

    logits: torch.Tensor
    target: torch.Tensor
    prior: Normal | None
    posterior: Normal | None
    posterior_samples: torch.Tensor | None
    prior_samples: torch.Tensor | None
    annotation_index: torch.Tensor
    base_samples: torch.Tensor | None = None
    log_det: torch.Tensor | None = None
    sample_blocks: int = 1
    reconstruction: torch.Tensor | None = None
    level_sizes: tuple[int, ...] = ()
    level_weights: tuple[float, ...] = ()

    def latent(self) -> tuple[Normal, Normal, torch.Tensor, torch.Tensor]:
        """(prior, posterior, posterior_samples, prior_samples), for a latent regularizer.

        Raises:
            ProbsegError: the model has no latent prior (they are None).
        """
        if self.prior is None or self.posterior is None or self.posterior_samples is None or self.prior_samples is None:
            raise ProbsegError("a latent regularizer needs a model with a latent prior (prior, posterior and their "
                               "samples); this model has latent_dim 0")
        return self.prior, self.posterior, self.posterior_samples, self.prior_samples

    def float(self) -> TrainOutput:
        """A float32 copy (after a bfloat16-autocast forward pass: the objective is computed in float32)."""
        from torch.distributions import Normal

        def f(t: Any) -> Any:
            return t.float() if t is not None and t.is_floating_point() else t

        def normal(d: Normal | None) -> Normal | None:
            return None if d is None else Normal(f(d.loc), f(d.scale), validate_args=False)

        return TrainOutput(
            logits=f(self.logits), target=f(self.target), prior=normal(self.prior), posterior=normal(self.posterior),
            posterior_samples=f(self.posterior_samples), prior_samples=f(self.prior_samples),
            annotation_index=self.annotation_index, base_samples=f(self.base_samples), log_det=f(self.log_det),
            sample_blocks=self.sample_blocks, reconstruction=f(self.reconstruction),
            level_sizes=self.level_sizes, level_weights=self.level_weights,
        )


@runtime_checkable
class LatentSegmentationModel(Protocol):
    """The latent-model protocol every model plugin's module implements (a ``torch.nn.Module``).

    ``latent_dim`` is the d the factory was given, or 0 for a model without a latent prior (SSN, a U-Net
    ensemble): such a model returns ``prior``/``posterior``/``posterior_samples``/``prior_samples`` None from
    ``forward``, None from ``prior(image)`` (the effective rank and ``analyze``'s latent figures 4-7 are then
    skipped), and its ``decode`` is never called. Its ``sample`` still returns [B, n, K, H, W].

    A hierarchical model (several latent levels) keeps ``latent_dim`` = the d it was given (e.g. channels per
    latent pixel), flattens its levels into one latent of size D (``TrainOutput.level_sizes``, which depends on
    the image size) and uses D wherever d appears below: ``prior(x)`` returns the prior's conditionals along one
    ancestral draw, flattened, and ``decode`` takes flattened latents [B, n, D]. Its effective rank is that of the
    flattened sigma (over all levels); per level, that of each level's block
    (:func:`probseg_bench.metrics.effective_rank_per_level`).

    Optional: a method ``on_optimizer_step()`` (no arguments), which the training loop calls after every optimiser
    step, e.g. to update a weight average that the model uses in eval mode (``ccdm``'s ``ema_decay``). Whatever it
    keeps belongs in the module's ``state_dict`` so that checkpoints and resumed folds carry it.
    """

    latent_dim: int

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks float/uint8 [B, A, H, W] -> :class:`TrainOutput`."""
        ...

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n segmentations per image from the PRIOR: logits [B, n, K, H, W]; U-Net features computed once."""
        ...

    def prior(self, image: torch.Tensor) -> Normal | None:
        """p(z|x): Normal with loc/scale [B, d]; None when ``latent_dim == 0``."""
        ...

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decode given latents z [B, n, d] -> logits [B, n, K, H, W]."""
        ...


@dataclass(frozen=True)
class ObjectiveTerm:
    """One weighted latent-regularizer term of a model's objective: ``weight * regularizer(out)``.

    ``weight`` names the model hyperparameter holding the weight (e.g. SPU-Net's ``alpha`` for ``kl``).
    ``swappable``: the user may put another regularizer plugin in this slot (``run --regularizer NAME``), e.g.
    ``mmd`` in place of SPU-Net's ``sinkhorn`` term on the aggregate posterior.
    """

    regularizer: str
    weight: str
    swappable: bool = False


DEFAULT_LATENT_DIM = 6
"""The latent dimension d of a run that names none, for a model that declares no ``ModelSpec.latent_dim``."""


@dataclass(frozen=True)
class ModelSpec:
    """A model plugin.

    ``factory(latent_dim=d, in_channels=C, **hyperparameters)`` builds a ``torch.nn.Module`` implementing
    :class:`LatentSegmentationModel` (every declared hyperparameter is passed: its default, a preset's
    ``model_defaults``, ``--hp``; the suite checks the module's outputs on two images before training, see
    :mod:`probseg_bench.plugin_check`). The training objective is
    ``reconstruction + sum(hyperparameters[t.weight] * regularizer_t(out) for t in objective)``, with the
    reconstruction the binary cross-entropy summed over pixels (or the model's own ``TrainOutput.reconstruction``),
    each term a per-image value, averaged over the batch. ``grad_clip`` names the hyperparameter holding the
    gradient-norm clip (0 = none), if any. ``latent_dim`` is the d of the model's reference code (e.g. PHiSeg's
    2 channels per pixel per level), used by ``run``, ``tune`` and ``validate`` when ``--latent-dim`` is not
    given; None means :data:`DEFAULT_LATENT_DIM` (6, the middle of the seed paper's d = 4..7). ``revision``: raise
    it when a fix changes what a configuration of the model trains; from 1 on it is part of the configuration hash,
    so results stored before the fix are not taken for the fixed model's (0 leaves the hashes as they were).
    """

    name: str
    description: str
    factory: Callable[..., Any]
    hyperparameters: tuple[HyperParameter, ...] = ()
    objective: tuple[ObjectiveTerm, ...] = ()
    grad_clip: str | None = None
    citation: str = ""
    latent_dim: int | None = None
    revision: int = 0

    @property
    def default_latent_dim(self) -> int:
        """The d used when the user gives none: ``latent_dim``, else :data:`DEFAULT_LATENT_DIM`."""
        return self.latent_dim if self.latent_dim is not None else DEFAULT_LATENT_DIM


# ----------------------------------------------------------------------------------------------- regularizers
class LatentRegularizer(Protocol):
    """A built regularizer: ``__call__(out) -> per-image penalty`` float [B]."""

    def __call__(self, out: TrainOutput) -> torch.Tensor: ...


@dataclass(frozen=True)
class RegularizerSpec:
    """A latent-regularizer plugin. ``factory(**hyperparameters)`` returns a :class:`LatentRegularizer`.

    Its hyperparameter names must not clash with those of the models that use it (they share one namespace
    on the command line, ``--hp name=value``).
    """

    name: str
    description: str
    factory: Callable[..., LatentRegularizer]
    hyperparameters: tuple[HyperParameter, ...] = ()
    citation: str = ""
