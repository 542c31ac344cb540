"""The acceptance runs: `run --preset quick` of spunet, punet and punet-nf on lidc-sample, end to end through the
console script, into one results store: each model must segment (issue 13's targets: mean test HM-IoU over the 3
folds >= 0.45, at most 1 in 10 marked test images with 16 all-empty samples) within a few minutes on 2 CPU cores;
and ccdm's (issue 24: HM-IoU >= 0.45, sample diversity within 0.5x-2x the annotators', within 10 minutes).
Slow (about 25 minutes): run with `nox -s slow` (or `pytest -m slow`); `python -m benchmarks.quickstart` measures
the same runs and prints the table of the README."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from probseg_bench.results import ResultsStore
from probseg_datasets.lidc import load_lidc_sample

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
def test_quick_run_finishes_within_a_few_minutes(quick_runs, model):
    # 300 s on the quiet 2-core development machine (README); slack for a busier CI machine
    assert quick_runs[1][model] < 450, f"{model}: {quick_runs[1][model]:.0f} s"


@pytest.mark.parametrize("model", MODELS)
def test_every_quick_model_segments_the_nodules(quick_runs, model):
    records = ResultsStore(str(quick_runs[0] / "probseg-results.db")).records(models=[model])
    assert len(records) == 3
    assert np.mean([r.metrics["hm_iou"] for r in records]) >= 0.45
    masks = load_lidc_sample().masks
    marked = (masks.reshape(len(masks), 4, -1).max(-1) > 0).sum(1) >= 3
    counted = [f == 1.0 for r in records for tid, f in zip(r.test_ids, r.per_image["empty_fraction"], strict=True)
               if marked[int(tid)]]
    assert sum(counted) <= 0.1 * len(counted), f"{sum(counted)} of {len(counted)} marked test images all empty"


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


@pytest.fixture(scope="module")
def ccdm_quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    exe = shutil.which("probseg-bench")
    assert exe, "the console script probseg-bench is not installed"
    workdir = tmp_path_factory.mktemp("quick-ccdm")
    start = time.perf_counter()
    subprocess.run([exe, "run", "--model", "ccdm", "--dataset", "lidc-sample", "--preset", "quick"],
                   cwd=workdir, check=True, capture_output=True, text=True, timeout=1500)
    return workdir, time.perf_counter() - start


def test_ccdm_quick_run_segments_with_the_annotators_spread(ccdm_quick_run):
    """Issue 24's targets for the diffusion model on the quick preset: mean test HM-IoU >= 0.45 over the 3 folds,
    sample diversity within 0.5x-2x the annotators', the whole run within 10 minutes on the quiet 2-core machine
    (579 s measured there; slack for a busier CI machine)."""
    workdir, wall = ccdm_quick_run
    records = ResultsStore(str(workdir / "probseg-results.db")).records(models=["ccdm"])
    assert len(records) == 3
    assert np.mean([r.metrics["hm_iou"] for r in records]) >= 0.45
    ratio = np.mean([r.metrics["sample_diversity"] for r in records]) / np.mean(
        [r.metrics["annotator_diversity"] for r in records])
    assert 0.5 <= ratio <= 2.0, ratio
    assert wall < 900, f"ccdm: {wall:.0f} s"
