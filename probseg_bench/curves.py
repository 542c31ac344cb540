"""Training curves (``--log NAME``): the logger contract a logger plugin implements, and the reporters that write
a run's per-epoch curves through one.

- :class:`CurveLogger` and :class:`LoggerSpec`: what a logger plugin provides (TensorBoard is the built-in,
  ``probseg_loggers``; MLflow or W&B are added by a plugin the way a model is, through the hook
  ``probseg_bench_register_loggers(registry)``). Both are re-exported by :mod:`probseg_bench.api`.
- :class:`Curves`: a checked choice of logger and folder (:meth:`Curves.open` checks the name, the logger's own
  requirements such as an installed package, and the folder, before any work).
- :class:`CurveReporter`: a :class:`~probseg_bench.protocol.Reporter` that forwards every call to another one
  and writes each fold's curves under :func:`fold_run_name`; :class:`EpochCurves`: an ``on_epoch`` callback
  writing one run's curves (a tuning trial: :meth:`Curves.trial`, under ``<study>/trial<N>``).

The step of every value is the epoch number (1-based, :attr:`probseg_bench.training.EpochLog.epoch`), so a fold
resumed after epoch ``r`` continues at step ``r + 1``; the logger is opened with ``first_step = r + 1`` and drops
whatever an earlier, interrupted attempt logged at that step or later (TensorBoard: ``purge_step``), so no epoch
appears twice. Nothing here imports torch or a logger package at module level.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from probseg_bench.errors import ProbsegError

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.plugins import Plugins
    from probseg_bench.protocol import Reporter, RunPlan
    from probseg_bench.results import FoldKey, FoldRecord, ResultsStore
    from probseg_bench.training import EpochLog


class CurveLogger(ABC):
    """One run's curves (a fold, or a tuning trial), opened by a :class:`LoggerSpec` factory.

    Values are floats (NaN and inf may occur: a diverging run); ``step`` is the epoch number (int >= 1). The
    reporters call :meth:`log_config` at most once, before the first step, then :meth:`log_scalars` once per
    epoch with increasing steps, then :meth:`close` exactly once (also when the run fails or is interrupted).
    """

    @abstractmethod
    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write ``values`` (tag -> value, tags such as ``"train/loss"``, ``"val/loss"``, ``"lr"``) at ``step``."""

    def log_config(self, config: Mapping[str, Any]) -> None:  # noqa: B027 (optional: most loggers keep it)
        """Record the run's configuration once (JSON-able: model, dataset, latent_dim, fold, config_hash, variant,
        hyperparameters, protocol); the default records nothing."""

    def flush(self) -> None:  # noqa: B027 (optional)
        """Make what was logged visible to readers now (the default does nothing)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the run's files or connection."""


@dataclass(frozen=True)
class LoggerSpec:
    """A training-curve logger plugin (``--log NAME``).

    ``factory(log_dir, run_name, first_step)`` opens the run ``run_name`` (``/``-separated, e.g.
    ``punet/lidc/d6/defaults-1a2b3c4d/fold0``) under the folder ``log_dir`` (:class:`pathlib.Path`, checked to be
    writable; a logger that writes elsewhere, e.g. to an MLflow server, may ignore it) and returns a
    :class:`CurveLogger`; ``first_step`` (int >= 1) is the first step that will be logged: values an earlier
    attempt of the same run logged at that step or later are stale (the fold resumed from its saved state) and
    should be dropped or hidden. Import the logger's package inside the factory, not at module level.
    ``check()``: called before any work; raises :class:`~probseg_bench.errors.ProbsegError` (one line, e.g. the
    ``pip install`` command) when the logger cannot work here, e.g. its package is missing.
    """

    name: str
    description: str
    factory: Callable[[Path, str, int], CurveLogger]
    check: Callable[[], None] | None = None
    citation: str = ""


