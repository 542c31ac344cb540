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
