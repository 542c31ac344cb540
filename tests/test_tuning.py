"""probseg-bench tune: search spaces from the plugins, trials on the validation split only, resumable shared
studies, failed trials, and the best parameters back into the standard protocol."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probseg_bench.api import MultiRaterData
from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment
from probseg_bench.request import RunRequest, check_request
from probseg_bench.results import ResultsStore
from probseg_bench.training import TrainingDivergedError
from probseg_bench.tuning import make_objective, open_study, parse_range, search_space

SMALL = {"filters": "4,8", "convs_per_block": 1}
SYNTH = {"n_images": 40, "size": 32}
TUNE = ["tune", "--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param", "size=32",
        "--fix", "filters=4,8", "--fix", "convs_per_block=1", "--latent-dim", "2"]


def experiment(model: str, preset: str, **kw) -> Experiment:
    return Experiment.prepare(check_request(RunRequest(model=model, dataset="synthetic", latent_dims=(2,), folds=(0,),
                                         preset=preset, dataset_params=SYNTH, **kw)))


@pytest.mark.parametrize(("model", "names"), [
    ("spunet", ["alpha", "beta", "epsilon"]), ("punet", ["beta"]), ("punet-nf", ["beta", "num_flows"]),
])
def test_search_spaces_come_from_the_plugins(model, names, tiny_preset):
    space = search_space(experiment(model, tiny_preset))
    assert [p.name for p in space] == names
    by_name = {p.name: p for p in space}
    if model == "spunet":
        assert (by_name["beta"].low, by_name["beta"].high, by_name["beta"].log) == (1.0, 1000.0, True)
        assert by_name["epsilon"].log and by_name["epsilon"].low == 1e-4
    if model == "punet-nf":
        assert by_name["num_flows"].integer and (by_name["num_flows"].low, by_name["num_flows"].high) == (1, 8)


def test_param_ranges_and_fixed_values(tiny_preset):
    exp = experiment("spunet", tiny_preset)
    space = {p.name: p for p in search_space(exp, ["beta=10:20", "epsilon=0.001:0.1:log"], {"alpha": "5"})}
    assert set(space) == {"beta", "epsilon"}
    assert (space["beta"].low, space["beta"].high, space["beta"].log) == (10.0, 20.0, False)
    assert parse_range("x=1:2:log") == ("x", 1.0, 2.0, True)
    for bad, message in (("beta=5", "NAME=LOW:HIGH"), ("beta=3:1", "LOW < HIGH"), ("beta=0:1:log", "LOW > 0")):
        with pytest.raises(ProbsegError, match=re.escape(message)):
            parse_range(bad)
    with pytest.raises(ProbsegError, match=r"--param betta.*did you mean 'beta'"):
        search_space(exp, ["betta=1:2"])
    with pytest.raises(ProbsegError, match="--fix gamma"):
        search_space(exp, [], {"gamma": 1})


class RecordingTrial:
    """A minimal optuna.Trial stand-in recording what is reported."""

    number = 0

    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []
        self.attrs: dict[str, object] = {}

    def suggest_float(self, name, low, high, log=False):
        return float(np.sqrt(low * high)) if log else (low + high) / 2

    def suggest_int(self, name, low, high, log=False):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return False

    def set_user_attr(self, key, value):
        self.attrs[key] = value


@pytest.mark.parametrize("objective", ["val_ewd", "val_loss"])
def test_a_trial_never_touches_the_test_split(monkeypatch, tiny_preset, objective):
    exp = experiment("punet", tiny_preset, hyperparameters=SMALL)
    test = set(exp.splits.test.tolist())
    seen: list[int] = []
    original = MultiRaterData.subset

    def recording_subset(self, index):
        if self is exp.data:
            seen.extend(np.asarray(index).tolist())
        return original(self, index)

    monkeypatch.setattr(MultiRaterData, "subset", recording_subset)
    trial = RecordingTrial()
    value = make_objective(exp, search_space(exp), {}, objective, fold=0, latent_dim=2)(trial)
    train_idx, val_idx = exp.splits.train_val(0)
    assert seen and not test & set(seen)  # no test item was ever selected
    assert set(seen) == set(train_idx.tolist()) | set(val_idx.tolist())
    assert np.isfinite(value) and [step for _, step in trial.reports] == [1]  # one report per epoch
    if objective == "val_ewd":
        assert 0.0 <= value <= 1.0


def test_diverged_trial_fails_with_its_reason_and_the_study_goes_on(monkeypatch, tiny_preset, tmp_path):
    import optuna

    exp = experiment("punet", tiny_preset, hyperparameters=SMALL)
    original = Experiment.train
    calls = {"n": 0}

    def sometimes_diverges(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TrainingDivergedError("non-finite loss at epoch 1, step 1 (term: kl)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Experiment, "train", sometimes_diverges)
    study = open_study("s", str(tmp_path / "t.db"), seed=0)
    study.optimize(make_objective(exp, search_space(exp), {}, "val_loss", 0, 2), n_trials=2,
                   catch=(TrainingDivergedError,))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study.trials[0].user_attrs["failure"].startswith("non-finite loss at epoch 1")


def test_tune_resumes_writes_params_and_run_takes_them(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)
    args = [*TUNE, "--model", "punet", "--preset", tiny_preset, "--trials", "2", "--objective", "val_loss"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    shown = CliRunner().invoke(app, ["tune", "--model", "punet", "--dataset", "synthetic", "--objective",
                                     "val_loss", "--show"])
    assert "4 trials" in shown.stdout
    params = tmp_path / "punet-synthetic-val_loss.toml"
    text = params.read_text()
    assert 'model = "punet"' in text and "[hyperparameters]" in text and "beta = " in text
    run = CliRunner().invoke(app, ["run", "--model", "punet", "--dataset", "synthetic", "--preset", tiny_preset,
                                   "--dataset-param", "n_images=40", "--dataset-param", "size=32", "-d", "2",
                                   "--fold", "0", "--params", str(params), "--hp", "filters=4,8", "--hp",
                                   "convs_per_block=1", "--format", "json"])
    assert run.exit_code == 0, run.output
    (record,) = ResultsStore().records()
    tuned_beta = float(text.split("beta = ")[1].splitlines()[0])
    assert record.hyperparameters["model"]["beta"] == pytest.approx(tuned_beta)
    assert len(ResultsStore().records()) == 1
    wrong = CliRunner().invoke(app, ["run", "--model", "spunet", "--dataset", "synthetic", "--params", str(params)])
    assert isinstance(wrong.exception, ProbsegError) and "parameters of model 'punet'" in str(wrong.exception)


def test_two_processes_cooperate_on_one_study(tmp_path):
    script = (
        "import sys\n"
        "from probseg_bench.presets import PRESETS, Preset\n"
        "PRESETS['tiny'] = Preset(name='tiny', description='t', epochs=1, warmup_epochs=1, batch_size=4,"
        " n_eval_samples=4)\n"
        "from probseg_bench.cli import main\n"
        "sys.argv = ['probseg-bench'] + sys.argv[1:]\n"
        "main()\n"
    )
    args = [*TUNE, "--model", "punet", "--preset", "tiny", "--trials", "2", "--objective", "val_loss",
            "--storage", str(tmp_path / "shared.db"), "--study", "shared"]
    procs = [subprocess.Popen([sys.executable, "-c", script, *args, "--output", str(tmp_path / f"best{i}.toml")],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = open_study("shared", str(tmp_path / "shared.db"), 0, create=False)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.value is not None for t in study.trials)
    assert Path(tmp_path / "best0.toml").exists() and json.dumps(study.best_params)


# CI faults: workers started together on a fresh SQLite file race to create Optuna's schema. The loser got
# "table studies already exists" (two `tune` processes) or a unique violation on the schema-version row (two Ray
# actors). Opening the study must retry and succeed.
SCHEMA_RACES = [
    ("OperationalError", "CREATE TABLE studies (...)", "table studies already exists"),
    ("IntegrityError", "INSERT INTO alembic_version (version_num) VALUES ('v3.2.0.a') RETURNING version_num",
     "UNIQUE constraint failed: alembic_version.version_num"),
]


@pytest.mark.parametrize(("error", "statement", "message"), SCHEMA_RACES, ids=["create-table", "version-row"])
def test_open_study_survives_a_concurrent_schema_creation(monkeypatch, tmp_path, error, statement, message):
    import optuna
    import sqlalchemy.exc

    real = optuna.storages.RDBStorage
    calls = []

    class RacingStorage(real):
        def __init__(self, url, **kwargs):
            calls.append(url)
            if len(calls) == 1:
                real(url, **kwargs)  # the other worker wins the race and creates the schema ...
                raise getattr(sqlalchemy.exc, error)(statement, {}, Exception(message))  # ... this one trips
            super().__init__(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", RacingStorage)
    study = open_study("shared", str(tmp_path / "shared.db"), seed=0)
    assert study.study_name == "shared" and len(calls) == 2


def test_open_study_does_not_retry_a_broken_storage(monkeypatch, tmp_path):
    import optuna
    import sqlalchemy.exc

    calls = []

    class BrokenStorage(optuna.storages.RDBStorage):
        def __init__(self, url, **kwargs):
            calls.append(url)
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("unable to open database file"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", BrokenStorage)
    with pytest.raises(ProbsegError, match="unable to open database file"):
        open_study("s", str(tmp_path / "x.db"), seed=0)
    assert len(calls) == 1


# A `tune` killed during a trial (SIGKILL, OOM killer, a lost machine) leaves the trial RUNNING. Its worker's
# heartbeats stop: a resumed study marks it failed, with the reason, once the grace period has passed.
KILLED_CHILD = (
    "import sys, time\n"
    "from probseg_bench.presets import PRESETS, Preset\n"
    "PRESETS['tiny'] = Preset(name='tiny', description='test preset', epochs=1, warmup_epochs=1, batch_size=4,"
    " augment=True, n_eval_samples=4)\n"
    "from probseg_bench.experiment import Experiment\n"
    "Experiment.train = lambda *args, **kwargs: time.sleep(600)  # a trial that runs until the process is killed\n"
    "from probseg_bench.cli import main\n"
    "sys.argv = ['probseg-bench'] + sys.argv[1:]\n"
    "main()\n"
)


def short_heartbeats(monkeypatch) -> None:
    from probseg_bench import tuning
    from probseg_bench.tuning import storage, study

    # where they are looked up: the storage opens with them, a study's and tune's messages name them
    for module, names in ((storage, ("HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S")), (study, ("GRACE_PERIOD_S",)),
                          (tuning, ("HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S"))):
        for name in names:
            monkeypatch.setattr(module, name, 1)


def wait_for_running_trial(db: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the child's trial runs and has sent its first heartbeat (at most 10 s after it started)."""
    import sqlite3
    import time

    deadline, started = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(db) as conn:
                running = conn.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
                if started is None and running:
                    started = time.monotonic()
                if started is not None and (conn.execute("SELECT count(*) FROM trial_heartbeats").fetchone()[0]
                                            or time.monotonic() > started + 10):
                    return
        except sqlite3.OperationalError:  # no schema yet
            pass
        time.sleep(0.2)
    raise AssertionError("the child's trial never started")


