"""The plugin system: entry-point discovery, a fake third-party distribution, collisions, broken plugins."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.errors import PluginCollisionError, ProbsegError
from probseg_bench.plugins import get_plugins, load_plugins, reset_plugins

from fakeplugin import TINY_SPEC, install_fake_distribution, make_model_plugin_module


@pytest.fixture(autouse=True)
def fresh_plugins():
    reset_plugins()
    yield
    reset_plugins()


def test_builtins_come_through_the_entry_point_group():
    plugins = get_plugins()
    assert plugins.failures == []
    assert {"punet", "spunet"} <= set(plugins.models.names())
    assert {"kl", "sinkhorn"} <= set(plugins.regularizers.names())
    assert "lidc-sample" in plugins.datasets.names()
    info = plugins.models.info("spunet")
    assert info.distribution.startswith("probseg-bench ")
    assert info.entry_point == "models = probseg_models"


def test_fake_third_party_model_is_listed_with_its_distribution(monkeypatch):
    install_fake_distribution(monkeypatch, "probseg-fake-plugin", {"fake_probseg_plugin": make_model_plugin_module()})
    result = CliRunner().invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = {(p["kind"], p["name"]): p for p in json.loads(result.output)["plugins"]}
    assert listed[("model", "tiny-fake")]["distribution"] == "probseg-fake-plugin 1.2.3"
    assert listed[("model", "punet")]["distribution"].startswith("probseg-bench")
    table = CliRunner().invoke(app, ["list"])
    assert "tiny-fake" in table.output and "probseg-fake-plugin" in table.output


def test_fake_third_party_model_runs_through_the_protocol(monkeypatch, tmp_path, tiny_preset):
    install_fake_distribution(monkeypatch, "probseg-fake-plugin", {"fake_probseg_plugin": make_model_plugin_module()})
    db = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["run", "--model", "tiny-fake", "--dataset", "lidc-sample", "--preset", tiny_preset, "--latent-dim", "3",
            "--storage", db, "--run-dir", str(tmp_path / "runs"), "--format", "json", "--hp", "beta=0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    board = json.loads(CliRunner().invoke(app, ["leaderboard", "--format", "json", "--storage", db]).output)
    assert len(board) == 1
    row = board[0]
    assert (row["model"], row["dataset"], row["latent_dim"], row["folds"]) == ("tiny-fake", "lidc-sample", 3, 3)
    assert 1.0 <= row["er_mean"] <= 3.0
    assert row["hm_iou_mean"] + row["ewd_mean"] == pytest.approx(1.0)
    assert len(list((tmp_path / "runs").rglob("fold*.pt"))) == 3


def test_name_collision_names_both_distributions(monkeypatch):
    clash = replace(TINY_SPEC, name="punet")
    module = make_model_plugin_module(clash, "fake_clash")
    install_fake_distribution(monkeypatch, "probseg-evil", {"fake_clash": module})
    with pytest.raises(PluginCollisionError, match=r"'punet'.*probseg-bench .*probseg-evil 1\.2\.3"):
        load_plugins()


def test_a_broken_plugin_is_reported_and_the_others_still_load(monkeypatch):
    install_fake_distribution(monkeypatch, "probseg-broken", {"no_such_module_xyz": None})
    plugins = load_plugins()
    assert "spunet" in plugins.models.names()
    assert len(plugins.failures) == 1
    failure = plugins.failures[0]
    assert failure.distribution == "probseg-broken 1.2.3"
    assert "no_such_module_xyz" in failure.error
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "spunet" in result.output


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ProbsegError, match=r"unknown model 'spunt' \(did you mean 'spunet'\?\); known models: .*punet"):
        get_plugins().models.get("spunt")


# ------------------------------------------------------------------------------------- list: hyperparameters
def test_list_details_shows_every_plugins_hyperparameters_and_dataset_parameters(run_main):
    code, out, _ = run_main("list", "--details")
    assert code == 0
    text = " ".join(out.split())
    # (descriptions may wrap in the table: the rows are compared up to the description)
    assert "model spunet │ alpha │ 10 │ 0.1 .. 100 │ yes │ yes │ weight" in text
    assert "│ grad_clip │ 1 │ │ │ no │ gradient-norm" in text
    assert "│ flow │ planar │ planar | radial | maf │ │ no │ posterior flow" in text
    assert "regularizer sinkhorn │ epsilon │" in text
    assert "dataset synthetic │ n_images │ 240 │ 40 .. 4000 │" in text


def test_list_name_shows_one_plugin_in_detail(run_main):
    code, out, _ = run_main("list", "punet")
    assert code == 0
    text = " ".join(out.split())
    assert text.startswith("model punet: Probabilistic U-Net")
    assert "provided by: probseg-bench " in text
    assert "objective: reconstruction (the model's own if it returns one, else BCE) + beta * kl" in text
    assert "latent dim when -d is not given: 6" in text
    assert "│ beta │ 1 │ 0.01 .. 100 │ yes │ yes │ weight of the KL" in text
    assert "│ filters │ 32,64,128,192 │" in text
    code, out, _ = run_main("list", "qubiq-brain-tumor")
    text = " ".join(out.split())
    assert "parameters (--dataset-param NAME=VALUE)" in text and "│ task │ 1 │ 1 | 2 | 3 │" in text
    assert "tunable" not in text  # dataset parameters are not searched
    code, _, err = run_main("list", "spunt")
    assert code == 2 and "no plugin named 'spunt' (did you mean 'spunet'?)" in err


def test_list_json_includes_hyperparameters_and_parameters(monkeypatch):
    install_fake_distribution(monkeypatch, "probseg-fake-plugin", {"fake_probseg_plugin": make_model_plugin_module()})
    result = CliRunner().invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = {(p["kind"], p["name"]): p for p in json.loads(result.output)["plugins"]}
    beta = {hp["name"]: hp for hp in listed[("model", "tiny-fake")]["hyperparameters"]}["beta"]
    assert beta == {"name": "beta", "type": "float", "default": 1.0, "low": 0.1, "high": 10.0, "log": True,
                    "choices": None, "tunable": True, "description": "KL weight"}
    assert listed[("model", "spunet")]["objective"][1] == {"regularizer": "sinkhorn", "weight": "beta",
                                                           "swappable": True}
    flow = {hp["name"]: hp for hp in listed[("model", "punet-nf")]["hyperparameters"]}["flow"]
    assert flow["choices"] == ["planar", "radial", "maf"] and flow["tunable"] is False
    synthetic = listed[("dataset", "synthetic")]
    assert {p["name"] for p in synthetic["parameters"]} >= {"n_images", "size", "seed"}
    assert synthetic["known_distribution"] is True and synthetic["protocol"]["epochs"] > 0
    assert [hp["name"] for hp in listed[("regularizer", "kl")]["hyperparameters"]] == []
    one = json.loads(CliRunner().invoke(app, ["list", "tiny-fake", "--format", "json"]).output)["plugins"]
    assert [(p["kind"], p["name"]) for p in one] == [("model", "tiny-fake")]


# --------------------------------------------------------------------------- a plugin that fails to load
def _failing_package(tmp_path, monkeypatch):
    """A package ``my_pkg`` on sys.path whose ``plugin`` module fails to import (a missing dependency)."""
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text("import torchvision_missing_xyz  # a dependency that is not installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_unknown_model_names_the_plugin_that_failed_to_load(monkeypatch, tmp_path, run_main):
    _failing_package(tmp_path, monkeypatch)
    install_fake_distribution(monkeypatch, "my-pkg", {"my_pkg.plugin": None}, {"my_pkg.plugin": "my-model"})
    code, _, err = run_main("run", "--model", "my-model", "--dataset", "lidc-sample", "--preset", "quick",
                            "--storage", str(tmp_path / "r.db"), "--run-dir", str(tmp_path / "runs"))
    assert code == 2
    text = " ".join(err.split())
    assert "unknown model 'my-model'" in text
    assert ("note: plugin entry point `my-model = my_pkg.plugin` (my-pkg 1.2.3) failed to load: "
            "ModuleNotFoundError: No module named 'torchvision_missing_xyz'") in text
    code, _, err = run_main("list", "my-model")
    assert code == 2 and "`my-model = my_pkg.plugin` (my-pkg 1.2.3) failed to load" in " ".join(err.split())


def test_failure_notes_match_plausible_names_only(monkeypatch, tmp_path):
    _failing_package(tmp_path, monkeypatch)
    install_fake_distribution(monkeypatch, "acme-seg", {"my_pkg.plugin": None}, {"my_pkg.plugin": "models"})
    plugins = load_plugins()
    with pytest.raises(ProbsegError, match=r"unknown model 'acme-unet'.*; note: plugin entry point "
                                           r"`models = my_pkg.plugin` \(acme-seg 1\.2\.3\) failed to load: "
                                           r"ModuleNotFoundError"):
        plugins.models.get("acme-unet")  # shares "acme" with the distribution
    with pytest.raises(ProbsegError) as info:
        plugins.models.get("spunt")  # a typo of a built-in: the failure is listed, without its error
    message = str(info.value)
    assert "; note: plugin entry points that failed to load (`probseg-bench list` shows why): " in message
    assert "`models = my_pkg.plugin` (acme-seg 1.2.3)" in message and "torchvision_missing_xyz" not in message


@pytest.mark.parametrize(("name", "entry_point", "distribution", "plausible"), [
    ("my-model", "my-model = my_pkg.plugin", "my-pkg 0.1", True),
    ("example-punet", "example = probseg_example_plugin", "probseg-example-plugin 0.1.0", True),
    ("acme-unet", "models = acme_seg.plugin", "acme-seg 1.0", True),
    ("spunt", "models = acme_seg.plugin", "acme-seg 1.0", False),
    ("my-model", "models = probseg_extra.plugins", "probseg-extra 1.0", False),
])
def test_plausibly_provides(name, entry_point, distribution, plausible):
    from probseg_bench.registry import PluginFailure

    assert PluginFailure(entry_point, distribution, "ImportError: x").plausibly_provides(name) is plausible


def test_a_failing_registration_hook_is_noted_for_its_kind_only(monkeypatch):
    import types

    from probseg_bench import hookimpl

    module = types.ModuleType("fake_half_broken")

    @hookimpl
    def probseg_bench_register_datasets(registry):
        raise RuntimeError("cannot find my data files")

    module.probseg_bench_register_datasets = probseg_bench_register_datasets  # type: ignore[attr-defined]
    install_fake_distribution(monkeypatch, "probseg-half", {"fake_half_broken": module})
    plugins = load_plugins()
    with pytest.raises(ProbsegError) as info:
        plugins.datasets.get("half-data")
    assert ("note: plugin entry point `fake_half_broken = fake_half_broken` (probseg-half 1.2.3) failed to load: "
            "probseg_bench_register_datasets failed: RuntimeError: cannot find my data files") in str(info.value)
    with pytest.raises(ProbsegError) as info:
        plugins.models.get("half-model")
    assert "fake_half_broken" not in str(info.value)
