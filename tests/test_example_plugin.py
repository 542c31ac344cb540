"""The example plugin package (examples/probseg-example-plugin) installed for real with pip, then listed and run
through the command line in a subprocess, as a user would after `pip install examples/probseg-example-plugin`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import probseg_bench
import probseg_models

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "probseg-example-plugin"
CLI = ["-c", "from probseg_bench.cli import main; main()"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip-install the example (a copy: the build writes into its source folder) into a fresh folder; the
    environment of a subprocess that sees it, and this checkout's probseg-bench, on its path."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("pip and setuptools are needed to install the example plugin")
    root = tmp_path_factory.mktemp("example")
    source, target = root / "source", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    path = [str(target), str(Path(probseg_bench.__file__).parents[1]), str(Path(probseg_models.__file__).parents[1])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return {"env": env, "root": str(root)}  # type: ignore[dict-item]


def cli(installed: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *CLI, *args], env=installed["env"], cwd=installed["root"],
                          capture_output=True, text=True, timeout=300)


def test_the_installed_example_is_listed_with_its_distribution_and_hyperparameters(installed):
    result = cli(installed, "list", "--details")
    assert result.returncode == 0, result.stderr
    rows = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "│ model │ example-punet │" in next(r for r in rows if "example-punet" in r)
    assert all("probseg-example-plugin 0.1.0" in r for r in rows if "│ example-" in r)
    assert len([r for r in rows if "│ example-" in r]) == 2  # the model and the dataset
    assert any(r.startswith("│ model example-punet │ beta │ 1 │ 0.01 .. 100 │ yes │ yes │") for r in rows)
    assert any(r.startswith("│ dataset example-blobs │ n_images │ 24 │ 8 .. 4096 │") for r in rows)


def test_the_installed_example_runs_to_a_leaderboard_row(installed, run_main):
    db = str(Path(installed["root"]) / "r.db")
    result = cli(installed, "run", "--model", "example-punet", "--dataset", "example-blobs", "--preset", "quick",
                 "--epochs", "1", "--fold", "0", "--storage", db, "--run-dir", str(Path(installed["root"]) / "runs"))
    assert result.returncode == 0, result.stdout + result.stderr
    code, out, err = run_main("leaderboard", "--format", "json", "--storage", db)  # reading needs no plugin
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["model"], r["dataset"], r["latent_dim"], r["folds"]) for r in rows] == [
        ("example-punet", "example-blobs", 6, 1)]
    assert rows[0]["n_test"] >= 1 and 0.0 <= rows[0]["hm_iou_mean"] <= 1.0


def test_the_default_suite_does_not_depend_on_which_plugins_are_installed(installed):
    """Issue 16: with one third-party plugin installed, test_bad_arguments_give_one_line_and_exit_2 failed (its
    expected message listed the built-in models only). The tests that list plugins pass with the example installed."""
    tests = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_cli.py"),
         str(tests / "test_plugins.py"), "-k", "bad_arguments or list or unknown or plugin"],
        env=installed["env"], cwd=installed["root"], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