def _component(text: str) -> str:
    """``text`` as one path component of a run name: runs of characters other than letters, digits and
    ``. , = + -`` become ``_`` (so a ``params=dir/file.toml`` variant stays one folder)."""
    return re.sub(r"[^A-Za-z0-9.,=+-]+", "_", text.replace(", ", ",")).strip("_.") or "_"


def fold_run_name(key: FoldKey, variant: str) -> str:
    """The run name of a fold: ``<model>/<dataset>/d<dim>/<variant or 'defaults'>-<config_hash>/fold<k>``,
    e.g. ``spunet/lidc/d6/beta=50,epochs=2-1a2b3c4d5e6f/fold0`` (``variant``: ``RunRequest.variant()``; the hash is
    the record's, which also names the fold's checkpoint folder)."""
    label = f"{_component(variant) if variant else 'defaults'}-{key.config_hash}"
    return f"{_component(key.model)}/{_component(key.dataset)}/d{key.latent_dim}/{label}/fold{key.fold}"


def trial_run_name(study: str, number: int) -> str:
    """The run name of tuning trial ``number`` of ``study``: ``<study>/trial<N>``."""
    return f"{_component(study)}/trial{number}"


def epoch_scalars(log: EpochLog) -> dict[str, float]:
    """The values written per epoch: ``train/loss`` (the weighted objective), ``train/<term>`` per loss term
    (reconstruction and each regularizer, unweighted, as in ``log.train_terms``), ``val/loss``, ``lr`` (at the
    epoch's end), ``time/epoch_seconds`` and, for a model with a latent prior, ``val/effective_rank``."""
    values = {"train/loss": log.train_loss, **{f"train/{t}": v for t, v in log.train_terms.items()},
              "val/loss": log.val_loss, "lr": log.lr, "time/epoch_seconds": log.seconds}
    if log.val_effective_rank is not None:
        values["val/effective_rank"] = log.val_effective_rank
    return {tag: float(v) for tag, v in values.items()}


