"""The generic ``folder`` dataset: a user's own multi-annotator data, one folder per case.

Layout::

    <root>/<case>/image.<ext>              the image (exactly one per case)
    <root>/<case>/mask_<annotator>.<ext>   one binary mask per annotator
    <root>/groups.csv                      optional, header ``case,group``: the patient of each case

``<ext>`` is one of png, jpg/jpeg, tif/tiff, nii/nii.gz, npy (the image and the masks of a case may use
different formats). The annotator names are the parts after ``mask_``, discovered from the files and sorted
naturally (``mask_2`` before ``mask_10``). Every item holds the same annotators: those the most cases have; a
case with fewer (or other) mask files is dropped with one warning line naming it and its file count
(:func:`probseg_datasets.common.consistent_annotators`). Cases are the
sub-folders of ``<root>`` (hidden ones, starting with ``.``, are skipped), also sorted naturally; other files
(a LICENSE.txt, a README) are ignored. Without groups.csv every case is its own group (patient); with it,
every case must have exactly one row and every row must name a case.

Images are 2-D (a trailing singleton axis is dropped; colour PNG / JPEG / TIFF become luminance grey); an
``.npy`` may also hold ``[C, H, W]`` with C <= 4 channels (all cases the same C). Intensities: the rule of
every loader (:func:`probseg_bench.data.intensity.model_intensities`) by the dtype stored in the file: bool
0 / 1, uint8 / 255, uint16 / 65535, anything else (float, other integer types, and NIfTI data after the
header's scaling) as stored, as float32; NaN or infinite values are refused. A NIfTI image is
read as its data array, axes not reordered; a NIfTI mask of a NIfTI image is brought onto the image's voxel
grid: when its affine differs only by the order or direction of the axes (e.g. stored left-right mirrored with
the mirrored affine) its voxels are reordered exactly, and a mask of another shape, spacing or position is
refused naming the file (:func:`probseg_datasets.geometry.to_image_grid`). A case that pairs NIfTI with a
format without geometry (PNG, JPEG, TIFF, npy) is matched by array index only: one warning line says how many
cases do. PNG / JPEG / TIFF files are turned upright by their EXIF orientation tag. Images and masks are then
centre-cropped / zero-padded to ``size`` x ``size`` (dataset parameter ``size``, default 128).

Masks hold {0, 1} or {0, 255} (bool too); a palette ("P") PNG / TIFF mask is read as its palette indices (as
labelme and VOC-style tools write them: 0 background, 1 foreground); a JPEG mask (lossy) is accepted when no
grey value lies strictly between 64 and 192, and is thresholded at 128 (the rule of
:mod:`probseg_datasets.cimd`). A mask must have the image's height and width.

Every problem raises :class:`ProbsegError` naming the file or folder and what was expected.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import DatasetSpec, HyperParameter, MultiRaterData, ProtocolDefaults
from probseg_bench.data.intensity import model_intensities
from probseg_bench.data.loading import DatasetWarning
from probseg_bench.errors import ProbsegError
from probseg_bench.memory import check_fits
from probseg_datasets.common import (
    IMAGE_SUFFIXES,
    as_binary_mask,
    as_image_2d,
    center_crop_or_pad,
    consistent_annotators,
    read_array,
    require_root,
    suffix,
)
from probseg_datasets.geometry import VoxelGrid, to_image_grid, voxel_grid

__all__ = [
    "FOLDER",
    "LAYOUT",
    "SPECS",
    "FolderCase",
    "FolderIndex",
    "load_folder",
    "natural_key",
    "read_folder_image",
    "read_folder_mask",
    "read_groups",
    "scan_folder",
]

LAYOUT = (
    "<root>/<case>/image.<ext> and one <root>/<case>/mask_<annotator>.<ext> per annotator "
    "(ext: png, jpg/jpeg, tif/tiff, nii/nii.gz, npy; every case has the same annotators); "
    "optional <root>/groups.csv with header 'case,group' (default: every case its own group)"
)
GROUPS_FILE = "groups.csv"
MAX_CHANNELS = 4
"""An ``.npy`` image may be ``[C, H, W]`` with at most this many channels."""
JPEG_MASK_THRESHOLD = 128
"""A JPEG mask pixel is foreground when its grey value is >= 128."""
JPEG_MASK_AMBIGUOUS = (64, 192)
"""JPEG mask grey values strictly inside this band are not compression noise around 0 or 255: refused."""

_JPEG = (".jpg", ".jpeg")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders the digit runs of ``name`` by value: ``"mask_2" < "mask_10"``, ``"c9" < "c10"``.

    Letters compare case-insensitively; ties (names differing only in case or leading zeros) keep a stable
    order through the full name as the last element.
    """
    parts: list[tuple[int, int | str]] = [
        (0, int(tok)) if tok.isdigit() else (1, tok.lower()) for tok in re.split(r"(\d+)", name) if tok
    ]
    parts.append((1, name))
    return tuple(parts)


