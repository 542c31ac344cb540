"""The synthetic dataset: determinism, shapes, the exact distribution of its annotations, the oracle floor, and
one end-to-end run of the protocol on it."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy.stats import chisquare

from probseg_bench.errors import ProbsegError
from probseg_bench.metrics import generalized_energy_distance, hungarian_matched_iou, iou_matrix
from probseg_datasets.synthetic import (
    SPECS,
    SYNTHETIC,
    expected_distance,
    generate_image,
    intrinsic_dimension,
    load_synthetic,
    oracle_metrics,
    true_distribution,
)


def support_index(masks: np.ndarray, support: np.ndarray) -> np.ndarray:
    """For each mask [A, H, W] the index of the support mask [M, H, W] it equals exactly (-1: none)."""
    equal = (masks[:, None].astype(bool) == support[None]).reshape(len(masks), len(support), -1).all(-1)
    assert (equal.sum(1) <= 1).all(), "support masks must be distinct"
    return np.where(equal.any(1), equal.argmax(1), -1)


def test_same_seed_gives_identical_data_and_another_seed_differs():
    a = load_synthetic(n_images=8, size=32, seed=3)
    b = load_synthetic(n_images=8, size=32, seed=3)
    c = load_synthetic(n_images=8, size=32, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.masks, c.masks)


def test_shapes_for_odd_size_and_annotator_count_and_groups_of_four():
    data = load_synthetic(n_images=9, size=41, annotators=7, structures=2, levels=2, seed=1)
    assert data.images.shape == (9, 1, 41, 41) and data.images.dtype == np.float32
    assert data.masks.shape == (9, 7, 41, 41) and data.masks.dtype == np.uint8
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert set(np.unique(data.masks)) == {0, 1}
    assert list(data.groups) == ["p0000"] * 4 + ["p0001"] * 4 + ["p0002"]
    assert list(data.metadata["index"]) == list(range(9)) and data.metadata["case"][8] == "img00008"
    # image i does not depend on n_images or on the number of annotators; annotator a neither
    more = load_synthetic(n_images=12, size=41, annotators=3, structures=2, levels=2, seed=1)
    np.testing.assert_array_equal(more.images[:9], data.images)
    np.testing.assert_array_equal(more.masks[:9], data.masks[:, :3])
    image, masks = generate_image(5, n_images=9, size=41, annotators=7, structures=2, levels=2, seed=1)
    np.testing.assert_array_equal(image, data.images[5, 0])
    np.testing.assert_array_equal(masks, data.masks[5])


@pytest.mark.parametrize(("size", "structures", "levels"), [(32, 3, 3), (41, 0, 4), (48, 6, 1), (64, 2, 2)])
def test_every_annotation_is_a_support_mask_of_its_image(size, structures, levels):
    params = dict(n_images=6, size=size, annotators=5, structures=structures, levels=levels, seed=7)
    data = load_synthetic(**params)
    for i in range(6):
        support, probs = true_distribution(i, **params)
        assert support.dtype == bool and support.shape == (levels * 2**structures, size, size)
        assert probs.dtype == np.float64 and (probs > 0).all()
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert (np.diff(probs) <= 0).all()  # most probable first
        assert (support_index(data.masks[i], support) >= 0).all()


def test_empirical_frequencies_match_the_probabilities():
    """2000 annotators of one image: chi-square goodness of fit over the 8 configurations (smallest expected
    count >= 20); the data are seeded, so the test is deterministic (p = the value printed on failure)."""
    params = dict(n_images=1, size=32, annotators=2000, structures=2, levels=2, seed=0)
    data = load_synthetic(**params)
    support, probs = true_distribution(0, **params)
    index = support_index(data.masks[0], support)
    assert (index >= 0).all()
    counts = np.bincount(index, minlength=len(probs))
    assert (2000 * probs).min() >= 20
    result = chisquare(counts, 2000 * probs)
    assert result.pvalue > 1e-3, (counts, 2000 * probs, result)
    # and every frequency within 4 standard errors of its probability
    assert (np.abs(counts / 2000 - probs) <= 4 * np.sqrt(probs * (1 - probs) / 2000)).all()


def test_ged_of_the_true_distribution_against_itself_matches_the_exact_value():
    """D = sum_ab q_a q_b (1 - IoU) from the support; the squared GED (V-statistic) of n and m independent draws
    has expectation D (1/n + 1/m). Checked (a) with 2000 vs 2000 samples: cross term within 0.01 of D and GED
    within 0.01 of D / 1000, (b) with 500 independent (16 vs 4) draws: mean GED within 4 standard errors."""
    params = dict(n_images=3, size=32, structures=3, levels=3, seed=2)
    support, probs = true_distribution(1, **params)
    d = expected_distance(support, probs)
    assert 0.05 < d < 0.6
    rng = np.random.default_rng(0)
    s = support[rng.choice(len(probs), 2000, p=probs)]
    y = support[rng.choice(len(probs), 2000, p=probs)]
    assert float((1 - iou_matrix(s, y)).mean()) == pytest.approx(d, abs=0.01)
    assert generalized_energy_distance(s, y) == pytest.approx(d * (2 / 2000), abs=0.01)
    batch_s = support[rng.choice(len(probs), (500, 16), p=probs)]
    batch_y = support[rng.choice(len(probs), (500, 4), p=probs)]
    ged = generalized_energy_distance(batch_s, batch_y)
    se = ged.std(ddof=1) / np.sqrt(len(ged))
    assert abs(ged.mean() - d * (1 / 16 + 1 / 4)) < 4 * se


def test_oracle_metrics_equal_the_metrics_on_true_samples():
    """oracle_metrics recomputed here with the public metric functions on the masks (same draws), and its GED
    within 4 standard errors (over images) of the exact expectation ged_expected."""
    params = dict(n_images=40, size=32, annotators=4, structures=3, levels=3, seed=5)
    oracle = oracle_metrics(n_samples=16, **params)
    data = load_synthetic(**params)
    ged, hm = [], []
    for i in range(40):
        support, probs = true_distribution(i, **params)
        draw = np.random.default_rng([5, i, 3]).choice(len(probs), 16, p=probs)
        ged.append(generalized_energy_distance(support[draw], data.masks[i]))
        hm.append(hungarian_matched_iou(support[draw], data.masks[i]))
    assert oracle["ged"] == pytest.approx(np.mean(ged), abs=1e-12)
    assert oracle["hm_iou"] == pytest.approx(np.mean(hm), abs=1e-12)
    assert oracle["hm_iou"] + oracle["ewd"] == pytest.approx(1.0)
    assert oracle["n_images"] == 40 and 0.0 < oracle["ged"] < 0.5 and 0.5 < oracle["hm_iou"] < 1.0
    se = np.std(ged, ddof=1) / np.sqrt(40)
    assert abs(oracle["ged"] - oracle["ged_expected"]) < 4 * se
    sub = oracle_metrics(n_samples=16, indices=[3, 7], **params)
    assert sub["ged"] == pytest.approx((ged[3] + ged[7]) / 2, abs=1e-12)
    # diversity: the exact expected 1 - IoU between two true draws, mean over the images
    exact = [expected_distance(*true_distribution(i, **params)) for i in range(40)]
    assert oracle["diversity"] == pytest.approx(np.mean(exact), abs=1e-12)
    assert oracle["ged_expected"] == pytest.approx(oracle["diversity"] * (1 / 16 + 1 / 4), abs=1e-12)


def test_intrinsic_dimension():
    assert intrinsic_dimension(3, 3) == 4
    assert intrinsic_dimension(3, 1) == 3
    assert intrinsic_dimension(0, 2) == 1
    assert intrinsic_dimension(0, 1) == 0


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ProbsegError, match="takes no --data-root"):
        load_synthetic(tmp_path)
    with pytest.raises(ProbsegError, match=r"size must be in 32\.\.4096, got 16"):
        load_synthetic(size=16)
    with pytest.raises(ProbsegError, match=r"structures must be in 0\.\.6, got 7"):
        true_distribution(0, structures=7)
    with pytest.raises(ProbsegError, match=r"index must be in 0\.\.9, got 10"):
        true_distribution(10, n_images=10)
    with pytest.raises(ProbsegError, match="annotators must be an integer"):
        load_synthetic(annotators=2.5)
    with pytest.raises(ProbsegError, match="unknown parameter 'sizes'"):
        oracle_metrics(sizes=32)


def test_spec_declares_the_loader_parameters():
    assert SPECS == (SYNTHETIC,)
    signature = inspect.signature(load_synthetic).parameters
    for hp in SYNTHETIC.parameters:
        assert signature[hp.name].default == hp.default, hp.name
        assert hp.low is not None and hp.high is not None and hp.low <= hp.default <= hp.high
    assert [hp.name for hp in SYNTHETIC.parameters] == list(signature)[1:]
    assert SYNTHETIC.license and SYNTHETIC.citation


def test_default_dataset_shape_and_groups():
    data = load_synthetic()
    assert data.images.shape == (240, 1, 128, 128) and data.masks.shape == (240, 4, 128, 128)
    assert len(set(data.groups)) == 60


def test_protocol_runs_end_to_end_on_synthetic_data(tmp_path, tiny_preset):
    from probseg_bench.plugins import load_plugins
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import RunRequest, check_request
    from probseg_bench.results import ResultsStore

    plugins = load_plugins()
    plugins.datasets.set_provider("test", "test")
    if "synthetic" not in plugins.datasets.names():
        plugins.datasets.add(SYNTHETIC)
    request = RunRequest(
        model="punet", dataset="synthetic", latent_dims=(2,), folds=(0,), preset=tiny_preset,
        hyperparameters={"filters": "4,8", "convs_per_block": 1}, run_dir=tmp_path / "runs",
        dataset_params={"n_images": 40, "size": 32},
    )
    (record,) = run_protocol(check_request(request, plugins), ResultsStore(str(tmp_path / "r.db")))
    m = record.metrics
    assert len(record.test_ids) == 8  # 2 of the 10 groups of 4
    assert 0.0 <= m["hm_iou"] <= 1.0 and m["hm_iou"] + m["ewd"] == pytest.approx(1.0)
    assert 0.0 <= m["ged"] <= 2.0 and 1.0 <= m["er"] <= 2.0
