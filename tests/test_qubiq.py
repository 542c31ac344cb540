"""The QUBIQ 2021 dataset plugins, on small real-format NIfTI files written here: slicing, intensities, crops,
groups, annotator / task discovery, both --data-root forms, one test per bad input, and one protocol fold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probseg_bench.errors import ProbsegError
from probseg_datasets.qubiq import QUBIQ_DATASETS, SPECS, load_qubiq, roi_window, window_ct

H, W, D = 20, 24, 5


def save_nii(path: Path, arr: np.ndarray, dtype: type = np.int16) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr).astype(dtype), np.eye(4)), str(path))


def write_case(
    task_root: Path, case: str, image: np.ndarray, masks: dict[tuple[int, int], np.ndarray],
    subset: str = "Training", image_dtype: type = np.int16,
) -> Path:
    """image.nii.gz plus task<t>_seg<a>.nii.gz for each (t, a) in ``masks``; returns the case folder."""
    folder = task_root / subset / case
    save_nii(folder / "image.nii.gz", image, image_dtype)
    for (t, a), m in masks.items():
        save_nii(folder / f"task{t:02d}_seg{a:02d}.nii.gz", m, np.uint8)
    return folder


def ct_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-300, 400, (H, W, D)).astype(np.int16)


def box(shape: tuple[int, ...], *index: slice | int) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[index] = 1
    return m


def simple_2d_case(task_root: Path, case: str, subset: str = "Training", seed: int = 0, annotators: int = 2) -> Path:
    masks = {(1, a): box((H, W), slice(5, 9 + a), slice(6, 12)) for a in range(1, annotators + 1)}
    return write_case(task_root, case, np.random.default_rng(seed).integers(-200, 300, (H, W)), masks, subset)


# ------------------------------------------------------------------------------------------------ the rules
def test_slice_rule_keeps_exactly_the_slices_with_any_annotation(tmp_path):
    root = tmp_path / "pancreas"
    a1 = np.zeros((H, W, D), np.uint8)
    a1[3:6, 4:8, 1] = 1
    a1[10:12, 10:14, 3] = 1
    a2 = np.zeros((H, W, D), np.uint8)
    a2[11:13, 9:15, 3] = 255  # {0, 255} files are accepted
    a2[0:2, 0:3, 4] = 255  # slice 4: only annotator 2 marked something
    write_case(root, "case01", ct_volume(), {(1, 1): a1, (1, 2): a2})
    a3 = box((H, W, D), slice(2, 4), slice(2, 4), 0)
    write_case(root, "case02", ct_volume(1), {(1, 1): a3, (1, 2): np.zeros((H, W, D), np.uint8)})
    data = load_qubiq(root, "qubiq-pancreas", size=16)
    assert len(data) == 4  # slices 1, 3, 4 of case01 (0 and 2 are empty for both), slice 0 of case02
    assert data.metadata["slice"].tolist() == [1, 3, 4, 0]
    assert data.metadata["case"].tolist() == ["case01", "case01", "case01", "case02"]
    assert data.images.shape == (4, 1, 16, 16) and data.images.dtype == np.float32
    assert data.masks.shape == (4, 2, 16, 16) and data.masks.dtype == np.uint8
    per_mask = data.masks.reshape(4, 2, -1).sum(-1)
    assert per_mask.tolist() == [[12, 0], [8, 12], [0, 6], [4, 0]]  # annotator 2 nothing on slice 1, 1 on 4
    assert set(np.unique(data.masks)) == {0, 1}


def test_ct_window_maps_40_hu_to_half(tmp_path):
    root = tmp_path / "kidney"
    hu = np.zeros((8, 8), np.int16)
    hu[0], hu[1], hu[2], hu[3], hu[4] = -1000, -160, 40, 240, 3000
    write_case(root, "case01", hu, {(1, 1): box((8, 8), 7, 7)})
    data = load_qubiq(root, "qubiq-kidney", crop="center", size=8)
    rows = data.images[0, 0, :6, 0].tolist()
    assert rows == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 0.4], abs=1e-7)  # -1000, -160, 40, 240, 3000, 0 HU
    assert rows[:5] == [0.0, 0.0, 0.5, 1.0, 1.0]  # exact in float32
    assert window_ct(np.array([-161.0, 40.0, 239.0])).tolist() == pytest.approx([0.0, 0.5, 399 / 400])


def test_mri_maps_1st_and_99th_percentile_to_0_and_1_per_channel(tmp_path):
    img = np.full((H, W), 25.0)
    img.flat[1:11] = 0.0  # 10 pixels at 0: the 1st percentile (position 4.79 of 480 sorted values) is 0
    img.flat[11:21] = 100.0  # 10 at 100: the 99th percentile (position 474.21) is 100
    img.flat[0], img.flat[21] = -50.0, 150.0  # outliers, clipped
    root = tmp_path / "brain-growth"
    write_case(root, "case01", img, {(1, 1): box((H, W), 5, 5)}, image_dtype=np.float32)
    out = load_qubiq(root, "qubiq-brain-growth", crop="center", size=24).images[0, 0, 2:22]  # rows padded by 2
    assert out.flat[0] == 0.0 and out.flat[5] == 0.0 and out.flat[15] == 1.0 and out.flat[21] == 1.0
    assert out.flat[100] == pytest.approx(0.25)

    tumor = np.stack([img, 10 * img + 7, np.full((H, W), 3.0), img], axis=-1)  # H x W x 4, masks H x W
    root = tmp_path / "brain-tumor"
    write_case(root, "case01", tumor, {(1, 1): box((H, W), 5, 5)}, image_dtype=np.float32)
    data = load_qubiq(root, "qubiq-brain-tumor", crop="center", size=24)
    assert data.images.shape == (1, 4, 24, 24)
    np.testing.assert_allclose(data.images[0, 1], data.images[0, 0], atol=1e-6)  # per channel: scale-free
    assert not data.images[0, 2].any()  # a constant channel becomes 0


def test_roi_crop_centres_a_corner_structure_in_the_128_crop(tmp_path):
    root = tmp_path / "kidney"
    hu = np.full((160, 160), 240, np.int16)  # -> 1.0, distinguishes image from padding (0)
    hu[2:6, 150:156] = 40  # -> 0.5
    write_case(root, "case01", hu, {(1, 1): box((160, 160), slice(2, 6), slice(150, 156)),
                                    (1, 2): box((160, 160), slice(3, 5), slice(151, 155))})
    data = load_qubiq(root, "qubiq-kidney")
    assert data.images.shape == (1, 1, 128, 128)
    # box rows 2..5 -> window top (2 + 5 - 127) // 2 = -60; cols 150..155 -> left (150 + 155 - 127) // 2 = 89
    rows, cols = np.nonzero(data.masks[0, 0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (62, 65, 61, 66)
    assert (rows.min() + rows.max()) / 2 == (cols.min() + cols.max()) / 2 == 63.5  # the crop's centre
    im = data.images[0, 0]
    assert (im[62:66, 61:67] == 0.5).all()
    assert not im[:60].any() and not im[:, 71:].any()  # above image row 0 and right of column 159: padding
    assert im[60:, :71].sum() == 68 * 71 - 24 * 0.5  # the image part: 1.0, the structure 0.5


def test_roi_crop_matches_a_hand_computation_with_size_8(tmp_path):
    root = tmp_path / "pancreas"
    hu = ct_volume(3)
    a1 = box((H, W, D), slice(1, 3), slice(20, 23), 2)  # rows 1..2, cols 20..22
    a2 = box((H, W, D), 2, slice(21, 23), 2)  # row 2, cols 21..22 -> union rows 1..2, cols 20..22
    write_case(root, "case01", hu, {(1, 1): a1, (1, 2): a2})
    data = load_qubiq(root, "qubiq-pancreas", size=8)
    assert roi_window(a1[..., 2] | a2[..., 2], 8) == (-2, 17)  # (1 + 2 - 7) // 2, (20 + 22 - 7) // 2 (floor)
    expected_image = np.zeros((8, 8), np.float32)
    expected_masks = np.zeros((2, 8, 8), np.uint8)
    for i in range(8):
        for j in range(8):
            r, c = i - 2, j + 17
            if 0 <= r < H and 0 <= c < W:
                expected_image[i, j] = (min(max(float(hu[r, c, 2]), -160.0), 240.0) + 160.0) / 400.0
                expected_masks[:, i, j] = a1[r, c, 2], a2[r, c, 2]
    np.testing.assert_allclose(data.images[0, 0], expected_image, atol=1e-6)
    np.testing.assert_array_equal(data.masks[0], expected_masks)
    assert expected_masks[0, 3:5, 3:6].all() and expected_masks[0].sum() == 6  # box centre (3.5, 4)

    centre = load_qubiq(root, "qubiq-pancreas", size=8, crop="center")  # rows 6..13, cols 8..15
    np.testing.assert_allclose(centre.images[0, 0], window_ct(hu[6:14, 8:16, 2]), atol=1e-6)
    assert not centre.masks.any()  # the structure lies outside the centre window


def test_roi_crop_falls_back_to_the_centre_without_annotation(tmp_path):
    root = tmp_path / "kidney"
    hu = np.random.default_rng(0).integers(-200, 300, (H, W))
    write_case(root, "case01", hu, {(1, 1): np.zeros((H, W)), (1, 2): np.zeros((H, W))})
    roi = load_qubiq(root, "qubiq-kidney", size=8)
    np.testing.assert_allclose(roi.images[0, 0], window_ct(hu[6:14, 8:16]), atol=1e-6)
    assert roi.masks.shape == (1, 2, 8, 8) and not roi.masks.any()


def test_groups_one_per_case_and_numeric_case_order(tmp_path):
    root = tmp_path / "pancreatic-lesion"
    for case, subset in (("case10", "Training"), ("case2", "Training"), ("case07", "Validation")):
        m = np.zeros((H, W, D), np.uint8)
        m[4:8, 4:8, 1:4] = 1
        write_case(root, case, ct_volume(), {(1, 1): m, (1, 2): m}, subset)
    data = load_qubiq(root, "qubiq-pancreatic-lesion", size=16)
    assert data.groups.tolist() == ["Training/case2"] * 3 + ["Training/case10"] * 3 + ["Validation/case07"] * 3
    assert data.metadata["subset"].tolist() == ["Training"] * 6 + ["Validation"] * 3
    assert data.metadata["slice"].tolist() == [1, 2, 3] * 3


def test_annotators_are_discovered_from_the_files(tmp_path):
    root = tmp_path / "kidney"
    for k in range(2):
        simple_2d_case(root, f"case0{k}", seed=k, annotators=3)
    data = load_qubiq(root, "qubiq-kidney", size=24)
    assert data.num_annotators == 3
    assert data.masks.reshape(2, 3, -1).sum(-1)[0].tolist() == [5 * 6, 6 * 6, 7 * 6]  # seg01, seg02, seg03
    assert data.metadata["slice"].tolist() == [-1, -1]


def test_task_parameter_picks_the_task_files(tmp_path):
    root = tmp_path / "brain-tumor"
    image = np.random.default_rng(0).normal(size=(H, W, 4)).astype(np.float32)
    masks = {}
    for t in (1, 2, 3):
        for a in (1, 2, 3):
            masks[(t, a)] = box((H, W), slice(2 * t, 2 * t + a), slice(3, 9))
    write_case(root, "case01", image, masks, image_dtype=np.float32)
    data = load_qubiq(root, "qubiq-brain-tumor", task=2, crop="center", size=24)  # rows padded by 2
    assert data.images.shape == (1, 4, 24, 24) and data.num_annotators == 3
    for a in (1, 2, 3):
        np.testing.assert_array_equal(data.masks[0, a - 1, 2:22], masks[(2, a)])
    assert data.masks[0, 0].sum() == 6 and data.masks[0, 2].sum() == 18


def test_both_root_forms_give_the_same_data(tmp_path):
    root = tmp_path / "kidney"
    for k in range(2):
        simple_2d_case(root, f"case0{k}", seed=k)
    parent = load_qubiq(tmp_path, "qubiq-kidney", size=16)
    direct = load_qubiq(root, "qubiq-kidney", size=16)
    assert len(parent) == 2
    np.testing.assert_array_equal(parent.images, direct.images)
    np.testing.assert_array_equal(parent.masks, direct.masks)
    np.testing.assert_array_equal(parent.groups, direct.groups)


def test_singleton_axis_is_a_2d_case(tmp_path):
    root = tmp_path / "kidney"
    write_case(root, "case01", np.full((H, W, 1), 40), {(1, 1): box((H, W), 4, 4), (1, 2): box((H, W, 1), 5, 5, 0)})
    data = load_qubiq(root, "qubiq-kidney", size=8)
    assert data.images.shape == (1, 1, 8, 8) and data.metadata["slice"].tolist() == [-1]
    assert (data.images == 0.5).sum() > 0 and data.masks.sum() == 2


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_data_root(tmp_path):
    with pytest.raises(ProbsegError, match="needs --data-root"):
        load_qubiq(None, "qubiq-pancreas")
    with pytest.raises(ProbsegError, match="nosuch: --data-root of dataset 'qubiq-pancreas' is not a folder"):
        load_qubiq(tmp_path / "nosuch", "qubiq-pancreas")


def test_root_without_task_folder_or_subsets(tmp_path):
    with pytest.raises(ProbsegError, match=r"neither a QUBIQ task folder .* nor a folder holding 'kidney/'"):
        load_qubiq(tmp_path, "qubiq-kidney")
    (tmp_path / "kidney").mkdir()
    with pytest.raises(ProbsegError, match=r"kidney: holds neither Training/ nor Validation/"):
        load_qubiq(tmp_path, "qubiq-kidney")


def test_task_folder_of_another_dataset_is_refused(tmp_path):
    simple_2d_case(tmp_path / "prostate", "case01")
    with pytest.raises(ProbsegError, match="this is the QUBIQ 'prostate' task folder, but dataset 'qubiq-kidney'"):
        load_qubiq(tmp_path / "prostate", "qubiq-kidney")


def test_no_cases(tmp_path):
    (tmp_path / "kidney" / "Training").mkdir(parents=True)
    with pytest.raises(ProbsegError, match=r"kidney: no case folders in Training/ or Validation/"):
        load_qubiq(tmp_path, "qubiq-kidney")


def test_case_without_image(tmp_path):
    root = tmp_path / "kidney"
    simple_2d_case(root, "case01")
    (simple_2d_case(root, "case02") / "image.nii.gz").unlink()
    with pytest.raises(ProbsegError, match=r"case02: no image\.nii\.gz"):
        load_qubiq(root, "qubiq-kidney")


def test_case_with_fewer_annotator_files(tmp_path):
    root = tmp_path / "kidney"
    simple_2d_case(root, "case01", annotators=3)
    (simple_2d_case(root, "case02", annotators=3) / "task01_seg02.nii.gz").unlink()
    with pytest.raises(ProbsegError, match=r"case02: missing annotator file\(s\) task01_seg02\.nii\.gz .* has 01, 03"):
        load_qubiq(root, "qubiq-kidney")


def prostate_tree(parent: Path, n: int = 6, short: tuple[str, ...] = ("case03",), annotators: int = 6) -> Path:
    """A qubiq-prostate task folder of ``n`` 2-D MRI cases with ``annotators`` annotators, except the ``short``
    cases, which lack the last annotator's file (the release's prostate subject with 5 annotations of 6)."""
    root = parent / "prostate"
    for k in range(1, n + 1):
        folder = simple_2d_case(root, f"case{k:02d}", seed=k, annotators=annotators)
        if f"case{k:02d}" in short:
            (folder / f"task01_seg{annotators:02d}.nii.gz").unlink()
    return root


def test_a_case_with_fewer_annotators_is_dropped_with_one_warning_line(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    root = prostate_tree(tmp_path)
    with pytest.warns(DatasetWarning) as caught:
        data = load_qubiq(root, "qubiq-prostate")
    assert [str(w.message) for w in caught] == [
        "qubiq-prostate: dropped case Training/case03: 5 annotator files (task01_segYY) where the other 5 cases have 6 "
        "(missing task01_seg06.nii.gz); every item needs the same annotators"
    ]
    assert data.masks.shape == (5, 6, 128, 128)
    assert data.metadata["case"].tolist() == ["case01", "case02", "case04", "case05", "case06"]
    # the kept cases are exactly what a release without case03 gives
    import shutil

    shutil.rmtree(root / "Training" / "case03")
    without = load_qubiq(root, "qubiq-prostate")
    np.testing.assert_array_equal(data.images, without.images)
    np.testing.assert_array_equal(data.masks, without.masks)


def test_a_case_with_an_extra_annotator_file_is_dropped_too_and_a_tie_is_refused(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    root = prostate_tree(tmp_path, n=3, short=(), annotators=2)
    save_nii(root / "Training" / "case02" / "task01_seg03.nii.gz", box((H, W), 1, 1), np.uint8)
    with pytest.warns(DatasetWarning, match=r"dropped case Training/case02: 3 annotator files .* have 2 \(extra "
                      r"task01_seg03\.nii\.gz\)"):
        assert load_qubiq(root, "qubiq-prostate").metadata["case"].tolist() == ["case01", "case03"]
    save_nii(root / "Training" / "case03" / "task01_seg03.nii.gz", box((H, W), 1, 1), np.uint8)  # 2 of 3 have 3
    with pytest.warns(DatasetWarning, match=r"dropped case Training/case01: 2 annotator files .* \(missing "
                      r"task01_seg03\.nii\.gz"):
        assert load_qubiq(root, "qubiq-prostate").num_annotators == 3
    (root / "Training" / "case03" / "task01_seg03.nii.gz").unlink()
    (root / "Training" / "case03" / "task01_seg02.nii.gz").unlink()  # 2, 3 and 1 annotators: no majority
    with pytest.raises(ProbsegError, match=r"case01: missing annotator file\(s\) task01_seg03\.nii\.gz .*this one "
                       r"has 01, 02\)"):
        load_qubiq(root, "qubiq-prostate")


def test_data_inspect_convert_and_run_report_the_dropped_case(tmp_path, run_main, monkeypatch, tiny_preset):
    import json
    import warnings

    from probseg_bench.cli.data import show_warning

    line = "warning: qubiq-prostate: dropped case Training/case03: 5 annotator files (task01_segYY) where the other"
    root = prostate_tree(tmp_path)
    code, out, err = run_main("data", "inspect", "qubiq-prostate", "--data-root", str(root), "--format", "json")
    assert code == 0 and err.startswith(line) and len(err.splitlines()) == 1
    summary = json.loads(out)
    assert summary["images"] == 5 and summary["annotators"] == 6
    assert len(summary["warnings"]) == 1 and "Training/case03: 5 annotator files" in summary["warnings"][0]
    code, out, err = run_main("data", "inspect", "qubiq-prostate", "--data-root", str(root))
    assert code == 0 and "dropped case Training/case03" in out and err.startswith(line)

    converted = tmp_path / "converted"
    code, _, err = run_main("data", "convert", "qubiq-prostate", "--data-root", str(root), "-o", str(converted))
    assert code == 0 and err.startswith(line)
    code, out, err = run_main("data", "inspect", "qubiq-prostate", "--data-root", str(converted), "--format", "json")
    assert code == 0 and err.startswith(line) and f"(when {converted} was converted)" in err
    assert json.loads(out)["warnings"][0].endswith(f"(when {converted} was converted)")

    for k in range(7, 13):  # enough cases for the protocol's split
        simple_2d_case(root, f"case{k:02d}", seed=k, annotators=6)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():  # pytest records warnings; the installed CLI shows them with show_warning
        warnings.simplefilter("default")
        warnings.showwarning = show_warning
        code, out, err = run_main("run", "--model", "punet", "--dataset", "qubiq-prostate", "--data-root", str(root),
                                  "--preset", tiny_preset, "-d", "2", "--fold", "0", "--dataset-param", "size=32",
                                  "--hp", "filters=4,8", "--hp", "convs_per_block=1", "--device", "cpu")
    assert code == 0, err
    assert [ln for ln in err.splitlines() if ln.startswith("warning: qubiq")] == [
        line + " 11 cases have 6 (missing task01_seg06.nii.gz); every item needs the same annotators"
    ]
    assert "DatasetWarning" not in err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
@pytest.mark.parametrize("name", ["image.nii.gz", "task01_seg02.nii.gz"])
def test_truncated_or_corrupt_nifti(tmp_path, damage, name):
    root = tmp_path / "kidney"
    path = simple_2d_case(root, "case01") / name
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x1f\x8b not a nifti at all")
    with pytest.raises(ProbsegError, match=rf"case01/{name}: not a readable NIfTI file"):
        load_qubiq(root, "qubiq-kidney")


def test_mask_shape_differs_from_image(tmp_path):
    root = tmp_path / "kidney"
    write_case(root, "case01", np.zeros((H, W)), {(1, 1): box((H, W), 1, 1), (1, 2): box((H, W - 2), 1, 1)})
    with pytest.raises(ProbsegError, match=r"task01_seg02\.nii\.gz: mask shape \(20, 22\) differs from the image"):
        load_qubiq(root, "qubiq-kidney")


def test_mask_values_other_than_binary(tmp_path):
    root = tmp_path / "kidney"
    m = box((H, W), 1, 1)
    m[2, 2] = 2
    write_case(root, "case01", np.zeros((H, W)), {(1, 1): box((H, W), 1, 1), (1, 2): m})
    with pytest.raises(ProbsegError, match=r"task01_seg02\.nii\.gz: mask values must be \{0, 1\} or \{0, 255\}"):
        load_qubiq(root, "qubiq-kidney")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_intensities(tmp_path, bad):
    root = tmp_path / "pancreas"
    vol = ct_volume().astype(np.float32)
    vol[3, 3, 2] = bad
    write_case(root, "case01", vol, {(1, 1): box((H, W, D), 3, 3, 2), (1, 2): box((H, W, D), 3, 3, 2)},
               image_dtype=np.float32)
    with pytest.raises(ProbsegError, match=r"image\.nii\.gz: image contains NaN or infinite values"):
        load_qubiq(root, "qubiq-pancreas")


def test_3d_volume_in_a_2d_dataset(tmp_path):
    root = tmp_path / "kidney"
    write_case(root, "case01", ct_volume(), {(1, 1): box((H, W, D), 3, 3, 2)})
    with pytest.raises(ProbsegError, match=r"image\.nii\.gz: a 3-D volume of shape \(20, 24, 5\), but dataset "
                                           r"'qubiq-kidney' expects 2-D images"):
        load_qubiq(root, "qubiq-kidney")


def test_task_not_in_the_folder(tmp_path):
    root = tmp_path / "brain-tumor"
    write_case(root, "case01", np.zeros((H, W, 4)), {(t, a): box((H, W), 1, 1) for t in (1, 2) for a in (1, 2)})
    with pytest.raises(ProbsegError, match=r"no task03_segYY\.nii\.gz files for task 3; tasks present: 1, 2"):
        load_qubiq(root, "qubiq-brain-tumor", task=3)
    with pytest.raises(ProbsegError, match=r"dataset parameter 'task': expected one of \[1\]"):
        load_qubiq(root, "qubiq-kidney", task=2)  # kidney has one task
    with pytest.raises(ProbsegError, match="dataset parameter 'crop': expected one of"):
        load_qubiq(root, "qubiq-brain-tumor", crop="middle")


def test_volumes_without_any_annotation(tmp_path):
    root = tmp_path / "pancreas"
    empty = np.zeros((H, W, D), np.uint8)
    write_case(root, "case01", ct_volume(), {(1, 1): empty, (1, 2): empty})
    with pytest.raises(ProbsegError, match="pancreas: no annotated slice in any case for task 1"):
        load_qubiq(root, "qubiq-pancreas")


def test_channel_count_differs_between_cases(tmp_path):
    root = tmp_path / "brain-tumor"
    write_case(root, "case01", np.zeros((H, W, 4)), {(1, 1): box((H, W), 1, 1)})
    write_case(root, "case02", np.zeros((H, W, 3)), {(1, 1): box((H, W), 1, 1)})
    with pytest.raises(ProbsegError, match=r"case02/image\.nii\.gz: 3 image channel\(s\), but .*case01"):
        load_qubiq(root, "qubiq-brain-tumor")


# ------------------------------------------------------------------------------------------------ specs, e2e
def test_specs():
    names = [s.name for s in SPECS]
    assert names == ["qubiq-pancreas", "qubiq-pancreatic-lesion", "qubiq-brain-growth", "qubiq-brain-tumor",
                     "qubiq-kidney", "qubiq-prostate"]
    tasks = {s.name: next(p for p in s.parameters if p.name == "task").choices for s in SPECS}
    assert tasks["qubiq-brain-tumor"] == (1, 2, 3) and tasks["qubiq-prostate"] == (1, 2)
    assert tasks["qubiq-kidney"] == (1,) and tasks["qubiq-pancreas"] == (1,)
    for s in SPECS:
        assert (s.protocol.epochs, s.protocol.warmup_epochs) == (2500, 50)
        assert "https://qubiq21.grand-challenge.org" in s.license and "Challenge 2021" in s.citation
        assert QUBIQ_DATASETS[s.name].folder in s.layout and "\n" not in s.description
        assert ("Valiuddin" in s.citation) == (s.name in ("qubiq-pancreas", "qubiq-pancreatic-lesion"))


def test_spec_loader_passes_parameters(tmp_path):
    root = tmp_path / "prostate"
    write_case(root, "case01", np.arange(H * W).reshape(H, W), {(1, 1): box((H, W), 1, 1), (2, 1): box((H, W), 2, 2),
                                                              (2, 2): box((H, W), 3, 3)})
    spec = next(s for s in SPECS if s.name == "qubiq-prostate")
    data = spec.load(tmp_path, task=2, size=8)
    assert data.masks.shape == (1, 2, 8, 8)


def test_module_import_is_light():
    code = "import sys, probseg_datasets.qubiq; print(sorted({'nibabel', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_protocol_fold_end_to_end(tmp_path, tiny_preset):
    from probseg_bench.plugins import load_plugins
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import RunRequest, check_request
    from probseg_bench.results import ResultsStore

    root = tmp_path / "pancreas"
    for k in range(8):
        m = np.zeros((H, W, D), np.uint8)
        m[4 + k % 3 : 10, 5:12, 1 + k % 2 : 3] = 1
        write_case(root, f"case{k + 1:02d}", ct_volume(k), {(1, 1): m, (1, 2): np.roll(m, 1, axis=0)})
    plugins = load_plugins()
    spec = next(s for s in SPECS if s.name == "qubiq-pancreas")
    if "qubiq-pancreas" not in plugins.datasets.names():  # until the integrator registers SPECS
        plugins.datasets.set_provider("test", "test")
        plugins.datasets.add(spec)
    request = RunRequest(model="punet", dataset="qubiq-pancreas", latent_dims=(2,), folds=(0,), preset=tiny_preset,
                         device="cpu", data_root=tmp_path, hyperparameters={"filters": "4,8", "convs_per_block": 1},
                         run_dir=tmp_path / "runs")
    records = run_protocol(check_request(request, plugins), ResultsStore(str(tmp_path / "r.db")))
    assert len(records) == 1
    rec = records[0]
    assert rec.dataset == "qubiq-pancreas" and rec.fold == 0 and rec.latent_dim == 2
    assert rec.test_groups and set(rec.test_groups) <= {f"Training/case{k:02d}" for k in range(1, 9)}
    assert len(set(rec.test_ids)) == len(rec.test_ids) == len(rec.test_groups)
    assert np.isfinite(rec.best_val_loss) and rec.metrics
