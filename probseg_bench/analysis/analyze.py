"""``analyze``: compute and draw the seed paper's Figures 3-8 for a stored fold, and write the HTML report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probseg_bench.analysis import figures as F
from probseg_bench.analysis import latent
from probseg_bench.analysis.loading import LoadedRun
from probseg_bench.analysis.report import write_report
from probseg_bench.api import MultiRaterData
from probseg_bench.diagnostics import collapse_warning
from probseg_bench.experiment import fold_seed


@dataclass
class Analysis:
    """Where the figures and the report went, and the numbers behind Fig. 6."""

    folder: Path
    report: Path
    files: list[Path] = field(default_factory=list)
    freezing_ewd: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


_ITEM_NAMES = ("case", "name", "key")
"""Metadata columns that name a dataset's item (the first one present is used), beside its group."""


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def label_test_image(test: MultiRaterData, index: int) -> str:
    """Fig. 3's name of test item ``index``: its number in the fold's test set (1-based) and, on a second line,
    its case: the group (patient / case) with the item's own name where the dataset records one that the group
    does not already contain, and its slice in a volume. Long ids keep their last characters.

    E.g. "test image 3 of 9" over "case testing/12" (lidc-sample: its source folder testing/, patient 12),
    "case p0002, img00009" (synthetic), "case Training/case01, slice 14" (QUBIQ).
    """
    group = str(test.groups[index])
    parts = [group]
    name = next((str(test.metadata[k][index]) for k in _ITEM_NAMES if k in test.metadata), None)
    if name is not None and name not in group:
        parts = [name] if group in name else [group, name]
    if "slice" in test.metadata and int(test.metadata["slice"][index]) >= 0:
        parts.append(f"slice {int(test.metadata['slice'][index])}")
    return f"test image {index + 1} of {len(test)}\ncase {', '.join(_short(p) for p in parts)}"


def analyze(run: LoadedRun, out_dir: Path, command: str, n_samples: int | None = None, rows: int = 3) -> Analysis:
    """Write fig3_samples .. fig8_entropy (PNG + PDF) and report.html into ``out_dir``, atomically: into a
    temporary folder beside it that replaces ``out_dir`` (an earlier analysis there included) once everything is
    written, so a failed or interrupted analysis leaves no half-written folder.

    Draws use the fold's seed and the protocol's batch size, as the evaluation did, so the freezing curve's first
    point is the stored test EWD for the built-in models.

    Raises:
        ProbsegError: ``n_samples`` < 1, or more samples than fit (the evaluation's memory bound per batch, see
            :func:`probseg_bench.evaluation.check_evaluation_memory`, or this machine's memory for the test set's
            sample maps), before anything is drawn.
        OutputError: the folder cannot be written (one line naming it).
    """
    from probseg_bench.atomic import atomic_folder
    from probseg_bench.evaluation import check_evaluation_memory
    from probseg_bench.memory import check_fits

    rec, test = run.record, run.test
    n = int(rec.protocol.get("n_eval_samples", 16)) if n_samples is None else n_samples
    batch = int(rec.protocol.get("batch_size", 8))
    what = f"--samples {n}" if n_samples is not None else f"the run's n_eval_samples {n}"
    _, annotators, height, width = test.masks.shape
    check_evaluation_memory(n, annotators, height, width, min(batch, len(test)), what)
    # the figures hold every test image's samples at once: bool maps and their float64 mean / std
    check_fits(len(test) * n * height * width * 9, f"{what} ({len(test)} test images of {height} x {width})")
    with atomic_folder(out_dir) as work:
        result = _analyze(run, work, command, n, batch, rows)
    return Analysis(out_dir, out_dir / result.report.name, [out_dir / p.name for p in result.files],
                    result.freezing_ewd, result.warnings)


