"""The request builder's precedence, written once in probseg_bench/request.py and tested once here: command line >
parameters file > grid cell > defaults; and a request checked once (what trains is the checked request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from probseg_bench.errors import ProbsegError
from probseg_bench.grid import load_grid
from probseg_bench.request import (
    DEFAULT_PRESET,
    DEFAULT_SEED,
    CommandLine,
    RunRequest,
    build_requests,
    check_request,
)

PARAMS = """
model = "spunet"
dataset = "synthetic"
[hyperparameters]
beta = 20.0
epsilon = 0.2
[protocol]
preset = "quick"
latent_dim = 4
seed = 7
[protocol.overrides]
epochs = 3
[protocol.dataset_params]
n_images = 40
"""

GRID = """
models = ["punet", "spunet"]
datasets = ["synthetic"]
preset = "quick"
seed = 3
device = "cpu"
[hyperparameters.spunet]
beta = 50
[protocol]
epochs = 2
batch_size = 4
"""


def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "best.toml"
    path.write_text(PARAMS)
    return path


def test_defaults_fill_what_nothing_gives():
    (r,), notes = build_requests(CommandLine(model="hpunet", dataset="synthetic"))
    assert notes == []
    assert (r.preset, r.seed, r.device, r.folds) == (DEFAULT_PRESET, DEFAULT_SEED, "auto", None)
    assert r.latent_dims == (1,)  # hpunet's reference d (ModelSpec.default_latent_dim), not 6
    assert r.variant() == ""
    (v,), _ = build_requests(CommandLine(model="hpunet", dataset="synthetic"), default_preset="quick")
    assert v.preset == "quick"  # validate's default preset, through the same builder


def test_the_parameters_file_over_the_defaults(tmp_path):
    path = params_file(tmp_path)
    (r,), notes = build_requests(CommandLine(model="spunet", dataset="synthetic"), path)
    assert notes == []
    assert r.hyperparameters == {"beta": 20.0, "epsilon": 0.2}
    assert (r.preset, r.seed, r.latent_dims) == ("quick", 7, (4,))
    assert dict(r.protocol_overrides) == {"epochs": 3} and dict(r.dataset_params) == {"n_images": 40}
    assert r.variant() == "params=best.toml, epochs=3"


def test_the_command_line_over_the_parameters_file_with_one_note_each(tmp_path):
    path = params_file(tmp_path)
    given = CommandLine(model="spunet", dataset="synthetic", hyperparameters={"epsilon": "0.05"}, preset="paper",
                        protocol_overrides={"epochs": 5}, latent_dims=(6,), seed=1, dataset_params={"n_images": "80"})
    (r,), notes = build_requests(given, path)
    assert r.hyperparameters == {"beta": 20.0, "epsilon": "0.05"}  # typed once, by the check
    assert (r.preset, r.seed, r.latent_dims) == ("paper", 1, (6,))
    assert dict(r.protocol_overrides) == {"epochs": 5} and dict(r.dataset_params) == {"n_images": "80"}
    assert r.variant_name is None  # --hp changes what the file says: the label lists the values
    assert sorted(notes) == sorted([
        f"{path}: tuned under preset quick, run under paper (as the command line asks)",
        f"{path}: tuned with epochs=3, run with epochs=5 (as the command line asks)",
        f"{path}: tuned with dataset parameters n_images=40, run with n_images=80 (as the command line asks)",
        f"{path}: tuned at d=4, run at d=6 (as the command line asks)",
        f"{path}: tuned with seed 7, run with seed 1 (as the command line asks)",
        f"{path}: --hp replaces the tuned epsilon",
    ])
    assert check_request(r).reg_hp["sinkhorn"]["epsilon"] == 0.05  # the one coercion: the declared type


def test_a_parameters_file_of_another_model_or_with_unknown_names_names_the_file(tmp_path):
    path = params_file(tmp_path)
    with pytest.raises(ProbsegError, match=r"best.toml: parameters of model 'spunet', not 'punet'"):
        build_requests(CommandLine(model="punet", dataset="synthetic"), path)
    path.write_text(PARAMS.replace("model = \"spunet\"\n", "").replace("beta = 20.0", "betta = 20.0"))
    with pytest.raises(ProbsegError, match=r"best.toml: \[hyperparameters\]: .*no hyperparameter 'betta'"):
        build_requests(CommandLine(model="spunet", dataset="synthetic"), path)


def test_a_grid_cell_under_the_command_lines_epochs_and_device(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    grid = load_grid(path)
    cells, notes = build_requests(CommandLine(protocol_overrides={"epochs": 9}, device="auto"), grid=grid,
                                  config=path)
    assert notes == [] and [r.model for r in cells] == ["punet", "spunet"]
    for r in cells:  # the command line's epochs replaces the grid's, the grid's other settings stay
        assert dict(r.protocol_overrides) == {"epochs": 9, "batch_size": 4}
        assert (r.device, r.seed, r.preset) == ("auto", 3, "quick")
    assert cells[1].hyperparameters == {"beta": 50}
    (plain, _), _ = build_requests(CommandLine(), grid=grid, config=path)
    assert plain.device == "cpu" and dict(plain.protocol_overrides) == {"epochs": 2, "batch_size": 4}


@pytest.mark.parametrize(("given", "flags"), [
    (CommandLine(model="punet"), "--model"),
    (CommandLine(seed=0), "--seed"),  # 0 is given, not absent
    (CommandLine(hyperparameters={"beta": "1"}, preset="quick"), "--preset, --hp"),
])
def test_a_grid_refuses_what_its_file_sets(tmp_path, given, flags):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    with pytest.raises(ProbsegError, match=f"--config runs the grid of the file, which sets {flags}: give those in "
                                           "the file \\(only --epochs and --device apply to every cell\\)"):
        build_requests(given, grid=load_grid(path), config=path)


def test_flow_goes_where_the_command_puts_it():
    (r,), _ = build_requests(CommandLine(model="punet-nf", dataset="synthetic", flow="radial"))
    assert r.hyperparameters == {"flow": "radial"} and r.variant() == "flow=radial"
    with pytest.raises(ProbsegError, match="--flow radial: model 'punet' has no posterior flow"):
        build_requests(CommandLine(model="punet", dataset="synthetic", flow="radial"))
    with pytest.raises(ProbsegError, match=r"--flow and --hp flow=\.\.\. both given"):
        build_requests(CommandLine(model="punet-nf", dataset="synthetic", flow="radial",
                                   hyperparameters={"flow": "maf"}))


def test_no_model_is_one_line():
    with pytest.raises(ProbsegError, match=r"^run: give --model and --dataset \(or --config GRID.toml\)$"):
        build_requests(CommandLine(dataset="synthetic"))


def test_the_checked_request_is_what_trains_and_is_not_checked_again(monkeypatch, tmp_path, tiny_preset):
    """run_protocol takes the checked request: the check runs once (not again in RunPlan / Experiment.prepare),
    and the Experiment reads the checked request's fields instead of copying them."""
    import probseg_bench.request as request_module
    from probseg_bench import protocol
    from probseg_bench.protocol import run_protocol

    r = RunRequest(model="punet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset=tiny_preset,
                   device="cpu", dataset_params={"n_images": 16, "size": 32}, run_dir=tmp_path / "runs")
    checked = check_request(r)
    calls: list[object] = []
    for module in (request_module, protocol):  # wherever the protocol could reach it
        monkeypatch.setattr(module, "check_request", lambda *a, **k: calls.append(a))
    seen = []
    from probseg_bench import experiment

    prepare = experiment.Experiment.prepare.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(experiment.Experiment, "prepare",
                        classmethod(lambda cls, c: seen.append(prepare(cls, c)) or seen[-1]))
    (record,) = run_protocol(checked, str(tmp_path / "r.db"))
    assert calls == [] and record.status == "ok"
    (exp,) = seen
    assert exp.checked is checked and exp.preset is checked.preset and exp.model_hp is checked.model_hp
    assert exp.folds == (0,) and exp.request is r