@dataclass(frozen=True)
class FolderCase:
    """One case of a folder dataset: its name, its image file and its mask files in annotator order."""

    name: str
    image: Path
    masks: tuple[Path, ...]


@dataclass(frozen=True)
class FolderIndex:
    """What :func:`scan_folder` found: the cases (natural order), the annotators (natural order) and the
    group of each case (from groups.csv, else the case name)."""

    root: Path
    cases: tuple[FolderCase, ...]
    annotators: tuple[str, ...]
    groups: tuple[str, ...]


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(suffix(path))] if suffix(path) else path.name


def _scan_case(case: Path) -> tuple[Path, dict[str, Path]]:
    """(image file, {annotator: mask file}) of one case folder."""
    images: list[Path] = []
    masks: dict[str, Path] = {}
    for path in sorted(case.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stem, kind = _stem(path), suffix(path)
        if stem == "image":
            if kind not in IMAGE_SUFFIXES:
                raise ProbsegError(f"{path}: unsupported image format '{kind}'; expected one of "
                                   f"{', '.join(IMAGE_SUFFIXES)}")
            images.append(path)
        elif stem.startswith("mask_"):
            if kind not in IMAGE_SUFFIXES:
                raise ProbsegError(f"{path}: unsupported mask format '{kind}'; expected one of "
                                   f"{', '.join(IMAGE_SUFFIXES)}")
            annotator = stem[len("mask_"):]
            if not annotator:
                raise ProbsegError(f"{path}: mask file without an annotator name (expected mask_<annotator>{kind})")
            if annotator in masks:
                raise ProbsegError(
                    f"{case}: two mask files for annotator '{annotator}': {masks[annotator].name} and {path.name}"
                )
            masks[annotator] = path
    if not images:
        raise ProbsegError(f"{case}: case without an image (expected {case.name}/image.<ext>, ext one of "
                           f"{', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)})")
    if len(images) > 1:
        raise ProbsegError(f"{case}: more than one image file: {', '.join(p.name for p in images)}")
    return images[0], masks


def read_groups(path: Path, cases: Sequence[str]) -> list[str]:
    """The group (patient) of each case from a ``groups.csv`` with header ``case,group``.

    Blank lines are skipped; fields are stripped of surrounding spaces; a UTF-8 byte-order mark is allowed.

    Args:
        path: the CSV file.
        cases: the case names found in the folder.

    Returns:
        The group of each of ``cases``, in that order (str).

    Raises:
        ProbsegError: unreadable file or bad CSV, a header other than ``case,group``, a row without exactly two
            fields or with an empty field, a case listed twice, a row naming no case folder, a case without a
            row. The message names the file (and the line).
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProbsegError(f"{path}: unreadable groups file ({type(exc).__name__}: {exc})") from None
    if not rows or [f.strip().lower() for f in rows[0][1]] != ["case", "group"]:
        got = ",".join(rows[0][1]) if rows else "an empty file"
        raise ProbsegError(f"{path}: expected the header 'case,group', got {got!r}")
    known = set(cases)
    mapping: dict[str, str] = {}
    for line, row in rows[1:]:
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ProbsegError(f"{path}, line {line}: expected two non-empty fields 'case,group', got {row}")
        case, group = row[0].strip(), row[1].strip()
        if case in mapping:
            raise ProbsegError(f"{path}, line {line}: case '{case}' is listed twice")
        if case not in known:
            raise ProbsegError(f"{path}, line {line}: '{case}' is not a case folder of {path.parent}")
        mapping[case] = group
    missing = [c for c in cases if c not in mapping]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ProbsegError(f"{path}: case '{missing[0]}'{more} has no row; every case needs a group")
    return [mapping[c] for c in cases]


def scan_folder(root: Path | str) -> FolderIndex:
    """Discover the cases, the annotators and the groups of a folder dataset (no pixel is read).

    The annotators are those the most cases have; a case with other mask files is left out of the index with a
    :class:`~probseg_bench.data.loading.DatasetWarning` naming it
    (:func:`~probseg_datasets.common.consistent_annotators`).

    Raises:
        ProbsegError: missing root or no case folder; a case without an image (or with two); a mask file with
            an unsupported format or without an annotator name; no mask file at all; cases whose annotators
            differ so much that at most half of them share one set (the message names a case and the annotators
            it lacks); a bad groups.csv (see :func:`read_groups`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ProbsegError(f"{root}: not a folder (expected layout: {LAYOUT})")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: natural_key(p.name))
    if not folders:
        raise ProbsegError(f"{root}: empty dataset folder, no case sub-folders (expected layout: {LAYOUT})")
    found = [(folder, *_scan_case(folder)) for folder in folders]
    if not any(masks for _, _, masks in found):
        raise ProbsegError(f"{root}: no mask_<annotator>.<ext> file in any case (expected layout: {LAYOUT})")

    def refuse(i: int, have: frozenset[str], common: frozenset[str]) -> str:
        folder = found[i][0]
        missing = sorted(common - have, key=natural_key)
        if not missing:  # extra annotators only
            extra = sorted(have - common, key=natural_key)
            return (f"{folder}: extra annotator(s) {', '.join(repr(a) for a in extra)} (case {folder.name} has "
                    f"{len(have)} mask files, most cases {len(common)}); every case needs the same annotators")
        having = next(f for f, _, m in found if missing[0] in m)
        return (
            f"{folder}: missing annotator(s) {', '.join(repr(a) for a in missing)} "
            f"(case {folder.name} has {len(have)} mask files; e.g. {having.name} has "
            f"mask_{missing[0]}.*); every case needs the same annotators"
        )

    check = consistent_annotators(
        "folder", [(f"case {f.name}", masks) for f, _, masks in found], unit="mask files",
        name=lambda a: f"mask_{a}.*", refuse=refuse,
    )
    everyone = sorted(check.reference, key=natural_key)
    names = [f.name for f, _, _ in found]
    groups_file = root / GROUPS_FILE
    all_groups = read_groups(groups_file, names) if groups_file.exists() else names
    cases = tuple(FolderCase(found[i][0].name, found[i][1], tuple(found[i][2][a] for a in everyone))
                  for i in check.kept)
    groups = [all_groups[i] for i in check.kept]
    return FolderIndex(root, cases, tuple(everyone), tuple(groups))


def _read(path: Path, mask: bool = False) -> np.ndarray:
    """``read_array`` with every failure (e.g. an empty .npy: EOFError) as a ProbsegError naming the file."""
    try:
        return read_array(path, mask=mask)
    except ProbsegError:
        raise
    except Exception as exc:
        raise ProbsegError(f"{path}: cannot read the file ({type(exc).__name__}: {exc})") from None


def _nifti_stored_dtype(path: Path) -> np.dtype | None:
    """The on-disk integer dtype of an unscaled NIfTI image (None when the header scales the data)."""
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))  # a Nifti1/2Image (the stubs type it as FileBasedImage)
        dtype = np.dtype(img.get_data_dtype())
        # nibabel moves scl_slope / scl_inter from the header into the array proxy on load
        slope, inter = float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0))
    except Exception as exc:  # the data was read already; a header problem is still reported by file
        raise ProbsegError(f"{path}: not a readable NIfTI header ({type(exc).__name__}: {exc})") from None
    unscaled = slope == 1.0 and inter == 0.0
    return dtype if unscaled else None