def _analyze(run: LoadedRun, out_dir: Path, command: str, n: int, batch: int, rows: int) -> Analysis:
    """:func:`analyze` into the (temporary) folder ``out_dir`` with ``n`` samples per image, batches of ``batch``."""
    rec, model, test, device = run.record, run.model, run.test, run.device
    seed = fold_seed(rec.seed, rec.latent_dim, rec.fold)
    label = f"{rec.model} on {rec.dataset}, d={rec.latent_dim}, fold {rec.fold}"
    saved: list[tuple[str, Path, str]] = []
    files: list[Path] = []

    def keep(fig: object, stem: str, name: str, caption: str) -> None:
        paths = F.save(fig, out_dir, stem)
        files.extend(paths)
        saved.append((name, paths[0], caption))

    # Fig. 3: the images with the most annotated foreground first, so that there is something to see
    order = np.argsort(-test.masks.reshape(len(test), -1).sum(1), kind="stable")[:rows]
    pred_mean, pred_std = latent.mean_predictions(model, test, device, n, seed, batch)
    keep(F.samples_figure(test.images[order, 0].astype(np.float32), test.masks[order], pred_mean[order],
                          pred_std[order], [label_test_image(test, int(i)) for i in order],
                          f"Fig. 3 - samples: {label}"),
         "fig3_samples", "Fig. 3: samples", f"Annotations and their mean/std next to the mean/std of {n} samples "
         "drawn from the prior, for the test images with the most annotated foreground; each row is named by "
         "the image's number in this fold's test set and by the dataset's case.")
    ewd: np.ndarray | None = None
    skipped: list[str] = []
    if int(getattr(model, "latent_dim", 1)) == 0:  # a model without latent prior (SSN, an ensemble)
        skipped.append(f"skipped figures 4-7 (prior statistics, latent traversal, freezing, effective rank): "
                       f"{rec.model} has no latent prior (latent_dim 0)")
    else:
        stats = latent.prior_statistics(model, test, device, batch)
        size = int(stats.mean.shape[1])  # d, or D (flattened levels) for a hierarchical model
        if size != int(getattr(model, "latent_dim", size)):
            skipped.append(f"skipped figures 4-6 (prior statistics, latent traversal, freezing: one entry per latent "
                           f"axis): {rec.model} is hierarchical, its prior has D = {size} flattened latents")
        else:
            keep(F.prior_figure(stats.mean, stats.std, f"Fig. 4 - prior statistics: {label}"), "fig4_prior",
                 "Fig. 4: prior statistics", "Prior means and standard deviations per latent dimension across the test "
                 "images; a sparse latent space shows few dimensions with large sigma.")
            probs, offsets = latent.traversal(model, test.images[order[0]], device)
            first = label_test_image(test, int(order[0])).replace("\n", ", ")
            keep(F.traversal_figure(probs, offsets, f"Fig. 5 - latent traversal ({first}): {label}"),
                 "fig5_traversal", "Fig. 5: latent traversal", "Decoded foreground probability as each latent axis "
                 "moves from -2 to +2 prior standard deviations with the others at the prior mean.")
            variances = (stats.std**2).mean(0)
            freeze_order = np.argsort(variances, kind="stable")
            ewd = latent.freezing_curve(model, test, device, n, seed, freeze_order, batch)
            keep(F.freezing_figure(ewd, freeze_order, variances, f"Fig. 6 - freezing latent dimensions: {label}"),
                 "fig6_freezing", "Fig. 6: freezing", f"Test EWD as latent dimensions are frozen to their prior mean, "
                 f"lowest mean variance first: {ewd[0]:.3f} with none frozen, {ewd[-1]:.3f} with all frozen.")
        history = [h for h in rec.history if h.get("val_effective_rank") is not None]
        if history:
            keep(F.effective_rank_figure(np.array([h["epoch"] for h in history]),
                                         np.array([h["val_effective_rank"] for h in history]), size,
                                         rec.best_epoch, f"Fig. 7 - effective rank during training: {label}"),
                 "fig7_effective_rank", "Fig. 7: effective rank over training",
                 "Effective rank of the prior sigma on the validation images after every epoch.")
    ann, pred = latent.entropy_maps(model, test, device, n, seed, batch)
    pearson, spearman = latent.entropy_correlations(ann, pred)
    keep(F.entropy_figure(ann, pred, float(np.nanmean(pearson)), float(np.nanmean(spearman)),
                          f"Fig. 8 - entropy calibration: {label}"),
         "fig8_entropy", "Fig. 8: entropy calibration", "Annotator pixel entropy against the model's predicted pixel "
         "entropy over all test pixels, with the per-image correlations.")
    info = {"model": rec.model, "variant": rec.variant or "defaults", "dataset": rec.dataset,
            "latent dim": rec.latent_dim, "fold": rec.fold, "preset": rec.preset, "seed": rec.seed,
            "config": rec.config_hash, "best epoch": rec.best_epoch, "test images": len(test),
            "checkpoint": rec.checkpoint}
    diversity = [rec.metrics.get(k) for k in ("sample_diversity", "annotator_diversity")]
    variant = f" ({rec.variant})" if rec.variant else ""
    who = f"{rec.model}{variant} on {rec.dataset}, d={rec.latent_dim}, fold {rec.fold}"
    collapse = collapse_warning(f"{who}, {rec.preset}", *(np.nan if v is None else float(v) for v in diversity))
    warnings = [*skipped, *([collapse] if collapse is not None else [])]
    report = write_report(out_dir, f"probseg-bench analysis: {label}", command, dict(rec.metrics), info, saved,
                          warnings)
    return Analysis(out_dir, report, files, freezing_ewd=ewd, warnings=warnings)
