"""The field's LIDC protocols (CCDM, ICCV 2023, Section 4.1): the v1 split as the PHiSeg code draws it (seeded as
MoSE's copy; checked against scikit-learn itself), the v2 crops' own folders, training runs on a fixed split,
GED_n / HM-IoU_n from one sampling pass, and the counts per split on real-format fixtures."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probseg_bench.cli import app
from probseg_bench.data.splits import dataset_split, grouped_splits, phiseg_split, protocol_splits
from probseg_bench.errors import ProbsegError
from probseg_bench.experiment import Experiment, fold_seed
from probseg_bench.presets import PRESETS
from probseg_bench.request import RunRequest, check_request
from probseg_bench.results import ResultsStore

SERIES_SLICES = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]  # 20 series, 97 slices


def knegt_pickle(path: Path, size: int = 32, slices: list[int] = SERIES_SLICES) -> Path:
    """The PU-Net port's pickle layout: {key: {image float [H, W] in [0, 1], masks [4 x uint8 [H, W]],
    series_uid}}, series i holding slices[i] slices."""
    rng = np.random.default_rng(0)
    entries = {}
    for s, n in enumerate(slices):
        for k in range(n):
            masks = []
            for a in range(4):
                m = np.zeros((size, size), np.uint8)
                m[size // 2 - 3 : size // 2 + 2 + a % 2, size // 2 - 3 : size // 2 + 3] = 1
                masks.append(m)
            entries[f"s{s:02d}_{k}.png"] = {"image": rng.random((size, size), dtype=np.float32), "masks": masks,
                                            "series_uid": f"1.3.6.1.4.1.14519.5.2.1.{1000 + 37 * s}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entries))
    return path


def expected_sklearn_split(groups: np.ndarray, seed: int):
    sklearn = pytest.importorskip("sklearn.model_selection", reason="scikit-learn (the test extra) checks the split")
    unique = np.unique(groups)
    train_val, test = sklearn.train_test_split(unique, test_size=0.2, random_state=seed)
    train, val = sklearn.train_test_split(train_val, test_size=0.2, random_state=seed)
    return set(train), set(val), set(test)


# -------------------------------------------------------------------------------------------------- the splits
@pytest.mark.parametrize("n_groups", [3, 7, 20, 875])
@pytest.mark.parametrize("seed", [0, 5])
def test_phiseg_split_is_scikit_learns_train_test_split_twice(n_groups, seed):
    """MoSE's data/preprocess/lidc_data_loader.py: train_test_split(np.unique(series_uid), test_size=0.2,
    random_state=0), then the same on the rest; scikit-learn itself is the independent computation."""
    rng = np.random.default_rng(n_groups)
    groups = np.array([f"uid.{g}" for g in rng.integers(0, n_groups, 5 * n_groups)])
    groups[:n_groups] = [f"uid.{g}" for g in range(n_groups)]  # every group present
    splits = phiseg_split(groups, runs=3, seed=seed)
    train, val, test = expected_sklearn_split(groups, seed)
    assert set(groups[splits.train]) == train and set(groups[splits.folds[0]]) == val
    assert set(groups[splits.test]) == test
    assert len(splits.folds) == 3 and all(np.array_equal(f, splits.folds[0]) for f in splits.folds)
    assert len(test) == math.ceil(0.2 * n_groups) and len(val) == math.ceil(0.2 * (n_groups - len(test)))
    assert sorted(np.concatenate([splits.train, splits.folds[0], splits.test]).tolist()) == list(range(groups.size))


def test_phiseg_split_of_the_875_series_of_the_knegt_pickle_is_64_16_20():
    groups = np.array([f"series.{i:04d}" for i in range(875)])
    splits = phiseg_split(groups)
    assert (len(splits.train), len(splits.folds[0]), len(splits.test)) == (560, 140, 175)


def test_phiseg_split_refuses_too_few_groups_and_is_deterministic():
    with pytest.raises(ProbsegError, match="2 distinct groups cannot fill"):
        phiseg_split(np.array(["a", "b", "a"]))
    groups = np.array([str(i % 11) for i in range(40)])
    assert phiseg_split(groups, seed=1).split_hash == phiseg_split(groups, seed=1).split_hash
    assert phiseg_split(groups, seed=1).split_hash != phiseg_split(groups, seed=2).split_hash


def test_dataset_split_reads_the_split_column_and_refuses_what_is_not_a_split():
    assignment = np.array(["train", "train", "val", "test", "train", "test"])
    groups = np.array(["p1", "p1", "p2", "p3", "p4", "p5"])
    splits = dataset_split(assignment, groups, runs=2)
    assert splits.train.tolist() == [0, 1, 4] and [f.tolist() for f in splits.folds] == [[2], [2]]
    assert splits.test.tolist() == [3, 5] and splits.train_val(1)[0].tolist() == [0, 1, 4]
    with pytest.raises(ProbsegError, match=r"crops: metadata column 'split' holds 'extra'"):
        dataset_split(np.array(["train", "val", "test", "extra"]), np.array(list("abcd")), source="crops")
    with pytest.raises(ProbsegError, match="no val item"):
        dataset_split(np.array(["train", "test"]), np.array(["a", "b"]))
    with pytest.raises(ProbsegError, match="group 'p1' has train and test items"):
        dataset_split(np.array(["train", "val", "test"]), np.array(["p1", "p2", "p1"]))
    with pytest.raises(ProbsegError, match="dataset 'lidc-sample': the preset uses the dataset's own"):
        protocol_splits(groups, {}, "dataset", 3, 0.2, 0, source="dataset 'lidc-sample'")
    with pytest.raises(ProbsegError, match="split procedure 'kfold'"):
        protocol_splits(groups, {}, "kfold", 3, 0.2, 0)


def test_cross_validation_split_and_its_hash_are_unchanged():
    """The paper protocol's split (and so every stored record's split hash) is what it was before fixed splits."""
    groups = np.array([f"case{i}" for i in range(28)])
    cv = grouped_splits(groups, 3, 0.2, 0)
    assert cv.split_hash == "706ef2493c1d266b"  # as computed before fixed splits existed
    assert protocol_splits(groups, {}, "cv", 3, 0.2, 0).split_hash == cv.split_hash
    assert protocol_splits(groups, {}, "cv", 3, 0.2, 7, split_seed=0).split_hash == cv.split_hash  # preset's wins
    assert cv.train is None and cv.train_items == pytest.approx(np.mean([len(cv.train_val(k)[0]) for k in range(3)]))


# ------------------------------------------------------------------------------------------------- the presets
def test_literature_presets_and_the_stored_settings():
    v1, v2, paper, quick = (PRESETS[k] for k in ("lidc-v1", "lidc-v2", "paper", "quick"))
    assert (v1.split, v1.split_seed, v1.sample_counts, v1.n_folds) == ("phiseg", 0, (16, 32, 100), 3)
    assert (v2.split, v2.split_seed, v2.sample_counts, v2.n_folds) == ("dataset", None, (16, 32, 100), 3)
    assert v1.samples_drawn == 100 and paper.samples_drawn == 16 and v1.fixed_split and not paper.fixed_split
    for name in ("lr", "weight_decay", "batch_size", "augmentation", "epochs", "n_eval_samples"):
        assert getattr(v1, name) == getattr(paper, name) == getattr(v2, name)  # training as the paper preset
    from probseg_bench.api import ProtocolDefaults

    lidc = ProtocolDefaults(epochs=200, warmup_epochs=5)
    stored = paper.settings(lidc, 100.0)
    assert not {"split", "split_seed", "sample_counts"} & set(stored)  # defaults left out: old hashes hold
    assert quick.settings(lidc, 100.0, declared={"filters", "beta"})["model_defaults"] == {"filters": "16,32,64,96"}
    assert v1.settings(lidc, 100.0)["split"] == "phiseg" and v1.settings(lidc, 100.0)["sample_counts"] == (16, 32, 100)


def test_v1_on_a_knegt_pickle_pins_the_counts_and_trains_runs_on_one_split(tmp_path, monkeypatch):
    """20 series (97 slices) in the pickle layout: 4 test series, 4 validation series, 12 training series; the
    slice counts follow the series (pinned, and checked with scikit-learn); the 3 folds are 3 training runs
    with their own seeds on the same training and validation items."""
    knegt_pickle(tmp_path / "pickles" / "data_lidc.pickle")
    exp = Experiment.prepare(check_request(RunRequest(model="punet", dataset="lidc", preset="lidc-v1",
                                                      data_root=tmp_path / "pickles", trust_pickle=True)))
    s = exp.splits
    groups = exp.data.groups
    counts = (len(set(groups[s.train])), len(set(groups[s.folds[0]])), len(set(groups[s.test])))
    assert counts == (12, 4, 4)
    assert (len(s.train), len(s.folds[0]), len(s.test)) == (58, 21, 18)
    train, val, test = expected_sklearn_split(groups, 0)
    assert set(groups[s.test]) == test and set(groups[s.folds[0]]) == val and set(groups[s.train]) == train
    assert exp.folds == (0, 1, 2) and all(np.array_equal(exp.splits.train_val(k)[0], s.train) for k in range(3))
    assert len({fold_seed(0, 6, k) for k in range(3)}) == 3  # each run its own seed
    assert exp.train_items == 58
    again = Experiment.prepare(check_request(RunRequest(model="ssn", dataset="lidc", preset="lidc-v1", seed=4,
                                          data_root=tmp_path / "pickles", trust_pickle=True)))
    assert again.splits.split_hash == s.split_hash  # the split seed is the preset's, not the run's


def write_crop_folders(root: Path, patients: dict[str, int]) -> None:
    """HPU-Net's lidc_crops layout: <root>/<split>/images/<patient>/z-<z>_c<c>.png + gt/<patient>/..._l<a>.png,
    180 x 180, annotators 1..4; ``patients``: "split/patient" -> number of crops."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for key, n in patients.items():
        split, patient = key.split("/")
        for c in range(n):
            stem = f"z-{100 + c}.0_c{c}"
            for kind in ("images", "gt"):
                (root / split / kind / patient).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (180, 180), dtype=np.uint8)).save(
                root / split / "images" / patient / f"{stem}.png")
            for a in range(1, 5):
                mask = np.zeros((180, 180), np.uint8)
                mask[84 : 90 + a, 86:94] = 255
                Image.fromarray(mask).save(root / split / "gt" / patient / f"{stem}_l{a}.png")


