"""The embedded lidc-sample and the JPEG folder reader, on real files and on small files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probseg_bench.errors import ProbsegError
from probseg_datasets.cimd import read_cimd_folder
from probseg_datasets.lidc import load_lidc_sample


def test_embedded_lidc_sample():
    data = load_lidc_sample()
    assert data.images.shape == (28, 1, 128, 128) and data.images.dtype == np.float32
    assert data.masks.shape == (28, 4, 128, 128) and data.masks.dtype == np.uint8
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert set(np.unique(data.masks)) == {0, 1}
    assert len(set(data.groups)) == 28  # no patient ids: every case its own group
    assert sorted(set(data.metadata["subset"])) == ["testing", "training"]
    assert (data.masks.reshape(28, 4, -1).sum(-1) == 0).any()  # some readers marked nothing


def test_lidc_sample_region_of_interest_holds_every_annotation():
    """The quick preset crops lidc-sample to its declared region of interest: no annotated pixel is lost."""
    from probseg_bench.data.crop import center_crop
    from probseg_datasets.lidc import LIDC_SAMPLE

    roi = LIDC_SAMPLE.protocol.roi_size
    data = load_lidc_sample()
    cropped = center_crop(data, roi)
    assert roi == 32 and cropped.masks.shape[-2:] == (32, 32)
    np.testing.assert_array_equal(cropped.masks.reshape(28, 4, -1).sum(-1), data.masks.reshape(28, 4, -1).sum(-1))


def test_embedded_sample_equals_the_original_jpeg_folder(shared_data):
    images, masks, ids, subsets = read_cimd_folder(shared_data / "lidc-crops-sample")
    data = load_lidc_sample()
    np.testing.assert_array_equal(images.astype(np.float32) / 255, data.images)
    np.testing.assert_array_equal(masks, data.masks)
    np.testing.assert_array_equal(ids, data.groups)
    assert (subsets == "training").sum() == 19 and (subsets == "testing").sum() == 9


def test_lidc_sample_takes_no_data_root(tmp_path):
    with pytest.raises(ProbsegError, match="embedded"):
        load_lidc_sample(tmp_path)


def write_case(root: Path, subset: str, case: str, annotators: list[int], size: int = 16, fill: int = 255) -> None:
    folder = root / subset / case
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(case))
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / "image_1.jpg")
    for a in annotators:
        m = np.zeros((size, size), dtype=np.uint8)
        m[4 : 8 + a, 4:10] = fill
        Image.fromarray(m).save(folder / f"label{a}_.jpg", quality=95)


def test_reader_discovers_annotator_numbering(tmp_path):
    for case in ("0", "1", "10", "2"):
        write_case(tmp_path, "training", case, [1, 2, 3])
    images, masks, ids, _ = read_cimd_folder(tmp_path)
    assert masks.shape == (4, 3, 16, 16) and images.shape == (4, 1, 16, 16)
    assert list(ids) == ["training/0", "training/1", "training/2", "training/10"]  # numeric order
    assert masks[0, 0].sum() == (8 + 1 - 4) * 6  # label1: rows 4..8, cols 4..9


def test_reader_refuses_a_missing_annotator(tmp_path):
    write_case(tmp_path, "training", "0", [0, 1, 2])
    write_case(tmp_path, "training", "1", [0, 2])
    with pytest.raises(ProbsegError, match=r"training/1: annotators \[0, 2\] differ from \[0, 1, 2\]"):
        read_cimd_folder(tmp_path)


def test_reader_drops_a_case_with_fewer_annotators_when_most_have_them_all(tmp_path):
    from probseg_bench.data.loading import DatasetWarning

    for case in ("0", "1", "2"):
        write_case(tmp_path, "training", case, [0, 1, 2])
    write_case(tmp_path, "testing", "3", [0, 2])
    with pytest.warns(DatasetWarning, match=r": dropped case testing/3: 2 label files where the other 3 cases have 3 "
                      r"\(missing label1_\.jpg\)"):
        _, masks, ids, _ = read_cimd_folder(tmp_path)
    assert list(ids) == ["training/0", "training/1", "training/2"] and masks.shape == (3, 3, 16, 16)


def test_reader_refuses_a_corrupt_file(tmp_path):
    write_case(tmp_path, "testing", "5", [0, 1])
    (tmp_path / "testing" / "5" / "label1_.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ProbsegError, match=r"label1_\.jpg: not a readable image"):
        read_cimd_folder(tmp_path)


def test_reader_refuses_a_grey_mask(tmp_path):
    write_case(tmp_path, "testing", "5", [0, 1], fill=128)
    with pytest.raises(ProbsegError, match="expected a binary mask"):
        read_cimd_folder(tmp_path)


def test_reader_refuses_an_empty_or_missing_folder(tmp_path):
    with pytest.raises(ProbsegError, match="no case folders"):
        read_cimd_folder(tmp_path)
    with pytest.raises(ProbsegError, match="not a folder"):
        read_cimd_folder(tmp_path / "nope")


def test_crop_window_hand_values():
    from probseg_bench.data.crop import crop_window

    assert crop_window(5, 3, 2) == (slice(1, 3), slice(0, 2))  # (5 - 2) // 2 = 1, (3 - 2) // 2 = 0
    assert crop_window(128, 128, 32) == (slice(48, 80), slice(48, 80))
    assert crop_window(2, 6, 4) == (slice(0, 2), slice(1, 5))  # a side shorter than the window is kept whole
