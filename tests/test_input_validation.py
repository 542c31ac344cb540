"""Issue 16 item 1: every key and value of a grid is checked before anything trains (one line naming the file and
the key, exit 2, nothing stored), and the same rule holds wherever a value enters: CLI options, --hp, --params
files, tune's --param ranges."""

from __future__ import annotations

import pytest

from probseg_bench.api import HyperParameter
from probseg_bench.errors import ProbsegError

GRID = 'models = ["punet"]\ndatasets = ["synthetic"]\n'


@pytest.mark.parametrize(("extra", "expected"), [
    ("latent_dims = [true]\n", "'latent_dims' must be a non-empty list of integers >= 1, got [True]"),
    ("latent_dims = [0]\n", "'latent_dims' must be a non-empty list of integers >= 1"),
    ("folds = [5]\n", "'folds': expected values in 0..2, got [5]"),
    ("folds = [-1]\n", "'folds' must be a non-empty list of integers >= 0"),
    ("seed = true\n", "'seed' must be an int, got True"),
    ("seed = -3\n", "'seed' must be >= 0"),
    ("device = \"gpu\"\n", "'device': --device: expected auto, cpu or cuda"),
    ("preset = \"quik\"\n", "preset: unknown preset 'quik' (did you mean 'quick'?)"),
    ("[protocol]\nepochs = true\n", "[protocol]: protocol setting 'epochs': expected an int, got True"),
    ("[protocol]\nepochs = 2.5\n", "[protocol]: protocol setting 'epochs': expected an int, got 2.5"),
    ("[protocol]\nepoch = 2\n", "[protocol]: protocol setting 'epoch' (did you mean 'epochs'?)"),
    ("[hyperparameters.spunte]\nbeta = 50\n", "[hyperparameters.spunte]: 'spunte' is not one of the grid's models"),
    ("[hyperparameters.punet]\nbetta = 50\n", "[hyperparameters.punet]: model 'punet' and its regularizers have no "
                                              "hyperparameter 'betta' (did you mean 'beta'?)"),
    ("[hyperparameters.punet]\nbeta = true\n", "[hyperparameters.punet]: hyperparameter 'beta': expected a float, "
                                               "got True"),
    ("[dataset_params.synthetik]\nsize = 32\n", "[dataset_params.synthetik]: 'synthetik' is not one of the grid's "
                                                "datasets (did you mean 'synthetic'?)"),
    ("[dataset_params.synthetic]\nsize = 2.5\n", "[dataset_params.synthetic]: dataset parameter 'size': expected an "
                                                 "int, got 2.5"),
    ("[data_roots]\nsynthetik = \"x\"\n", "[data_roots.synthetik]: 'synthetik' is not one of the grid's datasets"),
])
def test_a_bad_grid_is_refused_before_anything_trains(run_main, tmp_path, monkeypatch, extra, expected):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.toml"
    header, _, tables = extra.partition("[")
    grid.write_text(GRID + header + ("[" + tables if tables else ""))
    code, out, err = run_main("run", "--config", str(grid), "--storage", "r.db")
    assert code == 2 and f"{grid}: " in err and expected in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "probseg-runs").exists()


def test_unknown_plugins_in_a_grid_name_the_file_and_the_key(run_main, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('models = ["punet", "spunte"]\ndatasets = ["synthetic"]\n')
    code, _, err = run_main("run", "--config", str(grid), "--storage", str(tmp_path / "r.db"))
    assert code == 2 and f"{grid}: 'models': unknown model 'spunte' (did you mean 'spunet'?)" in err


@pytest.mark.parametrize(("default", "value"), [
    (1.0, True), (1, 2.7), (1, "2.7"), (True, 5), (True, 0.5), (1, float("inf")), (1.0, float("nan")),
])
def test_a_value_of_another_type_is_refused_not_converted(default, value):
    """TOML's true was silently the number 1.0, an int hyperparameter took 2.7 as 2, a bool took 5 as True."""
    with pytest.raises(ProbsegError, match="hyperparameter 'x': expected a"):
        HyperParameter("x", default).coerce(value)


def test_integral_and_textual_values_still_convert():
    assert HyperParameter("x", 1).coerce(2.0) == 2 and HyperParameter("x", 1).coerce("3") == 3
    assert HyperParameter("x", 1.0).coerce("1e3") == 1000.0 and HyperParameter("x", True).coerce("no") is False
    assert HyperParameter("x", True).coerce(1) is True and HyperParameter("x", "a").coerce(5) == "5"


def test_a_params_file_with_a_value_of_another_type_is_refused(run_main, tmp_path):
    params = tmp_path / "p.toml"
    params.write_text('model = "punet"\n[hyperparameters]\nbeta = true\n')
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", "--params", str(params),
                            "--storage", str(tmp_path / "r.db"))
    assert code == 2 and "hyperparameter 'beta': expected a float, got True" in err
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--fold", "-1"], "--fold: expected values in 0..2, got -1"),
    (["--latent-dim", "0"], "--latent-dim: expected integers >= 1, got [0]"),
    (["--hp", "beta=yes"], "hyperparameter 'beta': expected a float, got 'yes'"),
])
def test_cli_values_are_checked_before_anything_is_written(run_main, tmp_path, args, expected):
    code, _, err = run_main("run", "--model", "punet", "--dataset", "synthetic", *args,
                            "--storage", str(tmp_path / "r.db"))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(("model", "param", "expected"), [
    ("punet-nf", "flow=1:2", "'flow' is one of ['planar', 'radial', 'maf'], not a number"),
    ("punet-nf", "num_flows=1.5:4", "'num_flows' is an integer: expected integer bounds"),
    ("punet", "beta=5:1", "expected LOW < HIGH"),
])
def test_tune_param_ranges_are_checked(run_main, tmp_path, monkeypatch, model, param, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("tune", "--model", model, "--dataset", "synthetic", "--param", param, "--trials", "1",
                            "--dataset-param", "n_images=40", "--dataset-param", "size=32")
    assert code == 2 and expected in err, err
