"""Training of one fold: the objective, the optimiser and schedule, and best-checkpoint selection.

Objective (per image, then the mean over the batch): the reconstruction term, binary cross-entropy with
logits summed over pixels (and output channels), plus ``weight_t * regularizer_t(out)`` for each objective
term of the model plugin. For PU-Net this is the negative ELBO with the KL weighted by beta (DESIGN.md: BCE
summed over pixels, KL summed over latent dimensions, both averaged over the batch).

Optimiser (seed paper Section III-D): Adam (lr 1e-4, weight decay 1e-5), a linear warm-up over the first
``warmup_epochs`` epochs, then cosine annealing to 0 at the last step; the learning rate is updated every step.
The checkpoint with the lowest validation loss (the same objective, no augmentation, a fixed random seed) is
kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from probseg_bench.api import LatentRegularizer, MultiRaterData, TrainOutput
from probseg_bench.atomic import atomic_torch_save
from probseg_bench.data.augment import AffineAugmentation
from probseg_bench.errors import ProbsegError


class TrainingDivergedError(ProbsegError):
    """A non-finite loss or gradient: the message names the epoch, step and term. Carries the best checkpoint
    of the epochs before (``best_state`` None if there was none), its epoch and the training curves so far."""

    def __init__(self, message: str, best_state: dict[str, torch.Tensor] | None = None, best_epoch: int = -1,
                 history: list[EpochLog] | None = None) -> None:
        super().__init__(message)
        self.best_state = best_state
        self.best_epoch = best_epoch
        self.history = history or []


@dataclass
class Objective:
    """reconstruction + sum_t weight_t * regularizer_t, each a per-image value averaged over the batch."""

    terms: list[tuple[str, float, LatentRegularizer]]

    def __call__(self, out: TrainOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (scalar loss, per-term batch means: ``reconstruction`` and one entry per regularizer, unweighted)."""
        parts = {
            "reconstruction": F.binary_cross_entropy_with_logits(out.logits, out.target, reduction="none")
            .flatten(1)
            .sum(1)
            if out.reconstruction is None
            else out.reconstruction
        }
        for name, _, reg in self.terms:
            parts[name] = reg(out)
        loss = parts["reconstruction"].mean()
        for name, weight, _ in self.terms:
            loss = loss + weight * parts[name].mean()
        return loss, {k: v.mean() for k, v in parts.items()}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one fold (units: epochs over the training split; lr per step). ``augmentation``:
    the random affine map applied to every training batch when ``augment`` (the paper's ranges by default). ``amp``: the
    forward pass under bfloat16 autocast, the objective in float32 (for GPUs); ``channels_last``: NHWC memory
    format for the convolutions (faster on CPU too: 4.9 vs 4.2 PU-Net training images/s at batch 8 here).
    ``checkpoint_interval_s``: the resumable training state is written after the first epoch, then after every
    epoch that ends at least this many seconds after the previous write, and always after the last epoch (so a fold
    interrupted while it is evaluated is not trained again: a rerun only evaluates it), so short epochs (the quick
    preset's are ~0.2 s) do not spend their time writing it."""

    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 0.0
    augment: bool = True
    augmentation: AffineAugmentation = field(default_factory=AffineAugmentation)
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    checkpoint_interval_s: float = 30.0


@dataclass
class EpochLog:
    """Per-epoch training curve entry: mean train loss terms, validation loss, the mean effective rank of the
    prior on the validation images, learning rate, seconds."""

    epoch: int
    train_loss: float
    train_terms: dict[str, float]
    val_loss: float
    val_effective_rank: float | None  # None: a model without latent prior
    lr: float
    seconds: float


@dataclass
class FoldTrainingResult:
    """The best checkpoint (lowest validation loss) and the training curves of one fold."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training state atomically (a temporary file in the same folder, then rename)."""
    atomic_torch_save(state, path)


STATE_WHAT = "saved training state"
STATE_REMEDY = "deleting it restarts the fold from its first epoch"


def load_training_state(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """Read a training state with ``weights_only=True`` (no code runs) and check it belongs to ``key``.

    Raises:
        ProbsegError: one line: damaged (random bytes, cut short, not this format: "deleting it restarts the
            fold"), unreadable (an operating-system error), or written for another run (names the differing
            fields).
    """
    from probseg_bench.readback import load_torch_file

    state = load_torch_file(path, STATE_WHAT, STATE_REMEDY, required=("run", "epoch"))
    stored = state.get("run")
    if stored != key:
        raise ProbsegError(f"{path}: a checkpoint of another run ({stored}, expected {key}); delete it or use "
                           "another --run-dir")
    return state


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor at ``step`` (0-based): (step+1)/warmup during warm-up, then cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def _to_device(data: MultiRaterData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(data.images, device=device),
        torch.as_tensor(data.masks, device=device),
    )


def validation_loss(
    model: torch.nn.Module, objective: Objective, images: torch.Tensor, masks: torch.Tensor,
    batch_size: int, seed: int,
) -> tuple[float, float | None]:
    """Mean objective over the validation images (no augmentation), with the random draws (annotation k,
    posterior and prior samples) fixed by ``seed`` so that epochs are compared on equal terms; and the mean
    effective rank of the prior sigma over those images (seed paper Fig. 7), from the same forward passes (None for
    a model without latent prior)."""
    from probseg_bench.metrics import effective_rank

    model.eval()
    total, count, ranks = 0.0, 0, []
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, images.shape[0], batch_size):
            x, y = images[start : start + batch_size].float(), masks[start : start + batch_size]
            out = model(x, y)
            loss, _ = objective(out)
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            if out.prior is not None:  # no latent prior (latent_dim 0): no effective rank
                ranks.append(np.atleast_1d(effective_rank(out.prior.scale)))
    return total / max(count, 1), float(np.concatenate(ranks).mean()) if ranks else None


@dataclass
class _Progress:
    """What a fold's training has reached: the next epoch, the optimisation steps taken, the best checkpoint so
    far and the curves (restored from a training state, or a fresh start)."""

    epoch: int = 0
    step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = -1
    best_val: float = math.inf
    history: list[EpochLog] = field(default_factory=list)


@dataclass
class _Loop:
    """The objects one fold's training steps: model, objective, optimiser, schedule, batch generator."""

    model: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    config: TrainConfig
    device: torch.device


def _restore(loop: _Loop, checkpoint: Path, key: dict[str, Any]) -> _Progress:
    """Load a fold's training state into the loop's objects (weights, optimiser, schedule, random generators).

    Raises:
        ProbsegError: one line: the state is damaged (unreadable, a field missing or not fitting the model, an
            epoch outside the run's), or of another run (:func:`load_training_state`).
    """
    from probseg_bench.readback import damaged

    state = load_training_state(checkpoint, key)
    try:
        loop.model.load_state_dict(state["model"])
        loop.optimizer.load_state_dict(state["optimizer"])
        loop.schedule.load_state_dict(state["schedule"])
        loop.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if loop.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], loop.device)
        progress = _Progress(epoch=int(state["epoch"]), step=int(state["step"]), best_state=state["best_state"],
                             best_epoch=int(state["best_epoch"]), best_val=float(state["best_val"]),
                             history=[EpochLog(**h) for h in state["history"]])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):  # torch's messages span lines: not shown
        raise damaged(checkpoint, STATE_WHAT, STATE_REMEDY) from None
    if not 0 <= progress.epoch <= loop.config.epochs or len(progress.history) != progress.epoch:
        raise damaged(checkpoint, STATE_WHAT, STATE_REMEDY)
    return progress


