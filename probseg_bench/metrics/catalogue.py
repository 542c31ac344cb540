"""The metric catalogue: every metric of the suite declared once, with what the rest of the suite needs to know.

A :class:`Metric` names the metric (the key of its values in a record's ``per_image`` and ``metrics``), gives its
label and direction, says whether the leaderboard ranks it (a column with ↑ / ↓, the best row in bold; also the
per-fold line of ``run``) or only shows it, whether ``tune --objective val_<name>`` may optimise it (Optuna's
direction taken from the metric's), and points at the function that computes its per-image values from an
evaluation batch (:class:`probseg_bench.metrics.per_image.SampleBatch`). Evaluation
(:mod:`probseg_bench.evaluation`), the leaderboard, ``compare``, ``tune`` and the CLI read this catalogue; none
of them names a metric of its own.

Adding a metric = its per-image function + one entry in :data:`CATALOGUE` (or :func:`register_metric` from code,
e.g. a test). The per-image function is given as ``"module:function"`` (imported when a batch is first
evaluated) or as a callable; this module imports neither torch nor the metric code, so that commands which only
read records (``leaderboard``, ``compare``, ``list``) stay fast.

The order of the catalogue is the order of the metrics in records, leaderboard columns and help texts.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.metrics.per_image import SampleBatch

PerImage = Callable[["SampleBatch"], Any]
"""A per-image function: an evaluation batch of B images -> B values (torch tensor, numpy array or sequence;
NaN where the metric is undefined for an image)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Metric:
    """One metric of the catalogue.

    Attributes:
        name: the key of its values in records (``per_image``, ``metrics``), for ``compare --metric``,
            ``leaderboard --test-metric`` and ``tune --objective val_<name>``: lower-case letters, digits, ``_``.
        label: the column header and the label in ``run``'s per-fold line, e.g. ``"HM-IoU"``.
        per_image: its per-image function, ``"module:function"`` or a callable (see :data:`PerImage`).
        higher_is_better: its direction; None for a metric that describes rather than scores (a diversity).
        ranked: the leaderboard ranks it (a column with ↑ / ↓, the best row per dataset in bold, usable as
            ``--test-metric``), and ``run`` prints it after each fold. Needs a direction.
        shown: a leaderboard column beside the ranked ones, never ranked (ranked metrics are always shown).
        objective: ``tune --objective val_<name>`` scores a trial by its mean over the fold's validation images,
            minimised or maximised after ``higher_is_better``. Needs a direction.
        decimals: digits after the point in ``run``'s per-fold line.
        per_latent_size: ranked only among rows whose models have the same latent size (the prior's number of
            dimensions, over all levels of a hierarchical model): its value is bounded by that size (ER). A row
            whose latent size no other ranked row of its dataset has is not bold in it (unless it is the only one).
        description: one line for readers of the catalogue.
        samples: scored on the first ``samples`` samples of each test image (GED_n, HM-IoU_n: see
            :func:`at_samples`); None: on the evaluation's ``n_eval_samples``.
    """

    name: str
    label: str
    per_image: str | PerImage
    higher_is_better: bool | None = None
    ranked: bool = False
    shown: bool = False
    objective: bool = False
    decimals: int = 3
    description: str = ""
    per_latent_size: bool = False
    samples: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ProbsegError(f"metric {self.name!r}: a name is lower-case letters, digits and '_', starting with a "
                               "letter")
        if not self.label:
            raise ProbsegError(f"metric {self.name!r}: give it a label")
        if (self.ranked or self.objective) and self.higher_is_better is None:
            raise ProbsegError(f"metric {self.name!r}: a ranked metric or a tuning objective needs a direction "
                               "(higher_is_better=True or False)")
        if isinstance(self.per_image, str) and self.per_image.count(":") != 1:
            raise ProbsegError(f"metric {self.name!r}: per_image {self.per_image!r}: expected 'module:function' or "
                               "a callable")

    @property
    def in_leaderboard(self) -> bool:
        """Whether the leaderboard has a column for it (ranked or shown)."""
        return self.ranked or self.shown

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or ``""`` (no direction)."""
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    @property
    def objective_name(self) -> str:
        """``val_<name>``: its name as a tuning objective."""
        return f"val_{self.name}"

    @property
    def direction(self) -> str:
        """Optuna's direction: ``"maximize"`` or ``"minimize"``.

        Raises:
            ProbsegError: a metric without a direction.
        """
        if self.higher_is_better is None:
            raise ProbsegError(f"metric {self.name!r} has no direction: it cannot be optimised")
        return "maximize" if self.higher_is_better else "minimize"

    def function(self) -> PerImage:
        """The per-image function (a ``"module:function"`` is imported here, once).

        Raises:
            ProbsegError: the module or the function cannot be imported.
        """
        if not isinstance(self.per_image, str):
            return self.per_image
        if self.per_image not in _RESOLVED:
            module, _, attr = self.per_image.partition(":")
            try:
                _RESOLVED[self.per_image] = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ProbsegError(f"metric {self.name!r}: per_image {self.per_image!r} cannot be imported "
                                   f"({exc})") from None
        return _RESOLVED[self.per_image]


_RESOLVED: dict[str, PerImage] = {}
_PER_IMAGE = "probseg_bench.metrics.per_image:"

CATALOGUE: tuple[Metric, ...] = (
    Metric("ged", "GED", _PER_IMAGE + "ged", higher_is_better=False, ranked=True, objective=True,
           description="squared generalized energy distance between samples and annotations (V-statistic)"),
    Metric("hm_iou", "HM-IoU", _PER_IMAGE + "hm_iou", higher_is_better=True, ranked=True,
           description="Hungarian-matched IoU of samples and annotations (both tiled to lcm(N, M))"),
    Metric("ewd", "EWD", _PER_IMAGE + "ewd", higher_is_better=False, ranked=True, objective=True,
           description="empirical Wasserstein distance, 1 - HM-IoU (the seed paper's main metric)"),
    Metric("er", "ER", _PER_IMAGE + "er", higher_is_better=True, ranked=True, decimals=2, per_latent_size=True,
           description="effective rank of the prior's standard deviations, in [1, d] (a more homogeneous latent "
                       "space ranks higher, the seed paper's reading)"),
    Metric("sample_diversity", "sample div.", _PER_IMAGE + "sample_diversity", shown=True,
           description="mean 1 - IoU over distinct pairs of an image's samples (far below the annotators': "
                       "the samples barely vary, see probseg_bench.diagnostics)"),
    Metric("annotator_diversity", "annotator div.", _PER_IMAGE + "annotator_diversity", shown=True,
           description="mean 1 - IoU over distinct pairs of an image's annotations"),
    Metric("ncc", "NCC", _PER_IMAGE + "ncc", higher_is_better=True,
           description="S_NCC of Baumgartner et al. 2019 (PHiSeg)"),
    Metric("entropy_pearson", "entropy Pearson", _PER_IMAGE + "entropy_pearson", higher_is_better=True,
           description="Pearson correlation of the annotator and the predicted pixel entropy"),
    Metric("entropy_spearman", "entropy Spearman", _PER_IMAGE + "entropy_spearman", higher_is_better=True,
           description="Spearman correlation of the annotator and the predicted pixel entropy"),
    Metric("ece", "ECE", _PER_IMAGE + "ece", higher_is_better=False,
           description="expected calibration error of the mean prediction against the annotator mean"),
    Metric("mean_dice", "mean Dice", _PER_IMAGE + "mean_dice", higher_is_better=True,
           description="Dice of the thresholded mean prediction against the majority annotation"),
    Metric("mean_iou", "mean IoU", _PER_IMAGE + "mean_iou", higher_is_better=True,
           description="IoU of the thresholded mean prediction against the majority annotation"),
    Metric("empty_fraction", "empty fraction", _PER_IMAGE + "empty_fraction",
           description="fraction of an image's samples with no foreground pixel (1 = every sample empty)"),
)

#: name -> metric, in catalogue order. Read it through the functions below (a test may replace the dict).
METRICS: dict[str, Metric] = {m.name: m for m in CATALOGUE}

SAMPLE_COUNT_METRICS = ("ged", "hm_iou")
"""The metrics the field reports at several sample counts n (GED_n, HM-IoU_n: CCDM, ICCV 2023, Table 1): a
preset's ``sample_counts`` adds ``<name>_<n>`` for each (:func:`at_samples`)."""
_AT_SAMPLES = re.compile(rf"^({'|'.join(SAMPLE_COUNT_METRICS)})_([1-9][0-9]*)$")


