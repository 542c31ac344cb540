"""Grids in TOML: parsing, errors naming the file and key, `run --config` end to end with resume, `compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.errors import ProbsegError
from probseg_bench.grid import load_grid
from probseg_bench.results import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_grids_parse():
    paper = load_grid(REPO / "benchmarks" / "paper_grid.toml")
    assert paper.models == ("punet", "punet-nf", "spunet") and paper.latent_dims == (4, 5, 6, 7)
    requests = paper.requests()
    assert len(requests) == 9 and sum(len(r.latent_dims) * len(r.folds or ()) for r in requests) == 108
    assert requests[0].data_root == (REPO / "data" / "lidc-converted").resolve()
    assert load_grid(REPO / "benchmarks" / "quick_grid.toml").preset == "quick"


def test_the_shipped_slurm_grid_is_the_paper_grid_on_slurm():
    """benchmarks/paper_grid_slurm.toml: the same cells as paper_grid.toml, and an [executor] table that the
    command line overrides key by key (choose_executor: command line > table > defaults)."""
    from probseg_bench.executors import choose_executor, get_executor

    paper = load_grid(REPO / "benchmarks" / "paper_grid.toml")
    slurm = load_grid(REPO / "benchmarks" / "paper_grid_slurm.toml")
    assert slurm.requests() == paper.requests() and paper.executor is None
    assert slurm.executor == ("slurm", {"partition": "gpu", "time": "720", "cpus_per_task": "4", "mem_gb": "32",
                                        "array_parallelism": "32"})
    name, options, dropped = choose_executor(None, {"partition": "a100"}, slurm.executor, "local")
    assert (name, options["partition"], options["time"], dropped) == ("slurm", "a100", "720", False)
    settings = get_executor(name, options).settings
    assert (settings["time"], settings["mem_gb"], settings["cpus_per_task"]) == (720, 32.0, 4)
    assert choose_executor("local", {}, slurm.executor, "local") == ("local", {}, True)


def test_a_grid_without_latent_dims_runs_each_model_at_its_reference_d(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('models = ["punet", "phiseg", "hpunet"]\ndatasets = ["synthetic"]\n')
    assert [r.latent_dims for r in load_grid(grid).requests()] == [(6,), (2,), (1,)]
    grid.write_text('models = ["punet", "phiseg"]\ndatasets = ["synthetic"]\nlatent_dims = [4]\n')
    assert [r.latent_dims for r in load_grid(grid).requests()] == [(4,), (4,)]  # given: the same for all


@pytest.mark.parametrize(("text", "message"), [
    ("models = ['punet']", "'datasets' must be a non-empty list"),
    ("models = ['punet']\ndatasets = ['x']\nlatent_dim = [4]", "unknown key 'latent_dim'"),
    ("models = ['punet']\ndatasets = ['x']\nlatent_dims = ['4']", "'latent_dims' must be a non-empty list of int"),
    ("models = ['punet'\n", "not valid TOML"),
    ("models = ['punet']\ndatasets = ['x']\nseed = 'zero'", "'seed' must be an int, got 'zero'"),
])
def test_bad_grid_files_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(ProbsegError, match=message) as info:
        load_grid(path)
    assert str(path) in str(info.value)


def test_run_config_end_to_end_resumes_and_compares(tmp_path, monkeypatch, tiny_preset):
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
models = ["punet", "spunet"]
datasets = ["synthetic"]
latent_dims = [2, 3]
folds = [0]
preset = "{tiny_preset}"
[dataset_params.synthetic]
n_images = 40
size = 32
[hyperparameters.punet]
filters = "4,8"
convs_per_block = 1
[hyperparameters.spunet]
filters = "4,8"
convs_per_block = 1
""")
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(app, ["run", "--config", str(grid), "--format", "json"])
    assert first.exit_code == 0, first.output
    assert len(json.loads(first.stdout)) == 4
    records = ResultsStore().records()
    assert len(records) == 4
    for r in records:  # per-image ids are items, not groups (4 images per synthetic patient)
        assert len(set(r.test_ids)) == len(r.test_ids) == 8 and len(set(r.test_groups)) == 2
    again = CliRunner().invoke(app, ["run", "--config", str(grid), "--format", "json"])
    assert again.exit_code == 0 and again.stderr.count("already in the results store") == 4
    assert len(ResultsStore().records()) == 4
    pivot = CliRunner().invoke(app, ["leaderboard", "--pivot", "--format", "csv"]).stdout.splitlines()
    assert pivot[0].startswith("dataset,model,preset,ewd_mean_d2") and len(pivot) == 3
    out = CliRunner().invoke(app, ["compare", "--dataset", "synthetic", "spunet", "punet", "--latent-dim", "2",
                                   "--format", "json", "--bootstrap", "500"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)[0]
    assert result["a"].startswith("spunet (") and result["b"].startswith("punet (")
    assert (result["n_images"], result["n_folds"]) == (8, 1)  # 8 test images (2 patients of 4), unique ids
    assert 0 <= result["p_value"] <= 1 and result["ci_low"] <= result["median_difference"] <= result["ci_high"]
    assert "Wilcoxon" in result["test"]
    table = CliRunner().invoke(app, ["compare", "--dataset", "synthetic", "spunet", "punet"])
    assert "n images" in table.stdout and "p (Holm)" in table.stdout
    mixed = CliRunner().invoke(app, ["run", "--config", str(grid), "--model", "punet"])
    assert isinstance(mixed.exception, ProbsegError)


_GRID = 'models = ["punet"]\ndatasets = ["synthetic"]\n'


def test_an_executor_table_is_read_and_checked_like_executor_options(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(_GRID + '[executor]\nname = "slurm"\npartition = "gpu"\ntime = 600\nmem_gb = 7.5\n')
    assert load_grid(path).executor == ("slurm", {"partition": "gpu", "time": "600", "mem_gb": "7.5"})
    path.write_text(_GRID)
    assert load_grid(path).executor is None
    for table, message in [
        ('name = "slurm"\npartitoin = "gpu"', r"\[executor\] partitoin: executor slurm has no option 'partitoin' "
                                               r"\(known: account, array_parallelism, .*partition, .*time\)"),
        ('name = "slurm"\ntime = 0', r"\[executor\] time=0: expected minutes \(an integer >= 1\)"),
        ('name = "local"\njobs = true', r"\[executor\] jobs: expected a string or a number, got True"),
        ('name = "kubernetes"', r"\[executor\] name: expected one of local, ray, slurm, got 'kubernetes'"),
        ('partition = "gpu"', r"\[executor\]: 'name' must be one of local, ray, slurm, got None"),
    ]:
        path.write_text(_GRID + "[executor]\n" + table + "\n")
        with pytest.raises(ProbsegError, match=table and message) as info:
            load_grid(path)
        assert str(info.value).startswith(f"{path}: [executor]") and "\n" not in str(info.value)


def test_executor_precedence_command_line_over_table_over_defaults():
    from probseg_bench.executors import choose_executor

    table = ("slurm", {"partition": "gpu", "time": "600"})
    assert choose_executor(None, {}, None, "local") == ("local", {}, False)
    assert choose_executor("ray", {"retries": "1"}, None, "local") == ("ray", {"retries": "1"}, False)
    assert choose_executor(None, {}, table, "local") == ("slurm", {"partition": "gpu", "time": "600"}, False)
    assert choose_executor("slurm", {"time": "30"}, table, "local") == (
        "slurm", {"partition": "gpu", "time": "30"}, False)
    assert choose_executor("local", {"jobs": "2"}, table, "local") == ("local", {"jobs": "2"}, True)


@pytest.mark.parametrize(("table", "argv", "expected", "note"), [
    ("", [], ("local", {"jobs": "1"}), False),  # no table: as before
    ('name = "local"\njobs = 3', [], ("local", {"jobs": "3"}), False),
    ('name = "local"\njobs = 3', ["--jobs", "2"], ("local", {"jobs": "2"}), False),
    ('name = "local"\njobs = 3', ["--executor-option", "jobs=4", "--jobs", "2"], ("local", {"jobs": "4"}), False),
    ('name = "ray"\nretries = 5', [], ("ray", {"retries": "5"}), False),
    ('name = "slurm"\npartition = "gpu"\ntime = 600', ["--executor-option", "time=30"],
     ("slurm", {"partition": "gpu", "time": "30"}), False),
    ('name = "slurm"\npartition = "gpu"', ["--executor", "local"], ("local", {}), True),  # jobs: its default, 1
])
def test_run_config_resolves_the_executor_from_the_table_and_the_command_line(
        tmp_path, monkeypatch, table, argv, expected, note):
    import probseg_bench.cli.run as run_module

    chosen = []

    def fake_get_executor(name, options):
        chosen.append((name, dict(options)))
        raise ProbsegError("stop before any cell runs")

    monkeypatch.setattr(run_module, "get_executor", fake_get_executor)
    path = tmp_path / "grid.toml"
    path.write_text(_GRID + ("[executor]\n" + table + "\n" if table else ""))
    result = CliRunner().invoke(app, ["run", "--config", str(path), *argv])
    assert chosen == [expected], result.output
    noted = [line for line in result.stderr.splitlines() if "[executor] table" in line]
    assert noted == ([f"note: --executor local replaces the [executor] table of {path} (executor slurm): its "
                      "options are not used"] if note else [])