def _save(loop: _Loop, checkpoint: Path, key: dict[str, Any], progress: _Progress) -> None:
    """Write the fold's training state after epoch ``progress.epoch`` (see :func:`_restore`)."""
    device = loop.device
    save_training_state(checkpoint, {
        "run": key, "epoch": progress.epoch, "step": progress.step, "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(), "schedule": loop.schedule.state_dict(),
        "generator": loop.generator.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "best_state": progress.best_state, "best_epoch": progress.best_epoch, "best_val": progress.best_val,
        "history": [asdict(h) for h in progress.history],
    })


def _train_epoch(loop: _Loop, x_train: torch.Tensor, y_train: torch.Tensor, progress: _Progress
                 ) -> tuple[float, dict[str, float]]:
    """One epoch of optimisation steps over the shuffled (and augmented) training split; advances
    ``progress.step``. Returns (mean loss, mean of each objective term) over the epoch's images.

    Raises:
        TrainingDivergedError: a non-finite loss or gradient (names epoch, step and term).
    """
    model, config, device = loop.model, loop.config, loop.device
    augment = config.augmentation if config.augment else None
    steps_per_epoch = math.ceil(x_train.shape[0] / config.batch_size)
    after_step = getattr(model, "on_optimizer_step", None)  # optional hook of the plugin contract (a weight average)
    model.train()
    order = torch.randperm(x_train.shape[0], generator=loop.generator).to(device)
    # sums and the first non-finite step stay on the device: one host synchronisation per epoch
    sums: torch.Tensor | None = None
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bad_terms: torch.Tensor | None = None
    names: list[str] = []
    seen = 0
    for b in range(steps_per_epoch):
        idx = order[b * config.batch_size : (b + 1) * config.batch_size]
        x, y = x_train[idx].float(), y_train[idx]
        if augment is not None:
            x, y = augment(x, y, loop.generator)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            out = model(x, y)
        loss, parts = loop.objective(out.float() if config.amp else out)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf
        )
        loop.optimizer.step()
        if after_step is not None:
            after_step()
        loop.schedule.step()
        progress.step += 1
        n = x.shape[0]
        seen += n
        names = ["total", *parts, "gradient"]
        values = torch.stack([loss.detach(), *(v.detach() for v in parts.values()), grad_norm.detach()])
        finite = torch.isfinite(values)
        newly_bad = (first_bad < 0) & ~finite.all()
        first_bad = torch.where(newly_bad, torch.full_like(first_bad, b), first_bad)
        previous = bad_terms if bad_terms is not None else torch.zeros_like(finite)
        bad_terms = torch.where(newly_bad, ~finite, previous)
        sums = values[:-1] * n if sums is None else sums + values[:-1] * n
    assert sums is not None and bad_terms is not None
    if int(first_bad) >= 0:
        which = [name for name, bad in zip(names, bad_terms.tolist(), strict=True) if bad and name != "total"]
        raise TrainingDivergedError(
            f"non-finite {'gradient' if which == ['gradient'] else 'loss'} at epoch {progress.epoch + 1}, step "
            f"{int(first_bad) + 1} (term: {', '.join(which) or 'total'}); lower the learning rate or the "
            "regularizer weights",
            best_state=progress.best_state, best_epoch=progress.best_epoch, history=progress.history,
        )
    means = (sums / seen).tolist()
    return means[0], dict(zip(names[1:-1], means[1:], strict=True))


