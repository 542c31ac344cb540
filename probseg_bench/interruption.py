"""What an interrupted run leaves on disk, said exactly (Ctrl-C / SIGINT during the protocol).

A fold's training state (``fold<k>.partial.pt``) is written atomically at epoch ends, always after the last epoch
(:class:`probseg_bench.training.TrainConfig`); its record goes to the results store in one transaction once it is
evaluated. When the user interrupts a run, :func:`probseg_bench.protocol.run_protocol` raises
:class:`FoldInterrupted`, whose ``on_disk`` is read from the disk after the interruption (not guessed): the file
and the epoch of the interrupted fold's training state, or that nothing of it was written, or that its record was
stored just before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probseg_bench.errors import ProbsegError
from probseg_bench.results import FoldKey, ResultsStore


class FoldInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`probseg_bench.protocol.run_protocol`. A :class:`KeyboardInterrupt`, so whatever stops
    on Ctrl-C stops on it; ``on_disk``: one clause (no final period) saying what the interrupted fold left on disk.
    Picklable (it crosses process boundaries from an executor's worker)."""

    def __init__(self, on_disk: str) -> None:
        super().__init__(on_disk)
        self.on_disk = on_disk


def fold_label(key: FoldKey) -> str:
    """``punet/synthetic d=6 fold 0``: how the progress lines name a fold."""
    return f"{key.model}/{key.dataset} d={key.latent_dim} fold {key.fold}"


NOTHING_IN_PROGRESS = "no fold was in progress (nothing of one on disk)"


@dataclass
class FoldWatch:
    """The fold :func:`~probseg_bench.protocol.run_protocol` is working on (set before it starts), to describe
    what it left on disk when the run is interrupted (:meth:`interrupted`)."""

    store: ResultsStore
    epochs: int
    key: FoldKey | None = None
    partial: Path | None = None
    identity: dict[str, Any] | None = None

    def start(self, key: FoldKey, partial: Path, identity: dict[str, Any]) -> None:
        """The protocol begins work on ``key`` (its training state goes to ``partial``, keyed by ``identity``)."""
        self.key, self.partial, self.identity = key, partial, identity

    def interrupted(self) -> FoldInterrupted:
        """The exception to raise after a Ctrl-C, with what the fold in progress left on disk (read now)."""
        return FoldInterrupted(self.on_disk())

    def on_disk(self) -> str:
        """One clause: the fold's record stored (its leftover training state deleted), its training state's file
        and epoch (and what a rerun does with it), or that nothing of it was written."""
        from probseg_bench.protocol import resumed_epoch

        if self.key is None or self.partial is None or self.identity is None:
            return NOTHING_IN_PROGRESS
        label = fold_label(self.key)
        try:
            stored = self.store.get(self.key)
        except Exception:  # the store cannot be read now: say what the disk shows of the fold
            stored = None
        if stored is not None:  # the interruption came after its record was written, before the state was deleted
            self.partial.unlink(missing_ok=True)
            return f"{label} was stored just before the interruption"
        if not self.partial.is_file():
            return (f"nothing of {label} is on disk (interrupted before its first training state was written): a "
                    "rerun trains it from its first epoch")
        try:
            epoch = resumed_epoch(self.partial, self.identity)
        except ProbsegError as exc:
            return f"{label}: {exc}"
        if epoch >= self.epochs:
            return (f"{label} was being evaluated: its training state after its last epoch ({epoch}/{self.epochs}) "
                    f"is saved in {self.partial}, so a rerun only evaluates it")
        return (f"{label}: its training state after epoch {epoch}/{self.epochs} is saved in {self.partial}; a rerun "
                f"resumes it from epoch {epoch + 1}")


def interrupted_line(finished: int, unit: str, store_url: str, exc: BaseException, extra: Sequence[str] = ()) -> str:
    """The line a command prints when it is interrupted: ``interrupted: N <unit>(s) finished in this run are
    stored in URL; <what the fold in progress left on disk>; [extra; ]rerun the same command to resume``.
    ``exc``: the :class:`KeyboardInterrupt` caught (a :class:`FoldInterrupted` says what the fold left; a plain
    one came before any fold began)."""
    on_disk = exc.on_disk if isinstance(exc, FoldInterrupted) else NOTHING_IN_PROGRESS
    parts = [f"interrupted: {finished} {unit}(s) finished in this run are stored in {store_url}", on_disk, *extra,
             "rerun the same command to resume"]
    return "; ".join(parts)


__all__: Sequence[str] = [
    "NOTHING_IN_PROGRESS", "FoldInterrupted", "FoldWatch", "fold_label", "interrupted_line",
]