def at_samples(name: str, n: int) -> Metric:
    """The metric ``name`` (one of :data:`SAMPLE_COUNT_METRICS`) scored on the first ``n`` samples of each test
    image: ``<name>_<n>`` (e.g. ``ged_100``, label ``GED_100``), ranked in the metric's direction.

    Raises:
        ProbsegError: ``name`` is not one of :data:`SAMPLE_COUNT_METRICS`, or n < 1.
    """
    if name not in SAMPLE_COUNT_METRICS or n < 1:
        raise ProbsegError(f"metric {name!r} at {n} samples: expected one of {', '.join(SAMPLE_COUNT_METRICS)} and "
                           "n >= 1")
    base = METRICS[name]
    return Metric(f"{name}_{n}", f"{base.label}_{n}", base.per_image, higher_is_better=base.higher_is_better,
                  ranked=True, decimals=base.decimals, samples=n,
                  description=f"{base.description}, on the first {n} samples of each test image")


def sample_count_metric(name: str) -> Metric | None:
    """``ged_16``, ``hm_iou_100``, ... as a :class:`Metric` (:func:`at_samples`); None for another name."""
    match = _AT_SAMPLES.match(name)
    return None if match is None else at_samples(match.group(1), int(match.group(2)))


def sample_count_metrics(names: Iterable[str]) -> list[Metric]:
    """The sample-count metrics among ``names`` (e.g. the keys of records' metrics), ordered by base metric (the
    catalogue's order), then n."""
    found = [m for m in (sample_count_metric(n) for n in set(names)) if m is not None]
    order = {name: i for i, name in enumerate(SAMPLE_COUNT_METRICS)}
    return sorted(found, key=lambda m: (order[m.name.rsplit("_", 1)[0]], m.samples or 0))


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the catalogue (after the others); returns it.

    Raises:
        ProbsegError: a metric of that name is already in the catalogue.
    """
    if metric.name in METRICS or sample_count_metric(metric.name) is not None:
        raise ProbsegError(f"metric {metric.name!r} is already in the catalogue")
    METRICS[metric.name] = metric
    return metric


def all_metrics() -> list[Metric]:
    """Every metric, in catalogue order: what an evaluation computes and a record stores."""
    return list(METRICS.values())


def metric_names() -> list[str]:
    return list(METRICS)


def get_metric(name: str, option: str = "metric") -> Metric:
    """The metric called ``name``.

    Raises:
        ProbsegError: no such metric (the message names ``option``, suggests a near name and lists them all).
    """
    metric = find_metric(name)
    if metric is None:
        raise ProbsegError(f"{option}: unknown metric {name!r}{did_you_mean(name, METRICS)}; known: "
                           f"{', '.join(METRICS)}, and {' / '.join(f'{m}_<n>' for m in SAMPLE_COUNT_METRICS)} (at n "
                           "samples, where the preset scores them)")
    return metric


def find_metric(name: str) -> Metric | None:
    """The metric called ``name`` (a catalogue entry, or a sample-count metric such as ``ged_100``), or None."""
    return METRICS.get(name) or sample_count_metric(name)


def ranked_metrics() -> list[Metric]:
    """The metrics the leaderboard ranks, in catalogue order."""
    return [m for m in METRICS.values() if m.ranked]


def leaderboard_metrics() -> list[Metric]:
    """The leaderboard's metric columns: the ranked metrics, then the shown ones (each in catalogue order)."""
    return ranked_metrics() + [m for m in METRICS.values() if m.shown and not m.ranked]


def objective_metrics() -> list[Metric]:
    """The metrics ``tune`` may optimise (``--objective val_<name>``), in catalogue order."""
    return [m for m in METRICS.values() if m.objective]


__all__ = ["CATALOGUE", "METRICS", "SAMPLE_COUNT_METRICS", "Metric", "PerImage", "all_metrics", "at_samples",
           "find_metric", "get_metric", "leaderboard_metrics", "metric_names", "objective_metrics", "ranked_metrics",
           "register_metric", "sample_count_metric", "sample_count_metrics"]
