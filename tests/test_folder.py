"""The generic folder dataset and scripts/npz_to_folder.py, on files written here in the real formats (PNG, JPEG,
TIFF, NIfTI, npy) and on the real BU-BIL cells sample; one end-to-end run of the protocol."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from probseg_bench.errors import ProbsegError
from probseg_datasets.folder import FOLDER, LAYOUT, SPECS, load_folder, natural_key, scan_folder

BUBIL = "bubil-cells/bubil_ds1_phase_rat_smooth_muscle_128.npz"


def save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` in the format given by the file suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    elif name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith((".jpg", ".jpeg")):
        Image.fromarray(array).save(path, quality=95)
    else:
        Image.fromarray(array).save(path)


def rect(size: int, top: int, left: int, h: int = 4, w: int = 5, on: int = 1) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.uint8)
    m[top : top + h, left : left + w] = on
    return m


def write_case(root: Path, case: str, annotators: tuple[str, ...] = ("a", "b"), size: int = 16,
               image_ext: str = "png", mask_ext: str = "png") -> None:
    rng = np.random.default_rng(len(case) + sum(map(ord, case)))
    save(root / case / f"image.{image_ext}", rng.integers(0, 256, (size, size), dtype=np.uint8))
    for j, a in enumerate(annotators):
        save(root / case / f"mask_{a}.{mask_ext}", rect(size, 2 + j, 3, on=255))


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """Two valid cases c1, c2 (16 x 16 PNG, annotators a and b)."""
    for case in ("c1", "c2"):
        write_case(tmp_path, case)
    return tmp_path


def load_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "npz_to_folder.py"
    spec = importlib.util.spec_from_file_location("npz_to_folder", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- discovery
def test_natural_sort():
    assert sorted(["mask_10", "mask_2", "mask_1", "Mask_3"], key=natural_key) == ["mask_1", "mask_2", "Mask_3",
                                                                                   "mask_10"]


def test_discovers_cases_and_annotators_in_natural_order_across_formats(tmp_path):
    images = {
        "case1": ("png", np.full((16, 16), 51, np.uint8)),
        "case2": ("tif", np.full((16, 16), 13107, np.uint16)),
        "case10": ("npy", np.full((16, 16), 0.2, np.float32)),
    }
    mask_formats = {"1": "png", "2": "npy", "10": "nii.gz"}
    expected = {}
    for c, (case, (ext, image)) in enumerate(images.items()):
        save(tmp_path / case / f"image.{ext}", image)
        for j, (a, mext) in enumerate(mask_formats.items()):
            m = rect(16, 1 + j, 2 + c)
            expected[case, a] = m
            stored = {"png": m * np.uint8(255), "npy": m.astype(bool), "nii.gz": m}[mext]
            save(tmp_path / case / f"mask_{a}.{mext}", stored)
    (tmp_path / "LICENSE.txt").write_text("ignored")
    index = scan_folder(tmp_path)
    assert index.annotators == ("1", "2", "10")
    data = load_folder(tmp_path, size=16)
    assert list(data.metadata["case"]) == ["case1", "case2", "case10"]
    assert list(data.groups) == ["case1", "case2", "case10"]  # no groups.csv: every case its own group
    assert data.images.shape == (3, 1, 16, 16) and data.masks.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(data.images, 0.2, rtol=1e-6)  # 51 / 255 = 13107 / 65535 = 0.2
    for i, case in enumerate(["case1", "case2", "case10"]):
        for j, a in enumerate(["1", "2", "10"]):
            np.testing.assert_array_equal(data.masks[i, j], expected[case, a])


def test_intensities_are_normalised_by_stored_dtype(tmp_path):
    u8 = np.array([[0, 51], [102, 255]], np.uint8)
    u16 = np.array([[0, 13107], [32768, 65535]], np.uint16)
    floats = np.array([[-1.5, 0.25], [3.0, 1000.0]], np.float32)
    ints = np.array([[-1000, 0], [7, 1000]], np.int16)
    cases = {
        "u8png": ("png", u8, u8 / np.float32(255)),
        "u16tif": ("tif", u16, u16 / np.float32(65535)),
        "u16png": ("png", u16, u16 / np.float32(65535)),
        "u8nii": ("nii", u8, u8 / np.float32(255)),
        "f32nii": ("nii.gz", floats, floats),
        "f32npy": ("npy", floats, floats),
        "f64npy": ("npy", floats.astype(np.float64), floats),
        "i16npy": ("npy", ints, ints.astype(np.float32)),
    }
    cases["u16nii"] = ("nii", u16, u16 / np.float32(65535))
    cases["scaled_nii"] = ("nii", u8, u8 * np.float32(2))  # header scaling applied: values as stored
    for case, (ext, image, _) in cases.items():
        if case == "scaled_nii":
            img = nib.Nifti1Image(image, np.eye(4))
            img.header.set_slope_inter(2.0, 0.0)
            (tmp_path / case).mkdir()
            nib.save(img, str(tmp_path / case / "image.nii"))
        else:
            save(tmp_path / case / f"image.{ext}", image)
        save(tmp_path / case / "mask_r.png", np.zeros((2, 2), np.uint8))
    data = load_folder(tmp_path, size=2)
    assert data.images.dtype == np.float32
    for i, case in enumerate(data.metadata["case"]):
        np.testing.assert_array_equal(data.images[i, 0], cases[case][2].astype(np.float32), err_msg=case)
    np.testing.assert_allclose(data.images[list(data.metadata["case"]).index("u8png"), 0], [[0, 0.2], [0.4, 1]],
                               rtol=1e-6)


def test_jpeg_image_and_jpeg_mask(tmp_path):
    save(tmp_path / "j" / "image.jpg", np.full((16, 16), 200, np.uint8))
    save(tmp_path / "j" / "mask_x.jpeg", rect(16, 4, 4, 8, 8, on=255))
    Image.fromarray(np.full((16, 16, 3), (200, 200, 200), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "k").mkdir()
    (tmp_path / "rgb.png").rename(tmp_path / "k" / "image.png")  # colour PNG: luminance grey
    save(tmp_path / "k" / "mask_x.png", rect(16, 4, 4, 8, 8))
    data = load_folder(tmp_path, size=16)
    assert np.abs(data.images[0] * 255 - 200).max() <= 2  # lossy JPEG
    np.testing.assert_array_equal(data.images[1], np.float32(200) / np.float32(255))
    np.testing.assert_array_equal(data.masks[0, 0], rect(16, 4, 4, 8, 8))


def test_multichannel_npy(tmp_path):
    image = np.stack([np.full((8, 8), v, np.uint8) for v in (0, 51, 255)])
    save(tmp_path / "m" / "image.npy", image)
    save(tmp_path / "m" / "mask_r.npy", rect(8, 1, 1))
    data = load_folder(tmp_path, size=8)
    assert data.images.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(data.images[0, :, 0, 0], [0, 0.2, 1], rtol=1e-6)


def test_centre_crop_and_zero_pad_to_size(tmp_path):
    """21 x 11 -> 16 x 16: rows cropped from 2 (the odd extra row removed at the end), columns padded 2 before and
    3 after (the odd extra column added at the end)."""
    image = (np.arange(21 * 11, dtype=np.float32).reshape(21, 11) + 1) / 1000
    mask = np.zeros((21, 11), np.uint8)
    mask[1:5, 0:3] = 1  # partly cropped away
    mask[18, 10] = 1  # last kept row (2 + 16 - 1 = 17 is the last kept; 18 is cropped)
    mask[17, 10] = 1
    save(tmp_path / "c" / "image.npy", image)
    save(tmp_path / "c" / "mask_r.npy", mask)
    data = load_folder(tmp_path, size=16)
    expected = np.zeros((16, 16), np.float32)
    expected[:, 2:13] = image[2:18]
    np.testing.assert_array_equal(data.images[0, 0], expected)
    expected_mask = np.zeros((16, 16), np.uint8)
    expected_mask[:, 2:13] = mask[2:18]
    np.testing.assert_array_equal(data.masks[0, 0], expected_mask)
    assert data.masks[0, 0].sum() == 3 * 3 + 1  # rows 2..4 of the block, and (17, 10)


def test_groups_csv_assigns_patients(good):
    write_case(good, "c3")
    (good / "groups.csv").write_text("\ufeffcase , group\nc1,p1\n\n c2 ,p1\nc3,p7\n", encoding="utf-8")
    data = load_folder(good, size=16)
    assert list(data.groups) == ["p1", "p1", "p7"] and list(data.metadata["case"]) == ["c1", "c2", "c3"]


def test_a_case_with_fewer_or_other_masks_is_dropped_with_one_warning_line(good):
    from probseg_bench.data.loading import DatasetWarning

    write_case(good, "c3", annotators=("a",))  # one mask where the others have two
    write_case(good, "c4")
    write_case(good, "c10", annotators=("a", "b", "c"))  # an extra annotator
    (good / "groups.csv").write_text("case,group\nc1,p1\nc2,p2\nc3,p3\nc4,p4\nc10,p1\n")
    with pytest.warns(DatasetWarning) as caught:
        data = load_folder(good, size=16)
    assert [str(w.message) for w in caught] == [
        "folder: dropped case c3: 1 mask files where the other 3 cases have 2 (missing mask_b.*); every item needs "
        "the same annotators",
        "folder: dropped case c10: 3 mask files where the other 3 cases have 2 (extra mask_c.*); every item needs "
        "the same annotators",
    ]
    assert list(data.metadata["case"]) == ["c1", "c2", "c4"] and list(data.groups) == ["p1", "p2", "p4"]
    assert data.masks.shape == (3, 2, 16, 16)


# ---------------------------------------------------------------------------------------------- errors
def _break(kind: str, root: Path) -> None:
    c1, c2 = root / "c1", root / "c2"
    if kind == "no image":
        (c2 / "image.png").unlink()
    elif kind == "missing annotator":
        (c2 / "mask_b.png").unlink()
    elif kind == "two images":
        save(c1 / "image.npy", np.zeros((16, 16), np.float32))
    elif kind == "unsupported mask format":
        (c1 / "mask_a.png").rename(c1 / "mask_a.bmp")
    elif kind == "corrupt image":
        (c1 / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif kind == "truncated mask":
        data = (c2 / "mask_a.png").read_bytes()
        (c2 / "mask_a.png").write_bytes(data[: len(data) // 2])
    elif kind == "empty npy":
        (c1 / "image.png").unlink()
        (c1 / "image.npy").write_bytes(b"")
    elif kind == "truncated nifti":
        (c1 / "image.png").unlink()
        save(c1 / "image.nii.gz", np.zeros((16, 16), np.float32))
        data = (c1 / "image.nii.gz").read_bytes()
        (c1 / "image.nii.gz").write_bytes(data[: len(data) // 2])
    elif kind == "mask size":
        save(c2 / "mask_b.png", np.zeros((10, 12), np.uint8))
    elif kind == "mask values":
        save(c2 / "mask_b.npy", np.array([[0, 1], [2, 1]], np.uint8).repeat(8, 0).repeat(8, 1))
        (c2 / "mask_b.png").unlink()
    elif kind == "grey jpeg mask":
        save(c1 / "mask_a.jpg", np.full((16, 16), 128, np.uint8))
        (c1 / "mask_a.png").unlink()
    elif kind == "nan image":
        (c2 / "image.png").unlink()
        save(c2 / "image.npy", np.where(np.eye(16, dtype=bool), np.nan, 0.5).astype(np.float32))
    elif kind == "inf nifti":
        (c2 / "image.png").unlink()
        save(c2 / "image.nii", np.where(np.eye(16, dtype=bool), np.inf, 0.5).astype(np.float32))
    elif kind == "3-D nifti":
        (c2 / "image.png").unlink()
        save(c2 / "image.nii.gz", np.zeros((16, 16, 3), np.float32))
    elif kind == "3-D npy":
        (c2 / "image.png").unlink()
        save(c2 / "image.npy", np.zeros((5, 16, 16), np.float32))
    elif kind == "channels differ":
        (c1 / "image.png").unlink()
        save(c1 / "image.npy", np.zeros((3, 16, 16), np.float32))
    elif kind == "groups missing a case":
        (root / "groups.csv").write_text("case,group\nc1,p1\n")
    elif kind == "groups unknown case":
        (root / "groups.csv").write_text("case,group\nc1,p1\nc2,p1\nc9,p2\n")
    elif kind == "groups header":
        (root / "groups.csv").write_text("patient,case\nc1,p1\nc2,p1\n")
    elif kind == "groups unreadable":
        (root / "groups.csv").write_bytes(b"\xff\xfe\x00\xd8 binary")
    else:  # pragma: no cover
        raise AssertionError(kind)


BROKEN = [
    ("no image", r"c2: case without an image \(expected c2/image\.<ext>"),
    ("missing annotator", r"c2: missing annotator\(s\) 'b' \(case c2 has 1 mask files; e\.g\. c1 has mask_b\.\*\)"),
    ("two images", r"c1: more than one image file: image\.npy, image\.png"),
    ("unsupported mask format", r"mask_a\.bmp: unsupported mask format '\.bmp'"),
    ("corrupt image", r"c1/image\.png: not a readable image"),
    ("truncated mask", r"c2/mask_a\.png: cannot read the file \(image file is truncated"),
    ("empty npy", r"c1/image\.npy: cannot read the file \(EOFError"),
    ("truncated nifti", r"c1/image\.nii\.gz: not a readable NIfTI file"),
    ("mask size", r"c2/mask_b\.png: mask of size \(10, 12\) does not match the image image\.png of size \(16, 16\)"),
    ("mask values", r"c2/mask_b\.npy: mask values must be \{0, 1\} or \{0, 255\}, found 0, 1, 2"),
    ("grey jpeg mask", r"c1/mask_a\.jpg: expected a binary JPEG mask .* 256 pixels with grey values in \(64, 192\)"),
    ("nan image", r"c2/image\.npy: image contains NaN or infinite values"),
    ("inf nifti", r"c2/image\.nii: image contains NaN or infinite values"),
    ("3-D nifti", r"c2/image\.nii\.gz: expected a 2-D image \[H, W\], got shape \(16, 16, 3\)"),
    ("3-D npy", r"c2/image\.npy: expected a 2-D image \[H, W\] or \[C, H, W\] with C <= 4 channels, got shape "
                r"\(5, 16, 16\)"),
    ("channels differ", r"c2/image\.png: 1 channels, but .*c1/image\.npy has 3"),
    ("groups missing a case", r"groups\.csv: case 'c2' has no row"),
    ("groups unknown case", r"groups\.csv, line 4: 'c9' is not a case folder"),
    ("groups header", r"groups\.csv: expected the header 'case,group', got 'patient,case'"),
    ("groups unreadable", r"groups\.csv: unreadable groups file \(UnicodeDecodeError"),
]


@pytest.mark.parametrize(("kind", "message"), BROKEN, ids=[k for k, _ in BROKEN])
def test_bad_folders_are_refused_naming_the_file(good, kind, message):
    _break(kind, good)
    with pytest.raises(ProbsegError, match=message):
        load_folder(good, size=16)


def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(ProbsegError, match=r"dataset 'folder' needs --data-root PATH \(expected layout: <root>/"):
        load_folder(None)
    with pytest.raises(ProbsegError, match=r"nope: --data-root of dataset 'folder' is not a folder"):
        load_folder(tmp_path / "nope")
    with pytest.raises(ProbsegError, match=r"empty dataset folder, no case sub-folders"):
        load_folder(tmp_path)
    (tmp_path / "c1").mkdir()
    save(tmp_path / "c1" / "image.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbsegError, match=r"no mask_<annotator>\.<ext> file in any case"):
        load_folder(tmp_path)


def test_spec():
    assert SPECS == (FOLDER,)
    assert FOLDER.layout == LAYOUT and "mask_<annotator>" in LAYOUT and "groups.csv" in LAYOUT
    assert [(p.name, p.default) for p in FOLDER.parameters] == [("size", 128)]
    assert inspect.signature(load_folder).parameters["size"].default == 128
    assert FOLDER.license and FOLDER.citation  # the contract test requires both
    with pytest.raises(ProbsegError, match="size must be an integer >= 1"):
        load_folder(Path("."), size=0)


# ------------------------------------------------------------------------------------------- npz_to_folder
def test_npz_to_folder_on_the_real_bubil_sample(shared_data, tmp_path):
    src = shared_data / BUBIL
    out = tmp_path / "bubil-folder"
    assert load_script().main([str(src), str(out)]) == 0
    with np.load(src, allow_pickle=False) as z:
        images, masks, raters, ids = z["images"], z["masks"], z["rater_names"], z["ids"]
    data = load_folder(out)
    assert data.images.shape == (35, 1, 128, 128) and data.masks.shape == (35, 10, 128, 128)
    assert list(data.metadata["case"]) == [i.removesuffix(".png") for i in ids]
    np.testing.assert_array_equal(data.images[:, 0], images.astype(np.float32) / np.float32(255))
    order = [list(raters).index(a) for a in scan_folder(out).annotators]
    assert sorted(order) == list(range(10))
    np.testing.assert_array_equal(data.masks, masks[:, order])
    assert (out / "LICENSE.txt").read_bytes() == (src.parent / "LICENSE.txt").read_bytes()


def test_npz_to_folder_names_formats_and_refusals(tmp_path, capsys):
    script = load_script()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, (3, 8, 8)).astype(np.uint16)
    masks = rng.integers(0, 2, (3, 2, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "plain.npz", images=images, masks=masks)
    out = tmp_path / "plain"
    assert script.main([str(tmp_path / "plain.npz"), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000", "0001", "0002"]
    assert sorted(p.name for p in (out / "0001").iterdir()) == ["image.png", "mask_a0.png", "mask_a1.png"]
    data = load_folder(out, size=8)
    np.testing.assert_array_equal(data.images[:, 0], images / np.float32(65535))
    np.testing.assert_array_equal(data.masks, masks)

    floats = rng.normal(size=(2, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "named.npz", x=floats, y=masks[:2] * 255, case=np.array(["p/1.png", "p 2"]),
             who=np.array(["dr smith", "dr/jones"]))
    out = tmp_path / "named"
    args = [str(tmp_path / "named.npz"), str(out), "--images", "x", "--masks", "y", "--ids", "case",
            "--annotators", "who"]
    assert script.main(args) == 0
    assert scan_folder(out).annotators == ("dr_jones", "dr_smith")
    assert [c.name for c in scan_folder(out).cases] == ["p_1", "p_2"]
    data = load_folder(out, size=8)
    np.testing.assert_array_equal(data.images[:, 0], floats)  # float images travel as .npy, as stored
    np.testing.assert_array_equal(data.masks[:, 1], masks[:2, 0])  # dr smith = annotator 0 of the npz

    capsys.readouterr()
    assert script.main(args) == 2  # out exists and is not empty
    assert "output folder exists and is not empty" in capsys.readouterr().err
    assert script.main([str(tmp_path / "plain.npz"), str(tmp_path / "o2"), "--ids", "nokey"]) == 2
    assert "no array 'nokey'" in capsys.readouterr().err

    np.savez(tmp_path / "pickled.npz", images=images, masks=masks, ids=np.array([{"a": 1}] * 3, dtype=object))
    assert script.main([str(tmp_path / "pickled.npz"), str(tmp_path / "o3")]) == 2
    assert "not a readable .npz without pickles" in capsys.readouterr().err
    np.savez(tmp_path / "grey.npz", images=images, masks=masks * 3)
    assert script.main([str(tmp_path / "grey.npz"), str(tmp_path / "o4")]) == 2
    assert "must hold {0, 1} or {0, 255}" in capsys.readouterr().err
    leftovers = {p.name for p in tmp_path.iterdir()} - {"plain.npz", "plain", "named.npz", "named", "pickled.npz",
                                                         "grey.npz"}
    assert not leftovers, leftovers  # nothing half-written


# ------------------------------------------------------------------------------------------- end to end
def test_protocol_runs_end_to_end_on_a_folder(tmp_path, tiny_preset):
    from probseg_bench.plugins import load_plugins
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import RunRequest, check_request
    from probseg_bench.results import ResultsStore

    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for i in range(12):
        save(root / f"case{i}" / "image.png", rng.integers(0, 256, (36, 28), dtype=np.uint8))
        for a in range(2):
            m = np.zeros((36, 28), np.uint8)
            m[10 + a : 20 + i % 3, 8 : 18 + a] = 255
            save(root / f"case{i}" / f"mask_r{a}.png", m)
    (root / "groups.csv").write_text("case,group\n" + "".join(f"case{i},p{i // 2}\n" for i in range(12)))
    plugins = load_plugins()
    plugins.datasets.set_provider("test", "test")
    if "folder" not in plugins.datasets.names():
        plugins.datasets.add(FOLDER)
    request = RunRequest(
        model="punet", dataset="folder", latent_dims=(2,), folds=(0,), preset=tiny_preset,
        hyperparameters={"filters": "4,8", "convs_per_block": 1}, run_dir=tmp_path / "runs", data_root=root,
        dataset_params={"size": 32},
    )
    (record,) = run_protocol(check_request(request, plugins), ResultsStore(str(tmp_path / "r.db")))
    m = record.metrics
    assert set(record.test_groups) <= {f"p{k}" for k in range(6)} and len(record.test_ids) % 2 == 0
    assert 0.0 <= m["hm_iou"] <= 1.0 and m["hm_iou"] + m["ewd"] == pytest.approx(1.0)
    assert 0.0 <= m["ged"] <= 2.0 and 1.0 <= m["er"] <= 2.0