V2_FIXTURE = {"train/LIDC-IDRI-0001": 3, "train/LIDC-IDRI-0002": 2, "train/LIDC-IDRI-0003": 2,
              "train/LIDC-IDRI-0004": 1, "val/LIDC-IDRI-0005": 2, "val/LIDC-IDRI-0006": 1,
              "test/LIDC-IDRI-0007": 2, "test/LIDC-IDRI-0008": 1}


def test_v2_uses_the_crops_folders_and_pins_the_counts(tmp_path):
    write_crop_folders(tmp_path / "crops", V2_FIXTURE)
    exp = Experiment.prepare(check_request(RunRequest(model="punet", dataset="lidc-crops", preset="lidc-v2",
                                        data_root=tmp_path / "crops")))
    s = exp.splits
    assert (len(s.train), len(s.folds[0]), len(s.test)) == (8, 3, 3)
    assert set(exp.data.metadata["split"][s.test]) == {"test"} and set(exp.data.groups[s.test]) == {
        "LIDC-IDRI-0007", "LIDC-IDRI-0008"}
    with pytest.raises(ProbsegError, match="dataset 'lidc-sample': the preset uses the dataset's own"):
        Experiment.prepare(check_request(RunRequest(model="punet", dataset="lidc-sample", preset="lidc-v2")))