class EpochCurves:
    """An ``on_epoch`` callback writing one run's curves: ``curves(log)`` per :class:`EpochLog` (step = its epoch);
    :meth:`close` (or leaving a ``with`` block) closes the logger once."""

    def __init__(self, logger: CurveLogger) -> None:
        self.logger = logger
        self.closed = False

    def __call__(self, log: EpochLog) -> None:
        self.logger.log_scalars(log.epoch, epoch_scalars(log))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.logger.close()

    def __enter__(self) -> EpochCurves:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Curves:
    """A checked logger and folder (make one with :meth:`open`); :meth:`start` opens a run's curves."""

    def __init__(self, spec: LoggerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_dir = Path(log_dir)

    @classmethod
    def open(cls, name: str, log_dir: Path, plugins: Plugins | None = None, option: str = "--log",
             dir_option: str = "--log-dir") -> Curves:
        """Check, before any work and creating nothing, that the logger ``name`` is registered and usable here
        (its ``check``) and that ``log_dir`` can be written.

        Raises:
            ProbsegError: one line: an unknown logger (``--log NAME: unknown logger ...`` with the known ones),
                the logger's own check (a missing package with its ``pip install`` command), or a folder that
                cannot be written (``--log-dir PATH: ...``).
        """
        from probseg_bench.outputs import check_output_folder
        from probseg_bench.plugins import get_plugins

        try:
            spec = (plugins or get_plugins()).loggers.get(name)
        except ProbsegError as exc:
            raise ProbsegError(f"{option} {name}: {exc}") from None
        if spec.check is not None:
            spec.check()
        check_output_folder(Path(log_dir), dir_option)
        return cls(spec, Path(log_dir))

    def start(self, run_name: str, first_step: int = 1, config: Mapping[str, Any] | None = None) -> EpochCurves:
        """Open the run ``run_name`` (see :class:`LoggerSpec`) and, when ``config`` is given, record it.

        Raises:
            OutputError: the logger's files cannot be written (one line naming the path).
        """
        from probseg_bench.outputs import write_error

        try:
            logger = self.spec.factory(self.log_dir, run_name, first_step)
            if config is not None:
                logger.log_config(config)
        except OSError as exc:
            raise write_error(self.log_dir / run_name, exc) from None
        return EpochCurves(logger)

    def trial(self, study: str, number: int, config: Mapping[str, Any] | None = None) -> EpochCurves:
        """The curves of tuning trial ``number`` of ``study`` (:func:`trial_run_name`): pass it as (or call it
        from) the trial's ``on_epoch`` and close it when the trial ends (``with curves.trial(...) as write:``)."""
        return self.start(trial_run_name(study, number), 1, config)


class CurveReporter:
    """A :class:`~probseg_bench.protocol.Reporter` that forwards every call to ``inner`` and writes each fold's
    curves (:func:`epoch_scalars` per epoch) under :func:`fold_run_name` with ``curves`` (a checked logger and
    folder: :meth:`Curves.open`, which :func:`probseg_bench.request.check_request` calls once for a request's
    ``--log``).

    A fold's logger is opened at ``fold_started`` (``first_step`` = the epoch it resumes after + 1; the fold's
    configuration is recorded on a fresh start) and closed at ``fold_finished`` / ``fold_failed``; :meth:`close`
    (or leaving a ``with`` block) closes any still open, e.g. after Ctrl-C. Skipped folds write nothing.
    """

    def __init__(self, inner: Reporter, curves: Curves) -> None:
        self.inner = inner
        self.curves = curves
        self._plans: dict[str, tuple[str, dict[str, Any]]] = {}  # config hash -> (variant, configuration)
        self._open: dict[FoldKey, EpochCurves] = {}

    def run_started(self, plan: RunPlan, store: ResultsStore) -> None:
        r = plan.request
        config = {"model": r.model, "dataset": r.dataset, "seed": r.seed, "preset": plan.exp.preset.name,
                  "variant": r.variant(), "config_hash": plan.config_hash, "hyperparameters": plan.hyperparameters,
                  "protocol": plan.protocol, "dataset_params": dict(plan.exp.dataset_params)}
        self._plans[plan.config_hash] = (r.variant(), config)
        self.inner.run_started(plan, store)

    def fold_started(self, key: FoldKey, epochs: int, resumed_from: int) -> None:
        self.inner.fold_started(key, epochs, resumed_from)
        self._close(key)
        variant, config = self._plans.get(key.config_hash, ("", {}))
        fold_config = {**config, "latent_dim": key.latent_dim, "fold": key.fold, "epochs": epochs}
        self._open[key] = self.curves.start(fold_run_name(key, variant), resumed_from + 1,
                                            fold_config if resumed_from == 0 else None)

    def epoch_finished(self, key: FoldKey, log: EpochLog) -> None:
        self.inner.epoch_finished(key, log)
        if key in self._open:
            self._open[key](log)

    def fold_finished(self, record: FoldRecord) -> None:
        self._close(record.key)
        self.inner.fold_finished(record)

    def fold_failed(self, record: FoldRecord) -> None:
        self._close(record.key)
        self.inner.fold_failed(record)

    def fold_skipped(self, key: FoldKey) -> None:
        self.inner.fold_skipped(key)

    def data_changed(self, key: FoldKey, note: str) -> None:
        self.inner.data_changed(key, note)

    def _close(self, key: FoldKey) -> None:
        curves = self._open.pop(key, None)
        if curves is not None:
            curves.close()

    def close(self) -> None:
        """Close every fold's logger still open (a run that stopped with an exception)."""
        for key in list(self._open):
            self._close(key)

    def __enter__(self) -> CurveReporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["CurveLogger", "CurveReporter", "Curves", "EpochCurves", "LoggerSpec", "epoch_scalars",
           "fold_run_name", "trial_run_name"]
