"""The known-truth validity benchmark (`probseg-bench validate`): the report's keys and values, the oracle on the
same test images, and a model that samples the TRUE distribution scoring like the oracle."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probseg_bench.api import HyperParameter, ModelSpec, ObjectiveTerm
from probseg_bench.cli import app
from probseg_bench.plugins import get_plugins, reset_plugins
from probseg_bench.request import check_request
from probseg_bench.results import ResultsStore
from probseg_bench.validation import validate, validation_requests, write_report
from probseg_datasets.synthetic import load_synthetic, oracle_metrics, true_distribution

from fakeplugin import TinyLatentModel, install_fake_distribution, make_model_plugin_module

PARAMS = {"size": 32, "n_images": 40, "annotators": 4, "structures": 2, "levels": 2}
SMALL = {"filters": "4,8", "convs_per_block": 1}


class TrueDistributionModel(TinyLatentModel):
    """Trains like the tiny model, but ``sample`` draws masks from the synthetic data's TRUE distribution of the
    image (found by its pixels): a perfect model, which the validity benchmark must score like the oracle."""

    def __init__(self, latent_dim: int, in_channels: int = 1, **_: Any) -> None:
        super().__init__(latent_dim, in_channels)
        data = load_synthetic(**PARAMS)
        self.index = {data.images[i].tobytes(): i for i in range(len(data))}

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        out = []
        for x in image:
            support, probs = true_distribution(self.index[x.cpu().numpy().astype(np.float32).tobytes()], **PARAMS)
            draw = torch.multinomial(torch.as_tensor(probs), n, replacement=True).numpy()
            out.append(torch.as_tensor(np.where(support[draw], 10.0, -10.0), dtype=torch.float32)[:, None])
        return torch.stack(out)


@pytest.fixture
def truth_plugin(monkeypatch):
    spec = ModelSpec(name="true-distribution", description="samples the true distribution (test)",
                     factory=TrueDistributionModel, objective=(ObjectiveTerm("kl", "beta"),),
                     hyperparameters=(HyperParameter("beta", 1.0, "KL weight"),))
    install_fake_distribution(monkeypatch, "truth-plugin", {"truth_plugin": make_model_plugin_module(spec)})
    yield
    reset_plugins()


def test_a_model_sampling_the_true_distribution_scores_like_the_oracle(tmp_path, tiny_preset, truth_plugin):
    store = ResultsStore(str(tmp_path / "r.db"))
    requests = validation_requests(["true-distribution", "punet"], dataset_params=PARAMS, preset=tiny_preset,
                                   latent_dim=2, run_dir=tmp_path / "runs")
    requests[1] = check_request(replace(requests[1].request, hyperparameters=SMALL))
    report = validate(requests, store)
    truth, punet = report.models
    test_ids = [int(i) for i in report.test_ids]
    assert report.n_test == len(test_ids) == 8 and report.intrinsic_dimension == 3  # 2 blobs + the radius level
    # the oracle is computed on the run's test images with the evaluation's sample count (tiny preset: 4)
    expected = oracle_metrics(n_samples=4, indices=test_ids, **{**PARAMS, "seed": 0})
    assert {k: report.oracle[k] for k in expected} == expected
    # the oracle's own draws are true masks; its total variation is the floor of 4 draws per image
    assert report.oracle["nearest_true_iou"] == 1.0 and 0.2 < report.oracle["true_mask_tv"] < 0.9
    # a sampler of the true distribution: every sample IS a true mask, its TV near the oracle's floor
    assert truth.metrics["nearest_true_iou"] == pytest.approx(1.0, abs=1e-12)
    assert truth.metrics["true_mask_tv"] == pytest.approx(report.oracle["true_mask_tv"], abs=0.15)
    assert punet.metrics["nearest_true_iou"] < 0.95 and 0.0 <= punet.metrics["reconstruction_iou"] <= 1.0
    # other random draws than the oracle's, same distribution: EWD and GED agree within sampling noise
    assert truth.metrics["ewd"] == pytest.approx(report.oracle["ewd"], abs=0.08)
    assert truth.metrics["ged"] == pytest.approx(report.oracle["ged"], abs=0.08)
    assert truth.metrics["sample_diversity"] == pytest.approx(report.oracle["diversity"], abs=0.08)
    # the ratios and gaps are model / oracle and model - oracle
    for m in report.models:
        assert m.ewd_ratio == pytest.approx(m.metrics["ewd"] / report.oracle["ewd"])
        assert m.ged_gap == pytest.approx(m.metrics["ged"] - report.oracle["ged"])
    # one training epoch of a tiny punet is far from the truth
    assert punet.metrics["ewd"] > truth.metrics["ewd"] + 0.1
    # paired tests on the per-image EWD, GED and ER between the two models
    assert [(c.a, c.b, c.metric) for c in report.comparisons] == [
        ("true-distribution", "punet (convs_per_block=1, filters=4,8)", m) for m in ("ewd", "ged", "er")]
    assert all(c.n_images == 8 and 0 < c.p_value <= 1 and c.p_holm == c.p_value for c in report.comparisons)


def test_validate_command_writes_the_report_and_reuses_stored_folds(tmp_path, tiny_preset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["validate", "--model", "punet", "--model", "spunet", "--preset", tiny_preset, "-d", "2",
            "--storage", str(tmp_path / "r.db"), "--output", str(tmp_path / "out"), "--format", "json",
            *[f"--dataset-param={k}={v}" for k, v in PARAMS.items()]]
    first = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert set(report) == {"dataset", "dataset_params", "preset", "protocol_overrides", "protocol", "latent_dim",
                           "seed", "n_test", "test_ids", "intrinsic_dimension", "oracle", "models", "best_model",
                           "comparisons"}
    assert report["protocol_overrides"] == {"epochs": 1} and report["protocol"]["epochs"] == 1
    assert report["dataset"] == "synthetic" and report["dataset_params"] == {**PARAMS, "seed": 0}
    assert {"ged", "hm_iou", "ewd", "ged_expected", "diversity"} <= set(report["oracle"])
    assert [m["model"] for m in report["models"]] == ["punet", "spunet"]
    for m in report["models"]:
        assert set(m) == {"model", "label", "folds", "metrics", "latent_dim", "latent_size", "ewd_ratio",
                          "ged_ratio", "ewd_gap", "ged_gap", "train_seconds"}
        assert m["latent_dim"] == m["latent_size"] == 2
        assert m["folds"] == [0] and 1.0 <= m["metrics"]["er"] <= 2.0
        assert m["ewd_ratio"] == pytest.approx(m["metrics"]["ewd"] / report["oracle"]["ewd"])
    assert report["best_model"] == min(report["models"], key=lambda m: m["metrics"]["ewd"])["label"]
    assert {c["metric"] for c in report["comparisons"]} == {"ewd", "ged", "er"}
    folder = next((tmp_path / "out").iterdir())
    assert json.loads((folder / "validation.json").read_text()) == report
    assert (folder / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "validation.pdf").read_bytes()[:4] == b"%PDF"
    assert len(ResultsStore(str(tmp_path / "r.db")).records()) == 2
    again = CliRunner().invoke(app, [*args, "--epochs", "1", "--format", "markdown"])
    assert again.exit_code == 0 and "already in the results store" in again.stderr
    assert len(ResultsStore(str(tmp_path / "r.db")).records()) == 2
    assert "| punet |" in again.stdout and "| spunet |" in again.stdout
    table = CliRunner().invoke(app, [*args, "--epochs", "1", "--format", "table"])
    assert table.exit_code == 0, table.output
    assert f"preset {tiny_preset} (epochs=1)" in table.stdout  # the override is part of what is shown
    assert "punet" in table.stdout and "spunet" in table.stdout and "…" not in table.stdout  # nothing cut off


def test_baselines_validate_with_their_reference_d_and_dashes_where_a_metric_does_not_apply(tmp_path, tiny_preset):
    """ssn has no latent prior (no ER, no posterior reconstruction), phiseg / hpunet run at their reference d
    (2 and 1 channels per level) and their ER spans every level: no ER test pairs any of them with punet."""
    store = ResultsStore(str(tmp_path / "r.db"))
    requests = validation_requests(["ssn", "phiseg", "hpunet", "punet"], dataset_params=PARAMS,
                                   preset=tiny_preset, run_dir=tmp_path / "runs")
    assert [c.request.latent_dims for c in requests] == [(6,), (2,), (1,), (6,)]
    small = {"ssn": SMALL, "phiseg": {"filters": "4,4,4,4"}, "hpunet": {"filters": "4,4,4", "blocks_per_level": 1},
             "punet": SMALL}
    requests = [check_request(replace(c.request, hyperparameters=small[c.request.model])) for c in requests]
    report = validate(requests, store)
    ssn, phiseg, hpunet, punet = report.models
    assert report.latent_dim is None  # d differs per model
    assert (ssn.latent_dim, phiseg.latent_dim, hpunet.latent_dim) == (6, 2, 1)
    assert np.isnan(ssn.metrics["er"]) and np.isnan(ssn.metrics["reconstruction_iou"])
    assert 0 <= phiseg.metrics["reconstruction_iou"] <= 1 and 0 <= punet.metrics["reconstruction_iou"] <= 1
    assert phiseg.latent_size > phiseg.latent_dim and not phiseg.single_level and punet.single_level
    pairs = {(c.a.split()[0], c.b.split()[0], c.metric) for c in report.comparisons}
    assert len([p for p in pairs if p[2] in ("ewd", "ged")]) == 2 * 6  # every pair of the 4 models
    assert not [p for p in pairs if p[2] == "er"]  # no two models share a latent size here
    from probseg_bench.cli.validate import _markdown

    text = _markdown(report)
    ssn_row = next(line for line in text.splitlines() if line.startswith("| ssn"))
    assert ssn_row.count("| – |") == 2 and ssn_row.endswith("| – |")  # ER and reconstruction IoU
    assert "†" in next(line for line in text.splitlines() if line.startswith("| phiseg"))
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths[0].read_text())["latent_dim"] is None


@pytest.mark.parametrize(("args", "expected"), [
    (["--dataset", "lidc-sample"], "has no known true distribution"),
    (["--model", "punet", "--model", "punet"], "given twice"),
    (["--model", "pnuet"], "did you mean 'punet'"),
    (["--format", "xml"], "--format"),
    (["--fold", "7"], "--fold: expected values in 0..2, got 7"),
    (["--latent-dim", "0"], "--latent-dim: expected integers >= 1"),
    (["--seed", "-2"], "--seed: expected an integer >= 0"),
])
def test_bad_validate_arguments_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, expected):
    import sys

    from probseg_bench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["probseg-bench", "validate", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "probseg-results.db").exists()


def test_synthetic_declares_its_known_distribution():
    truth = get_plugins().datasets.get("synthetic").known_distribution
    assert truth is not None and dict(truth.validation_params) == {
        "size": 64, "n_images": 160, "annotators": 4, "structures": 3, "levels": 3}
    assert truth.intrinsic_dimension(**truth.validation_params) == 4
