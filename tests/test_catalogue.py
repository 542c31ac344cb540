"""The metric catalogue (issue 17): each metric declared once, read by the evaluation, the leaderboard, compare, tune
and the CLI; a metric added through it (its function + one entry) shows up everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from probseg_bench.errors import ProbsegError
from probseg_bench.evaluation import image_metrics
from probseg_bench.leaderboard import build_leaderboard, render
from probseg_bench.metrics import catalogue
from probseg_bench.metrics.catalogue import Metric, register_metric
from probseg_bench.metrics.per_image import SampleBatch
from probseg_bench.results import FoldRecord, ResultsStore

SYNTH = ["--dataset", "synthetic", "--dataset-param", "n_images=40", "--dataset-param", "size=32", "-d", "2"]


def fg_fraction(batch: SampleBatch) -> torch.Tensor:
    """The toy metric's function: the expected fraction of foreground pixels of an image's samples (the mean of
    their pixels' foreground probabilities), [B]."""
    return batch.probabilities.flatten(2).mean(-1).mean(-1)


TOY = Metric("fg_fraction", "FG", fg_fraction, higher_is_better=True, ranked=True, objective=True,
             description="expected foreground fraction of the samples")


@pytest.fixture
def toy_metric(monkeypatch: pytest.MonkeyPatch) -> Metric:
    """The toy metric in the catalogue for one test (the catalogue is restored afterwards)."""
    monkeypatch.setattr(catalogue, "METRICS", dict(catalogue.METRICS))
    return register_metric(TOY)


def test_the_built_in_metrics_are_declared_once_in_the_record_order():
    assert catalogue.metric_names() == [
        "ged", "hm_iou", "ewd", "er", "sample_diversity", "annotator_diversity", "ncc", "entropy_pearson",
        "entropy_spearman", "ece", "mean_dice", "mean_iou", "empty_fraction"]
    assert [(m.name, m.label, m.arrow) for m in catalogue.ranked_metrics()] == [
        ("ged", "GED", "↓"), ("hm_iou", "HM-IoU", "↑"), ("ewd", "EWD", "↓"), ("er", "ER", "↑")]
    assert [m.name for m in catalogue.leaderboard_metrics()][4:] == ["sample_diversity", "annotator_diversity"]
    assert [m.objective_name for m in catalogue.objective_metrics()] == ["val_ged", "val_ewd"]
    for metric in catalogue.all_metrics():
        assert callable(metric.function()), metric.name  # every "module:function" resolves


def test_commands_that_read_records_import_no_torch_for_the_catalogue():
    code = ("import sys, probseg_bench.metrics.catalogue, probseg_bench.cli; "
            "print(sorted({'torch'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_metric_entry_is_checked_and_a_name_registered_once():
    with pytest.raises(ProbsegError, match="needs a direction"):
        Metric("toy", "T", fg_fraction, ranked=True)
    with pytest.raises(ProbsegError, match="needs a direction"):
        Metric("toy", "T", fg_fraction, objective=True)
    with pytest.raises(ProbsegError, match="lower-case letters"):
        Metric("Toy-1", "T", fg_fraction)
    with pytest.raises(ProbsegError, match="'module:function'"):
        Metric("toy", "T", "probseg_bench.metrics.per_image.ged")
    with pytest.raises(ProbsegError, match="cannot be imported"):
        Metric("toy", "T", "probseg_bench.metrics.per_image:nothing").function()
    with pytest.raises(ProbsegError, match="'ewd' is already in the catalogue"):
        register_metric(Metric("ewd", "EWD", fg_fraction))
    with pytest.raises(ProbsegError, match=r"unknown metric 'ewdd' \(did you mean 'ewd'\?\)"):
        catalogue.get_metric("ewdd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(catalogue, "METRICS", dict(catalogue.METRICS))
        register_metric(TOY)
        assert catalogue.metric_names()[-1] == "fg_fraction"
    assert "fg_fraction" not in catalogue.metric_names()  # removed with the monkeypatch


def batch(b: int = 3, n: int = 4, a: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, 8, 8, generator=g)
    annotations = (torch.rand(b, a, 8, 8, generator=g) > 0.5).to(torch.uint8)
    return logits, annotations, torch.rand(b, 3, generator=g) + 0.1


def test_the_evaluation_computes_every_catalogue_metric_per_image(toy_metric):
    logits, annotations, sigma = batch()
    values = image_metrics(logits, annotations, sigma)
    assert list(values) == catalogue.metric_names()
    assert values["fg_fraction"] == pytest.approx(torch.sigmoid(logits).mean((1, 2, 3)).numpy())
    np.testing.assert_array_equal(values["ewd"], 1.0 - values["hm_iou"])
    assert "er" not in image_metrics(logits, annotations)  # the prior's metric needs the prior's scale


def test_a_per_image_function_must_return_one_value_per_image(monkeypatch):
    monkeypatch.setattr(catalogue, "METRICS", dict(catalogue.METRICS))
    register_metric(Metric("scalar", "S", lambda b: b.samples.double().mean()))
    with pytest.raises(ProbsegError, match=r"metric 'scalar': .* expected 3 numbers \(one per image\)"):
        image_metrics(*batch())


def record(model: str, fold: int, ewd: float, toy: float | None, config: str) -> FoldRecord:
    metrics = {"ged": 2 * ewd, "hm_iou": 1 - ewd, "ewd": ewd, "er": 2.0}
    if toy is not None:
        metrics["fg_fraction"] = toy
    return FoldRecord(
        model=model, dataset="lidc-sample", latent_dim=6, fold=fold, seed=0, preset="paper", config_hash=config,
        split_hash="s", hyperparameters={}, protocol={"n_folds": 2}, metrics=metrics,
        per_image={"ewd": [ewd, ewd + 0.1], "fg_fraction": [toy or 0.0, toy or 0.0]}, test_ids=["a", "b"],
        timings={}, versions={},
    )


def test_the_leaderboard_ranks_a_catalogue_metric_in_its_direction(toy_metric):
    recs = [record("punet", f, 0.5, 0.2 + 0.1 * f, "p") for f in range(2)]
    recs += [record("spunet", f, 0.4, 0.1, "s") for f in range(2)]
    recs += [record("punet-nf", f, 0.6, None, "n") for f in range(2)]  # written before the metric existed
    rows = {r.model: r for r in build_leaderboard(recs)}
    assert rows["punet"].best == {"er", "fg_fraction"}  # higher is better; ER ties
    assert rows["spunet"].best == {"ged", "hm_iou", "ewd", "er"}
    assert rows["punet-nf"].best == {"er"}  # no value of the toy metric: never best
    obj = {o["model"]: o for o in json.loads(render(list(rows.values()), "json"))}
    assert obj["punet"]["fg_fraction_mean"] == pytest.approx(0.25) and obj["punet-nf"]["fg_fraction_mean"] is None
    keys = list(obj["punet"])
    assert keys.index("er_std") < keys.index("fg_fraction_mean") < keys.index("sample_diversity_mean")
    md = render(list(rows.values()), "markdown")
    assert "FG ↑" in md and "**0.250 ± 0.071**" in md
    p_rows = {r.model: r for r in build_leaderboard(recs, test_metric="fg_fraction")}
    assert p_rows["spunet"].p_vs_best is not None
    with pytest.raises(ProbsegError, match="--test-metric: expected one of ged, hm_iou, ewd, er, fg_fraction"):
        build_leaderboard(recs, test_metric="ncc")


def test_a_toy_metric_added_through_the_catalogue_reaches_records_leaderboard_compare_and_tune(
        toy_metric, run_main, tmp_path, monkeypatch, tiny_preset):
    import optuna

    monkeypatch.chdir(tmp_path)
    small = ["--hp", "filters=4,8", "--hp", "convs_per_block=1"]
    for extra in ([], ["--hp", "beta=10"]):  # two configurations on one split
        code, _, err = run_main("run", "--model", "punet", *SYNTH, *small, "--preset", tiny_preset, "--fold", "0",
                                *extra, "--format", "json")
        assert code == 0, err
        assert "  FG 0." in err or "  FG 1." in err  # run's per-fold line shows the ranked metrics

    # in the records: per image and as the mean over the test images
    records = ResultsStore().records()
    assert len(records) == 2
    for rec in records:
        values = rec.per_image["fg_fraction"]
        assert len(values) == len(rec.test_ids) and all(0.0 <= v <= 1.0 for v in values)
        assert rec.metrics["fg_fraction"] == pytest.approx(float(np.mean(values)))

    # a leaderboard column, ranked: the higher row is best and bold
    code, out, err = run_main("leaderboard", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    best = max(rows, key=lambda r: r["fg_fraction_mean"])
    assert "fg_fraction" in best["best"] and all("fg_fraction" not in r["best"] for r in rows if r is not best)
    code, out, _ = run_main("leaderboard", "--format", "markdown")
    header, *lines = [line for line in out.splitlines() if line.startswith("| ")]
    column = [c.strip() for c in header.split("|")].index("FG ↑")
    cells = {line.split("|")[2].strip(): line.split("|")[column].strip() for line in lines}
    assert cells[best["label"]] == f"**{best['fg_fraction_mean']:.3f}**"
    assert all(not c.startswith("**") for label, c in cells.items() if label != best["label"])
    code, out, err = run_main("leaderboard", "--test-metric", "fg_fraction", "--format", "json")
    assert code == 0, err

    # compare --metric
    a, b = (f"punet@{r['config'][:8]}" for r in rows)
    code, out, err = run_main("compare", a, b, "--dataset", "synthetic", "--metric", "fg_fraction", "--format",
                              "json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["metric"] == "fg_fraction" and result["n_images"] == len(records[0].test_ids)
    code, out, _ = run_main("compare", a, b, "--dataset", "synthetic", "--metric", "fg_fraction")
    assert "fg_fraction (higher is better)" in out

    # a tune objective, maximised
    tune = ["tune", "--model", "punet", *SYNTH, "--fix", "filters=4,8", "--fix", "convs_per_block=1", "--preset",
            tiny_preset, "--trials", "1", "--study", "toy"]
    code, out, err = run_main(*tune, "--objective", "val_fg_fraction")
    assert code == 0, err
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'probseg-results.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert 'objective = "val_fg_fraction"' in (tmp_path / "toy.toml").read_text()
    assert "best trial 0: val_fg_fraction" in out
    # the study keeps its direction: a minimised objective is refused in one line
    code, _, err = run_main(*tune, "--objective", "val_ewd")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("study 'toy' maximises val_fg_fraction, but --objective val_ewd is minimised: their trials cannot be "
            "ranked together; give --study NAME for a new study") in err
    code, _, err = run_main(*tune, "--objective", "val_fg_fractio")
    assert code == 2 and "did you mean 'val_fg_fraction'" in err


def test_tune_show_lists_a_maximised_study_best_first(capsys):
    import optuna

    from probseg_bench.cli.tune import _show

    study = optuna.create_study(direction="maximize")
    for value in (0.1, 0.5, 0.3):
        study.add_trial(optuna.trial.create_trial(params={"beta": value}, value=value,
                                                  distributions={"beta": optuna.distributions.FloatDistribution(0, 1)}))
    _show(study, top=3)
    out = capsys.readouterr().out
    assert out.index("0.5000") < out.index("0.3000") < out.index("0.1000")
