"""The types a plugin author implements or returns (the plugin contract of DESIGN.md section 2).

A plugin imports only :data:`probseg_bench.hookimpl` and the names in this module. Nothing here imports torch at
module level, so ``probseg-bench list`` starts fast; torch types appear in annotations only.

Shapes use these letters: B batch, A annotators, N images, C image channels, H x W pixels, d latent dimension,
n samples per image, K output channels (1 for a binary foreground mask: logits > 0 is foreground).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from probseg_bench.errors import PluginCollisionError, ProbsegError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.distributions import Normal

HyperValue = float | int | str | bool


# --------------------------------------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class HyperParameter:
    """One hyperparameter of a model or regularizer plugin: its default and its search range.

    ``low``/``high`` bound a numeric search (``log=True`` for a log-uniform search); ``choices`` lists the values
    of a categorical one. ``tunable=False`` marks a setting that a search leaves alone (e.g. a gradient clip).
    """

    name: str
    default: HyperValue
    help: str = ""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[HyperValue, ...] | None = None
    tunable: bool = True

    def coerce(self, value: Any, noun: str = "hyperparameter") -> HyperValue:
        """Convert ``value`` (e.g. a CLI string) to the type of the default; errors call it a ``noun`` (a dataset
        plugin's parameters are ``HyperParameter`` too, named "dataset parameter" in its messages).

        Raises:
            ProbsegError: when the value cannot be converted or lies outside ``choices``.
        """
        kind = type(self.default)
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                out: HyperValue = value.lower() in {"true", "1", "yes"}
            elif kind is bool:
                # a file's true/false, or 0/1; no other number is silently a bool
                if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                    out = bool(value)
                else:
                    raise ValueError(value)
            elif isinstance(value, bool) and kind is not str:
                raise ValueError(value)  # TOML's true is not the number 1
            elif kind is int and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)  # 2.7 is not silently 2
                out = int(value)
            else:
                out = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ProbsegError(
                f"{noun} '{self.name}': expected {'an' if kind.__name__[0] in 'aeiou' else 'a'} "
                f"{kind.__name__}, got {value!r}"
            ) from None
        if isinstance(out, float) and not np.isfinite(out):
            raise ProbsegError(f"{noun} '{self.name}': expected a finite number, got {value!r}")
        if self.choices is not None and out not in self.choices:
            raise ProbsegError(f"{noun} '{self.name}': expected one of {list(self.choices)}, got {value!r}")
        return out


def resolve_hyperparameters(
    owner: str, declared: Sequence[HyperParameter], overrides: Mapping[str, Any], noun: str = "hyperparameter"
) -> dict[str, HyperValue]:
    """Defaults of ``declared`` updated with ``overrides`` (coerced to the declared types); the messages call a
    declared name a ``noun`` ("dataset parameter" for a dataset plugin's).

    Raises:
        ProbsegError: for an override that ``owner`` does not declare (with the closest declared name), or a
            value of the wrong type.
    """
    by_name = {hp.name: hp for hp in declared}
    unknown = [k for k in overrides if k not in by_name]
    if unknown:
        raise ProbsegError(
            f"{owner} has no {noun} '{unknown[0]}'{did_you_mean(unknown[0], by_name)}; "
            f"it has: {', '.join(sorted(by_name)) or 'none'}"
        )
    out = {hp.name: hp.default for hp in declared}
    out.update({k: by_name[k].coerce(v, noun) for k, v in overrides.items()})
    return out


# ----------------------------------------------------------------------------------------------------- data
@dataclass
class MultiRaterData:
    """A multi-annotator segmentation dataset, fully or lazily (memory-mapped) in memory.

    Attributes:
        images: float32 (or float16, to halve the memory of large sets) [N, C, H, W], intensities normalised by
            the dataset plugin (documented there); training and evaluation compute in float32.
        masks: uint8 [N, A, H, W] with values in {0, 1}; A annotators, every image has all A masks (a mask may be
            empty: the annotator marked nothing).
        groups: [N] patient/case ids (str or int). Splits never put one group on both sides.
        metadata: optional per-item columns, each of length N (e.g. the original file name).
    """

    images: np.ndarray
    masks: np.ndarray
    groups: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_annotators(self) -> int:
        return int(self.masks.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def validate(self, source: str = "dataset", full: bool = False) -> None:
        """Check shapes, dtypes and values (for memory-mapped arrays, values only when ``full``: a scan of every
        item in chunks).

        Raises:
            ProbsegError: naming ``source`` and what was expected.
        """
        im, mk, gr = self.images, self.masks, np.asarray(self.groups)
        if im.ndim != 4:
            raise ProbsegError(f"{source}: images must have shape [N, C, H, W], got {tuple(im.shape)}")
        if im.dtype not in (np.float32, np.float16):
            raise ProbsegError(f"{source}: images must be float32 or float16, got {im.dtype}")
        if mk.ndim != 4:
            raise ProbsegError(f"{source}: masks must have shape [N, A, H, W], got {tuple(mk.shape)}")
        if mk.dtype != np.uint8:
            raise ProbsegError(f"{source}: masks must be uint8 in {{0, 1}}, got {mk.dtype}")
        if mk.shape[0] != im.shape[0] or mk.shape[2:] != im.shape[2:]:
            raise ProbsegError(
                f"{source}: masks {tuple(mk.shape)} do not match images {tuple(im.shape)} "
                "(expected the same N, H, W)"
            )
        if mk.shape[1] < 1:
            raise ProbsegError(f"{source}: expected at least one annotator, got A = 0")
        if gr.shape != (im.shape[0],):
            raise ProbsegError(f"{source}: groups must have shape [N] = [{im.shape[0]}], got {gr.shape}")
        if full or not (isinstance(im, np.memmap) or isinstance(mk, np.memmap)):
            for start in range(0, im.shape[0], 512):  # in chunks: a memory-mapped set is not loaded at once
                block = np.asarray(im[start : start + 512])
                finite = np.isfinite(block).reshape(block.shape[0], -1).all(1)
                if not finite.all():
                    bad = start + int(np.argmin(finite))
                    raise ProbsegError(f"{source}: image {bad} contains NaN or infinite values")
                top = int(np.asarray(mk[start : start + 512]).max(initial=0))
                if top > 1:
                    raise ProbsegError(f"{source}: masks must hold only 0 and 1, found {top}")
        for key, col in self.metadata.items():
            if len(col) != im.shape[0]:
                raise ProbsegError(f"{source}: metadata column '{key}' has {len(col)} rows, expected {im.shape[0]}")

    def subset(self, index: np.ndarray) -> MultiRaterData:
        """The items at ``index`` (int array), metadata included, copied into memory.

        From memory-mapped arrays the copy is made in chunks, and the mapped pages are released after each
        chunk, so selecting a split of a large converted set costs only the split's own memory.
        """
        return MultiRaterData(
            images=_take(self.images, index),
            masks=_take(self.masks, index),
            groups=np.asarray(self.groups)[index],
            metadata={k: np.asarray(v)[index] for k, v in self.metadata.items()},
        )


def _take(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]`` as a new in-memory array; for a memory map, chunk by chunk, dropping mapped pages."""
    if not isinstance(array, np.memmap):
        return np.ascontiguousarray(array[index])
    import mmap

    index = np.asarray(index)
    out = np.empty((len(index), *array.shape[1:]), dtype=array.dtype)
    mapping = getattr(array, "_mmap", None)
    for start in range(0, len(index), 256):
        out[start : start + 256] = array[index[start : start + 256]]
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)
    return out


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
        prior: ``Normal`` with loc/scale [B, d], p(z|x).
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
    """

    logits: torch.Tensor
    target: torch.Tensor
    prior: Normal
    posterior: Normal
    posterior_samples: torch.Tensor
    prior_samples: torch.Tensor
    annotation_index: torch.Tensor
    base_samples: torch.Tensor | None = None
    log_det: torch.Tensor | None = None
    sample_blocks: int = 1


    def float(self) -> TrainOutput:
        """A float32 copy (after a bfloat16-autocast forward pass: the objective is computed in float32)."""
        from torch.distributions import Normal

        def f(t: Any) -> Any:
            return t.float() if t is not None and t.is_floating_point() else t

        return TrainOutput(
            logits=f(self.logits), target=f(self.target),
            prior=Normal(f(self.prior.loc), f(self.prior.scale), validate_args=False),
            posterior=Normal(f(self.posterior.loc), f(self.posterior.scale), validate_args=False),
            posterior_samples=f(self.posterior_samples), prior_samples=f(self.prior_samples),
            annotation_index=self.annotation_index, base_samples=f(self.base_samples), log_det=f(self.log_det),
            sample_blocks=self.sample_blocks,
        )


@runtime_checkable
class LatentSegmentationModel(Protocol):
    """The latent-model protocol every model plugin's module implements (a ``torch.nn.Module``)."""

    latent_dim: int

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """image float [B, C, H, W], masks float/uint8 [B, A, H, W] -> :class:`TrainOutput`."""
        ...

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n segmentations per image from the PRIOR: logits [B, n, K, H, W]; U-Net features computed once."""
        ...

    def prior(self, image: torch.Tensor) -> Normal:
        """p(z|x): Normal with loc/scale [B, d]."""
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


@dataclass(frozen=True)
class ModelSpec:
    """A model plugin.

    ``factory(latent_dim=d, in_channels=C, **hyperparameters)`` builds a ``torch.nn.Module`` implementing
    :class:`LatentSegmentationModel` (every declared hyperparameter is passed: its default, a preset's
    ``model_defaults``, ``--hp``; the suite checks the module's outputs on two images before training, see
    :mod:`probseg_bench.plugin_check`). The training objective is
    ``reconstruction + sum(hyperparameters[t.weight] * regularizer_t(out) for t in objective)``, with the
    reconstruction the binary cross-entropy summed over pixels, each term a per-image value, averaged over the
    batch. ``grad_clip`` names the hyperparameter holding the gradient-norm clip (0 = none), if any.
    """

    name: str
    description: str
    factory: Callable[..., Any]
    hyperparameters: tuple[HyperParameter, ...] = ()
    objective: tuple[ObjectiveTerm, ...] = ()
    grad_clip: str | None = None
    citation: str = ""


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


# --------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin came from (for ``probseg-bench list`` and collision errors)."""

    kind: str  # "model" | "regularizer" | "dataset"
    name: str
    description: str
    distribution: str  # the distribution that provides it, e.g. "probseg-bench 0.1.0"
    entry_point: str  # the entry point it was loaded through


_GENERIC_TOKENS = frozenset({"probseg", "bench", "plugin", "plugins", "model", "models", "dataset", "datasets",
                             "regularizer", "regularizers", "py", "python"})


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if len(t) > 1 and t not in _GENERIC_TOKENS}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin entry point that could not be loaded, or whose registration hook raised.

    ``entry_point``: ``"name = module"``; ``distribution``: ``"name version"``; ``error``: ``"Type: message"``;
    ``kind``: the registry whose hook raised, or None when the module failed to import (it may have provided
    plugins of any kind).
    """

    entry_point: str
    distribution: str
    error: str
    kind: str | None = None

    def plausibly_provides(self, name: str) -> bool:
        """Whether the unknown plugin ``name`` plausibly came from this entry point: its name, module or
        distribution equals, contains or resembles ``name``, or they share a distinctive word (``my-model`` and
        ``my_models.plugin``; not ``probseg``, ``plugin``, ``model``, ...)."""
        ep_name, _, ep_value = self.entry_point.partition("=")
        module = ep_value.split(":")[0].strip()
        candidates = [ep_name.strip(), module, *module.split("."), self.distribution.rsplit(" ", 1)[0]]

        def squash(text: str) -> str:
            return re.sub(r"[^a-z0-9]", "", text.lower())

        wanted = squash(name)
        if not wanted:
            return False
        for candidate in map(squash, candidates):
            if candidate in _GENERIC_TOKENS:
                continue
            if len(candidate) > 2 and (candidate in wanted or wanted in candidate):
                return True
            if candidate and difflib.SequenceMatcher(None, wanted, candidate).ratio() >= 0.75:
                return True
        return bool(_tokens(name) & set().union(*(_tokens(c) for c in candidates)))

    def describe(self) -> str:
        """One line: ``plugin entry point `NAME = MODULE` (DIST VERSION) failed to load: ERROR``."""
        return (f"plugin entry point `{self.entry_point}` ({self.distribution}) failed to load: "
                f"{' '.join(self.error.split())}")


class Registry:
    """A typed registry passed into a registration hook: ``registry.add(spec)``.

    One registry per plugin kind. Adding a name twice raises :class:`ProbsegError` naming both providers.
    ``failures``: the plugin entry points that failed to load and may have provided plugins of this kind (set
    by the plugin manager); a lookup of an unknown name names them.
    """

    def __init__(self, kind: str, spec_type: type[Any]) -> None:
        self.kind = kind
        self.spec_type = spec_type
        self._items: dict[str, Any] = {}
        self._info: dict[str, PluginInfo] = {}
        self._provider: tuple[str, str] = ("unknown", "unknown")
        self.failures: list[PluginFailure] = []

    def set_provider(self, distribution: str, entry_point: str) -> None:
        """Attribute the specs added next to ``distribution`` (loaded through ``entry_point``)."""
        self._provider = (distribution, entry_point)

    def add(self, spec: Any) -> None:
        """Register ``spec`` (a ModelSpec / RegularizerSpec / DatasetSpec matching this registry's kind)."""
        if not isinstance(spec, self.spec_type):
            raise ProbsegError(
                f"{self._provider[0]}: registry of {self.kind}s expects a {self.spec_type.__name__}, "
                f"got {type(spec).__name__}"
            )
        if spec.name in self._items:
            first = self._info[spec.name].distribution
            raise PluginCollisionError(
                f"{self.kind} plugin name '{spec.name}' is registered twice: by {first} and by "
                f"{self._provider[0]}; uninstall one of them"
            )
        self._items[spec.name] = spec
        self._info[spec.name] = PluginInfo(self.kind, spec.name, spec.description, *self._provider)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Any:
        """The spec registered as ``name``.

        Raises:
            ProbsegError: unknown name; the message lists the known names and the closest one, and names the
                plugin entry points that failed to load (with their errors when one plausibly provides ``name``).
        """
        if name not in self._items:
            known = ", ".join(self.names()) or "none"
            hint = did_you_mean(name, self._items)
            raise ProbsegError(f"unknown {self.kind} '{name}'{hint}; known {self.kind}s: {known}"
                               f"{self.failure_note(name)}")
        return self._items[name]

    def failure_note(self, name: str) -> str:
        """See :func:`failure_note` (with this registry's failures)."""
        return failure_note(name, self.failures)

    def info(self, name: str) -> PluginInfo:
        return self._info[name]


def failure_note(name: str, failures: Sequence[PluginFailure]) -> str:
    """``"; note: ..."`` for an unknown plugin ``name``: the failed entry points that plausibly provide it, with
    why they failed, else the failed ones by name only; ``""`` when none failed."""
    matching = [f for f in failures if f.plausibly_provides(name)]
    if matching:
        return "".join(f"; note: {f.describe()}" for f in matching)
    if not failures:
        return ""
    listed = ", ".join(f"`{f.entry_point}` ({f.distribution})" for f in failures)
    return f"; note: plugin entry points that failed to load (`probseg-bench list` shows why): {listed}"
