"""Image and masks in different geometry, and palette masks (issue 25, items 1 and 8), on real files written here:
NIfTI with real affines (nibabel), palette / EXIF-tagged PNG, TIFF and JPEG (Pillow).

- A NIfTI mask stored in another axis order or direction than its image, with the matching affine (aligned in
  world space, not in array space), is brought into the image's array order in every loader that reads NIfTI
  (folder, QUBIQ); a mask off the image's voxel grid (shape, spacing, position, rotation) is refused in one line
  naming the file.
- PNG / JPEG / TIFF are read upright by their EXIF orientation tag (folder, lidc-crops, the CIMD reader).
- Palette ("P") masks are read as their indices (folder, lidc-crops); a palette image as its grey levels.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from probseg_bench.data.loading import DatasetWarning
from probseg_bench.errors import ProbsegError
from probseg_datasets.cimd import read_cimd_folder
from probseg_datasets.common import read_array
from probseg_datasets.folder import load_folder
from probseg_datasets.geometry import GRID_TOLERANCE, to_image_grid, voxel_grid
from probseg_datasets.lidc import load_lidc_crops
from probseg_datasets.qubiq import load_qubiq

# a real-looking CT affine: 0.8 mm in-plane, 2.5 mm slices, x running right-to-left (as DICOM's LPS in RAS)
AFFINE = np.array([[-0.8, 0.0, 0.0, 100.0], [0.0, 0.8, 0.0, -50.0], [0.0, 0.0, 2.5, 10.0], [0.0, 0.0, 0.0, 1.0]])
STRUCTURE, BACKGROUND = 550.0, 40.0


def flip(axis: int, n: int) -> np.ndarray:
    """Voxel-index map of an array flipped along ``axis`` (length ``n``): index i holds old index n - 1 - i."""
    m = np.eye(4)
    m[axis, axis], m[axis, 3] = -1.0, n - 1
    return m


def swap01() -> np.ndarray:
    """Voxel-index map of an array with its first two axes transposed."""
    return np.eye(4)[[1, 0, 2, 3]]


def save_nii(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def ct_slice(h: int = 64, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [h, w, 1] with a structure of 550 off-centre on the left, its mask uint8 [h, w, 1])."""
    image = np.full((h, w, 1), BACKGROUND, np.float32)
    image[6:18, 10:30] = STRUCTURE
    mask = np.zeros((h, w, 1), np.uint8)
    mask[6:18, 10:30] = 1
    return image, mask


# the mask's array order: (array transform, index map for its affine); aligned in world space each time
STORED = {
    "left-right mirrored": (lambda m: m[::-1], flip(0, 64)),
    "front-back mirrored": (lambda m: m[:, ::-1], flip(1, 48)),
    "axes swapped": (lambda m: m.transpose(1, 0, 2), swap01()),
    "swapped and mirrored": (lambda m: m[::-1, ::-1].transpose(1, 0, 2), flip(0, 64) @ flip(1, 48) @ swap01()),
    "2-D array, mirrored": (lambda m: m[::-1, :, 0], flip(0, 64)),
}


# ------------------------------------------------------------------------------------------------- folder, NIfTI
def write_folder(root: Path, stored: str, cases: tuple[str, ...] = ("c1", "c2", "c3")) -> None:
    transform, index_map = STORED[stored]
    image, mask = ct_slice()
    for case in cases:
        save_nii(root / case / "image.nii.gz", image, AFFINE)
        for a in ("a", "b"):
            save_nii(root / case / f"mask_{a}.nii.gz", np.ascontiguousarray(transform(mask)), AFFINE @ index_map)


@pytest.mark.parametrize("stored", list(STORED))
def test_folder_brings_masks_in_another_axis_order_onto_the_image(tmp_path, stored):
    """The issue's input (and its kin): masks mirrored in array space with the mirrored affine."""
    write_folder(tmp_path, stored)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # all NIfTI: nothing to warn about
        data = load_folder(tmp_path, size=64)
    _, mask = ct_slice()
    expected = np.pad(mask[:, :, 0], ((0, 0), (8, 8)))  # 64 x 48 zero-padded to 64 x 64
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(data.masks[i, j], expected)
    inside = data.images[:, 0][data.masks[:, 0].astype(bool)]
    assert inside.mean() == STRUCTURE  # before the fix: 40.0, the masks sat on background


