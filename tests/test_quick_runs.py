"""The issue's acceptance runs: `run --preset quick` of punet and spunet on lidc-sample, end to end through the
console script, each within 10 minutes on 2 CPU cores. Slow: run with `nox -s slow` (or `pytest -m slow`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["spunet", "punet"])
def test_quick_run_on_lidc_sample(model, tmp_path):
    exe = shutil.which("probseg-bench")
    assert exe, "the console script probseg-bench is not installed"
    start = time.perf_counter()
    subprocess.run([exe, "run", "--model", model, "--dataset", "lidc-sample", "--preset", "quick"],
                   cwd=tmp_path, check=True, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    assert wall < 600, f"{model} quick run took {wall:.0f} s"
    board = json.loads(subprocess.run([exe, "leaderboard", "--format", "json"], cwd=tmp_path, check=True,
                                      capture_output=True, text=True).stdout)
    assert len(board) == 1
    row = board[0]
    assert (row["model"], row["dataset"], row["latent_dim"], row["folds"]) == (model, "lidc-sample", 6, 3)
    assert 0.0 <= row["hm_iou_mean"] <= 1.0 and 0.0 <= row["ewd_mean"] <= 1.0
    assert row["hm_iou_mean"] + row["ewd_mean"] == pytest.approx(1.0)
    assert 0.0 <= row["ged_mean"] <= 2.0  # the squared GED lies in [0, 2]
    assert 1.0 <= row["er_mean"] <= 6.0
