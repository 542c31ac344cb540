"""The standardized cross-validation protocol (seed paper Section III-C/D; DESIGN.md section 3).

For a model, a dataset and each latent dimension: a group-aware ~20% test split and 3 folds of the rest
(deterministic for the seed); per fold, train on two folds, select the checkpoint with the lowest validation
loss on the third, evaluate it on the test set with 16 prior samples per image, and store one record. Folds
already in the store (same configuration, computed on the same data: the data's content fingerprint is part of the
configuration hash) are skipped, so rerunning a killed command resumes it; a rerun on changed data trains anew.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from probseg_bench.atomic import atomic_torch_save
from probseg_bench.data.fingerprint import short
from probseg_bench.experiment import Experiment, fold_seed
from probseg_bench.request import CheckedRequest, RunRequest, check_request
from probseg_bench.results import FoldKey, FoldRecord, ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    from probseg_bench.interruption import FoldWatch
    from probseg_bench.training import EpochLog


class Reporter(Protocol):
    """Progress callbacks (the CLI renders them with rich; the core prints nothing).

    ``run_started``: once per request, after every check and before the first fold (the plan says what will run);
    ``fold_started``: ``resumed_from`` is the epoch the fold's training state was written at (0: a fresh start);
    ``epoch_finished``: after each epoch, with its losses (``log.train_terms``: reconstruction and each
    regularizer, unweighted); ``data_changed``: before ``fold_started``, when the store holds this fold under the
    same settings computed on other (or unfingerprinted) data, which is not reused (``note``: one line saying so,
    :meth:`RunPlan.data_change_note`)."""

    def run_started(self, plan: RunPlan, store: ResultsStore) -> None: ...
    def fold_started(self, key: FoldKey, epochs: int, resumed_from: int) -> None: ...
    def epoch_finished(self, key: FoldKey, log: EpochLog) -> None: ...
    def fold_finished(self, record: FoldRecord) -> None: ...
    def fold_failed(self, record: FoldRecord) -> None: ...
    def fold_skipped(self, key: FoldKey) -> None: ...
    def data_changed(self, key: FoldKey, note: str) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def run_started(self, plan: RunPlan, store: ResultsStore) -> None: ...
    def fold_started(self, key: FoldKey, epochs: int, resumed_from: int) -> None: ...
    def epoch_finished(self, key: FoldKey, log: EpochLog) -> None: ...
    def fold_finished(self, record: FoldRecord) -> None: ...
    def fold_failed(self, record: FoldRecord) -> None: ...
    def fold_skipped(self, key: FoldKey) -> None: ...
    def data_changed(self, key: FoldKey, note: str) -> None: ...


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


def partial_report(reporter: Reporter, key: FoldKey) -> Callable[[EpochLog], None]:
    """An ``on_epoch`` callback forwarding the epoch's log to ``reporter``."""
    return partial(reporter.epoch_finished, key)


def resumed_epoch(partial_state: Path, key: dict[str, Any]) -> int:
    """The epoch a fold's training state at ``partial_state`` was written at (training resumes after it); 0 when
    there is none.

    Raises:
        ProbsegError: unreadable, or the state of another run (as training would).
    """
    from probseg_bench.training import load_training_state

    if not partial_state.is_file():
        return 0
    return int(load_training_state(partial_state, key)["epoch"])