def test_folder_mask_within_header_rounding_is_taken_as_is(tmp_path):
    image, mask = ct_slice()
    save_nii(tmp_path / "c1" / "image.nii.gz", image, AFFINE)
    noisy = AFFINE.copy()
    noisy[:3, 3] += 1e-4  # 0.1 um: float32 rounding of a header, far below GRID_TOLERANCE of a voxel
    noisy[0, 1] = 1e-6
    save_nii(tmp_path / "c1" / "mask_a.nii.gz", mask, noisy)
    data = load_folder(tmp_path, size=64)
    np.testing.assert_array_equal(data.masks[0, 0], np.pad(mask[:, :, 0], ((0, 0), (8, 8))))


def shifted(shift_mm: float) -> np.ndarray:
    out = AFFINE.copy()
    out[0, 3] += shift_mm
    return out


def rotated(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return rot @ AFFINE


OFF_GRID = {
    "spacing": (np.array([[-1.0, 0, 0, 100.0], [0, 1.0, 0, -50.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1.0]]),
                r"voxel size 1x1x2\.5 mm where the image has 0\.8x0\.8x2\.5 mm"),
    "origin one voxel off": (shifted(0.8), r"voxels lie up to 1 voxels away from the image's \(origin shifted by "
                                           r"0\.8x0x0 mm"),
    "half a voxel off": (shifted(-0.4), r"up to 0\.5 voxels away"),
    "rotated 5 degrees": (rotated(5.0), r"voxels away from the image's .*or the axes rotated"),
}


@pytest.mark.parametrize("case", list(OFF_GRID))
def test_folder_refuses_a_mask_off_the_image_grid_in_one_line(tmp_path, case):
    affine, message = OFF_GRID[case]
    image, mask = ct_slice()
    save_nii(tmp_path / "c1" / "image.nii.gz", image, AFFINE)
    save_nii(tmp_path / "c1" / "mask_a.nii.gz", mask, affine)
    with pytest.raises(ProbsegError) as info:
        load_folder(tmp_path, size=64)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'c1' / 'mask_a.nii.gz'}: mask not on the voxel grid of its image "
                           f"{tmp_path / 'c1' / 'image.nii.gz'}: ")
    assert text.endswith("; resample the mask onto the image or fix its header")
    assert re.search(message, text), text


@pytest.mark.parametrize(("stored", "affine", "message"), [
    ((48, 64, 1), AFFINE, r"mask shape \(48, 64, 1\) differs from the image shape \(64, 48, 1\) of image\.nii\.gz"),
    ((40, 64, 1), AFFINE @ swap01(), r"mask shape \(40, 64, 1\) \(ALS; \(64, 40, 1\) in the image's axis order "
                                     r"LAS\) differs from the image shape \(64, 48, 1\) of image\.nii\.gz"),
])
def test_folder_refuses_a_mask_of_another_shape(tmp_path, stored, affine, message):
    image, _ = ct_slice()
    save_nii(tmp_path / "c1" / "image.nii.gz", image, AFFINE)
    save_nii(tmp_path / "c1" / "mask_a.nii.gz", np.zeros(stored, np.uint8), affine)
    with pytest.raises(ProbsegError, match=rf"^{re.escape(str(tmp_path))}/c1/mask_a\.nii\.gz: {message}; "
                                           r"resample the mask onto the image$"):
        load_folder(tmp_path, size=64)


def test_folder_refuses_a_degenerate_affine(tmp_path):
    image, mask = ct_slice()
    save_nii(tmp_path / "c1" / "image.nii.gz", image, AFFINE)
    flat = AFFINE.copy()
    flat[:, 0] = 0.0
    flat[3, 3] = 1.0
    broken = nib.Nifti1Image(mask, None)
    broken.set_sform(flat, code=1)  # the sform stores any matrix (a qform could not hold this one)
    nib.save(broken, str(tmp_path / "c1" / "mask_a.nii.gz"))
    with pytest.raises(ProbsegError, match=r"mask_a\.nii\.gz: .*the affine of mask_a\.nii\.gz maps no volume "
                                           r"\(voxel sizes 0x0\.8x2\.5 mm\); fix its header$"):
        load_folder(tmp_path, size=64)


def test_folder_warns_once_when_nifti_meets_formats_without_geometry(tmp_path):
    image, mask = ct_slice()
    for case in ("c1", "c2"):
        save_nii(tmp_path / case / "image.nii.gz", image, AFFINE)
        Image.fromarray(mask[:, :, 0] * np.uint8(255)).save(tmp_path / case / "mask_a.png")
    save_nii(tmp_path / "c3" / "image.nii.gz", image, AFFINE)
    save_nii(tmp_path / "c3" / "mask_a.nii.gz", mask, AFFINE)
    with pytest.warns(DatasetWarning) as caught:
        data = load_folder(tmp_path, size=64)
    notes = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert notes == ["folder: 2 of the 3 cases pair NIfTI with files that carry no voxel geometry (e.g. case c1: "
                     "image.nii.gz, mask_a.png); their arrays are matched by index and shape only, so their "
                     "alignment could not be checked"]
    assert data.masks.shape == (3, 1, 64, 64)


