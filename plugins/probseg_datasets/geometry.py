"""Voxel geometry of NIfTI files: bring a mask onto its image's voxel grid, or refuse it.

A NIfTI file maps array indices to world coordinates (mm) through its affine. Two files can hold the same
structure in different array orders: a mask stored left-right mirrored, with the mirrored affine, is aligned
with its image in world space but mirrored in array space (nnU-Net #1287, #2526). Reading both data arrays as
stored would put the mask on the wrong side of the image, silently. :func:`to_image_grid` compares the mask's
grid (shape and affine, which holds the spacing) with the image's: when they differ only by the order and
direction of the array axes it reorders the mask's array with nibabel's orientation functions (an exact
permutation and flip of voxels, nothing is resampled); otherwise it refuses the mask with one line naming the
file and what differs.

Formats without a voxel-to-world mapping (PNG, JPEG, TIFF, npy) have no grid here (:func:`voxel_grid` gives
None): their arrays are matched by index and shape only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.errors import ProbsegError

__all__ = ["GRID_TOLERANCE", "NIFTI_SUFFIXES", "VoxelGrid", "to_image_grid", "voxel_grid"]

GRID_TOLERANCE = 0.01
"""Largest distance, in voxels of the image, between a corner of a mask's voxel box and the same corner of the
image's after reordering; beyond it the mask is not on the image's grid. 0.01 voxel absorbs the float32 rounding
of the affine in NIfTI headers (about 1e-5 mm at 300 mm from the origin) and nothing a segmentation could see."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class VoxelGrid:
    """The voxel grid of a NIfTI file: its array ``shape`` (as stored, all axes) and its voxel-to-world
    ``affine`` (float64 [4, 4], mm; the sform or qform nibabel chooses), read from ``path``."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


def voxel_grid(path: Path) -> VoxelGrid | None:
    """The voxel grid of ``path`` when it is a NIfTI file (reads the header only), else None.

    Raises:
        ProbsegError: a NIfTI file whose header cannot be read, naming the file.
    """
    name = path.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        return None
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))  # a Nifti1/2Image (the stubs type it as FileBasedImage)
        return VoxelGrid(path, tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64))
    except Exception as exc:  # nibabel raises many types for a damaged header
        raise ProbsegError(f"{path}: not a readable NIfTI header ({type(exc).__name__}: {exc})") from None


def _spatial(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The three spatial axes of a NIfTI shape (a 2-D array has a singleton third axis)."""
    padded = tuple(shape[:3]) + (1,) * max(0, 3 - len(shape))
    return padded[0], padded[1], padded[2]


def _codes(affine: np.ndarray) -> str:
    import nibabel as nib

    try:
        return "".join(str(c) for c in nib.aff2axcodes(affine))
    except Exception:  # a degenerate affine has no axis codes
        return "???"


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def _fmt(values: Any, unit: str = "") -> str:
    return "x".join(f"{float(v):g}" for v in values) + unit


def to_image_grid(mask: np.ndarray, grid: VoxelGrid, image: VoxelGrid, tolerance: float = GRID_TOLERANCE) -> np.ndarray:
    """The data array of a mask (or any second file of a case) in the array order of its image.

    Args:
        mask: the mask file's data array as stored (e.g. from
            :func:`probseg_datasets.common.read_array`), shape ``grid.shape``, any dtype.
        grid: the mask file's voxel grid (:func:`voxel_grid`).
        image: the image's voxel grid. Only its first three axes are compared: a caller whose image holds
            channels on an axis passes a grid whose shape has 1 on that axis.
        tolerance: see :data:`GRID_TOLERANCE` (voxels).

    Returns:
        ``mask`` itself when both grids are identical; else the mask's voxels reordered by axis permutations and
        flips (nibabel ``io_orientation`` / ``ornt_transform`` / ``apply_orientation``; a view, no resampling)
        so that index (i, j, k) of the result is the voxel at the world position of the image's voxel (i, j, k).
        A 2-D array comes back with a third axis of size 1; axes after the third are kept as they are.

    Raises:
        ProbsegError: one line starting with the mask's path, naming the image and what differs, when no
            reordering puts the mask on the image's grid: another shape, voxel size (spacing), position or
            rotation (nnU-Net's rule: resample the mask onto the image, or fix its header), or an affine that
            maps no volume (zero voxel size).
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    m_shape, i_shape = _spatial(grid.shape), _spatial(image.shape)
    if m_shape == i_shape and np.array_equal(grid.affine, image.affine):
        return mask
    where = f"{grid.path}: mask not on the voxel grid of its image {image.path}"
    try:
        m_ornt, i_ornt = io_orientation(grid.affine), io_orientation(image.affine)
        if np.isnan(m_ornt).any() or np.isnan(i_ornt).any():
            raise ValueError("degenerate affine")
        change = ornt_transform(m_ornt, i_ornt)
        back = np.linalg.inv(image.affine)
    except (ValueError, np.linalg.LinAlgError):
        bad = grid if np.isnan(io_orientation(grid.affine)).any() else image
        raise ProbsegError(
            f"{where}: the affine of {bad.path.name} maps no volume (voxel sizes {_fmt(_voxel_sizes(bad.affine))} "
            "mm); fix its header"
        ) from None
    arr = mask.reshape(m_shape + mask.shape[3:])
    arr = apply_orientation(arr, change)
    affine = grid.affine @ inv_ornt_aff(change, m_shape)
    shape = _spatial(arr.shape)
    if shape != i_shape:
        reordered = "" if shape == m_shape else (
            f" ({_codes(grid.affine)}; {shape} in the image's axis order {_codes(image.affine)})"
        )
        raise ProbsegError(
            f"{grid.path}: mask shape {grid.shape}{reordered} differs from the image shape {image.shape} of "
            f"{image.path.name}; resample the mask onto the image"
        )
    corners = np.array([[a, b, c, 1.0] for a in (-0.5, shape[0] - 0.5) for b in (-0.5, shape[1] - 0.5)
                        for c in (-0.5, shape[2] - 0.5)]).T
    offset = float(np.abs((back @ affine - np.eye(4)) @ corners)[:3].max())
    if offset > tolerance:
        sizes, ref_sizes = _voxel_sizes(affine), _voxel_sizes(image.affine)
        if not np.allclose(sizes, ref_sizes, rtol=1e-4, atol=0):
            what = f"voxel size {_fmt(sizes, ' mm')} where the image has {_fmt(ref_sizes, ' mm')}"
        else:
            origin = affine[:3, 3] - image.affine[:3, 3]
            what = (f"its voxels lie up to {offset:.3g} voxels away from the image's (origin shifted by "
                    f"{_fmt(np.round(origin, 4), ' mm')}, or the axes rotated)")
        raise ProbsegError(f"{where}: {what}; resample the mask onto the image or fix its header")
    return arr
