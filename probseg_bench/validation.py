"""Known-truth validity benchmark (``probseg-bench validate``): do the models learn a distribution we know?

A dataset plugin whose true per-image distribution over masks is known (``DatasetSpec.known_distribution``, e.g.
``synthetic``) lets the suite judge a trained model against the best any model can do. For each model the
standard protocol (:func:`probseg_bench.protocol.run_protocol`: same split, same preset, records in the results
store, so a rerun skips what is stored) trains the requested folds; then, on the SAME test images, the report
puts side by side:

* EWD and GED of the model next to the oracle's (``oracle_metrics``: 16 draws from the true distribution per
  image scored against the same annotations with the same metric code), their ratio and difference;
* the effective rank of the prior next to the data's intrinsic dimension (NaN for a model without a latent
  prior; a hierarchical model's runs over every level's dimensions: ``ModelValidation.single_level`` is False,
  the report marks it and leaves it out of the figure's ER panel);
* the model's sample diversity (mean 1 - IoU over distinct pairs of its 16 samples) next to the annotator
  diversity (the same over the annotations) and the true diversity (the exact expected 1 - IoU between two
  independent draws of the true distribution);
* paired Wilcoxon signed-rank tests between every pair of models on the per-image EWD, GED and ER
  (two-sided, per image averaged over the common folds, Holm-corrected over the model pairs of each metric;
  :mod:`probseg_bench.comparison`; ER only between models of one latent size);
* what bounds a model, from its stored checkpoint and the evaluation's very samples (same seed and batches):
  ``nearest_true_iou``, the mean over samples of the IoU with the closest mask of the true distribution (1 for the
  oracle: how precise the samples are); ``true_mask_tv``, the total variation between the frequencies of the
  samples' closest true masks and the true probabilities (how well the distribution is matched; the oracle's
  value, with the same number of draws, is its finite-sample floor); ``reconstruction_iou``, the IoU between an
  annotation and the model's reconstruction of it from its posterior (``forward``), mean over the annotations:
  what the decoder achieves when it is told the answer, an upper bound for its prior samples (NaN, shown "–",
  for a model without a latent posterior).

A model's row is the mean over its folds of each fold's mean over the test images.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import KnownDistribution
from probseg_bench.comparison import PairedComparison, compare_pair, holm
from probseg_bench.data.crop import crop_window
from probseg_bench.errors import ProbsegError
from probseg_bench.plugins import Plugins, get_plugins
from probseg_bench.protocol import Reporter, run_protocol
from probseg_bench.request import (
    DEFAULT_LOG_DIR,
    DEFAULT_RUN_DIR,
    CheckedRequest,
    CommandLine,
    RunRequest,
    build_requests,
    check_request,
)
from probseg_bench.results import FoldRecord, ResultsStore

COMPARED_METRICS = ("ewd", "ged", "er")
MODEL_METRICS = ("ewd", "ged", "hm_iou", "er", "sample_diversity", "annotator_diversity")
DIAGNOSTICS = ("nearest_true_iou", "true_mask_tv", "reconstruction_iou")


@dataclass
class ModelValidation:
    """One model against the truth: means over its folds of the fold means over the test images.

    ``ewd_ratio`` / ``ged_ratio``: model / oracle; ``ewd_gap`` / ``ged_gap``: model - oracle (0 = as good as the
    true distribution; the EWD and GED of the oracle are not 0: 16 draws against 4 annotations).
    """

    model: str
    label: str
    folds: list[int]
    metrics: dict[str, float]
    latent_dim: int
    latent_size: int | None
    ewd_ratio: float
    ged_ratio: float
    ewd_gap: float
    ged_gap: float
    train_seconds: float
    records: list[FoldRecord] = field(default_factory=list, repr=False)

    @property
    def single_level(self) -> bool:
        """One latent level (its ER compares with the intrinsic dimension); False for a hierarchical model, whose
        ER runs over every level's dimensions."""
        return self.latent_size is None or self.latent_size == self.latent_dim

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("records")
        return out