def test_to_image_grid_returns_the_same_array_for_the_same_grid(tmp_path):
    image, mask = ct_slice()
    save_nii(tmp_path / "image.nii", image, AFFINE)
    save_nii(tmp_path / "mask.nii", mask, AFFINE)
    grid, ref = voxel_grid(tmp_path / "mask.nii"), voxel_grid(tmp_path / "image.nii")
    assert grid is not None and ref is not None
    assert to_image_grid(mask, grid, ref) is mask
    assert voxel_grid(tmp_path / "mask.png") is None  # no geometry outside NIfTI
    assert 0 < GRID_TOLERANCE < 0.1


# ------------------------------------------------------------------------------------------------------- QUBIQ
def test_qubiq_volume_with_a_mirrored_annotator_keeps_slices_and_masks_aligned(tmp_path):
    """pancreas: 3-D CT; annotator 2 stored mirrored left-right and head-feet (the axial axis), with its affine."""
    root = tmp_path / "pancreas"
    h, w, d = 20, 24, 5
    volume = np.full((h, w, d), -100, np.int16)
    volume[3:7, 4:9, 1] = 200
    volume[10:13, 12:18, 3] = 200
    truth = (volume == 200).astype(np.uint8)
    case = root / "Training" / "case01"
    save_nii(case / "image.nii.gz", volume, AFFINE)
    save_nii(case / "task01_seg01.nii.gz", truth, AFFINE)
    save_nii(case / "task01_seg02.nii.gz", np.ascontiguousarray(truth[::-1, :, ::-1]),
             AFFINE @ flip(0, h) @ flip(2, d))
    data = load_qubiq(root, "qubiq-pancreas", crop="center", size=24)
    assert data.metadata["slice"].tolist() == [1, 3]  # the image's axial order, not the mirrored mask's
    np.testing.assert_array_equal(data.masks[:, 0], data.masks[:, 1])
    assert data.masks.sum() == 2 * (4 * 5 + 3 * 6)
    inside = data.images[:, 0][data.masks[:, 1].astype(bool)]
    np.testing.assert_allclose(inside, (200 + 160) / 400)  # the structure's CT window value, not background


def test_qubiq_refuses_an_annotator_on_another_grid(tmp_path):
    root = tmp_path / "kidney"
    case = root / "Training" / "case01"
    image = np.zeros((20, 24), np.int16)
    save_nii(case / "image.nii.gz", image, AFFINE)
    save_nii(case / "task01_seg01.nii.gz", np.ones((20, 24), np.uint8), AFFINE)
    save_nii(case / "task01_seg02.nii.gz", np.ones((20, 24), np.uint8), shifted(2.4))
    with pytest.raises(ProbsegError, match=r"case01/task01_seg02\.nii\.gz: mask not on the voxel grid of its image "
                                           r".*case01/image\.nii\.gz: its voxels lie up to 3 voxels away"):
        load_qubiq(root, "qubiq-kidney")


def test_qubiq_channels_image_with_mirrored_plane_masks(tmp_path):
    """brain-tumor: H x W x 4 image (channels on the third axis), H x W masks; one stored mirrored."""
    root = tmp_path / "brain-tumor"
    case = root / "Training" / "case01"
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (20, 24, 4)).astype(np.float32)
    mask = np.zeros((20, 24), np.uint8)
    mask[2:6, 3:7] = 1
    save_nii(case / "image.nii.gz", image, AFFINE)
    save_nii(case / "task01_seg01.nii.gz", mask, AFFINE)
    save_nii(case / "task01_seg02.nii.gz", np.ascontiguousarray(mask[::-1]), AFFINE @ flip(0, 20))
    data = load_qubiq(root, "qubiq-brain-tumor", crop="center", size=24)
    assert data.images.shape == (1, 4, 24, 24)
    np.testing.assert_array_equal(data.masks[0, 0], data.masks[0, 1])
    assert data.masks[0, 1].sum() == 16