def read_folder_image(path: Path) -> np.ndarray:
    """One image file -> float32 [C, H, W] (C = 1 except for a multi-channel ``.npy``).

    Intensities by the dtype stored in the file (:func:`probseg_bench.data.intensity.model_intensities`): bool
    0 / 1, uint8 / 255, uint16 / 65535, anything else as stored (for NIfTI: the on-disk dtype of an unscaled
    image, else the scaled values as stored).

    Raises:
        ProbsegError: unreadable / truncated file; not 2-D (or ``[C, H, W]`` with C <= 4 for ``.npy``);
            NaN or infinite values.
    """
    arr = _read(path)
    if arr.dtype.kind not in "fiub":
        raise ProbsegError(f"{path}: expected numeric intensities, got dtype {arr.dtype}")
    stored = arr.dtype
    if suffix(path) in (".nii", ".nii.gz"):
        stored = _nifti_stored_dtype(path) or arr.dtype
    if suffix(path) == ".npy" and arr.ndim == 3 and 1 < arr.shape[0] <= MAX_CHANNELS:
        out = arr  # [C, H, W]
    else:
        if arr.ndim > 2 and np.squeeze(arr).ndim != 2:
            extra = f" or [C, H, W] with C <= {MAX_CHANNELS} channels" if suffix(path) == ".npy" else ""
            raise ProbsegError(f"{path}: expected a 2-D image [H, W]{extra}, got shape {arr.shape}")
        out = as_image_2d(arr, path)[None]  # float32, finite (raises naming the file otherwise)
    return model_intensities(out, stored, str(path))


