"""A dataset parameter that the dataset does not declare, or a value of the wrong type, is called a "dataset
parameter" (not a hyperparameter) with a did-you-mean, wherever it enters: ``--dataset-param`` of run, tune,
validate and the data commands, a grid's ``[dataset_params.NAME]`` table (named with the file)."""

from __future__ import annotations

import pytest

SISE = "dataset 'synthetic' has no dataset parameter 'sise' (did you mean 'size'?)"


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "sise=64"], SISE),
    (["run", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "size=big"],
     "dataset parameter 'size': expected an int, got 'big'"),
    (["run", "--model", "punet", "--dataset", "lidc-sample", "--dataset-param", "size=64"],
     "dataset 'lidc-sample' has no dataset parameter 'size'"),
    (["tune", "--model", "punet", "--dataset", "synthetic", "--dataset-param", "sise=64", "--trials", "1"], SISE),
    (["validate", "--model", "punet", "--dataset-param", "sise=64"], SISE),
    (["data", "inspect", "synthetic", "--dataset-param", "sise=64"], SISE),
    (["data", "verify", "synthetic", "--dataset-param", "sise=64"], SISE),
])
def test_an_unknown_dataset_parameter_is_called_a_dataset_parameter(monkeypatch, tmp_path, run_main, args,
                                                                    expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(*args)
    assert code == 2
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and expected in error[0] and "hyperparameter" not in error[0]


GRID = """
models = ["punet"]
datasets = ["synthetic"]
folds = [0]
preset = "quick"
[dataset_params.{table}]
{line}
"""


@pytest.mark.parametrize(("table", "line", "expected"), [
    ("synthetic", "sise = 64", "[dataset_params.synthetic]: " + SISE),
    ("synthetic", "size = 'big'", "[dataset_params.synthetic]: dataset parameter 'size': expected an int"),
    ("synthetc", "size = 64",
     "[dataset_params.synthetc]: 'synthetc' is not one of the grid's datasets (did you mean 'synthetic'?)"),
])
def test_a_grids_dataset_params_are_checked_before_any_cell_trains(monkeypatch, tmp_path, run_main, table, line,
                                                                   expected):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(table=table, line=line))
    code, _, err = run_main("run", "--config", str(grid))
    assert code == 2
    assert f"{grid}: {expected}" in err and "hyperparameter" not in err
    assert not (tmp_path / "probseg-runs").exists()  # nothing trained
