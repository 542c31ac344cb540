"""The commands' shared options (``probseg_bench.cli.options``): an option name that several commands take has one
default, one type and one help text everywhere, except the deliberate differences listed below; and what ``tune``
gained from it (``--regularizer``, ``--flow``, ``--trust-pickle``) reaches the study."""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import typer
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.tuning import SETTINGS_ATTR

# Deliberate differences: option -> {command: family}. A command not named here is in the option's main family;
# every family's commands must agree with each other. Each entry says why the meaning differs.
FAMILIES: dict[str, dict[str, str]] = {
    # validate trains several models (repeatable, default: the eight built-ins); analyze names a stored run;
    # leaderboard filters stored records
    "--model": {"validate": "validated models", "analyze": "stored", "leaderboard": "filter"},
    # validate needs a dataset with a known true distribution (default: synthetic); analyze and compare read
    # stored records; leaderboard filters them
    "--dataset": {"validate": "known truth", "analyze": "stored", "compare": "stored", "leaderboard": "filter"},
    # run trains a grid of dims (repeatable); analyze selects a stored run; compare and leaderboard filter
    "--latent-dim": {"run": "grid", "analyze": "stored", "compare": "filter", "leaderboard": "filter"},
    # run: folds to train [all]; tune: the one fold whose validation split scores a trial; validate: folds to
    # train [0] (its stored results depend on it); analyze: a stored fold
    "--fold": {"run": "train", "tune": "score", "validate": "validate", "analyze": "stored"},
    # compare's seed is the bootstrap's, not a training seed
    "--seed": {"compare": "bootstrap"},
    # validate defaults to quick (options.DEFAULT_VALIDATE_PRESET: changing it would store other results under
    # the same command); compare and leaderboard filter stored records by preset
    "--preset": {"validate": "validate", "compare": "filter", "leaderboard": "filter"},
    # run and leaderboard render a leaderboard (5 formats); validate its report (3); the others table or json
    "--format": {"validate": "validate", "compare": "table or json", "list": "table or json",
                 "data inspect": "table or json"},
    # a different thing in each: tune's TOML, validate's and analyze's report folders, data convert's data folder,
    # leaderboard's rendered file (e.g. the html page)
    "--output": {"tune": "tune", "validate": "validate", "analyze": "analyze", "data convert": "data convert",
                 "leaderboard": "leaderboard"},
    # analyze selects one configuration; compare and leaderboard filter by several
    "--config-hash": {"analyze": "stored"},
}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            yield from _commands(sub, (*path, name))
        else:
            yield " ".join((*path, name)), sub


COMMANDS = dict(_commands(typer.main.get_command(app)))


def _signature(param: Any) -> dict[str, Any]:
    """What a user sees of an option: its flags, default, type, repeatability, whether it is required or a flag,
    and its help."""
    return {"opts": sorted(param.opts + param.secondary_opts), "default": param.default,
            "type": param.type_descriptor.annotation, "multiple": param.multiple, "required": param.required,
            "is_flag": param.is_flag, "show_default": param.show_default, "help": param.help}


def _options() -> dict[str, dict[str, Any]]:
    """option name (the first long flag) -> {command: its click parameter}."""
    found: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, command in COMMANDS.items():
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if param.param_type_name == "option" and longs:
                found[longs[0]][name] = param
    return found


def test_an_option_of_several_commands_has_one_default_type_and_help():
    drift = []
    for option, by_command in _options().items():
        if len(by_command) < 2:
            continue
        families: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for command, param in by_command.items():
            families[FAMILIES.get(option, {}).get(command, "main")][command] = _signature(param)
        for family, signatures in families.items():
            first_command, first = next(iter(signatures.items()))
            for command, signature in signatures.items():
                diff = {k: (first[k], v) for k, v in signature.items() if first[k] != v}
                if diff:
                    drift.append(f"{option} ({family}): {first_command} vs {command}: {diff}")
    assert not drift, "\n".join(drift)


def test_the_allow_list_names_only_options_and_commands_that_exist():
    options = _options()
    for option, commands in FAMILIES.items():
        assert option in options, option
        assert set(commands) <= set(options[option]), (option, set(commands) - set(options[option]))


def test_run_and_tune_take_the_same_request_options():
    options = _options()
    for option in ("--model", "--dataset", "--regularizer", "--flow", "--trust-pickle", "--data-root",
                   "--dataset-param", "--preset", "--epochs", "--seed", "--device", "--storage", "--executor"):
        assert {"run", "tune"} <= set(options[option]), option
        assert _signature(options[option]["run"]) == _signature(options[option]["tune"]), option


