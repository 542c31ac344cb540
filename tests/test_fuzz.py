"""Property-based fuzzing (hypothesis) of the metrics and the dataset readers: every input either gives a correct
value (in its range, consistent with the other metrics) or raises ProbsegError with a message; never a crash deep
in torch / numpy, never a silent wrong number."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from probseg_bench.api import MultiRaterData
from probseg_bench.data.loading import dataset_warnings
from probseg_bench.errors import ProbsegError
from probseg_bench.metrics import (
    diversity,
    effective_rank,
    empirical_wasserstein_distance,
    generalized_energy_distance,
    hungarian_matched_iou,
    iou_matrix,
    pixelwise_metrics,
)
from probseg_datasets.folder import load_folder
from probseg_datasets.lidc import load_lidc

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [np.bool_, np.uint8, np.int32, np.float32, np.float64]


@st.composite
def mask_stacks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, bool]:
    """(samples, annotations, valid) with random sizes, dtypes, empty / full masks and sometimes a defect."""
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    fill = draw(st.sampled_from(["random", "empty", "full"]))
    s = rng.random((n, h, w)) < (0.5 if fill == "random" else (0.0 if fill == "empty" else 1.1))
    y = rng.random((m, h, w)) < 0.4
    s, y = s.astype(draw(st.sampled_from(DTYPES))), y.astype(draw(st.sampled_from(DTYPES)))
    defect = draw(st.sampled_from([None, None, None, "value", "nan", "shape", "ndim"]))
    if defect == "value" and s.dtype != np.bool_:
        s.flat[0] = 2
    elif defect == "nan" and s.dtype.kind == "f":
        s.flat[0] = np.nan
    elif defect == "shape":
        y = y[:, :, : max(w - 1, 0)] if w > 1 else y[:, :0]
    elif defect == "ndim":
        s = s[0]
    valid = (defect is None or (defect == "value" and s.dtype == np.bool_)
             or (defect == "nan" and s.dtype.kind != "f"))
    return s, y, valid


@SETTINGS
@given(mask_stacks())
def test_distribution_metrics_are_in_range_or_raise_our_error(case):
    s, y, valid = case
    if not valid:
        with pytest.raises(ProbsegError):
            generalized_energy_distance(s, y)
        with pytest.raises(ProbsegError):
            hungarian_matched_iou(s, y)
        return
    iou = iou_matrix(s, y)
    assert iou.shape == (s.shape[0], y.shape[0]) and np.all((0 <= iou) & (iou <= 1))
    ged = generalized_energy_distance(s, y)
    hm = hungarian_matched_iou(s, y)
    assert -1e-12 <= ged <= 2 + 1e-12 and 0 <= hm <= 1
    assert empirical_wasserstein_distance(s, y) == pytest.approx(1 - hm)
    div = diversity(s)
    assert (s.shape[0] == 1 and math.isnan(div)) or 0 <= div <= 1
    if np.array_equal(s.astype(bool), y.astype(bool)):
        assert ged == pytest.approx(0, abs=1e-12) and hm == 1


@st.composite
def probability_stacks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, bool]:
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    p = rng.random((n, h, w)).astype(draw(st.sampled_from([np.float32, np.float64])))
    if draw(st.booleans()):
        p = np.round(p)  # hard samples
    y = (rng.random((m, h, w)) < draw(st.sampled_from([0.0, 0.3, 1.0]))).astype(np.uint8)
    defect = draw(st.sampled_from([None, None, "nan", "above", "below"]))
    if defect:
        p.flat[0] = {"nan": np.nan, "above": 1.5, "below": -0.1}[defect]
    return p, y, defect is None


@SETTINGS
@given(probability_stacks())
def test_pixelwise_metrics_are_in_range_nan_when_undefined_or_raise(case):
    p, y, valid = case
    if not valid:
        with pytest.raises(ProbsegError, match="probabilities"):
            pixelwise_metrics(p, y)
        return
    out = pixelwise_metrics(p, y)
    for key in ("ncc", "entropy_pearson", "entropy_spearman"):
        assert math.isnan(out[key]) or -1 - 1e-9 <= out[key] <= 1 + 1e-9, key
    assert 0 <= out["ece"] <= 1 and 0 <= out["mean_dice"] <= 1 and 0 <= out["mean_iou"] <= 1
    assert out["mean_iou"] <= out["mean_dice"] + 1e-12  # IoU <= Dice always
    if y.mean(0).min() == y.mean(0).max():  # constant annotator entropy: the correlation is undefined
        assert math.isnan(out["entropy_pearson"]) and math.isnan(out["entropy_spearman"])


@SETTINGS
@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 2**31), st.sampled_from([None, "zero", "neg", "nan"]))
def test_effective_rank_is_within_1_and_d_or_raises(d, b, seed, defect):
    sigma = np.random.default_rng(seed).random((b, d)) + 1e-6
    if defect == "zero":
        sigma[0] = 0
    elif defect == "neg":
        sigma[0, 0] = -1
    elif defect == "nan":
        sigma[0, 0] = np.nan
    if defect:
        with pytest.raises(ProbsegError, match="sigma"):
            effective_rank(sigma)
        return
    er = effective_rank(sigma)
    assert np.all((er >= 1 - 1e-9) & (er <= d + 1e-9))


@st.composite
def folder_cases(draw: st.DrawFn) -> dict:
    return {
        "cases": draw(st.integers(1, 3)),
        "annotators": draw(st.integers(1, 3)),
        "height": draw(st.sampled_from([1, 7, 41, 97])),
        "width": draw(st.sampled_from([1, 9, 41, 130])),
        "dtype": draw(st.sampled_from(["uint8", "uint16", "float32"])),
        "mask_values": draw(st.sampled_from([(0, 1), (0, 255), (0, 2), (0, 0), (1, 1)])),
        "nan": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
    }


@SETTINGS
@given(folder_cases())
def test_folder_reader_loads_any_size_and_dtype_or_raises(tmp_path_factory, spec):
    root: Path = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(spec["seed"])
    shape = (spec["height"], spec["width"])
    for c in range(spec["cases"]):
        case = root / f"case{c}"
        case.mkdir()
        if spec["dtype"] == "float32":
            image = rng.random(shape).astype(np.float32)
            if spec["nan"]:
                image[0, 0] = np.nan
            np.save(case / "image.npy", image)
        else:
            top = 255 if spec["dtype"] == "uint8" else 65535
            image = rng.integers(0, top, shape).astype(spec["dtype"])
            Image.fromarray(image).save(case / "image.png")
        for a in range(spec["annotators"]):
            lo, hi = spec["mask_values"]
            mask = np.where(rng.random(shape) < 0.5, lo, hi).astype(np.uint8)
            mask.flat[0] = hi  # a 1 x 1 mask drawn all lo would make (0, 2) a valid mask
            Image.fromarray(mask).save(case / f"mask_r{a}.png")
    bad_values = spec["mask_values"] == (0, 2)
    nan = spec["dtype"] == "float32" and spec["nan"]
    try:
        data = load_folder(root, size=32)
    except ProbsegError as exc:
        assert str(exc), "an error must say what is wrong"
        assert bad_values or nan, f"refused a valid folder: {exc}"
        return
    assert not bad_values and not nan, "accepted an invalid folder"
    assert data.images.shape == (spec["cases"], 1, 32, 32) and data.masks.shape == (spec["cases"],
                                                                                   spec["annotators"], 32, 32)
    assert np.isfinite(data.images).all() and set(np.unique(data.masks)) <= {0, 1}


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([None, "nan", "3d", "values", "annotators", "shape"]),
       st.integers(1, 5), st.sampled_from([np.uint8, np.float32, np.bool_]))
def test_lidc_pickle_reader_loads_or_names_the_entry(tmp_path_factory, seed, defect, annotators, mask_dtype):
    root: Path = tmp_path_factory.mktemp("lidc")
    rng = np.random.default_rng(seed)
    entries = {f"{i}": {"image": rng.random((8, 8)).astype(np.float32),
                        "masks": [(rng.random((8, 8)) > 0.5).astype(mask_dtype) for _ in range(annotators)],
                        "series_uid": f"s{i % 2}"} for i in range(3)}
    bad = entries["1"]
    if defect == "nan":
        bad["image"][0, 0] = np.inf
    elif defect == "3d":
        bad["image"] = np.zeros((8, 8, 2), np.float32)
    elif defect == "values" and mask_dtype != np.bool_:
        bad["masks"][0][0, 0] = 7
    elif defect == "annotators":
        bad["masks"] = bad["masks"] + bad["masks"][:1]
    elif defect == "shape":
        bad["masks"][0] = np.zeros((8, 9), np.uint8)
    (root / "x.pickle").write_bytes(pickle.dumps(entries))
    # an entry with another annotator count is dropped with one warning line naming it (issue 16 item 3)
    expect_error = defect not in (None, "annotators") and not (defect == "values" and mask_dtype == np.bool_)
    try:
        with dataset_warnings() as notes:
            data = load_lidc(root, trust_pickle=True)
    except ProbsegError as exc:
        assert expect_error, f"refused valid entries: {exc}"
        assert "entry '1'" in str(exc)
        return
    assert not expect_error
    if defect == "annotators":
        assert len(notes) == 1 and "dropped entry '1'" in notes[0] and f"{annotators + 1} annotator masks" in notes[0]
        assert data.masks.shape == (2, annotators, 8, 8) and list(data.metadata["key"]) == ["0", "2"]
    else:
        assert notes == [] and data.masks.shape == (3, annotators, 8, 8)


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([None, "nan", "dtype", "groups", "masks"]))
def test_multirater_data_validation(seed, defect):
    rng = np.random.default_rng(seed)
    images = rng.random((4, 1, 5, 6)).astype(np.float32)
    masks = (rng.random((4, 2, 5, 6)) > 0.5).astype(np.uint8)
    groups = np.arange(4)
    if defect == "nan":
        images[2, 0, 1, 1] = np.nan
    elif defect == "dtype":
        images = images.astype(np.float64)
    elif defect == "groups":
        groups = np.arange(3)
    elif defect == "masks":
        masks[0, 0, 0, 0] = 3
    if defect:
        with pytest.raises(ProbsegError, match="dataset"):
            MultiRaterData(images, masks, groups)
    else:
        assert len(MultiRaterData(images, masks, groups)) == 4
