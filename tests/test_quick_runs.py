"""The acceptance runs: `run --preset quick` of spunet, punet and punet-nf on lidc-sample, end to end through the
console script, each within 10 minutes on 2 CPU cores, into one results store. Slow (about 15 minutes): run
with `nox -s slow` (or `pytest -m slow`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
MODELS = ("spunet", "punet", "punet-nf")


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    exe = shutil.which("probseg-bench")
    assert exe, "the console script probseg-bench is not installed"
    workdir = tmp_path_factory.mktemp("quick")
    walls = {}
    for model in MODELS:
        start = time.perf_counter()
        subprocess.run([exe, "run", "--model", model, "--dataset", "lidc-sample", "--preset", "quick"],
                       cwd=workdir, check=True, capture_output=True, text=True, timeout=900)
        walls[model] = time.perf_counter() - start
    return workdir, walls


@pytest.mark.parametrize("model", MODELS)
def test_quick_run_finishes_within_10_minutes(quick_runs, model):
    assert quick_runs[1][model] < 600, f"{model}: {quick_runs[1][model]:.0f} s"


def test_the_three_models_share_one_leaderboard(quick_runs):
    exe = shutil.which("probseg-bench")
    board = json.loads(subprocess.run([exe, "leaderboard", "--format", "json"], cwd=quick_runs[0], check=True,
                                      capture_output=True, text=True).stdout)
    assert sorted(row["model"] for row in board) == sorted(MODELS)
    for row in board:
        assert (row["dataset"], row["latent_dim"], row["folds"], row["n_test"]) == ("lidc-sample", 6, 3, 6)
        assert 0.0 <= row["hm_iou_mean"] <= 1.0 and 0.0 <= row["ewd_mean"] <= 1.0
        assert row["hm_iou_mean"] + row["ewd_mean"] == pytest.approx(1.0)
        assert 0.0 <= row["ged_mean"] <= 2.0  # the squared GED lies in [0, 2]
        assert 1.0 <= row["er_mean"] <= 6.0
