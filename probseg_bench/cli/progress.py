"""Progress of ``run`` and ``validate`` on stderr: the plan line, per-fold bars (a terminal) or periodic lines (a
pipe or a file), fold results and the closing summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probseg_bench.cli._app import err_console
from probseg_bench.connections import display_url
from probseg_bench.metrics.catalogue import ranked_metrics
from probseg_bench.presets import Preset
from probseg_bench.request import RunRequest
from probseg_bench.results import FoldKey, FoldRecord, ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.api import DatasetSpec
    from probseg_bench.protocol import RunPlan
    from probseg_bench.training import EpochLog


def duration(seconds: float) -> str:
    """``42s``, ``3m10s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


TERM_ABBREVIATIONS = {"reconstruction": "rec"}


def metrics_text(metrics: dict[str, float | None]) -> str:
    """A fold's ranked metrics (the catalogue's, each with its decimals), e.g. ``GED 0.312  HM-IoU 0.512  EWD 0.488
    ER 1.93``; ``n/a`` for a metric undefined on every test image."""
    return "  ".join(f"{m.label} " + ("n/a" if metrics.get(m.name) is None else f"{metrics[m.name]:.{m.decimals}f}")
                     for m in ranked_metrics())


def loss_text(value: float) -> str:
    """A loss for a progress line: one decimal from 100 on, else 3 significant digits (a KL of 0.0312)."""
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def describe_run(request: RunRequest, preset: Preset, folds: Sequence[int], epochs: str, device: object,
                 store_url: str) -> str:
    """One line saying what a request will run (printed after every check), e.g. ``run punet on lidc-sample:
    d=6, folds 0 1 2, 400 epochs, preset quick (not paper numbers), device cpu; results in sqlite:///..., checkpoints
    under probseg-runs``."""
    variant = request.variant(with_protocol=False)  # the preset part names the overrides
    model = f"{request.model} ({variant})" if variant else request.model
    overrides = [f"{k}={v}" for k, v in request.protocol_overrides.items()]
    if preset.name == "quick":
        overrides.append("not paper numbers")
    preset_text = f"preset {preset.name}" + (f" ({'; '.join(overrides)})" if overrides else "")
    dims = ", ".join(str(d) for d in request.latent_dims)
    plural = "s" if len(folds) > 1 else ""
    what = (f"fold{plural} {' '.join(map(str, folds))} (training run{plural} on the fixed {preset.split} split, "
            "each with its own seed)" if preset.fixed_split else f"fold{plural} {' '.join(map(str, folds))}")
    return (f"run {model} on {request.dataset}: d={dims}, {what}, {epochs}, {preset_text}, device {device}; results "
            f"in {store_url}, checkpoints under {request.run_dir}")


def epochs_text(n: int) -> str:
    """``"1 epoch"``, ``"200 epochs"``."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def planned_epochs(preset: Preset, dataset: DatasetSpec) -> str:
    """The training length of a request whose data is not loaded here (distributed cells): epochs, or the
    preset's step budget."""
    if preset.steps is not None:
        return f"{preset.steps} steps of batch {preset.batch_size}"
    return epochs_text(preset.schedule(dataset.protocol)[0])


def curves_clause(dirs: Sequence[Path]) -> str:
    """``; training curves under DIR (tensorboard --logdir DIR)`` for the ``--log`` folders written, else ""."""
    if not dirs:
        return ""
    shown = ", ".join(str(d) for d in dirs)
    return f"; training curves under {shown} (tensorboard --logdir {dirs[0]})"