def train_fold(
    model: torch.nn.Module,
    objective: Objective,
    train: MultiRaterData,
    val: MultiRaterData,
    config: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[EpochLog], Any] | None = None,
    checkpoint: Path | None = None,
    checkpoint_key: dict[str, Any] | None = None,
) -> FoldTrainingResult:
    """Train ``model`` on ``train``, select the epoch with the lowest validation loss on ``val``.

    Randomness: batch order and augmentation come from a CPU generator seeded with ``config.seed``; the model's
    own draws use torch's global generator (seed it before calling for a reproducible fold).

    With ``checkpoint``, the whole training state (weights, optimizer, schedule, random generators, best
    checkpoint, curves) is written there at epoch ends (temporary file + rename; after the first epoch, then at
    most every ``config.checkpoint_interval_s`` seconds, and after the last epoch), and an existing one is resumed
    from, so a killed fold continues from its last written epoch and ends exactly as if it had not been killed (on
    CPU); a state written after the last epoch trains nothing more (the best checkpoint is returned at once).
    ``checkpoint_key`` (e.g. model, dataset, latent dim, fold, configuration) must match the stored one, else
    the file is refused. The steps: restore (:func:`_restore`), per epoch train (:func:`_train_epoch`),
    validate (:func:`validation_loss`), keep the best weights, save (:func:`_save`), report (``on_epoch``).

    Raises:
        TrainingDivergedError: a non-finite loss or gradient (names epoch, step and term).
        ProbsegError: empty training or validation split; a checkpoint of another run; a damaged checkpoint.
    """
    if len(train) == 0 or len(val) == 0:
        raise ProbsegError(f"training split has {len(train)} items and validation {len(val)}: both must be non-empty")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x_train, y_train = _to_device(train, device)
    x_val, y_val = _to_device(val, device)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, steps_per_epoch * config.warmup_epochs)
    )
    loop = _Loop(model, objective, optimizer, schedule, torch.Generator().manual_seed(config.seed), config, device)
    start_all = time.perf_counter()
    last_saved: float | None = None  # when the training state was last written
    key = dict(checkpoint_key or {})
    resume = checkpoint is not None and checkpoint.is_file()
    progress = _restore(loop, checkpoint, key) if resume and checkpoint is not None else _Progress()
    for epoch in range(progress.epoch, config.epochs):
        t0 = time.perf_counter()
        loss_mean, term_means = _train_epoch(loop, x_train, y_train, progress)
        val_loss, val_er = validation_loss(model, objective, x_val, y_val, config.batch_size, config.seed + 1)
        log = EpochLog(
            epoch=epoch + 1,
            train_loss=loss_mean,
            train_terms=term_means,
            val_loss=val_loss,
            val_effective_rank=val_er,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=time.perf_counter() - t0,
        )
        progress.history.append(log)
        progress.epoch = epoch + 1
        if math.isfinite(val_loss) and val_loss < progress.best_val:
            progress.best_val, progress.best_epoch = val_loss, epoch + 1
            progress.best_state = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})
        last_epoch = epoch + 1 == config.epochs
        due = last_saved is None or time.perf_counter() - last_saved >= config.checkpoint_interval_s
        if checkpoint is not None and (due or last_epoch):
            last_saved = time.perf_counter()
            _save(loop, checkpoint, key, progress)
        if on_epoch is not None:
            on_epoch(log)
    if progress.best_state is None:
        raise TrainingDivergedError("the validation loss was never finite: no checkpoint to evaluate")
    return FoldTrainingResult(
        best_state=progress.best_state,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val,
        history=progress.history,
        seconds=time.perf_counter() - start_all,
        steps=progress.step,
    )