def read_folder_mask(path: Path, image: VoxelGrid | None = None) -> np.ndarray:
    """One mask file -> uint8 {0, 1} [H, W].

    Values {0, 1} or {0, 255} (bool too); a palette PNG / TIFF gives its palette indices. A JPEG mask is
    accepted when no grey value lies strictly inside (64, 192), then thresholded at 128 (JPEG compression leaves
    values near 0 and 255). With ``image`` (the voxel grid of a NIfTI image) a NIfTI mask is first brought into
    the image's axis order (:func:`probseg_datasets.geometry.to_image_grid`).

    Raises:
        ProbsegError: unreadable / truncated file, not 2-D, other values (JPEG: grey values in (64, 192)), a
            NIfTI mask not on the grid of ``image`` (another shape, spacing or position).
    """
    arr = _read(path, mask=True)
    grid = voxel_grid(path) if image is not None else None
    if image is not None and grid is not None:
        arr = to_image_grid(arr, grid, image)
    if arr.ndim > 2:
        squeezed = np.squeeze(arr)
        if squeezed.ndim != 2:
            raise ProbsegError(f"{path}: expected a 2-D mask [H, W], got shape {arr.shape}")
        arr = squeezed
    if arr.ndim != 2:
        raise ProbsegError(f"{path}: expected a 2-D mask [H, W], got shape {arr.shape}")
    if suffix(path) in _JPEG:
        low, high = JPEG_MASK_AMBIGUOUS
        ambiguous = (arr > low) & (arr < high)
        if ambiguous.any():
            raise ProbsegError(
                f"{path}: expected a binary JPEG mask (values near 0 or 255), found {int(ambiguous.sum())} "
                f"pixels with grey values in ({low}, {high})"
            )
        return (arr >= JPEG_MASK_THRESHOLD).astype(np.uint8)
    if arr.dtype.kind not in "fiub":
        raise ProbsegError(f"{path}: expected a numeric mask, got dtype {arr.dtype}")
    return as_binary_mask(arr, path)