# ------------------------------------------------------------------------------------------ n samples per image
class FixedSamples(torch.nn.Module):
    """Samples by hand: sample i of every image is foreground in the top-left i x i corner (i = 0..n-1)."""

    latent_dim = 0

    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        b, _, h, w = image.shape
        out = torch.full((b, n, 1, h, w), -5.0)
        for i in range(n):
            out[:, i, 0, :i, :i] = 5.0
        return out

    def prior(self, image: torch.Tensor) -> None:
        return None


def test_sample_counts_score_the_first_n_of_one_pass():
    from probseg_bench.api import MultiRaterData
    from probseg_bench.evaluation import evaluate
    from probseg_bench.metrics import generalized_energy_distance, hungarian_matched_iou

    masks = np.zeros((2, 4, 12, 12), np.uint8)
    masks[:, :, :3, :3] = 1
    masks[1, 2:] = 0
    data = MultiRaterData(np.zeros((2, 1, 12, 12), np.float32), masks, np.array(["a", "b"]))
    plain = evaluate(FixedSamples(), data, torch.device("cpu"), n_samples=4)
    assert plain.samples_drawn == 4 and not any(k.startswith("ged_") for k in plain.per_image)
    result = evaluate(FixedSamples(), data, torch.device("cpu"), n_samples=4, sample_counts=(4, 8, 12))
    assert result.samples_drawn == 12
    assert {k for k in result.per_image if k[-1].isdigit()} == {f"{m}_{n}" for m in ("ged", "hm_iou")
                                                               for n in (4, 8, 12)}
    assert result.per_image["ged"] == plain.per_image["ged"] == result.per_image["ged_4"]
    samples = FixedSamples().sample(torch.zeros(2, 1, 12, 12), 12)[:, :, 0] > 0
    for n in (4, 8, 12):
        for i in range(2):
            assert result.per_image[f"ged_{n}"][i] == pytest.approx(
                generalized_energy_distance(samples[i, :n], masks[i]), abs=1e-6)
            assert result.per_image[f"hm_iou_{n}"][i] == pytest.approx(
                hungarian_matched_iou(samples[i, :n], masks[i]), abs=1e-6)
    assert result.per_image["ged_4"] != result.per_image["ged_12"]


