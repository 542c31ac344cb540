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
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from probseg_bench.api import (
    DatasetSpec,
    HyperValue,
    LatentSegmentationModel,
    ModelSpec,
    MultiRaterData,
    ObjectiveTerm,
    resolve_hyperparameters,
)
from probseg_bench.data.loading import dataset_parameters, load_dataset
from probseg_bench.errors import ProbsegError, did_you_mean
from probseg_bench.plugins import Plugins, get_plugins
from probseg_bench.presets import Preset, get_preset
from probseg_bench.results import FoldKey, FoldRecord, ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.training import EpochLog, Objective


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


@dataclass(frozen=True)
class RunRequest:
    """What ``probseg-bench run`` asks for.

    ``folds`` None = all folds of the preset; ``hyperparameters``: overrides of the model's and its
    regularizers' hyperparameters (name -> value); ``run_dir``: where best checkpoints are written.
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
    run_dir: Path = Path("probseg-runs")

    def variant(self) -> str:
        """A short label of what the user changed from the model's defaults (``--regularizer``, ``--hp``), e.g.
        ``"regularizer=mmd, beta=50"``; empty for the defaults. Shown beside the model in the leaderboard."""
        parts = [f"regularizer={self.regularizer}"] if self.regularizer else []
        parts += [f"{k}={v}" for k, v in sorted(self.hyperparameters.items())]
        return ", ".join(parts)


def resolve_device(name: str) -> Any:
    """``auto`` | ``cpu`` | ``cuda`` (or ``cuda:N``) -> torch.device.

    Raises:
        ProbsegError: unknown name, or CUDA asked for but not available.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
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


def fold_seed(seed: int, latent_dim: int, fold: int) -> int:
    """The torch seed of one fold's training (model init and draws), derived from the run seed."""
    return (seed * 1_000_003 + latent_dim * 1009 + fold * 101) % (2**31)


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
    import torch

    from probseg_bench.data.splits import grouped_splits
    from probseg_bench.evaluation import evaluate
    from probseg_bench.training import TrainConfig, train_fold

    reporter = reporter or SilentReporter()
    plugins = plugins or get_plugins()
    model_spec: ModelSpec = plugins.models.get(request.model)
    dataset_spec: DatasetSpec = plugins.datasets.get(request.dataset)
    preset: Preset = get_preset(request.preset)
    if not request.latent_dims or min(request.latent_dims) < 1:
        raise ProbsegError(f"--latent-dim: expected integers >= 1, got {list(request.latent_dims)}")
    folds = tuple(range(preset.n_folds)) if request.folds is None else tuple(request.folds)
    bad = [f for f in folds if not 0 <= f < preset.n_folds]
    if bad:
        raise ProbsegError(f"--fold: expected values in 0..{preset.n_folds - 1}, got {bad[0]}")
    declared = {hp.name for hp in model_spec.hyperparameters}
    overrides = {k: v for k, v in preset.model_defaults if k in declared}
    overrides.update(request.hyperparameters)
    terms = objective_terms(model_spec, plugins, request.regularizer)
    model_hp, reg_hp = resolve_run_hyperparameters(model_spec, plugins, overrides, terms)
    device = resolve_device(request.device)

    dataset_params = dataset_parameters(dataset_spec, request.dataset_params)
    data: MultiRaterData = load_dataset(dataset_spec, request.data_root, dataset_params, request.trust_pickle)
    data.validate(f"dataset '{request.dataset}'")
    splits = grouped_splits(data.groups, preset.n_folds, preset.test_fraction, request.seed)
    test = data.subset(splits.test)
    epochs, warmup = preset.schedule(dataset_spec.protocol)
    protocol = preset.settings(dataset_spec.protocol)
    hyperparameters = {"model": model_hp, "regularizers": reg_hp,
                       "objective": [[t.regularizer, t.weight] for t in terms]}
    chash = config_hash({"seed": request.seed, "protocol": protocol, "hyperparameters": hyperparameters,
                         "split": splits.split_hash, "dataset": dataset_params})
    versions = package_versions("probseg-bench", "torch", "numpy", "scipy", "geomloss")
    grad_clip = float(model_hp[model_spec.grad_clip]) if model_spec.grad_clip else 0.0

    records: list[FoldRecord] = []
    for d in request.latent_dims:
        for fold in folds:
            key = FoldKey(request.model, request.dataset, d, fold, chash)
            stored = store.get(key)
            if stored is not None:
                reporter.fold_skipped(key)
                records.append(stored)
                continue
            reporter.fold_started(key, epochs)
            train_idx, val_idx = splits.train_val(fold)
            seed = fold_seed(request.seed, d, fold)
            torch.manual_seed(seed)
            model = model_spec.factory(latent_dim=d, in_channels=data.images.shape[1], **model_hp)
            if not isinstance(model, torch.nn.Module) or not isinstance(model, LatentSegmentationModel):
                raise ProbsegError(
                    f"model plugin '{request.model}': factory returned {type(model).__name__}, expected a "
                    "torch.nn.Module with forward/sample/prior/decode (probseg_bench.api.LatentSegmentationModel)"
                )
            objective = build_objective(model_spec, plugins, model_hp, reg_hp, terms)
            config = TrainConfig(
                epochs=epochs, warmup_epochs=warmup, batch_size=preset.batch_size, lr=preset.lr,
                weight_decay=preset.weight_decay, grad_clip=grad_clip, augment=preset.augment, seed=seed,
            )
            result = train_fold(
                model, objective, data.subset(train_idx), data.subset(val_idx), config, device,
                on_epoch=partial(_report_epoch, reporter, key),
            )
            model.load_state_dict(result.best_state)
            evaluation = evaluate(model, test, device, n_samples=preset.n_eval_samples,
                                  batch_size=preset.batch_size, seed=seed)
            checkpoint = request.run_dir / request.model / request.dataset / f"d{d}" / chash / f"fold{fold}.pt"
            _atomic_torch_save(
                {"model": request.model, "dataset": request.dataset, "latent_dim": d, "fold": fold,
                 "config_hash": chash, "model_hyperparameters": model_hp,
                 "state_dict": {k: v.cpu() for k, v in result.best_state.items()}},
                checkpoint,
            )
            record = FoldRecord(
                model=request.model, dataset=request.dataset, latent_dim=d, fold=fold, seed=request.seed,
                preset=preset.name, config_hash=chash, split_hash=splits.split_hash, variant=request.variant(),
                dataset_params=dataset_params,
                hyperparameters=hyperparameters, protocol=protocol, metrics=evaluation.aggregate,
                per_image=evaluation.per_image, test_ids=[str(i) for i in splits.test],
                test_groups=[str(g) for g in test.groups],
                timings={"train_s": result.seconds, "sampling_s": evaluation.seconds_sampling,
                         "metrics_s": evaluation.seconds_metrics, "steps": result.steps},
                versions={**versions, "device": str(device)},
                best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                history=[asdict(h) for h in result.history], checkpoint=str(checkpoint),
            )
            store.add(record)
            reporter.fold_finished(record)
            records.append(record)
    return records


__all__: Sequence[str] = ["RunRequest", "SilentReporter", "build_objective", "resolve_device", "run_protocol"]