def load_folder(data_root: Path | str | None, size: int = 128) -> MultiRaterData:
    """Load a folder dataset (layout and rules in the module docstring).

    Args:
        data_root: the dataset folder.
        size: output height and width in pixels (centre crop / zero pad), >= 1.

    Returns:
        images float32 [N, C, size, size] (:func:`read_folder_image`), masks uint8 {0, 1}
        [N, A, size, size] in annotator order (natural sort of the names after ``mask_``), groups str [N]
        (groups.csv, else the case name), metadata ``case`` str [N].

    Raises:
        ProbsegError: missing root, empty folder, case without image, annotators differing between many
            cases (a few odd cases are dropped with a warning each: :func:`scan_folder`), bad groups.csv,
            unreadable / corrupt files, a mask whose size differs from the image's, a NIfTI mask that no
            reordering of axes puts on its NIfTI image's voxel grid, non-binary mask values, NaN / infinite
            intensities, a 3-D image, images with different channel counts, ``size`` < 1.

    Warns:
        DatasetWarning: one line when cases pair NIfTI with files without voxel geometry (alignment unchecked).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ProbsegError(f"dataset 'folder': parameter size must be an integer >= 1, got {size!r}")
    root = require_root(Path(data_root) if data_root is not None else None, "folder", LAYOUT)
    index = scan_folder(root)
    n, a = len(index.cases), len(index.annotators)
    # float32 images (one channel at least) and uint8 masks, refused before allocating when they cannot fit
    check_fits(n * size * size * (4 + a), f"dataset 'folder': --dataset-param size={size} ({n} cases, {a} annotators)")
    images: np.ndarray | None = None
    masks = np.zeros((n, a, size, size), dtype=np.uint8)
    unchecked: list[FolderCase] = []  # cases mixing NIfTI with formats without geometry
    for i, case in enumerate(index.cases):
        image = read_folder_image(case.image)
        if images is None:
            images = np.zeros((n, image.shape[0], size, size), dtype=np.float32)
        elif image.shape[0] != images.shape[1]:
            raise ProbsegError(
                f"{case.image}: {image.shape[0]} channels, but {index.cases[0].image} has {images.shape[1]}; "
                "every case needs the same number of channels"
            )
        grid = voxel_grid(case.image)
        if len({voxel_grid(f) is None for f in case.masks} | {grid is None}) > 1:
            unchecked.append(case)
        for j, mask_file in enumerate(case.masks):
            mask = read_folder_mask(mask_file, grid)
            if mask.shape != image.shape[1:]:
                raise ProbsegError(
                    f"{mask_file}: mask of size {mask.shape} does not match the image {case.image.name} of size "
                    f"{image.shape[1:]}"
                )
            masks[i, j] = center_crop_or_pad(mask, size)
        images[i] = center_crop_or_pad(image, size)
    assert images is not None  # scan_folder guarantees at least one case
    if unchecked:
        first = unchecked[0]
        warnings.warn(
            f"folder: {len(unchecked)} of the {n} cases pair NIfTI with files that carry no voxel geometry "
            f"(e.g. case {first.name}: {', '.join(f.name for f in (first.image, *first.masks))}); their arrays "
            "are matched by index and shape only, so their alignment could not be checked",
            DatasetWarning, stacklevel=2,
        )
    names = np.array([c.name for c in index.cases])
    data = MultiRaterData(images=images, masks=masks, groups=np.array(index.groups), metadata={"case": names})
    data.validate(f"dataset 'folder' at {root}")
    return data


FOLDER = DatasetSpec(
    name="folder",
    description="your own multi-annotator data: <root>/<case>/image.<ext> + mask_<annotator>.<ext> per annotator",
    load=load_folder,
    license="the user's own data",
    citation="the user's own data (cite its source)",
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(
        HyperParameter("size", 128, "output height and width in pixels (centre crop / zero pad)",
                       low=32, high=512, tunable=False, minimum=1),
    ),
    layout=LAYOUT,
)

SPECS: tuple[DatasetSpec, ...] = (FOLDER,)