@dataclass
class RunPlan:
    """Everything fixed for one request before its folds run: the prepared experiment, the resolved
    hyperparameters, the configuration hash that keys its records, and the fields every record shares.

    ``config_hash`` covers the seed, the resolved protocol, the hyperparameters, the split, the dataset parameters,
    the model's revision and the data's content fingerprint (``exp.data_fingerprint``): a rerun on changed data has
    another hash, so it trains anew (its checkpoints go to another folder) and is another leaderboard row.
    ``settings_hash``: the same without the split and the data (equal for a rerun of the same command on changed
    data; stored with each record to say so); ``legacy_hash``: the configuration hash without the data, which is
    what records stored before data fingerprints existed were keyed by (they are never reused: see
    :func:`data_change_note`)."""

    request: RunRequest
    exp: Experiment
    model_hp: dict[str, Any]
    reg_hp: dict[str, dict[str, Any]]
    hyperparameters: dict[str, Any]
    protocol: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    test: Any
    settings_hash: str = ""
    legacy_hash: str = ""

    @classmethod
    def prepare(cls, checked: CheckedRequest) -> RunPlan:
        """Prepare the experiment of the checked request (loads and fingerprints the data) and hash the
        configuration."""
        exp = Experiment.prepare(checked)
        request = checked.request
        model_hp, reg_hp = exp.hyperparameters()
        protocol = exp.protocol_settings()
        hyperparameters = {"model": model_hp, "regularizers": reg_hp,
                           "objective": [[t.regularizer, t.weight] for t in exp.terms]}
        payload: dict[str, Any] = {"seed": request.seed, "protocol": protocol, "hyperparameters": hyperparameters,
                                   "dataset": exp.dataset_params}
        if exp.model_spec.revision:  # a fix changed what this model trains: its older records no longer match
            payload["model_revision"] = exp.model_spec.revision
        settings = config_hash(payload)
        payload["split"] = exp.splits.split_hash
        legacy = config_hash(payload)
        payload["data"] = exp.data_fingerprint  # the data's content: changed data never reuses a stored result
        chash = config_hash(payload)
        versions = package_versions("probseg-bench", "torch", "numpy", "scipy", "geomloss")
        return cls(request, exp, model_hp, reg_hp, hyperparameters, protocol, chash, versions,
                   exp.data.subset(exp.splits.test), settings, legacy)

    def key(self, d: int, fold: int) -> FoldKey:
        return FoldKey(self.request.model, self.request.dataset, d, fold, self.config_hash)

    def folder(self, d: int) -> Path:
        """Where the checkpoints of latent dim ``d`` go."""
        r = self.request
        return r.run_dir / r.model / r.dataset / f"d{d}" / self.config_hash

    def common(self, d: int, fold: int) -> dict[str, Any]:
        """The record fields that do not depend on the fold's outcome."""
        import torch

        r, exp = self.request, self.exp
        # CPU results are bitwise reproducible only at the same torch thread count (the reduction order of the
        # GEMMs depends on it), so the record says how many threads trained it
        environment = {**self.versions, "device": str(exp.device), "torch_threads": str(torch.get_num_threads())}
        return dict(
            model=r.model, dataset=r.dataset, latent_dim=d, fold=fold, seed=r.seed, preset=exp.preset.name,
            config_hash=self.config_hash, split_hash=exp.splits.split_hash, variant=r.variant(),
            dataset_params=exp.dataset_params, hyperparameters=self.hyperparameters, protocol=self.protocol,
            test_ids=[str(i) for i in exp.splits.test], test_groups=[str(g) for g in self.test.groups],
            versions=environment, data_fingerprint=exp.data_fingerprint, settings_hash=self.settings_hash,
        )

    def data_change_note(self, store: ResultsStore, d: int, fold: int) -> str | None:
        """One line when the store holds a record of this fold under the same settings but computed on other data
        (or on data it cannot tell: a record stored before data fingerprints), which this run does not reuse;
        None when there is none (call it only when the fold's own key is not stored)."""
        r = self.request
        stale = [rec for rec in store.records([r.model], [r.dataset], [d], include_failed=True)
                 if rec.fold == fold and rec.config_hash != self.config_hash
                 and ((rec.settings_hash == self.settings_hash and rec.data_fingerprint != self.exp.data_fingerprint)
                      or (rec.data_fingerprint is None and rec.config_hash == self.legacy_hash))]
        if not stale:
            return None
        rec = stale[-1]
        ours = f"data {short(self.exp.data_fingerprint)}, config {self.config_hash[:8]}"
        if rec.data_fingerprint is None:
            return (f"the stored result of these settings (config {rec.config_hash[:8]}) predates data fingerprints, "
                    f"so it cannot be told whether it was computed on this data: not reused, training anew ({ours})")
        return (f"the data differ from the stored result's (stored: data {short(rec.data_fingerprint)}, config "
                f"{rec.config_hash[:8]}): not reused, training anew ({ours}); both stay in the store")

    def failed_record(self, d: int, fold: int, reason: str, best_epoch: int = 0,
                      history: Sequence[dict[str, Any]] = (), checkpoint: str | None = None) -> FoldRecord:
        """A record of a fold that could not be completed (no metrics)."""
        return FoldRecord(**self.common(d, fold), metrics={}, per_image={}, timings={}, best_epoch=best_epoch,
                          history=list(history), checkpoint=checkpoint, status="failed", failure=reason)


def record_failure(request: RunRequest, store: ResultsStore, reason: str) -> int:
    """Record every fold of ``request`` that is not stored yet as failed with ``reason`` (e.g. after a distributed
    executor gave up on the cell: the request is checked here, on the machine that records); returns how many
    were recorded.

    Raises:
        ProbsegError: the request cannot be checked or its data prepared (nothing to key a record with).
    """
    plan = RunPlan.prepare(check_request(request))
    added = 0
    for d in request.latent_dims:
        for fold in plan.exp.folds:
            if store.get(plan.key(d, fold)) is None:
                store.add(plan.failed_record(d, fold, reason))
                added += 1
    return added