class RichReporter:
    """What a run does, on stderr: a line per request saying what will run; per fold, a progress bar (epoch, loss
    terms, validation loss, ETA) on a terminal, else one plain line every ~tenth of the fold's epochs (and at
    least every ``plain_interval_s`` seconds); a line per finished / failed / skipped fold, and per fold whose stored
    result was computed on other data (not reused); :meth:`summary`."""

    def __init__(self, total_folds: int, plain_interval_s: float = 60.0) -> None:
        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=err_console, disable=not self.live,
        )
        self.folds = self.progress.add_task("folds", total=total_folds, status="")
        self.epochs: Any = None
        self.plain_interval_s = plain_interval_s
        self.started = time.monotonic()
        self.finished = self.skipped = self.failed = 0
        self.run_dirs: list[Path] = []
        self.curve_dirs: list[Path] = []
        self._fold: tuple[float, int, int] = (0.0, 0, 0)  # (start time, resumed from, epochs) of the current fold
        self._last_line = 0.0

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _label(self, key: FoldKey) -> str:
        return f"{key.model}/{key.dataset} d={key.latent_dim} fold {key.fold}"

    def _print(self, text: str) -> None:
        err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    def run_started(self, plan: RunPlan, store: ResultsStore) -> None:
        if plan.request.run_dir not in self.run_dirs:
            self.run_dirs.append(plan.request.run_dir)
        if plan.request.log is not None and plan.request.log_dir not in self.curve_dirs:
            self.curve_dirs.append(plan.request.log_dir)
        exp = plan.exp
        self._print(describe_run(plan.request, exp.preset, exp.folds, epochs_text(exp.schedule[0]), exp.device,
                                 display_url(store.url)))

    def fold_started(self, key: FoldKey, epochs: int, resumed_from: int) -> None:
        now = time.monotonic()
        self._fold, self._last_line = (now, resumed_from, epochs), now
        if resumed_from:
            self._print(f"{self._label(key)}: resumed from epoch {resumed_from}/{epochs} (its saved training state)")
        elif not self.live:
            self._print(f"{self._label(key)}: training {epochs_text(epochs)}")
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.epochs = self.progress.add_task(f"  {self._label(key)}", total=epochs, completed=resumed_from,
                                             status="")

    def epoch_finished(self, key: FoldKey, log: EpochLog) -> None:
        now = time.monotonic()
        start, resumed_from, epochs = self._fold
        done = log.epoch - resumed_from
        eta = (now - start) / done * (epochs - log.epoch) if done > 0 else 0.0
        terms = ", ".join(f"{TERM_ABBREVIATIONS.get(k, k)} {loss_text(v)}" for k, v in log.train_terms.items())
        status = (f"train {loss_text(log.train_loss)}" + (f" ({terms})" if terms else "")
                  + f"  val {loss_text(log.val_loss)}")
        if log.epoch < epochs:
            status += f"  ETA {duration(eta)}"
        if self.live:
            self.progress.update(self.epochs, completed=log.epoch, status=status)
            return
        every = max(1, epochs // 10)
        if log.epoch % every == 0 or log.epoch == epochs or now - self._last_line >= self.plain_interval_s:
            self._last_line = now
            self._print(f"{self._label(key)}: epoch {log.epoch}/{epochs}  {status}")

    def fold_finished(self, record: FoldRecord) -> None:
        self.finished += 1
        self.progress.advance(self.folds)
        err_console.print(
            f"{self._label(record.key)}: {metrics_text(record.metrics)}  (best epoch {record.best_epoch}, "
            f"{record.timings['train_s']:.0f} s)",
            highlight=False,
        )

    def fold_failed(self, record: FoldRecord) -> None:
        self.failed += 1
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(record.key)}: FAILED, recorded as failed: {record.failure}",
                          highlight=False, markup=False, soft_wrap=True)

    def fold_skipped(self, key: FoldKey) -> None:
        self.skipped += 1
        self.progress.advance(self.folds)
        err_console.print(f"{self._label(key)}: already in the results store, skipped", highlight=False)

    def data_changed(self, key: FoldKey, note: str) -> None:
        self._print(f"{self._label(key)}: {note}")

    def summary(self, store_url: str) -> str:
        """``done in 3m10s: 2 fold(s) trained, 1 skipped (already stored), 0 failed; results in URL, checkpoints
        under DIR`` (and ``; training curves under DIR`` with ``--log``)."""
        dirs = ", ".join(str(d) for d in self.run_dirs) or "-"
        return (f"done in {duration(time.monotonic() - self.started)}: {self.finished} fold(s) trained, "
                f"{self.skipped} skipped (already stored), {self.failed} failed; results in {store_url}, "
                f"checkpoints under {dirs}{curves_clause(self.curve_dirs)}")
