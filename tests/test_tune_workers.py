"""tune's workers through the executor interface (``Executor.run_trials``): the split of the trials and the workers'
seeds, the command's shorthand flags as executor options, the local executor in this process (with its callbacks)
and in processes, and tune's exit code when a worker failed (a failing Ray worker: tests/test_executors.py)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import (
    EXECUTOR_TYPES,
    LocalExecutor,
    executor_with_flags,
    flag_options,
    get_executor,
    prepare_trials,
    register_executor,
    worker_shares,
)
from probseg_bench.request import RunRequest
from probseg_bench.tuning import TuneJob, open_study

TINY = ["--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32", "-d", "2",
        "--fix", "filters=4,8", "--fix", "convs_per_block=1", "--objective", "val_loss", "--study", "s"]


def tiny_job(tmp_path: Any, preset: str = "quick") -> TuneJob:
    """punet on a tiny synthetic set, 1 epoch, searching beta only (what `tune` builds from TINY)."""
    request = RunRequest(model="punet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset=preset,
                         device="cpu", dataset_params={"n_images": 16, "size": 32},
                         protocol_overrides={"epochs": 1})
    return TuneJob(request, "s", str(tmp_path / "t.db"), "val_loss", (),
                   (("filters", "4,8"), ("convs_per_block", 1)))


def test_worker_shares_split_the_trials_and_seed_each_worker():
    assert worker_shares(7, 5, 3) == [(3, 5), (2, 1005), (2, 2005)]
    assert worker_shares(2, 0, 3) == [(1, 0), (1, 1000)]  # a worker without a trial is not started
    assert worker_shares(4, 9, 1) == [(4, 9)]
    for trials in range(1, 12):
        for workers in range(1, 6):
            shares = worker_shares(trials, 0, workers)
            counts = [n for n, _ in shares]
            assert sum(counts) == trials and max(counts) - min(counts) <= 1 and counts == sorted(counts)[::-1]
            assert len({s for _, s in shares}) == len(shares) == min(trials, workers)
    with pytest.raises(ProbsegError, match=r"^--workers: expected >= 1, got 0$"):
        worker_shares(3, 0, 0)
    with pytest.raises(ProbsegError, match=r"^--trials: expected >= 1, got 0$"):
        worker_shares(0, 0, 2)


def test_shorthand_flags_become_the_options_the_executor_has():
    flags = {"jobs": 3, "address": "head:6379", "retries": None}
    assert flag_options("local", flags) == {"jobs": "3"}
    assert flag_options("ray", flags) == {"address": "head:6379"}  # retries None: the executor's default
    assert flag_options("slurm", flags) == {}
    assert executor_with_flags("ray", [], flags).settings["address"] == "head:6379"
    assert executor_with_flags("ray", ["address=auto"], flags).settings["address"] == "auto"  # the option wins
    assert executor_with_flags("local", [], flags).settings == {"jobs": 3}
    with pytest.raises(ProbsegError, match=r"^--executor-option jobs=0: expected an integer >= 1$"):
        executor_with_flags("local", ["jobs=0"], {})


def test_local_workers_in_this_process_call_back(tmp_path, tiny_preset):
    job = tiny_job(tmp_path, tiny_preset)
    starts: list[tuple[int, list[str]]] = []
    trials: list[tuple[int, list[str]]] = []
    runner = get_executor("local")
    lines = runner.run_trials(job, 2, 0, on_start=lambda study, space: starts.append(
        (len(study.trials), [p.name for p in space])), on_trial=lambda n, values: trials.append((n, sorted(values))))
    assert lines == [] and starts == [(0, ["beta"])] and trials == [(0, ["beta"]), (1, ["beta"])]
    # two workers for one trial: one share, so it runs here too, resuming the study
    assert runner.run_trials(job, 1, 0, workers=2, on_trial=lambda n, values: trials.append((n, sorted(values)))) == []
    assert trials[-1] == (2, ["beta"])
    study = open_study("s", job.storage, 0, create=False)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


@pytest.mark.slow
def test_local_workers_in_two_processes_share_the_study(tmp_path):
    job = tiny_job(tmp_path)  # a standard preset: the spawned processes do not see a test's registrations
    started: list[int] = []
    lines = LocalExecutor(jobs=2).run_trials(job, 2, 0, on_start=lambda study, space: started.append(1),
                                             on_trial=lambda n, values: started.append(n))
    assert lines == [] and started == [1]  # the trials ran in the processes: no on_trial here
    assert [t.state.name for t in open_study("s", job.storage, 0, create=False).trials] == ["COMPLETE"] * 2


@pytest.mark.parametrize("trained", [1, 0], ids=["one-trial-kept", "nothing-kept"])
def test_tune_exits_1_when_a_worker_failed(monkeypatch, tmp_path, tiny_preset, trained):
    """A worker's failure: one line each, the parameters written when the study has a best trial, exit 1."""
    monkeypatch.setattr("probseg_bench.executors.EXECUTOR_TYPES", dict(EXECUTOR_TYPES))
    monkeypatch.chdir(tmp_path)

    @register_executor
    class HalfBroken(LocalExecutor):
        name = "half-broken"

        def run_trials(self, job, trials, seed, workers=None, on_start=None, on_trial=None):
            prepare_trials(job, seed, on_start)
            if trained:
                super().run_trials(job, trained, seed, 1)
            return ["worker 1: failed: RuntimeError: boom"]

    result = CliRunner().invoke(app, ["tune", "--model", "punet", *TINY, "--preset", tiny_preset, "--trials", "2",
                                      "--executor", "half-broken", "--storage", str(tmp_path / "t.db")])
    assert result.exit_code == 1, result.output
    assert "worker 1: failed: RuntimeError: boom" in result.output
    if trained:
        assert (tmp_path / "s.toml").is_file() and "best trial 0" in result.output
        assert "tune: exit 1; 1 worker(s) failed (above), the study keeps its completed trials" in result.output
    else:
        assert not (tmp_path / "s.toml").exists()
        assert isinstance(result.exception, ProbsegError)
        assert str(result.exception).startswith("study s: no best parameters to write (")
        assert str(result.exception).endswith("; 1 worker(s) failed (above), the study keeps its completed trials")


def test_tune_exits_0_when_every_worker_finished(monkeypatch, tmp_path, tiny_preset):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["tune", "--model", "punet", *TINY, "--preset", tiny_preset, "--trials", "1",
                                      "--storage", str(tmp_path / "t.db")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.toml").is_file() and "failed" not in result.output