def test_catalogue_knows_ged_and_hm_iou_at_n():
    from probseg_bench.metrics.catalogue import (
        Metric,
        find_metric,
        get_metric,
        register_metric,
        sample_count_metric,
        sample_count_metrics,
    )

    m = get_metric("ged_100")
    assert (m.label, m.higher_is_better, m.ranked, m.samples, m.arrow) == ("GED_100", False, True, 100, "↓")
    assert find_metric("hm_iou_32").higher_is_better and sample_count_metric("ewd_16") is None
    assert find_metric("ged_0") is None and find_metric("ged_016") is None
    assert [x.name for x in sample_count_metrics(["hm_iou_16", "ged_100", "ged_16", "ewd", "ged_32"])] == [
        "ged_16", "ged_32", "ged_100", "hm_iou_16"]
    with pytest.raises(ProbsegError, match="ged_<n> / hm_iou_<n>"):
        get_metric("ged_x")
    with pytest.raises(ProbsegError, match="already in the catalogue"):
        register_metric(Metric("ged_16", "x", lambda b: b, higher_is_better=False))


# --------------------------------------------------------------------------------- the documented commands
@pytest.mark.parametrize("split", ["v1", "v2"])
def test_documented_literature_grid_commands_end_to_end(split, tmp_path, monkeypatch):
    """benchmarks/lidc_v{1,2}_grid.toml as the documentation (docs/protocol.md) runs it, on real-format fixtures
    where the grid expects the data (../data next to benchmarks/), trimmed to punet and ssn and one training run;
    the presets shortened to one epoch (an --epochs override would make the rows variants, never paired with a
    published value). The rows pair with the literature's values of their split at the same n."""
    import json
    import shlex
    import shutil
    from dataclasses import replace

    repo = Path(__file__).resolve().parents[1]
    grid_name = f"lidc_{split}_grid.toml"
    command = f"probseg-bench run --config benchmarks/{grid_name} --device cuda --reference literature"
    assert command in (repo / "docs" / "protocol.md").read_text()
    assert command in (repo / "benchmarks" / grid_name).read_text()
    (tmp_path / "benchmarks").mkdir()
    text = (repo / "benchmarks" / grid_name).read_text()
    models_line = next(line for line in text.splitlines() if line.startswith("models = "))
    assert all(f'"{m}"' in models_line for m in ("punet", "phiseg", "hpunet", "ssn", "ccdm"))
    text = text.replace(models_line, 'models = ["punet", "ssn"]\nfolds = [0]')
    (tmp_path / "benchmarks" / grid_name).write_text(text)
    if split == "v1":
        source = knegt_pickle(tmp_path / "pickles" / "data_lidc.pickle", size=128, slices=[2] * 10)
        done = CliRunner().invoke(app, ["data", "convert", "lidc", "--data-root", str(source.parent), "--trust-pickle",
                                        "--output", str(tmp_path / "data" / "lidc-converted")])
        assert done.exit_code == 0, done.output
    else:
        write_crop_folders(tmp_path / "data" / "lidc_crops", V2_FIXTURE)
    preset = f"lidc-{split}"
    monkeypatch.setitem(PRESETS, preset, replace(PRESETS[preset], epochs=1, batch_size=8))
    monkeypatch.chdir(tmp_path)
    args = shlex.split(command)[1:]
    args[args.index("--device") + 1] = "cpu"
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    records = ResultsStore().records()
    assert {(r.model, r.preset, r.variant) for r in records} == {("punet", preset, ""), ("ssn", preset, "")}
    assert all(r.timings["samples_per_image"] == 100 and "ged_100" in r.metrics for r in records)
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    published = {"v1": {"ged_16": 0.310, "ged_32": 0.303, "ged_100": 0.252, "hm_iou_16": 0.552, "hm_iou_32": 0.548},
                 "v2": {"ged_16": 0.320, "ged_100": 0.252, "hm_iou_16": 0.500}}[split]
    punet = rows["punet"]
    assert punet["reference"]["name"] == "literature"
    for metric, value in published.items():
        assert punet["reference"][f"{metric}_mean"] == value
        assert punet[f"delta_{metric}"] == pytest.approx(punet[f"{metric}_mean"] - value)
    if split == "v2":  # no published SSN value on v2
        assert rows["ssn"]["reference"] is None and rows["ssn"]["delta_ged_16"] is None
    shutil.rmtree(tmp_path / "probseg-runs")


def test_the_plan_line_calls_the_folds_of_a_fixed_split_training_runs():
    from probseg_bench.cli.progress import describe_run

    request = RunRequest(model="punet", dataset="lidc", preset="lidc-v1")
    line = describe_run(request, PRESETS["lidc-v1"], (0, 1, 2), "200 epochs", "cuda", "sqlite:///r.db")
    assert "folds 0 1 2 (training runs on the fixed phiseg split, each with its own seed)" in line
    assert "folds 0 1 2, 400 epochs" in describe_run(replace_preset(request), PRESETS["quick"], (0, 1, 2),
                                                     "400 epochs", "cpu", "sqlite:///r.db")


def replace_preset(request: RunRequest) -> RunRequest:
    from dataclasses import replace

    return replace(request, preset="quick", dataset="lidc-sample")


def test_epoch_counts_read_as_english():
    from probseg_bench.cli.progress import epochs_text

    assert (epochs_text(1), epochs_text(2), epochs_text(200)) == ("1 epoch", "2 epochs", "200 epochs")