# ------------------------------------------------------------------------------------------------ palette masks
def palette_mask(indices: np.ndarray) -> Image.Image:
    """A labelme / VOC-style label image: mode P, index k = class k, VOC's colour map."""
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    voc = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]
    im.putpalette(voc)
    return im


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_folder_reads_palette_masks_as_their_indices(tmp_path, ext):
    """labelme #132: indices 0/1 were turned into the grey levels 0/38 and refused."""
    rng = np.random.default_rng(1)
    truth = {}
    for case in ("c1", "c2"):
        (tmp_path / case).mkdir()
        Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8)).save(tmp_path / case / "image.png")
        for j, a in enumerate(("a", "b")):
            m = np.zeros((16, 20), np.uint8)
            m[3 + j : 9, 4:12] = 1
            palette_mask(m).save(tmp_path / case / f"mask_{a}.{ext}")
            truth[case, a] = m
    with Image.open(tmp_path / "c1" / f"mask_a.{ext}") as im:
        assert im.mode == "P"
        assert set(np.unique(np.asarray(im.convert("L")))) == {0, 38}  # what was read before
    data = load_folder(tmp_path, size=20)
    for i, case in enumerate(("c1", "c2")):
        for j, a in enumerate(("a", "b")):
            np.testing.assert_array_equal(data.masks[i, j], np.pad(truth[case, a], ((2, 2), (0, 0))))


def test_voc_boundary_index_is_refused_naming_the_indices(tmp_path):
    (tmp_path / "c1").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "c1" / "image.png")
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255  # VOC's "void" border
    m[3, 3] = 1
    palette_mask(m).save(tmp_path / "c1" / "mask_a.png")
    with pytest.raises(ProbsegError, match=r"c1/mask_a\.png: mask values must be \{0, 1\} or \{0, 255\}, "
                                           r"found 0, 1, 255$"):
        load_folder(tmp_path, size=8)


def test_a_palette_image_is_read_as_its_grey_levels_and_a_palette_mask_as_indices(tmp_path):
    path = tmp_path / "p.png"
    im = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0, 0, 0] * 253)
    im.save(path)
    np.testing.assert_array_equal(read_array(path), [[0, 255], [128, 255]])
    np.testing.assert_array_equal(read_array(path, mask=True), [[0, 1], [2, 1]])
    transparent = tmp_path / "t.png"
    im.save(transparent, transparency=0)  # a transparent background index (tRNS chunk): still indices
    with Image.open(transparent) as check:
        assert check.mode == "P" and check.info["transparency"] == 0
    np.testing.assert_array_equal(read_array(transparent, mask=True), [[0, 1], [2, 1]])


def test_lidc_crops_reads_palette_masks_as_indices(tmp_path):
    for c in range(2):
        (tmp_path / "images" / "p1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "gt" / "p1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(tmp_path / "images" / "p1" / f"z-1.5_c{c}.png")
        for a in (0, 1):
            m = np.zeros((32, 32), np.uint8)
            m[10 : 14 + a, 10:20] = 1
            palette_mask(m).save(tmp_path / "gt" / "p1" / f"z-1.5_c{c}_l{a}.png")
    data = load_lidc_crops(tmp_path, size=32)
    assert data.masks.reshape(2, 2, -1).sum(-1).tolist() == [[40, 50], [40, 50]]


# ---------------------------------------------------------------------------------------- EXIF orientation tag
def upside_down_with_tag(array: np.ndarray, path: Path, **save: object) -> None:
    """Store ``array`` rotated by 180 degrees with EXIF orientation 3 (a viewer turns it back upright)."""
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(np.ascontiguousarray(array[::-1, ::-1])).save(path, exif=exif, **save)


def test_folder_reads_png_upright_by_its_exif_orientation(tmp_path):
    """A camera image with an orientation tag, its mask drawn on the upright view (labelme, CVAT) and untagged."""
    image = np.full((12, 16), 20, np.uint8)
    image[1:4, 2:6] = 250
    mask = (image == 250).astype(np.uint8) * np.uint8(255)
    (tmp_path / "c1").mkdir()
    upside_down_with_tag(image, tmp_path / "c1" / "image.png")
    Image.fromarray(mask).save(tmp_path / "c1" / "mask_a.png")
    np.testing.assert_array_equal(read_array(tmp_path / "c1" / "image.png"), image)
    data = load_folder(tmp_path, size=16)
    inside = data.images[0, 0][data.masks[0, 0].astype(bool)]
    np.testing.assert_allclose(inside, 250 / 255)


def test_cimd_reader_reads_jpeg_upright_by_its_exif_orientation(tmp_path):
    case = tmp_path / "training" / "1"
    case.mkdir(parents=True)
    image = np.full((16, 16), 30, np.uint8)
    image[2:6, 3:8] = 240
    upside_down_with_tag(image, case / "image_1.jpg", quality=100)
    Image.fromarray((image == 240).astype(np.uint8) * np.uint8(255)).save(case / "label0_.jpg", quality=100)
    images, masks, _, _ = read_cimd_folder(tmp_path)
    assert masks[0, 0].sum() == 20
    assert images[0, 0][masks[0, 0].astype(bool)].min() > 200  # the mask sits on the bright structure
