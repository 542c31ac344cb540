"""Grid cells on the local executor (1 and 2 processes) and on a local Ray cluster give the same records; a
crashing cell is retried and recorded as failed; tune with Ray workers (one failing); the results store and Optuna
studies on a real PostgreSQL server (skipped locally when none is reachable, required in CI)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.request import RunRequest
from probseg_bench.results import ResultsStore

GRID = """
models = ["punet", "spunet"]
datasets = ["synthetic"]
latent_dims = [2]
folds = [0, 1]
preset = "quick"
[dataset_params.synthetic]
n_images = 32
size = 32
[hyperparameters.punet]
filters = "4,8"
convs_per_block = 1
[hyperparameters.spunet]
filters = "4,8"
convs_per_block = 1
[protocol]
epochs = 3
"""


def grid_records(tmp_path, name: str, *args: str) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "grid.toml").write_text(GRID)
    db = f"sqlite:///{folder / 'r.db'}"
    result = CliRunner().invoke(app, ["run", "--config", str(folder / "grid.toml"), "--storage", db, "--run-dir",
                                      str(folder / "runs"), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return {r.key: r for r in ResultsStore(db).records()}


def test_local_processes_and_ray_give_the_records_of_the_sequential_run(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'probseg-bench[ray]')")
    sequential = grid_records(tmp_path, "seq")
    assert len(sequential) == 4
    import torch

    assert {r.versions["torch_threads"] for r in sequential.values()} == {str(torch.get_num_threads())}
    for name, args in (("jobs", ["--jobs", "2"]), ("ray", ["--executor", "ray"])):
        got = grid_records(tmp_path, name, *args)
        assert got.keys() == sequential.keys(), name
        for key, record in got.items():
            if name == "ray":  # one CPU per task -> one torch thread, recorded because it changes the rounding
                assert record.versions["torch_threads"] == "1"
            for metric in ("ged", "hm_iou", "ewd", "er"):  # one torch thread per task vs two: float rounding only
                assert record.metrics[metric] == pytest.approx(sequential[key].metrics[metric], abs=1e-4), (name, key)
    again = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "ray" / "grid.toml"), "--storage",
                                     f"sqlite:///{tmp_path / 'ray' / 'r.db'}", "--jobs", "2"])
    assert again.exit_code == 0 and len(ResultsStore(str(tmp_path / "ray" / "r.db")).records()) == 4  # skipped


def test_a_crashing_cell_is_retried_then_recorded_as_failed_on_ray(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'probseg-bench[ray]')")
    from probseg_bench.executors import run_ray

    db = f"sqlite:///{tmp_path / 'r.db'}"
    bad = RunRequest(model="punet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset="quick",
                     dataset_params={"n_images": 32, "size": 32}, protocol_overrides={"epochs": 1},
                     hyperparameters={"filters": "4,8", "convs_per_block": 1, "head_convs": 1},
                     run_dir=tmp_path / "runs")
    (result,) = run_ray([bad], db, retries=1)
    assert result.error and result.error.startswith("failed after 1 retries on Ray: ValueError")
    (record,) = ResultsStore(db).records(include_failed=True)
    assert record.status == "failed" and "num_convs must be >= 2" in record.failure


def test_tune_with_ray_workers_shares_one_study_and_a_failed_worker_is_one_line(tmp_path, monkeypatch):
    """Three Ray workers, one trial each; the second fails: one line, the others' trials stay, the best parameters
    are written and tune exits 1."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'probseg-bench[ray]')")
    import probseg_bench.tuning.workers as workers
    from probseg_bench.tuning import open_study

    real = workers.tune_worker

    def second_worker_fails(job, trials, seed, threads):  # defined here: sent to Ray by value
        if seed == 1000:
            raise RuntimeError("the node went away\nsecond line")
        return real(job, trials, seed, threads)

    monkeypatch.setattr(workers, "tune_worker", second_worker_fails)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [
        "tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=32", "--dataset-param",
        "size=32", "--fix", "filters=4,8", "--fix", "convs_per_block=1", "-d", "2", "--preset", "quick",
        "--objective", "val_loss", "--trials", "3", "--executor", "ray", "--workers", "3", "--study", "shared",
        "--epochs", "2"])
    assert result.exit_code == 1, result.output
    assert "study shared: searching beta on fold 0's validation split (val_loss); 0 trials so far" in result.output
    assert "worker 1: failed on Ray: RuntimeError: the node went away\n" in result.output
    assert "1 worker(s) failed (above)" in result.output and "second line" not in result.output
    study = open_study("shared", "probseg-results.db", 0, create=False)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2 and (tmp_path / "shared.toml").is_file()


def postgres_url() -> str:
    """The PostgreSQL test server: $PROBSEG_TEST_POSTGRES_URL, else a local default. .ci/run starts one and sets
    PROBSEG_REQUIRE_POSTGRES=1, which turns a missing server into a failure instead of a skip."""
    url = os.environ.get("PROBSEG_TEST_POSTGRES_URL",
                         "postgresql+psycopg://probseg:probseg@127.0.0.1:5432/probseg_test")
    try:
        import sqlalchemy

        sqlalchemy.create_engine(url).connect().close()
    except Exception as exc:
        if os.environ.get("PROBSEG_REQUIRE_POSTGRES") == "1":
            raise AssertionError(f"PostgreSQL required in CI but not reachable at {url}: {exc}") from exc
        pytest.skip(f"no PostgreSQL server reachable at {url} (set PROBSEG_TEST_POSTGRES_URL): {type(exc).__name__}")
    return url


@pytest.fixture
def postgres(tmp_path) -> str:
    url = postgres_url()
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:  # a clean slate: our table and Optuna's
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    return url


def test_results_and_two_processes_on_postgresql(tmp_path, postgres):
    folder = tmp_path / "pg"
    folder.mkdir()
    (folder / "grid.toml").write_text(GRID)
    result = CliRunner().invoke(app, ["run", "--config", str(folder / "grid.toml"), "--storage", postgres,
                                      "--run-dir", str(folder / "runs"), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    records = ResultsStore(postgres).records()
    assert sorted((r.model, r.fold) for r in records) == [("punet", 0), ("punet", 1), ("spunet", 0), ("spunet", 1)]
    board = CliRunner().invoke(app, ["leaderboard", "--storage", postgres, "--format", "json"])
    assert board.exit_code == 0 and '"folds": 2' in board.stdout


def test_optuna_study_on_postgresql(tmp_path, postgres, monkeypatch):
    from probseg_bench.tuning import open_study

    monkeypatch.chdir(tmp_path)
    args = ["tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "n_images=32",
            "--dataset-param", "size=32", "--fix", "filters=4,8", "--fix", "convs_per_block=1", "-d", "2",
            "--preset", "quick", "--epochs", "2", "--objective", "val_loss", "--trials", "1", "--storage", postgres]
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert len(open_study("punet-synthetic-val_loss", postgres, 0, create=False).trials) == 2
