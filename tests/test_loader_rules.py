"""Rules every dataset loader shares (issue 16, items 3 and 5): one intensity rule by stored dtype
(:mod:`probseg_bench.data.intensity`), and one rule for cases whose annotators differ from the others'
(:func:`probseg_datasets.common.consistent_annotators`), on small files written here in the real formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probseg_bench.data.intensity import model_intensities
from probseg_bench.data.loading import DatasetWarning, dataset_warnings
from probseg_bench.errors import ProbsegError
from probseg_datasets.cimd import to_multirater
from probseg_datasets.common import consistent_annotators
from probseg_datasets.folder import load_folder
from probseg_datasets.lidc import load_lidc, load_lidc_crops


# ------------------------------------------------------------------------------------------- intensity rule
def test_the_intensity_rule_by_stored_dtype():
    u8 = np.array([[0, 51], [102, 255]], np.uint8)
    u16 = np.array([[0, 13107], [32768, 65535]], np.uint16)
    np.testing.assert_array_equal(model_intensities(u8), u8 / np.float32(255))
    np.testing.assert_array_equal(model_intensities(u16), u16 / np.float32(65535))
    np.testing.assert_array_equal(model_intensities(np.array([True, False])), [1.0, 0.0])
    np.testing.assert_array_equal(model_intensities(np.array([-1000, 3000], np.int16)), [-1000.0, 3000.0])
    np.testing.assert_array_equal(model_intensities(np.array([300, 7], np.int64)), [300.0, 7.0])
    floats = np.array([-1.5, 255.0], np.float32)
    assert model_intensities(floats) is floats  # float32: nothing to change, no copy
    assert model_intensities(np.array([2.0, 4.0], np.float64)).dtype == np.float32
    # a reader that converted already (NIfTI read as float32) passes the dtype stored in the file
    np.testing.assert_array_equal(model_intensities(u8.astype(np.float32), stored=np.uint8), u8 / np.float32(255))
    with pytest.raises(ProbsegError, match=r"^x\.png: image contains NaN or infinite values"):
        model_intensities(np.array([np.nan], np.float32), source="x.png")
    with pytest.raises(ProbsegError, match=r"expected numeric intensities, got dtype <U1"):
        model_intensities(np.array(["a"]))


def medicalmatting_entries(n: int = 6, size: int = 16) -> dict:
    """LIDC entries in the MedicalMatting variant: uint8 images 0..255, 7 masks, an extra key per entry."""
    rng = np.random.default_rng(7)
    out = {}
    for i in range(n):
        image = rng.integers(0, 256, (size, size), dtype=np.uint8)
        image[0, 0], image[0, 1] = 0, 255
        masks = [(rng.random((size, size)) > 0.7).astype(np.uint8) for _ in range(7)]
        out[f"{i:04d}.png"] = {"image": image, "masks": masks, "series_uid": f"1.3.6.{i // 2}",
                               "alpha": np.mean(masks, axis=0).astype(np.float32)}
    return out


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_medicalmatting_pickle_feeds_images_in_0_1_and_inspect_shows_it(tmp_path, protocol, run_main):
    entries = medicalmatting_entries()
    (tmp_path / "lidc_mm.pickle").write_bytes(pickle.dumps(entries, protocol=protocol))
    data = load_lidc(tmp_path, trust_pickle=True)
    assert data.masks.shape == (6, 7, 16, 16)
    expected = np.stack([entries[k]["image"] for k in sorted(entries)])[:, None] / np.float32(255)
    np.testing.assert_allclose(data.images.astype(np.float32), expected, atol=2.5e-4)
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    code, out, _ = run_main("data", "inspect", "lidc", "--data-root", str(tmp_path), "--trust-pickle",
                            "--format", "json")
    summary = json.loads(out)
    assert code == 0 and (summary["intensity_min"], summary["intensity_max"]) == (0.0, 1.0)
    assert summary["annotators"] == 7 and summary["warnings"] == []
    code, out, _ = run_main("data", "inspect", "lidc", "--data-root", str(tmp_path), "--trust-pickle")
    assert code == 0 and "intensity range fed to the model" in out


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.bool_])
def test_every_loader_feeds_the_same_intensities_for_the_same_stored_array(tmp_path, dtype):
    rng = np.random.default_rng(3)
    if dtype == np.bool_:
        image = rng.random((16, 16)) > 0.5
    elif dtype == np.float32:
        image = rng.uniform(-2.0, 3.0, (16, 16)).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        image = rng.integers(max(info.min, -1000), info.max, (16, 16), endpoint=True).astype(dtype)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:9, 5:11] = 1
    expected = model_intensities(image)
    fed: dict[str, np.ndarray] = {}

    (tmp_path / "folder" / "c1").mkdir(parents=True)
    np.save(tmp_path / "folder" / "c1" / "image.npy", image)
    np.save(tmp_path / "folder" / "c1" / "mask_a.npy", mask)
    fed["folder"] = load_folder(tmp_path / "folder", size=16).images[0, 0]

    entry = {"image": image, "masks": [mask, mask], "series_uid": "1"}
    (tmp_path / "pickle").mkdir()
    (tmp_path / "pickle" / "x.pickle").write_bytes(pickle.dumps({"a.png": entry}))
    fed["lidc"] = load_lidc(tmp_path / "pickle", trust_pickle=True).images[0, 0]

    if dtype in (np.uint8, np.uint16):  # the PNG bit depths
        png(tmp_path / "crops" / "images" / "p1" / "z-1.5_c0.png", image)
        png(tmp_path / "crops" / "gt" / "p1" / "z-1.5_c0_l0.png", mask * np.uint8(255))
        fed["lidc-crops"] = load_lidc_crops(tmp_path / "crops", size=16).images[0, 0]
    if dtype == np.uint8:  # the embedded sample's reader
        fed["lidc-sample"] = to_multirater(image[None, None], mask[None, None], np.array(["c"]), np.array(["s"]),
                                           "x").images[0, 0]
    for loader, values in fed.items():  # lidc and lidc-crops keep float16 images
        tol = 0.0 if values.dtype == np.float32 else float(np.abs(expected).max()) * 2.0**-11
        np.testing.assert_allclose(values.astype(np.float32), expected, atol=tol, rtol=0, err_msg=loader)


# --------------------------------------------------------------------------------------- annotators per case
def test_consistent_annotators_keeps_the_set_of_most_cases_and_names_each_dropped_case():
    cases = [("case 1", {1, 2, 3}), ("case 2", {1, 2}), ("case 3", {1, 2, 3}), ("case 4", {1, 2, 3, 4}),
             ("case 5", [3, 2, 1])]
    with dataset_warnings() as notes:
        check = consistent_annotators("ds", cases, unit="files", name=lambda a: f"seg{a}")
    assert check.reference == {1, 2, 3} and check.kept == (0, 2, 4)
    assert notes == [
        "ds: dropped case 2: 2 files where the other 3 cases have 3 (missing seg3); every item needs the same "
        "annotators",
        "ds: dropped case 4: 4 files where the other 3 cases have 3 (extra seg4); every item needs the same "
        "annotators",
    ]
    with dataset_warnings() as notes:  # positions in a list: counts only
        check = consistent_annotators("ds", [("e1", range(4)), ("e2", range(3)), ("e3", range(4))], unit="masks",
                                      kind="entries", name=None)
    assert check.kept == (0, 2) and notes == [
        "ds: dropped e2: 3 masks where the other 2 entries have 4; every item needs the same annotators"]


def test_consistent_annotators_refuses_without_a_majority_and_never_drops_silently():
    with dataset_warnings() as notes, pytest.raises(ProbsegError, match=r"^b: 2 files where 1 of the 2 cases have 3 "
                                                    r"\(missing 3\); the cases' annotators differ too much"):
        consistent_annotators("ds", [("a", {1, 2, 3}), ("b", {1, 2})], unit="files")  # a tie: the larger set
    assert notes == []
    with pytest.raises(ProbsegError, match="custom b"):  # a tie of equal sets: the first seen
        consistent_annotators("ds", [("a", {1}), ("b", {2}), ("c", {3})], unit="files",
                              refuse=lambda i, have, common: f"custom {'abc'[i]}")
    with pytest.raises(ProbsegError, match=r"^ds: 2 of the 3 cases have no files$"):
        consistent_annotators("ds", [("a", ()), ("b", ()), ("c", {1})], unit="files")
    with pytest.warns(DatasetWarning, match="ds: dropped c"):
        assert consistent_annotators("ds", [("a", {1}), ("b", {1}), ("c", ())], unit="files").kept == (0, 1)
