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