def _tune(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [
        "tune", "--preset", "quick", "--epochs", "1", "--trials", "1", "--latent-dim", "2", "--device", "cpu",
        "--fix", "filters=4,8", "--fix", "convs_per_block=1", "--storage", str(tmp_path / "t.db"),
        "--output", str(tmp_path / "best.toml"), *args])


def test_tune_with_a_regularizer_searches_and_trains_with_it(tmp_path, monkeypatch):
    from probseg_bench.experiment import Experiment

    used: list[tuple[str, ...]] = []
    original = Experiment.train

    def train(self: Experiment, *args: Any, **kwargs: Any) -> Any:
        used.append(tuple(t.regularizer for t in self.terms))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Experiment, "train", train)
    result = _tune(tmp_path, "--model", "spunet", "--regularizer", "mmd", "--dataset", "synthetic",
                   "--dataset-param", "n_images=16", "--dataset-param", "size=32", "--study", "s")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert used == [("kl", "mmd")]
    (trial,) = study.trials
    assert any(name.startswith("mmd_") for name in trial.params)
    assert not any(name.startswith("sinkhorn") for name in trial.params)
    assert study.user_attrs[SETTINGS_ATTR]["regularizer"] == "mmd"
    assert "--regularizer mmd --dataset synthetic --params" in " ".join(result.output.split())
    # the same study under the model's own regularizer is refused, the difference named
    again = _tune(tmp_path, "--model", "spunet", "--dataset", "synthetic", "--dataset-param", "n_images=16",
                  "--dataset-param", "size=32", "--study", "s")
    assert again.exit_code != 0 and "regularizer 'mmd' -> None" in str(again.exception)


def test_tune_refuses_a_regularizer_as_run_does(tmp_path):
    args = ["--model", "punet", "--regularizer", "mmd", "--dataset", "synthetic"]
    tuned = _tune(tmp_path, *args)
    run = CliRunner().invoke(app, ["run", *args, "--storage", str(tmp_path / "r.db")])
    assert "has no swappable regularizer term" in str(tuned.exception)
    assert str(tuned.exception) == str(run.exception)


def _lidc_pickle(folder: Path, n_series: int = 8, per_series: int = 3, size: int = 32) -> Path:
    """The PU-Net port's pickle layout (as tests/test_lidc.py writes it): {key: {image, masks, series_uid}}."""
    rng = np.random.default_rng(0)
    entries = {f"{s:02d}_{k}.png": {"image": rng.random((size, size), dtype=np.float32),
                                    "masks": [(rng.random((size, size)) > 0.7).astype(np.uint8) for _ in range(4)],
                                    "series_uid": f"1.3.6.{s}"}
               for s in range(n_series) for k in range(per_series)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data_lidc.pickle").write_bytes(pickle.dumps(entries))
    return folder


def test_tune_on_a_pickle_dataset_takes_trust_pickle(tmp_path):
    root = _lidc_pickle(tmp_path / "lidc")
    args = ["--model", "punet", "--dataset", "lidc", "--data-root", str(root), "--study", "p"]
    refused = _tune(tmp_path, *args)
    assert refused.exit_code != 0 and "--trust-pickle" in str(refused.exception)
    result = _tune(tmp_path, *args, "--trust-pickle")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert study.user_attrs[SETTINGS_ATTR]["dataset"] == "lidc"


def test_tune_flow_fixes_the_posterior_flow_of_every_trial(tmp_path):
    result = _tune(tmp_path, "--model", "punet-nf", "--flow", "radial", "--fix", "flow=planar", "--dataset",
                   "synthetic")
    assert "--flow and --fix flow=... both given" in str(result.exception)
    result = _tune(tmp_path, "--model", "punet", "--flow", "radial", "--dataset", "synthetic")
    assert "--flow radial: model 'punet' has no posterior flow" in str(result.exception)


@pytest.mark.parametrize("missing", ["--model", "--dataset"])
def test_tune_names_a_missing_model_or_dataset(tmp_path, missing):
    args = {"--model": "punet", "--dataset": "synthetic"}
    del args[missing]
    result = _tune(tmp_path, *[x for kv in args.items() for x in kv])
    assert "tune: give --model and --dataset" in str(result.exception)
