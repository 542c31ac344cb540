"""The standardized cross-validation protocol (seed paper Section III-C/D; DESIGN.md section 3).

For a model, a dataset and each latent dimension: a group-aware ~20% test split and 3 folds of the rest
(deterministic for the seed); per fold, train on two folds, select the checkpoint with the lowest validation
loss on the third, evaluate it on the test set with 16 prior samples per image, and store one record. Folds
already in the store (same configuration) are skipped, so rerunning a killed command resumes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from probseg_bench.experiment import Experiment, RunRequest, fold_seed
from probseg_bench.plugins import Plugins
from probseg_bench.results import FoldKey, FoldRecord, ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.training import EpochLog


class Reporter(Protocol):
    """Progress callbacks (the CLI renders them with rich; the core prints nothing)."""

    def fold_started(self, key: FoldKey, epochs: int) -> None: ...
    def epoch_finished(self, key: FoldKey, epoch: int, train_loss: float, val_loss: float) -> None: ...
    def fold_finished(self, record: FoldRecord) -> None: ...
    def fold_skipped(self, key: FoldKey) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def fold_started(self, key: FoldKey, epochs: int) -> None: ...
    def epoch_finished(self, key: FoldKey, epoch: int, train_loss: float, val_loss: float) -> None: ...
    def fold_finished(self, record: FoldRecord) -> None: ...
    def fold_skipped(self, key: FoldKey) -> None: ...


def config_hash(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def package_versions(*dists: str) -> dict[str, str]:
    """Versions of python, the given distributions, and the git commit of this checkout when available."""
    out = {"python": platform.python_version()}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _report_epoch(reporter: Reporter, key: FoldKey, log: EpochLog) -> None:
    reporter.epoch_finished(key, log.epoch, log.train_loss, log.val_loss)


def run_protocol(
    request: RunRequest,
    store: ResultsStore,
    reporter: Reporter | None = None,
    plugins: Plugins | None = None,
) -> list[FoldRecord]:
    """Run (or resume) the protocol for every requested latent dimension and fold.

    Returns:
        The records of every requested fold (newly computed, or already stored with the same configuration).

    Raises:
        ProbsegError: unknown plugin / preset / fold / hyperparameter, bad data, divergence.
    """
    from probseg_bench.evaluation import evaluate

    reporter = reporter or SilentReporter()
    exp = Experiment.prepare(request, plugins)
    model_hp, reg_hp = exp.hyperparameters()
    test = exp.data.subset(exp.splits.test)
    epochs, _ = exp.schedule
    protocol = exp.preset.settings(exp.dataset_spec.protocol)
    hyperparameters = {"model": model_hp, "regularizers": reg_hp,
                       "objective": [[t.regularizer, t.weight] for t in exp.terms]}
    chash = config_hash({"seed": request.seed, "protocol": protocol, "hyperparameters": hyperparameters,
                         "split": exp.splits.split_hash, "dataset": exp.dataset_params})
    versions = package_versions("probseg-bench", "torch", "numpy", "scipy", "geomloss")

    records: list[FoldRecord] = []
    for d in request.latent_dims:
        for fold in exp.folds:
            key = FoldKey(request.model, request.dataset, d, fold, chash)
            stored = store.get(key)
            if stored is not None:
                reporter.fold_skipped(key)
                records.append(stored)
                continue
            reporter.fold_started(key, epochs)
            model, result = exp.train(d, fold, model_hp, reg_hp, on_epoch=partial(_report_epoch, reporter, key))
            evaluation = evaluate(model, test, exp.device, n_samples=exp.preset.n_eval_samples,
                                  batch_size=exp.preset.batch_size, seed=fold_seed(request.seed, d, fold))
            checkpoint = request.run_dir / request.model / request.dataset / f"d{d}" / chash / f"fold{fold}.pt"
            _atomic_torch_save(
                {"model": request.model, "dataset": request.dataset, "latent_dim": d, "fold": fold,
                 "config_hash": chash, "model_hyperparameters": model_hp,
                 "state_dict": {k: v.cpu() for k, v in result.best_state.items()}},
                checkpoint,
            )
            record = FoldRecord(
                model=request.model, dataset=request.dataset, latent_dim=d, fold=fold, seed=request.seed,
                preset=exp.preset.name, config_hash=chash, split_hash=exp.splits.split_hash,
                variant=request.variant(), dataset_params=exp.dataset_params,
                hyperparameters=hyperparameters, protocol=protocol, metrics=evaluation.aggregate,
                per_image=evaluation.per_image, test_ids=[str(i) for i in exp.splits.test],
                test_groups=[str(g) for g in test.groups],
                timings={"train_s": result.seconds, "sampling_s": evaluation.seconds_sampling,
                         "metrics_s": evaluation.seconds_metrics, "steps": result.steps},
                versions={**versions, "device": str(exp.device)},
                best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                history=[asdict(h) for h in result.history], checkpoint=str(checkpoint),
            )
            store.add(record)
            reporter.fold_finished(record)
            records.append(record)
    return records


__all__: Sequence[str] = ["Reporter", "RunRequest", "SilentReporter", "run_protocol"]
