"""A study's name and the settings it is bound to (:func:`study_settings`, :func:`bind_study`), what it learned
(:func:`study_verdict`), and what it holds after Ctrl-C (:func:`study_on_disk`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from probseg_bench.connections import display_url
from probseg_bench.data.fingerprint import short
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment
from probseg_bench.results import normalize_url
from probseg_bench.tuning.objective import FAILURE_ATTR
from probseg_bench.tuning.storage import GRACE_PERIOD_S, SETTINGS_ATTR, open_study


def default_study_name(model: str, dataset: str, objective: str) -> str:
    return f"{model}-{dataset}-{objective}"


def study_settings(experiment: Experiment, objective: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes a trial's score besides the searched values (JSON-able): model, dataset,
    dataset_params (resolved), latent_dim, fold, seed, preset, protocol_overrides, protocol (resolved), split
    (hash), data (the content fingerprint of the data the trials are scored on), objective and fixed (the ``--fix``
    values, resolved), and regularizer where ``--regularizer`` replaced the model's swappable term."""
    r = experiment.request
    model_hp, reg_hp = experiment.hyperparameters(fixed)
    resolved = {**{k: v for hp in reg_hp.values() for k, v in hp.items()}, **model_hp}
    settings: dict[str, Any] = json.loads(json.dumps({
        "model": r.model, "dataset": r.dataset, "dataset_params": experiment.dataset_params,
        "latent_dim": r.latent_dims[0], "fold": (r.folds or (0,))[0], "seed": r.seed, "preset": r.preset,
        "protocol_overrides": dict(r.protocol_overrides), "protocol": experiment.protocol_settings(),
        "split": experiment.splits.split_hash, "data": experiment.data_fingerprint, "objective": objective,
        "fixed": {k: resolved[k] for k in sorted(fixed)},
    }, default=str))
    if r.regularizer is not None:  # tune --regularizer; absent otherwise, as in the studies made before it
        settings["regularizer"] = r.regularizer
    return settings


def describe_settings(settings: Mapping[str, Any]) -> str:
    """One line, e.g. ``punet on synthetic (n_images=40), d=2, fold 0, seed 0, preset quick (epochs=4), val_ewd,
    fixed filters=4,8``."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("dataset_params", {}).items()))
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("protocol_overrides", {}).items()))
    fixed = ", ".join(f"{k}={v}" for k, v in settings.get("fixed", {}).items())
    regularizer = f" (regularizer={settings['regularizer']})" if settings.get("regularizer") else ""
    return (f"{settings.get('model')}{regularizer} on {settings.get('dataset')}{f' ({params})' if params else ''}, "
            f"d={settings.get('latent_dim')}, fold {settings.get('fold')}, seed {settings.get('seed')}, preset "
            f"{settings.get('preset')}{f' ({overrides})' if overrides else ''}, {settings.get('objective')}"
            f"{f', fixed {fixed}' if fixed else ''}")


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{path}{k}.")]
    return [] if old == new else [f"{path.rstrip('.')} {old!r} -> {new!r}"]


def bind_study(study: Any, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in a new study; check a resumed study was made with the same ones.

    A study of an older version without recorded settings is bound to ``settings`` now. A study whose settings
    predate data fingerprints (no ``data``) is refused: its trials may have been scored on other data.

    Raises:
        ProbsegError: the study was made with other settings (the message names each difference; the data by
            their fingerprints' first characters), or before data fingerprints.
    """
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, dict(settings))
        return
    if "data" in settings and "data" not in stored:
        raise ProbsegError(
            f"study '{study.study_name}' was made before studies recorded the data they are scored on: it cannot be "
            "told whether its trials were scored on this data; give --study NAME for a new study")
    changed = _differences({**stored, "data": None}, {**settings, "data": None})
    if stored.get("data") != settings.get("data"):
        changed.insert(0, f"the data differ (content fingerprint {short(stored.get('data'))} -> "
                          f"{short(settings.get('data'))})")
    if changed:
        raise ProbsegError(
            f"study '{study.study_name}' was made under other settings ({'; '.join(changed)}); its trials would be "
            "ranked with trials scored differently: rerun with the study's settings to resume it, or give "
            "--study NAME for a new study"
        )


def study_verdict(study: Any, objective: str) -> str | None:
    """A line when the study cannot name a best trial meaningfully: every trial failed or was pruned, or every
    complete trial (at least two) scored the same; None otherwise (also for a study without trials)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    done = [t for t in trials if t.state == state.COMPLETE]
    failed = sum(t.state == state.FAIL for t in trials)
    pruned = sum(t.state == state.PRUNED for t in trials)
    if trials and not done:
        if failed == len(trials):
            return f"all {failed} trial(s) failed"
        if pruned == len(trials):
            return f"all {pruned} trial(s) were pruned"
        return f"no trial completed ({failed} failed, {pruned} pruned)"
    values = [t.value for t in done]
    if len(done) >= 2 and max(values) - min(values) <= 1e-9 * max(1.0, abs(values[0])):
        return (f"all {len(done)} complete trials scored {objective} {values[0]:.4f}: the study learned nothing "
                "(the searched hyperparameters made no difference; e.g. train longer or widen the ranges)")
    return None


def study_on_disk(name: str, storage: str, seed: int, trial: int | None = None) -> str:
    """After Ctrl-C: one clause saying what the study holds in ``storage``, read back now: its trials by state,
    and what became of ``trial`` (the trial that was in progress, when one was). A tuning trial writes no
    training state (it is not resumed: a rerun adds new trials), so nothing else is on disk.

    A trial of a local ``tune`` is recorded as failed when interrupted (Optuna); a Ray worker's running trial stays
    "running" until its heartbeats are :data:`GRACE_PERIOD_S` s old, then the next opening of the study marks it
    failed."""
    shown = display_url(normalize_url(storage))
    try:
        study = open_study(name, storage, seed, create=False)
    except ProbsegError:
        return f"the study {name} is not in {shown} (interrupted before it was created)"
    words = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running"}
    states: dict[str, int] = {}
    for t in study.trials:
        states[words.get(t.state.name, t.state.name.lower())] = states.get(
            words.get(t.state.name, t.state.name.lower()), 0) + 1
    held = ", ".join(f"{n} {state}" for state, n in states.items())
    clause = f"the study {name} in {shown} holds {len(study.trials)} trial(s)" + (
        f" ({held})" if held else "")
    running = states.get("running", 0)
    if running:
        clause += (f"; a running trial whose worker was stopped is marked failed when the study is next opened, "
                   f"{GRACE_PERIOD_S} s after its last heartbeat")
    found = next((t for t in study.trials if t.number == trial), None) if trial is not None else None
    if found is not None:
        how = words.get(found.state.name, found.state.name.lower())
        reason = found.user_attrs.get(FAILURE_ATTR)
        clause += (f"; trial {trial}, the last one started, is recorded as {how}"
                   + (f" ({reason})" if reason else "") + " and kept no training state")
    return clause