def run_protocol(
    checked: CheckedRequest,
    store: ResultsStore | str,
    reporter: Reporter | None = None,
    retry_failed: bool = False,
) -> list[FoldRecord]:
    """Run (or resume) the protocol for every requested latent dimension and fold of a checked request
    (:func:`probseg_bench.request.check_request`; it is not checked again).

    Each fold's training state is written at epoch ends (at most every 30 s, and after the last epoch, see
    ``TrainConfig``) to ``fold<k>.partial.pt`` beside the checkpoints, so a killed fold resumes from its last
    written epoch (a fold killed while it is evaluated is only evaluated again); the record is written in one
    transaction when the fold is evaluated. A fold whose training diverges (non-finite loss or gradient) is
    recorded as failed with the reason (its best checkpoint so far kept) and the other folds go on; reruns skip it
    unless ``retry_failed``.
    ``checked.curves`` (``--log``): the folds' training curves are also written with that logger
    (:class:`probseg_bench.curves.CurveReporter`). ``store``: the results store, or its URL / file path, then
    opened only once the request's data is loaded and checked, so that a request whose data fails its checks
    writes no results file.

    Returns:
        The successful records of every requested fold (newly computed, or already stored).

    Raises:
        ProbsegError: bad data, a run dir or results store file that cannot be written (checked before the data
            is loaded), an evaluation larger than its memory bound.
        OutputError: a checkpoint or record that cannot be written later (the folds stored before are kept).
        FoldInterrupted: Ctrl-C (a :class:`KeyboardInterrupt`) once the folds began; its ``on_disk`` says what the
            fold in progress left on disk (:mod:`probseg_bench.interruption`).
    """
    from probseg_bench.interruption import FoldInterrupted, FoldWatch
    from probseg_bench.outputs import check_output_folder, check_storage

    reporter = reporter or SilentReporter()
    check_output_folder(checked.request.run_dir, "--run-dir")  # the output locations before the data is loaded
    if isinstance(store, str):
        check_storage(store)
    plan = RunPlan.prepare(checked)
    if isinstance(store, str):
        store = ResultsStore(store)
    with ExitStack() as stack:
        if checked.curves is not None:  # the folds' curves (--log), closed whatever happens
            from probseg_bench.curves import CurveReporter

            reporter = stack.enter_context(CurveReporter(reporter, checked.curves))
        reporter.run_started(plan, store)
        watch = FoldWatch(store, plan.exp.schedule[0])
        try:
            return _run_folds(plan, store, reporter, retry_failed, watch)
        except FoldInterrupted:
            raise
        except KeyboardInterrupt:  # Ctrl-C: say exactly what the fold in progress left on disk
            raise watch.interrupted() from None


def _run_folds(plan: RunPlan, store: ResultsStore, reporter: Reporter, retry_failed: bool, watch: FoldWatch
               ) -> list[FoldRecord]:
    """The folds of :func:`run_protocol` in order (``watch``: a :class:`~probseg_bench.interruption.FoldWatch`
    told which fold is in progress)."""
    from probseg_bench.evaluation import evaluate
    from probseg_bench.training import TrainingDivergedError

    request = plan.request
    exp, model_hp = plan.exp, plan.model_hp
    epochs, _ = exp.schedule
    records: list[FoldRecord] = []
    for d in request.latent_dims:
        for fold in exp.folds:
            key = plan.key(d, fold)
            stored = store.get(key)
            if stored is not None and stored.status != "ok" and retry_failed:
                store.delete(key)
                stored = None
            if stored is not None:
                reporter.fold_skipped(key)
                if stored.status == "ok":
                    records.append(stored)
                continue
            note = plan.data_change_note(store, d, fold)
            if note is not None:
                reporter.data_changed(key, note)
            checkpoint, partial = plan.folder(d) / f"fold{fold}.pt", plan.folder(d) / f"fold{fold}.partial.pt"
            identity = {"model": request.model, "dataset": request.dataset, "latent_dim": d, "fold": fold,
                        "config_hash": plan.config_hash}
            watch.start(key, partial, identity)
            reporter.fold_started(key, epochs, resumed_epoch(partial, identity))
            try:
                model, result = exp.train(d, fold, on_epoch=partial_report(reporter, key),
                                          checkpoint=partial, checkpoint_key=identity)
            except TrainingDivergedError as exc:
                if exc.best_state is not None:
                    atomic_torch_save({**identity, "model_hyperparameters": model_hp,
                                        "state_dict": {k: v.cpu() for k, v in exc.best_state.items()}}, checkpoint)
                record = plan.failed_record(d, fold, str(exc), exc.best_epoch, [asdict(h) for h in exc.history],
                                            str(checkpoint) if exc.best_state is not None else None)
                store.add(record)
                partial.unlink(missing_ok=True)
                reporter.fold_failed(record)
                continue
            evaluation = evaluate(model, plan.test, exp.device, n_samples=exp.preset.n_eval_samples,
                                  batch_size=exp.preset.batch_size, seed=fold_seed(request.seed, d, fold),
                                  sample_counts=exp.preset.sample_counts)
            atomic_torch_save({**identity, "model_hyperparameters": model_hp,
                                "state_dict": {k: v.cpu() for k, v in result.best_state.items()}}, checkpoint)
            record = FoldRecord(
                **plan.common(d, fold), metrics=evaluation.aggregate, per_image=evaluation.per_image,
                timings={"train_s": result.seconds, "sampling_s": evaluation.seconds_sampling,
                         "metrics_s": evaluation.seconds_metrics, "steps": result.steps,
                         "samples_per_image": evaluation.samples_drawn},
                best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                history=[asdict(h) for h in result.history], checkpoint=str(checkpoint),
                latent_size=evaluation.latent_size,
            )
            store.add(record)
            partial.unlink(missing_ok=True)
            reporter.fold_finished(record)
            records.append(record)
    return records


__all__: Sequence[str] = [
    "Reporter", "RunPlan", "SilentReporter", "record_failure", "resumed_epoch", "run_protocol",
]