def test_a_killed_tune_leaves_no_trial_running_for_good(monkeypatch, tmp_path, tiny_preset):
    import signal
    import time

    import optuna

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "killed.db"
    args = [*TUNE, "--model", "punet", "--preset", tiny_preset, "--trials", "1", "--objective", "val_loss",
            "--storage", str(db), "--study", "killed"]
    show = ["tune", "--model", "punet", "--dataset", "synthetic", "--storage", str(db), "--study", "killed", "--show"]
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_running_trial(db, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    settings = open_study("killed", str(db), 0, create=False).user_attrs["probseg_settings"]

    # within the grace period the trial may be a live worker's: --show leaves it running and says so
    shown = CliRunner().invoke(app, show)
    assert shown.exit_code == 0, shown.output
    assert "1 running: trial 0 (last heartbeat" in shown.output and "without one for 120 s" in shown.output
    assert open_study("killed", str(db), 0, create=False).trials[0].state == optuna.trial.TrialState.RUNNING

    short_heartbeats(monkeypatch)
    time.sleep(2.5)  # > the 1 s grace period on the database's clock (SQLite: whole seconds)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "trial 0 failed: its worker stopped sending heartbeats" in resumed.output
    study = open_study("killed", str(db), 0, create=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert "none for over 1 s" in study.trials[0].user_attrs["failure"]
    assert study.user_attrs["probseg_settings"] == settings  # the study's bound settings are untouched
    shown = CliRunner().invoke(app, show)
    assert shown.exit_code == 0, shown.output
    title = " ".join(shown.output.split())  # the table title wraps
    assert "2 trials (1 complete, 1 fail)" in title and "running" not in shown.output
    assert "trial 0 failed: its worker stopped sending heartbeats (killed" in shown.output


def test_a_dead_worker_s_trial_is_failed_between_two_trials_of_a_live_one(monkeypatch, tmp_path):
    """Optuna's own stale check at the start of each trial (a long optimize loop, a Ray worker) records the
    reason too."""
    import time

    import optuna

    short_heartbeats(monkeypatch)
    db = str(tmp_path / "s.db")
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with Study.optimize"):
        dead = open_study("s", db, 0).ask()
    dead.study._storage.record_heartbeat(dead._trial_id)  # ... and then its worker died
    live = open_study("s", db, 0)
    time.sleep(2.5)
    live.optimize(lambda trial: 1.0, n_trials=1)
    first, second = open_study("s", db, 0, create=False).trials
    assert first.state == optuna.trial.TrialState.FAIL and second.state == optuna.trial.TrialState.COMPLETE
    assert first.user_attrs["failure"].startswith("its worker stopped sending heartbeats")


def test_a_running_trial_without_heartbeat_cannot_be_judged(monkeypatch, tmp_path):
    import optuna

    short_heartbeats(monkeypatch)
    db = str(tmp_path / "old.db")
    open_study("old", db, 0)
    old = optuna.load_study(study_name="old", storage=f"sqlite:///{db}")  # a worker of a version without heartbeat
    old.ask()
    shown = CliRunner().invoke(app, ["tune", "--model", "punet", "--dataset", "synthetic", "--storage", db,
                                     "--study", "old", "--show"])
    assert shown.exit_code == 0, shown.output
    assert "1 running: trial 0 (no heartbeat)" in shown.output and "cannot be told" in shown.output
    assert open_study("old", db, 0, create=False).trials[0].state == optuna.trial.TrialState.RUNNING