@dataclass
class ValidationReport:
    """The validity benchmark's result (see the module docstring); ``as_dict`` is its JSON form."""

    dataset: str
    dataset_params: dict[str, Any]
    preset: str
    protocol: dict[str, Any]
    latent_dim: int | None
    seed: int
    n_test: int
    test_ids: list[str]
    intrinsic_dimension: int
    oracle: dict[str, float]
    models: list[ModelValidation]
    comparisons: list[PairedComparison]
    protocol_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def preset_label(self) -> str:
        """The preset with the settings the run replaced, e.g. ``quick (epochs=3)``."""
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.protocol_overrides.items()))
        return f"{self.preset} ({extra})" if extra else self.preset

    def best(self) -> ModelValidation:
        """The model with the lowest EWD."""
        return min(self.models, key=lambda m: m.metrics["ewd"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "dataset_params": self.dataset_params, "preset": self.preset,
            "protocol_overrides": self.protocol_overrides, "protocol": self.protocol, "latent_dim": self.latent_dim,
            "seed": self.seed, "n_test": self.n_test,
            "test_ids": self.test_ids, "intrinsic_dimension": self.intrinsic_dimension, "oracle": self.oracle,
            "models": [m.as_dict() for m in self.models], "best_model": self.best().label,
            "comparisons": [asdict(c) for c in self.comparisons],
        }


def validation_requests(
    models: Sequence[str], dataset: str = "synthetic", dataset_params: Mapping[str, Any] | None = None,
    preset: str = "quick", latent_dim: int | None = None, folds: Sequence[int] = (0,), seed: int = 0,
    protocol_overrides: Mapping[str, Any] | None = None, device: str = "auto", run_dir: Path = DEFAULT_RUN_DIR,
    plugins: Plugins | None = None, log: str | None = None, log_dir: Path = DEFAULT_LOG_DIR,
) -> list[CheckedRequest]:
    """One checked protocol request per model (:func:`probseg_bench.request.build_requests`, then
    :func:`~probseg_bench.request.check_request`), all on the same data, split, preset and folds.

    ``dataset_params`` are laid over the dataset's ``known_distribution.validation_params`` (for ``synthetic``:
    size 64, 160 images, 4 annotators, 3 blobs, 3 radius levels). ``latent_dim`` None: each model's reference d
    (``ModelSpec.default_latent_dim``). ``log`` / ``log_dir``: training curves (``--log``, see
    :class:`~probseg_bench.request.RunRequest`).

    Raises:
        ProbsegError: no models, a repeated model, unknown plugins, or a dataset without a known distribution; any
            check of :func:`~probseg_bench.request.check_request`.
    """
    plugins = plugins or get_plugins()
    if not models:
        raise ProbsegError("validate: give at least one --model")
    repeated = sorted({m for m in models if list(models).count(m) > 1})
    if repeated:
        raise ProbsegError(f"validate: model '{repeated[0]}' is given twice")
    for m in models:
        plugins.models.get(m)  # unknown name -> error with the known names
    spec = plugins.datasets.get(dataset)
    if spec.known_distribution is None:
        known = [n for n in plugins.datasets.names() if plugins.datasets.get(n).known_distribution is not None]
        raise ProbsegError(f"validate: dataset '{dataset}' has no known true distribution to validate against; "
                           f"datasets that have one: {', '.join(known) or 'none'}")
    params = {**spec.known_distribution.validation_params, **(dataset_params or {})}
    given = [CommandLine(model=m, dataset=dataset, folds=tuple(folds), seed=seed, preset=preset, device=device,
                         latent_dims=(latent_dim,) if latent_dim is not None else (), dataset_params=params,
                         protocol_overrides=dict(protocol_overrides or {}), run_dir=run_dir, log=log,
                         log_dir=log_dir) for m in models]
    return [check_request(r, plugins) for g in given for r in build_requests(g, plugins=plugins)[0]]


def validate(
    checked: Sequence[CheckedRequest], store: ResultsStore, reporter: Reporter | None = None,
    on_model: Callable[[str], Any] | None = None,
) -> ValidationReport:
    """Run (or resume) the protocol for each checked request of :func:`validation_requests` and compare every
    model with the dataset's true distribution on the same test images.

    Raises:
        ProbsegError: bad requests (see :func:`validation_requests`), a fold that failed (diverged), data errors.
    """
    models: list[ModelValidation] = []
    requests = [c.request for c in checked]
    first = requests[0]
    truth = checked[0].dataset_spec.known_distribution
    assert truth is not None
    for one in checked:
        request = one.request
        if on_model is not None:
            on_model(request.model)
        records = run_protocol(one, store, reporter)
        done = {r.fold for r in records}
        missing = [f for f in request.folds or () if f not in done]
        if missing:
            raise ProbsegError(f"validate: {request.model} fold {missing[0]} failed (see `probseg-bench leaderboard`"
                               " and rerun with --retry-failed after fixing the cause)")
        models.append(_model_row(request, records))
    reference = models[0].records[0]
    test_ids = reference.test_ids
    if any(r.test_ids != test_ids or r.split_hash != reference.split_hash for m in models for r in m.records):
        raise ProbsegError("validate: the models were not evaluated on the same test images")
    if any(r.data_fingerprint != reference.data_fingerprint for m in models for r in m.records):
        raise ProbsegError("validate: the models were not evaluated on the same data (the data changed while the "
                           "models ran); rerun validate")
    params = dict(reference.dataset_params)
    n_samples = int(reference.protocol["n_eval_samples"])
    oracle = dict(truth.oracle_metrics(n_samples=n_samples, indices=[int(i) for i in test_ids], **params))
    oracle.update(oracle_diagnostics(truth, [int(i) for i in test_ids], params, n_samples, first.seed,
                                     reference.protocol.get("crop")))
    for m, request in zip(models, requests, strict=True):
        values = [sample_diagnostics(r, truth, request.device, request.data_root) for r in m.records]
        m.metrics.update({k: float(np.mean([v[k] for v in values])) for k in DIAGNOSTICS})
    for m in models:
        m.ewd_ratio = m.metrics["ewd"] / oracle["ewd"] if oracle["ewd"] > 0 else float("nan")
        m.ged_ratio = m.metrics["ged"] / oracle["ged"] if oracle["ged"] > 0 else float("nan")
        m.ewd_gap = m.metrics["ewd"] - oracle["ewd"]
        m.ged_gap = m.metrics["ged"] - oracle["ged"]
    comparisons: list[PairedComparison] = []
    for metric in COMPARED_METRICS:
        pairs = [compare_pair(a.records, b.records, metric, a.label, b.label)
                 for a, b in itertools.combinations(models, 2) if _comparable(a, b, metric)]
        for pair, p in zip(pairs, holm([pair.p_value for pair in pairs]), strict=True):
            pair.p_holm = p
        comparisons += pairs
    dims = {r.latent_dims[0] for r in requests}
    return ValidationReport(
        dataset=first.dataset, dataset_params=params, preset=first.preset, protocol=dict(reference.protocol),
        latent_dim=dims.pop() if len(dims) == 1 else None, seed=first.seed, n_test=len(test_ids),
        test_ids=list(test_ids),
        intrinsic_dimension=int(truth.intrinsic_dimension(**params)), oracle=oracle, models=models,
        comparisons=comparisons, protocol_overrides=dict(first.protocol_overrides),
    )


def _comparable(a: ModelValidation, b: ModelValidation, metric: str) -> bool:
    """Whether a paired test of ``metric`` between two models means something: both define it, and for ER (a
    count of dimensions) both have latents of one size."""
    if not (np.isfinite(a.metrics[metric]) and np.isfinite(b.metrics[metric])):
        return False
    return metric != "er" or a.latent_size == b.latent_size


def _nearest_true(samples: np.ndarray, support: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(mean over samples of the IoU with the closest true mask, total variation between the closest masks'
    frequencies and ``probs``) for samples bool [n, H, W] and the support bool [M, H, W]."""
    import torch

    from probseg_bench.metrics import iou_matrix

    iou = iou_matrix(torch.as_tensor(samples), torch.as_tensor(support)).numpy()  # [n, M]
    frequencies = np.bincount(iou.argmax(1), minlength=len(probs)) / len(samples)
    return float(iou.max(1).mean()), float(0.5 * np.abs(frequencies - probs).sum())


def _support(truth: KnownDistribution, index: int, params: Mapping[str, Any],
             crop: int | None) -> tuple[np.ndarray, np.ndarray]:
    support, probs = truth.true_distribution(index, **params)
    if crop is not None:  # the run's protocol cropped the images: crop the true masks alike
        h, w = support.shape[-2:]
        rows, cols = crop_window(h, w, int(crop))
        support = support[:, rows, cols]
    return np.asarray(support, dtype=bool), np.asarray(probs, dtype=np.float64)


def oracle_diagnostics(truth: KnownDistribution, indices: Sequence[int], params: Mapping[str, Any],
                       n_samples: int, seed: int, crop: int | None = None) -> dict[str, float]:
    """``nearest_true_iou`` (1 by construction) and ``true_mask_tv`` of ``n_samples`` draws per image from the
    true distribution itself (numpy generator seeded with ``[seed, index, 4]``): the finite-sample floor of the
    models' values."""
    iou, tv = [], []
    for i in indices:
        support, probs = _support(truth, i, params, crop)
        draw = np.random.default_rng([seed, i, 4]).choice(len(probs), size=n_samples, p=probs)
        a, b = _nearest_true(support[draw], support, probs)
        iou.append(a)
        tv.append(b)
    return {"nearest_true_iou": float(np.mean(iou)), "true_mask_tv": float(np.mean(tv))}


def sample_diagnostics(record: FoldRecord, truth: KnownDistribution, device: str = "auto",
                       data_root: Path | None = None) -> dict[str, float]:
    """``nearest_true_iou``, ``true_mask_tv`` and ``reconstruction_iou`` (see the module docstring) of one stored
    fold, from its checkpoint, on its test images, with the evaluation's very samples.

    Raises:
        ProbsegError: the checkpoint is missing or belongs to another run; the data no longer give the split.
    """
    import torch

    from probseg_bench.analysis.loading import load_run
    from probseg_bench.evaluation import prior_sample_batches
    from probseg_bench.experiment import fold_seed

    run = load_run(record, data_root, device)
    protocol = record.protocol
    ids = [int(t) for t in record.test_ids]
    nearest, tv = [], []
    n_eval = int(protocol["n_eval_samples"])
    drawn = max((n_eval, *protocol.get("sample_counts", ())))  # the evaluation's pass: its first n_eval samples
    for start, logits, _, _, _ in prior_sample_batches(
            run.model, run.test, run.device, drawn, int(protocol["batch_size"]),
            fold_seed(record.seed, record.latent_dim, record.fold)):
        samples = (logits[:, :n_eval] > 0).cpu().numpy()
        for j in range(samples.shape[0]):
            support, probs = _support(truth, ids[start + j], record.dataset_params, protocol.get("crop"))
            a, b = _nearest_true(samples[j], support, probs)
            nearest.append(a)
            tv.append(b)
    reconstruction: list[float] = []
    with torch.no_grad(), torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(fold_seed(record.seed, record.latent_dim, record.fold) + 1)
        # latent_dim 0: no latent posterior to reconstruct from (e.g. ssn, unet-ensemble): no passes, NaN
        passes = run.test.num_annotators if int(run.model.latent_dim) > 0 else 0
        for _ in range(passes):  # each pass reconstructs one random annotation per image
            for start in range(0, len(run.test), int(protocol["batch_size"])):
                x = torch.as_tensor(run.test.images[start : start + int(protocol["batch_size"])],
                                    device=run.device).float()
                y = torch.as_tensor(run.test.masks[start : start + int(protocol["batch_size"])], device=run.device)
                out = run.model(x, y)
                pred, target = out.logits[:, 0] > 0, out.target[:, 0] > 0.5
                union = (pred | target).flatten(1).sum(1)
                iou = torch.where(union > 0, (pred & target).flatten(1).sum(1) / union.clamp(min=1), 1.0)
                reconstruction += iou.double().cpu().tolist()
    return {"nearest_true_iou": float(np.mean(nearest)), "true_mask_tv": float(np.mean(tv)),
            "reconstruction_iou": float(np.mean(reconstruction)) if reconstruction else float("nan")}


def _model_row(request: RunRequest, records: list[FoldRecord]) -> ModelValidation:
    metrics = {}
    for k in MODEL_METRICS:
        values = [r.metrics.get(k) for r in records]
        finite = [float(v) for v in values if v is not None and np.isfinite(v)]
        metrics[k] = float(np.mean(finite)) if finite else float("nan")
    label = request.variant(with_protocol=False)  # the report's title names the protocol overrides
    return ModelValidation(
        model=request.model, label=f"{request.model} ({label})" if label else request.model,
        folds=sorted(r.fold for r in records), metrics=metrics, latent_dim=request.latent_dims[0],
        latent_size=records[0].latent_size if records else None, ewd_ratio=float("nan"), ged_ratio=float("nan"),
        ewd_gap=float("nan"), ged_gap=float("nan"),
        train_seconds=float(sum(r.timings.get("train_s", 0.0) for r in records)), records=records,
    )


def write_report(report: ValidationReport, folder: Path) -> list[Path]:
    """Write ``validation.json`` and the figure ``validation.png`` / ``validation.pdf`` into ``folder``,
    atomically: into a temporary folder that replaces ``folder`` (an earlier report there included) once all three
    are written, so a reader never sees half of them.

    Raises:
        OutputError: the folder cannot be written (one line naming it).
    """
    from probseg_bench.atomic import atomic_folder

    with atomic_folder(folder) as work:
        (work / "validation.json").write_text(json.dumps(report.as_dict(), indent=2, default=_json_default) + "\n")
        written = [work / "validation.json", *validation_figure(report, work)]
    return [folder / p.name for p in written]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def validation_figure(report: ValidationReport, folder: Path) -> list[Path]:
    """Bars per model against the truth: EWD and GED with the oracle's value as a dashed line, the effective
    rank with the intrinsic dimension, the sample diversity with the true and the annotator diversity, the
    samples' IoU with their closest true mask with the oracle's 1."""
    import matplotlib.pyplot as plt

    from probseg_bench.analysis.figures import save  # importing it selects the Agg backend (also after pyplot)

    labels = [m.label for m in report.models]
    fig, axes = plt.subplots(1, 5, figsize=(3.2 * 5, 3.4))
    panels = [
        ("ewd", "EWD ↓", [("oracle (true distribution)", report.oracle["ewd"], "k")]),
        ("ged", "GED ↓", [("oracle (true distribution)", report.oracle["ged"], "k")]),
        ("er", "effective rank", [("intrinsic dimension", float(report.intrinsic_dimension), "k")]),
        ("sample_diversity", "sample diversity", [
            ("true diversity", report.oracle.get("diversity", float("nan")), "k"),
            ("annotator diversity", report.models[0].metrics["annotator_diversity"], "tab:gray"),
        ]),
        ("nearest_true_iou", "IoU of a sample with the closest true mask", [("oracle", 1.0, "k")]),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title, lines) in zip(axes, panels, strict=True):
        values = [m.metrics[key] if key != "er" or m.single_level else float("nan") for m in report.models]
        ax.bar(range(len(values)), np.nan_to_num(values), color=[colors[i % len(colors)] for i in range(len(values))])
        for i, v in enumerate(values):
            ax.text(i, np.nan_to_num(v), "–" if not np.isfinite(v) else f"{v:.3f}" if key != "er" else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=7)
        for text, value, color in lines:
            ax.axhline(value, ls="--", color=color, lw=1.2, label=f"{text}: {value:.3g}")
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        top = max([*np.nan_to_num(values), *(v for _, v, _ in lines)])
        ax.set_ylim(0, top * 1.5 if top > 0 else 1)
        ax.legend(fontsize=6, loc="upper center")
    params = ", ".join(f"{k}={v}" for k, v in sorted(report.dataset_params.items()))
    dims = f"d={report.latent_dim}" if report.latent_dim is not None else "d per model"
    fig.suptitle(f"{report.dataset} ({params}): {dims}, preset {report.preset_label}, "
                 f"{report.n_test} test images", fontsize=9)
    fig.tight_layout()
    return save(fig, folder, "validation")


__all__ = ["ModelValidation", "ValidationReport", "validate", "validation_requests", "write_report"]
