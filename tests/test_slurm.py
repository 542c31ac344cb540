"""The executor interface and the Slurm executor: the registry, ``--executor-option`` parsing and checking, a
Slurm job's failure turned into one recorded line (fake submitit jobs: no Slurm needed), and, against a real
Slurm controller, a tiny grid through ``--executor slurm`` to leaderboard rows and a cancelled job recorded as failed
then completed by a rerun. The real-Slurm tests skip where no controller answers (``scripts/start_slurm.sh`` starts
one on this machine); with PROBSEG_REQUIRE_SLURM=1 (CI) they fail instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.executors import (
    EXECUTOR_TYPES,
    EXECUTORS,
    CellResult,
    Executor,
    ExecutorOption,
    LocalExecutor,
    RayExecutor,
    get_executor,
    parse_executor_options,
    positive_int,
    register_executor,
)
from probseg_bench.request import RunRequest
from probseg_bench.results import ResultsStore

TINY = ["--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32", "--preset",
        "quick", "--epochs", "1", "--hp", "filters=4,8", "--hp", "convs_per_block=1", "-d", "2"]


def tiny_cell(tmp_path: Any, fold: int = 0) -> RunRequest:
    return RunRequest(model="punet", dataset="synthetic", latent_dims=(2,), folds=(fold,), preset="quick",
                      dataset_params={"n_images": 16, "size": 32}, protocol_overrides={"epochs": 1},
                      hyperparameters={"filters": "4,8", "convs_per_block": 1}, run_dir=tmp_path / "runs")


# --- the registry and the options ----------------------------------------------------------------------------------


def test_the_registry_names_local_ray_and_slurm():
    from probseg_bench.executors.slurm import SlurmExecutor

    assert EXECUTORS == ("local", "ray", "slurm")
    assert isinstance(get_executor("local"), LocalExecutor) and isinstance(get_executor("ray"), RayExecutor)
    assert isinstance(get_executor("slurm"), SlurmExecutor) and EXECUTOR_TYPES["slurm"] is SlurmExecutor
    assert LocalExecutor.checks_device_here and not SlurmExecutor.checks_device_here
    with pytest.raises(ProbsegError, match=r"^--executor: expected one of local, ray, slurm, got 'sge'$"):
        get_executor("sge")


def test_an_executor_is_one_class_and_its_registration(monkeypatch, tmp_path):
    monkeypatch.setattr("probseg_bench.executors.EXECUTOR_TYPES", dict(EXECUTOR_TYPES))
    import probseg_bench.executors as executors

    @register_executor
    class Echo(Executor):
        name = "echo"
        description = "returns every cell unrun"
        options = (ExecutorOption("width", positive_int, "an integer >= 1", 3, "unused"),)

        def run(self, cells, storage, on_result=None, retry_failed=False):
            return [CellResult(c, [], f"{storage} {self.settings['width']}") for c in cells]

        def run_trials(self, job, trials, seed, workers=None, on_start=None, on_trial=None):
            return [f"worker {i}: {n} trials, seed {s}, width {self.settings['width']}"
                    for i, (n, s) in enumerate(executors.worker_shares(trials, seed, workers or 1))]

    runner = get_executor("echo", ["width=5"])
    assert runner.run([tiny_cell(tmp_path)], "db")[0].error == "db 5"
    assert runner.run_trials(None, 3, 7, 2) == ["worker 0: 2 trials, seed 7, width 5",
                                                "worker 1: 1 trials, seed 1007, width 5"]
    assert "echo" in executors.executor_names()

    class Other(Echo):
        pass

    with pytest.raises(ProbsegError, match="executor 'echo': registered twice"):
        register_executor(Other)


def test_executor_options_are_parsed_and_checked():
    assert parse_executor_options(["partition=gpu", " time = 30 ", "constraint=a=b", "time=45"]) == {
        "partition": "gpu", "time": "45", "constraint": "a=b"}
    with pytest.raises(ProbsegError,
                       match=r"^--executor-option 'partition': expected KEY=VALUE \(e.g. partition=gpu\)$"):
        parse_executor_options(["partition"])
    runner = get_executor("slurm", {"partition": "gpu", "time": "30", "mem_gb": "1.5", "cpus_per_task": "2"})
    assert runner.settings["time"] == 30 and runner.settings["mem_gb"] == 1.5
    assert runner.parameters(gpu=False) == {"job_name": "probseg-cell", "time": 30, "cpus_per_task": 2,
                                            "array_parallelism": 256, "mem": "1536M", "partition": "gpu"}
    assert runner.parameters(gpu=True)["gpus_per_node"] == 1
    assert "gpus_per_node" not in get_executor("slurm", ["gpus_per_node=0"]).parameters(gpu=True)
    with pytest.raises(ProbsegError) as unknown:
        get_executor("slurm", ["partiton=gpu"])
    assert str(unknown.value).startswith("--executor-option partiton: executor slurm has no option 'partiton' "
                                         "(known: account, array_parallelism, constraint, cpus_per_task, folder, ")
    with pytest.raises(ProbsegError, match=r"^--executor-option time=soon: expected minutes \(an integer >= 1\)$"):
        get_executor("slurm", ["time=soon"])
    with pytest.raises(ProbsegError, match=r"^--executor-option jobs=0: expected an integer >= 1$"):
        get_executor("local", ["jobs=0"])
    with pytest.raises(ProbsegError, match=r"has no option 'partition' \(known: jobs\)$"):
        get_executor("local", ["partition=gpu"])


def test_run_rejects_a_bad_executor_option_before_anything_is_written(tmp_path):
    for executor, option, expected in (
            ("slurm", "partiton=gpu", "--executor-option partiton: executor slurm has no option 'partiton'"),
            ("ray", "jobs=2", "executor ray has no option 'jobs' (known: address, cpus_per_task, retries)"),
            ("slurm", "mem_gb=-1", "--executor-option mem_gb=-1: expected a number of GB > 0")):
        result = CliRunner().invoke(app, ["run", "--model", "punet", *TINY, "--executor", executor,
                                          "--executor-option", option, "--storage", str(tmp_path / "r.db"),
                                          "--run-dir", str(tmp_path / "runs")])
        assert result.exit_code != 0 and expected in str(result.exception), (option, result.output)
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "runs").exists()


def test_no_sbatch_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ProbsegError, match=r"^--executor slurm: no Slurm client here \(sbatch is not on PATH\)"):
        get_executor("slurm").run([tiny_cell(tmp_path)], f"sqlite:///{tmp_path / 'r.db'}")


# --- a job that returned no result: one line, recorded as failed (fake jobs) ----------------------------------------


def failed_job_error(trace: str) -> Exception:
    from submitit.core.utils import FailedJobError

    return FailedJobError(f"Job (task=0) failed during processing with trace:\n----------------------\n{trace}\n"
                          "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or "
                          "at paths:\n  - /x/12_0_log.err\n  - /x/12_0_log.out")


def uncompleted_job_error(state: str) -> Exception:
    from submitit.core.utils import UncompletedJobError

    return UncompletedJobError(f"Job 12_1 (task: 0) with path /x/12_1_0_result.pkl\nhas not produced any output "
                               f"(state: {state})\nError stream produced:\n----------------------------------------\n"
                               "slurmstepd: error: *** JOB 13 ON vm CANCELLED AT 2025-01-01T00:00:00 ***")


def test_failure_lines():
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    from probseg_bench.executors.slurm import failure_line

    trace = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    import probseg_bench\n'
             "ModuleNotFoundError: No module named 'probseg_bench'")
    assert failure_line(failed_job_error(trace), "12_0") == (
        "failed on Slurm (job 12_0): ModuleNotFoundError: No module named 'probseg_bench'")
    assert failure_line(uncompleted_job_error("CANCELLED by 0"), "12_1") == (
        "cancelled on Slurm (job 12_1, state CANCELLED by 0)")
    assert failure_line(uncompleted_job_error("TIMEOUT"), "12_1") == "did not finish on Slurm (job 12_1, state TIMEOUT)"
    assert failure_line(FileNotFoundError("gone\nmore"), "7") == "lost on Slurm (job 7): FileNotFoundError: gone"


class FakeJob:
    """What the executor uses of a submitit job: job_id, result(), cancel()."""

    def __init__(self, job_id: str, outcome: Any) -> None:
        self.job_id, self.outcome, self.cancelled = job_id, outcome, False

    def result(self) -> Any:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


def test_failed_and_cancelled_jobs_are_recorded_as_failed_cells(monkeypatch, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    import submitit.helpers

    from probseg_bench.executors.slurm import SlurmExecutor

    db = f"sqlite:///{tmp_path / 'r.db'}"
    ok_cell, failed_cell, cancelled_cell = (tiny_cell(tmp_path, f) for f in (0, 1, 2))
    ok = CellResult(ok_cell, [{"status": "ok"}])
    jobs = [FakeJob("5_0", ok), FakeJob("5_1", failed_job_error("ValueError: bad")),
            FakeJob("5_2", uncompleted_job_error("CANCELLED by 0"))]
    monkeypatch.setattr(SlurmExecutor, "submit", lambda self, cells, *_: list(zip(jobs, cells, strict=True)))
    monkeypatch.setattr(submitit.helpers, "as_completed", lambda jobs, poll_frequency: iter(jobs))
    seen: list[CellResult] = []
    results = get_executor("slurm").run([ok_cell, failed_cell, cancelled_cell], db, on_result=seen.append)
    assert results == seen and results[0] is ok
    assert [r.error for r in results] == [None, "failed on Slurm (job 5_1): ValueError: bad",
                                          "cancelled on Slurm (job 5_2, state CANCELLED by 0)"]
    stored = {r.fold: r for r in ResultsStore(db).records(include_failed=True)}
    assert set(stored) == {1, 2} and {r.status for r in stored.values()} == {"failed"}
    assert stored[2].failure == "cancelled on Slurm (job 5_2, state CANCELLED by 0)"


def test_ctrl_c_cancels_the_jobs_not_finished_and_records_nothing(monkeypatch, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    import submitit.helpers

    from probseg_bench.executors.slurm import SlurmExecutor
    from probseg_bench.interruption import FoldInterrupted

    jobs = [FakeJob("6_0", None), FakeJob("6_1", None)]
    monkeypatch.setattr(SlurmExecutor, "submit", lambda self, cells, *_: list(zip(jobs, cells, strict=True)))

    def interrupted(jobs, poll_frequency):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(submitit.helpers, "as_completed", interrupted)
    with pytest.raises(FoldInterrupted, match=r"^2 cell\(s\) not finished were cancelled on Slurm \(jobs 6_0, 6_1\)"):
        get_executor("slurm").run([tiny_cell(tmp_path, 0), tiny_cell(tmp_path, 1)], f"sqlite:///{tmp_path / 'r.db'}")
    assert all(job.cancelled for job in jobs) and not (tmp_path / "r.db").exists()


# --- against a real Slurm controller ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm() -> None:
    """A Slurm controller that answers (``sinfo`` exits 0 within 5 s) and submitit; else skip, or fail where
    PROBSEG_REQUIRE_SLURM=1 (CI, which runs scripts/start_slurm.sh)."""
    reason = None
    if shutil.which("sinfo") is None:
        reason = "no Slurm client here (sinfo not on PATH; scripts/start_slurm.sh starts a single-node cluster)"
    else:
        try:
            subprocess.run(["sinfo"], check=True, capture_output=True, timeout=5)
        except (subprocess.SubprocessError, OSError) as exc:
            reason = f"no Slurm controller answers (sinfo: {type(exc).__name__}; scripts/start_slurm.sh starts one)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        reason = reason or "submitit is not installed (pip install 'probseg-bench[slurm]')"
    if reason is not None:
        if os.environ.get("PROBSEG_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required (PROBSEG_REQUIRE_SLURM=1) but {reason}")
        pytest.skip(reason)


def run_cli(tmp_path: Any, *args: str, job_name: str = "probseg-test") -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from probseg_bench.cli import main; main()", "run", "--model", "punet", *TINY,
               "--executor", "slurm", "--executor-option", f"job_name={job_name}", "--executor-option", "poll_s=0.5",
               "--storage", str(tmp_path / "r.db"), "--run-dir", str(tmp_path / "runs"), "--format", "json", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out, err


def test_a_grid_runs_as_slurm_jobs_to_leaderboard_rows(slurm, tmp_path):
    out, err = finish(run_cli(tmp_path, "--fold", "0", "--fold", "1"))
    assert "punet/synthetic d=2 fold 0: done" in err and "punet/synthetic d=2 fold 1: done" in err
    (row,) = json.loads(out)
    assert row["model"] == "punet" and row["folds"] == 2
    records = ResultsStore(str(tmp_path / "r.db")).records()
    assert sorted(r.fold for r in records) == [0, 1]
    assert list((tmp_path / "runs" / "slurm-jobs").iterdir())  # submitit's files under the run dir
    created = {r.fold: r.created_at for r in records}
    finish(run_cli(tmp_path, "--fold", "0", "--fold", "1"))  # a rerun: both stored, nothing trains again
    assert {r.fold: r.created_at for r in ResultsStore(str(tmp_path / "r.db")).records()} == created


def test_a_cancelled_job_is_recorded_as_failed_and_a_rerun_completes_it(slurm, tmp_path):
    name = f"probseg-cancel-{os.getpid()}"
    process = run_cli(tmp_path, "--fold", "0", job_name=name)
    deadline = time.monotonic() + 60
    while not (ids := subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True
                                     ).stdout.split()):
        assert time.monotonic() < deadline and process.poll() is None, "the job never appeared in squeue"
        time.sleep(0.1)
    subprocess.run(["scancel", *ids], check=True)
    _, err = finish(process)
    assert "punet/synthetic d=2 fold 0: FAILED: cancelled on Slurm (job " in err, err
    (record,) = ResultsStore(str(tmp_path / "r.db")).records(include_failed=True)
    assert record.status == "failed" and record.failure.startswith("cancelled on Slurm (job ")
    out, err = finish(run_cli(tmp_path, "--fold", "0", "--retry-failed", job_name=name))
    assert "punet/synthetic d=2 fold 0: done" in err
    (record,) = ResultsStore(str(tmp_path / "r.db")).records(include_failed=True)
    assert record.status == "ok" and json.loads(out)[0]["folds"] == 1


def test_a_two_worker_tune_runs_as_slurm_jobs_on_one_study(slurm, tmp_path):
    import optuna

    command = [sys.executable, "-c", "from probseg_bench.cli import main; main()", "tune", "--model", "punet",
               "--dataset", "synthetic", "--dataset-param", "n_images=16", "--dataset-param", "size=32", "--preset",
               "quick", "--epochs", "1", "--trials", "2", "--workers", "2", "--executor", "slurm", "-d", "2",
               "--fix", "filters=4,8", "--fix", "convs_per_block=1", "--device", "cpu",
               "--executor-option", "job_name=probseg-test-tune", "--executor-option", "poll_s=0.5",
               "--executor-option", f"folder={tmp_path / 'jobs' / '%j'}", "--study", "s",
               "--objective", "val_loss",
               "--storage", str(tmp_path / "t.db"), "--output", str(tmp_path / "best.toml")]
    finish(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}), timeout=240)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "jobs").glob("[0-9]*_*")) == ["0", "1"]  # 2 workers
    assert (tmp_path / "best.toml").exists()


def test_tune_checks_executor_options_before_training(tmp_path):
    base = ["tune", "--model", "punet", *TINY[:8], "--storage", str(tmp_path / "t.db"),
            "--output", str(tmp_path / "b.toml")]
    result = CliRunner().invoke(app, [*base, "--executor", "slurm", "--executor-option", "nodes=2"])
    assert result.exit_code != 0
    assert "--executor-option nodes: executor slurm has no option 'nodes'" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--executor-option", "jobs=0"])
    assert result.exit_code != 0
    assert str(result.exception) == "--executor-option jobs=0: expected an integer >= 1"
    assert not (tmp_path / "t.db").exists()


def test_tune_workers_split_the_trials_and_a_cancelled_one_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    import submitit.helpers

    import probseg_bench.executors.slurm as slurm_module
    from probseg_bench.tuning import TuneJob

    calls: list[tuple[Any, ...]] = []

    class FakeSubmitit:
        class SlurmExecutor:
            def __init__(self, folder: str) -> None:
                calls.append(("folder", folder))

            def update_parameters(self, **parameters: Any) -> None:
                calls.append(("parameters", parameters["job_name"], parameters["cpus_per_task"]))

            def map_array(self, fn: Any, *args: list[Any]) -> list[FakeJob]:
                calls.append(("array", *args[1:3]))
                return [FakeJob("7_0", 3), FakeJob("7_1", uncompleted_job_error("CANCELLED by 0")),
                        FakeJob("7_2", 3)]

    monkeypatch.setattr(slurm_module, "_import_submitit", lambda: FakeSubmitit)
    monkeypatch.setattr("probseg_bench.tuning.prepare_study",
                        lambda job, seed: (calls.append(("prepared", seed)), "study", ["space"]))
    monkeypatch.setattr(submitit.helpers, "as_completed", lambda jobs, poll_frequency: iter(jobs))
    runner = get_executor("slurm", ["cpus_per_task=2", f"folder={tmp_path}"])
    job = TuneJob(tiny_cell(tmp_path), "s", "sqlite:///t.db")
    lines = runner.run_trials(job, 7, 5, 3, on_start=lambda study, space: calls.append(("started", study, space)))
    assert lines == ["worker 1: cancelled on Slurm (job 7_1, state CANCELLED by 0)"]
    assert calls == [("prepared", 5), ("started", "study", ["space"]), ("folder", str(tmp_path)),
                     ("parameters", "probseg-tune", 2), ("array", [3, 2, 2], [5, 1005, 2005])]  # worker_shares'


def test_submitits_messages_leave_stdout_alone(capsys):
    """submitit prints its warnings on stdout too (its logging config); stdout is the leaderboard, so after our import
    they reach stderr only (found when Slurm's accounting database was down: `run --format json` was not JSON)."""
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'probseg-bench[slurm]')")
    import logging

    from probseg_bench.executors.slurm import stdout_quiet

    logger = logging.getLogger("submitit")
    saved = list(logger.handlers)
    out = logging.StreamHandler(sys.stdout)
    out.set_name("submitit_out")
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    logger.handlers = [err, out]
    try:
        stdout_quiet(logger)
        logger.warning("Bypassing sacct error")
        captured = capsys.readouterr()
        assert captured.out == "" and "Bypassing sacct error" in captured.err
        assert logger.handlers == [err]
    finally:
        logger.handlers = saved
