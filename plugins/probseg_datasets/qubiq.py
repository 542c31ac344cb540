"""QUBIQ 2021 dataset plugins: ``qubiq-pancreas`` and ``qubiq-pancreatic-lesion`` (the seed paper's two, Section
III-C, Table I), ``qubiq-brain-growth``, ``qubiq-brain-tumor``, ``qubiq-kidney`` and ``qubiq-prostate``.

Layout of the challenge release (QUBIQ 2021, https://qubiq21.grand-challenge.org)::

    <task-folder>/Training/caseNN/image.nii.gz
    <task-folder>/Training/caseNN/taskXX_segYY.nii.gz     one per task XX and annotator YY
    <task-folder>/Validation/caseNN/...                    the same

with ``<task-folder>`` one of ``pancreas``, ``pancreatic-lesion``, ``brain-growth``, ``brain-tumor``, ``kidney``,
``prostate``. ``--data-root`` is either the task folder itself or its parent. The annotators YY are discovered
from the files of the chosen task: those the most cases have. A case with fewer (or other) annotator files is
dropped with one warning line naming it and its file count (the organisers state that one prostate subject has 5
annotations where the others have 6): every item of a dataset holds the same annotators.

What :func:`load_qubiq` does (the rules, in order):

- Geometry: a 2-D case (an H x W array, or a 3-D array with a singleton axis) gives one item. An H x W x C image
  with C = 2..4 and H x W masks (brain-tumor) gives one item with C channels. A 3-D image with 3-D masks
  (pancreas, pancreatic lesion) is cut into 2-D axial slices (the LAST axis of the NIfTI array is the axial
  axis) and a slice is kept when at least one annotator marked something on it (the union of the masks is
  non-empty on that slice); a 3-D volume in a dataset of 2-D images is refused. Each annotator file is first
  brought onto its image's voxel grid: a file whose affine differs only by the order or direction of the axes
  (e.g. stored left-right mirrored with the mirrored affine) has its voxels reordered exactly; another shape,
  spacing or position is refused naming the file (:func:`probseg_datasets.geometry.to_image_grid`).
- Intensities (float32): CT (pancreas, pancreatic lesion, kidney): clip to the abdominal soft-tissue window
  [-160, 240] HU (level 40, width 400), then (HU + 160) / 400, so 40 HU -> 0.5. MRI (brain growth, brain
  tumour, prostate): per case and per channel, the 1st..99th percentile maps linearly to [0, 1], then clip to
  [0, 1] (a channel whose two percentiles coincide gives 0). This modality rule comes before the dtype rule of
  every loader (:func:`probseg_bench.data.intensity.model_intensities`), which keeps its float output as is.
- Crop ``size`` x ``size`` (default 128, the paper's patch): ``crop="roi"`` centres the window on the centre of
  the bounding box of the union of all annotations of the item (the paper assumes the region of interest is
  detected), falling back to the image centre for an item without annotation; ``crop="center"`` takes the
  image centre (:func:`probseg_datasets.common.center_crop_or_pad`). Outside the image the window holds 0.
- Masks: uint8 {0, 1}; files may hold {0, 1} or {0, 255}. Groups: one per case, ``"<subset>/<case>"``, so the
  slices of one volume never straddle a split.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from probseg_bench.api import DatasetSpec, HyperParameter, MultiRaterData, ProtocolDefaults, resolve_hyperparameters
from probseg_bench.data.intensity import model_intensities
from probseg_bench.errors import ProbsegError
from probseg_bench.memory import check_fits
from probseg_datasets.common import (
    as_binary_mask,
    center_crop_or_pad,
    consistent_annotators,
    read_array,
    require_root,
)
from probseg_datasets.geometry import VoxelGrid, to_image_grid, voxel_grid

CT_WINDOW = (-160.0, 240.0)
"""Abdominal soft-tissue window in HU (level 40, width 400): lower bound -> 0, upper bound -> 1."""
MRI_PERCENTILES = (1.0, 99.0)
"""Per-case, per-channel percentiles of an MRI image that map to 0 and 1."""
SUBSETS = ("Training", "Validation")
"""The subset folders of a QUBIQ task folder, read in this order."""
DEFAULT_SIZE = 128
"""Crop size in pixels (the seed paper's 128 x 128 patches)."""
CROPS = ("roi", "center")

QUBIQ_LICENSE = "QUBIQ 2021 challenge data; see the challenge's terms (https://qubiq21.grand-challenge.org)"
QUBIQ_CITATION = (
    "Quantification of Uncertainties in Biomedical Image Quantification Challenge 2021, "
    "https://qubiq21.grand-challenge.org"
)
PAPER_CITATION = (
    "used in Valiuddin et al., Investigating and Improving Latent Density Segmentation Models for Aleatoric "
    "Uncertainty Quantification in Medical Imaging, IEEE TMI 2024 (arXiv 2307.16694), Section III-C, Table I"
)

_SEG_FILE = re.compile(r"^task(\d+)_seg(\d+)\.nii(?:\.gz)?$", re.IGNORECASE)
_IMAGE_FILES = ("image.nii.gz", "image.nii")


@dataclass(frozen=True)
class QubiqDataset:
    """One QUBIQ 2021 dataset: its plugin name, release folder, modality and tasks.

    ``volumetric``: cases are 3-D volumes to cut into axial slices; otherwise a 3-D volume is refused.
    """

    name: str
    folder: str
    modality: str  # "CT" | "MRI"
    tasks: tuple[int, ...]
    volumetric: bool
    description: str

    @property
    def layout(self) -> str:
        return (
            f"<root>/{self.folder}/{{Training,Validation}}/caseNN/image.nii.gz + taskXX_segYY.nii.gz "
            f"(or --data-root at the {self.folder} folder itself)"
        )


QUBIQ_DATASETS: dict[str, QubiqDataset] = {
    d.name: d
    for d in (
        QubiqDataset("qubiq-pancreas", "pancreas", "CT", (1,), True,
                     "QUBIQ 2021 pancreas CT, axial slices with an annotation, 2 annotators (paper, Table I)"),
        QubiqDataset("qubiq-pancreatic-lesion", "pancreatic-lesion", "CT", (1,), True,
                     "QUBIQ 2021 pancreatic-lesion CT, axial slices with an annotation, 2 annotators (paper)"),
        QubiqDataset("qubiq-brain-growth", "brain-growth", "MRI", (1,), False,
                     "QUBIQ 2021 neonatal brain-growth MRI, 2-D images"),
        QubiqDataset("qubiq-brain-tumor", "brain-tumor", "MRI", (1, 2, 3), False,
                     "QUBIQ 2021 brain-tumour multi-sequence MRI, 2-D images, 3 tasks (--dataset-param task=N)"),
        QubiqDataset("qubiq-kidney", "kidney", "CT", (1,), False,
                     "QUBIQ 2021 kidney CT, 2-D images"),
        QubiqDataset("qubiq-prostate", "prostate", "MRI", (1, 2), False,
                     "QUBIQ 2021 prostate MRI, 2-D images, 2 tasks (--dataset-param task=N)"),
    )
}


def dataset_parameters(dataset: QubiqDataset) -> tuple[HyperParameter, ...]:
    """The ``--dataset-param`` options of a QUBIQ dataset: ``task`` (choices: its tasks), ``crop``, ``size``."""
    return (
        HyperParameter("task", 1, "QUBIQ task number XX (files taskXX_segYY.nii.gz)", choices=dataset.tasks,
                       tunable=False),
        HyperParameter("crop", "roi", "roi: centre on the annotations' bounding box; center: image centre",
                       choices=CROPS, tunable=False),
        HyperParameter("size", DEFAULT_SIZE, "crop size in pixels (size x size)", low=1, tunable=False,
                       minimum=1),
    )


# ------------------------------------------------------------------------------------------------ intensities
def window_ct(hu: np.ndarray) -> np.ndarray:
    """CT intensities in HU (any shape) -> float32 in [0, 1]: clip to :data:`CT_WINDOW` = [-160, 240] HU (the
    abdominal soft-tissue window, level 40, width 400), then ``(HU + 160) / 400``; 40 HU -> 0.5."""
    lo, hi = CT_WINDOW
    out = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return out


def normalise_mri(image: np.ndarray) -> np.ndarray:
    """MRI intensities [C, ...] -> float32 [C, ...] in [0, 1], per channel: the 1st percentile -> 0, the 99th ->
    1 (linear; numpy's default linear-interpolated percentiles over all pixels of the channel), then clipped
    to [0, 1]. A channel whose 1st and 99th percentiles are equal (nearly constant) becomes 0."""
    out = np.zeros(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        lo, hi = np.percentile(image[c], MRI_PERCENTILES)
        if hi > lo:
            out[c] = np.clip((image[c] - lo) / (hi - lo), 0.0, 1.0)
    return out


# ------------------------------------------------------------------------------------------------------ crops
def roi_window(union: np.ndarray, size: int) -> tuple[int, int] | None:
    """Top-left corner (row, col) of the ``size`` x ``size`` window centred on the bounding box of ``union``
    (bool/uint8 [H, W]), or None when ``union`` is empty.

    With the box spanning rows r0..r1, the window starts at ``(r0 + r1 - size + 1) // 2`` (floor), so the box
    centre (r0 + r1) / 2 falls on the window centre (size - 1) / 2, half a pixel up/left when the parities
    differ; the same for columns. The corner may be negative or beyond the image (see :func:`crop_window`).
    """
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    return int(rows[0] + rows[-1] - size + 1) // 2, int(cols[0] + cols[-1] - size + 1) // 2


def crop_window(arr: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The window rows ``top .. top + size - 1``, columns ``left .. left + size - 1`` of ``arr`` [..., H, W]
    -> [..., size, size] of the same dtype, 0 where the window leaves the image."""
    h, w = arr.shape[-2:]
    out = np.zeros((*arr.shape[:-2], size, size), dtype=arr.dtype)
    r0, r1 = max(top, 0), min(top + size, h)
    c0, c1 = max(left, 0), min(left + size, w)
    if r0 < r1 and c0 < c1:
        out[..., r0 - top : r1 - top, c0 - left : c1 - left] = arr[..., r0:r1, c0:c1]
    return out


def crop_item(image: np.ndarray, masks: np.ndarray, crop: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop one item: image float32 [C, H, W], masks uint8 [A, H, W] -> ([C, size, size], [A, size, size]), both
    with the same window: ``roi`` (:func:`roi_window` of the union of the masks; the image centre when every mask
    is empty) or ``center`` (:func:`probseg_datasets.common.center_crop_or_pad`)."""
    corner = roi_window(np.asarray(masks.any(axis=0)), size) if crop == "roi" else None
    if corner is None:
        return center_crop_or_pad(image, size), center_crop_or_pad(masks, size)
    return crop_window(image, *corner, size), crop_window(masks, *corner, size)


# ------------------------------------------------------------------------------------------------------ files
@dataclass(frozen=True)
class QubiqCase:
    """One case folder: ``subset`` (Training / Validation), its image file and its annotation files
    ``segs[task][annotator]``."""

    subset: str
    folder: Path
    image: Path
    segs: dict[int, dict[int, Path]]

    @property
    def group(self) -> str:
        return f"{self.subset}/{self.folder.name}"


def find_task_folder(data_root: Path | None, dataset: QubiqDataset) -> Path:
    """The QUBIQ task folder of ``dataset``: ``data_root`` itself when it holds ``Training/`` or ``Validation/``,
    else ``data_root/<task-folder>``.

    Raises:
        ProbsegError: no data root, not a folder, neither form, or a data root that is the task folder of another
            QUBIQ dataset (e.g. ``.../prostate`` for ``qubiq-kidney``); the message shows the layout.
    """
    root = require_root(data_root, dataset.name, dataset.layout)
    if any((root / s).is_dir() for s in SUBSETS):
        others = {d.folder for d in QUBIQ_DATASETS.values()} - {dataset.folder}
        if root.name in others:
            raise ProbsegError(
                f"{root}: this is the QUBIQ '{root.name}' task folder, but dataset '{dataset.name}' reads "
                f"'{dataset.folder}' (expected layout: {dataset.layout})"
            )
        return root
    nested = root / dataset.folder
    if nested.is_dir():
        if any((nested / s).is_dir() for s in SUBSETS):
            return nested
        raise ProbsegError(
            f"{nested}: holds neither Training/ nor Validation/ (expected layout: {dataset.layout})"
        )
    raise ProbsegError(
        f"{root}: neither a QUBIQ task folder (no Training/ or Validation/ inside) nor a folder holding "
        f"'{dataset.folder}/' (expected layout: {dataset.layout})"
    )


def _case_order(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.name)
    return (int(digits[-1]) if digits else 10**9, path.name)


def scan_cases(task_root: Path, layout: str = "") -> list[QubiqCase]:
    """The case folders under ``task_root/{Training,Validation}``, Training first, each subset in numeric order of
    the case number (case2 before case10). Hidden entries (``.``, ``__MACOSX``) are skipped. Reads no image.

    Raises:
        ProbsegError: no case folder at all, or a case without ``image.nii.gz``.
    """
    cases: list[QubiqCase] = []
    for subset in SUBSETS:
        folder = task_root / subset
        if not folder.is_dir():
            continue
        entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
        for case in sorted(entries, key=_case_order):
            image = next((case / n for n in _IMAGE_FILES if (case / n).is_file()), None)
            if image is None:
                raise ProbsegError(f"{case}: no image.nii.gz in this case folder")
            segs: dict[int, dict[int, Path]] = {}
            for f in sorted(case.iterdir()):
                m = _SEG_FILE.match(f.name)
                if m and f.is_file():
                    segs.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), f)
            cases.append(QubiqCase(subset, case, image, segs))
    if not cases:
        raise ProbsegError(
            f"{task_root}: no case folders in {' or '.join(s + '/' for s in SUBSETS)}"
            + (f" (expected layout: {layout})" if layout else "")
        )
    return cases


def _seg_name(task: int, annotator: int) -> str:
    return f"task{task:02d}_seg{annotator:02d}.nii.gz"


def discover_annotators(
    cases: Sequence[QubiqCase], task: int, task_root: Path, dataset: str = "qubiq"
) -> tuple[list[int], list[QubiqCase]]:
    """The annotator numbers YY of ``task`` (sorted) and the cases that have exactly those files.

    The annotators are those the most cases have (:func:`probseg_datasets.common.consistent_annotators`): a case
    with fewer (or other) annotator files, such as the QUBIQ prostate subject with 5 annotations where the others
    have 6, is dropped with one :class:`~probseg_bench.data.loading.DatasetWarning` line naming it, its number of
    files and the missing ones.

    Raises:
        ProbsegError: no case has files of ``task`` (the message lists the tasks present), or the annotator sets
            differ between so many cases (at most half of them share one) that a case's missing files are named
            instead.
    """
    present = sorted({t for c in cases for t in c.segs})
    if task not in present:
        shown = ", ".join(str(t) for t in present) or "none"
        raise ProbsegError(
            f"{task_root}: no task{task:02d}_segYY.nii.gz files for task {task}; tasks present: {shown}"
        )

    def refuse(i: int, have: frozenset[int], common: frozenset[int]) -> str:
        missing, extra = sorted(common - have), sorted(have - common)
        return (
            f"{cases[i].folder}: {'missing' if missing else 'extra'} annotator file(s) "
            f"{', '.join(_seg_name(task, a) for a in missing or extra)} "
            f"(other cases have annotators {', '.join(f'{a:02d}' for a in sorted(common))}; this one has "
            f"{', '.join(f'{a:02d}' for a in sorted(have)) or 'none'})"
        )

    check = consistent_annotators(
        dataset, [(f"case {c.group}", c.segs.get(task, {})) for c in cases],
        unit=f"annotator files (task{task:02d}_segYY)", name=lambda a: _seg_name(task, a), refuse=refuse,
    )
    return sorted(check.reference), [cases[i] for i in check.kept]


def _drop_singletons(a: np.ndarray) -> np.ndarray:
    """Drop size-1 axes (last first) while more than two axes remain."""
    while a.ndim > 2 and 1 in a.shape:
        a = np.squeeze(a, axis=max(i for i, s in enumerate(a.shape) if s == 1))
    return a


def _read_mask(path: Path, image: VoxelGrid | None) -> np.ndarray:
    """A mask file's array brought onto the image's voxel grid (:func:`probseg_datasets.geometry.to_image_grid`),
    singleton axes dropped. For an H x W x C image (C = 2..4 channels on the third axis) and a mask with one
    plane, the mask is compared with the image's first channel plane."""
    arr = read_array(path)
    grid = voxel_grid(path)
    if image is not None and grid is not None:
        if len(image.shape) == 3 and 2 <= image.shape[2] <= 4 and (len(grid.shape) < 3 or grid.shape[2] == 1):
            image = replace(image, shape=(*image.shape[:2], 1))
        arr = to_image_grid(arr, grid, image)
    return _drop_singletons(arr)


def load_case(
    case: QubiqCase, task: int, annotators: Sequence[int], dataset: QubiqDataset, crop: str, size: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Read, normalise, slice and crop one case (module docstring rules).

    Returns:
        (images: float32 [C, size, size] per item, masks: uint8 {0,1} [A, size, size] per item, slice index per
        item: the axial index of a volume's slice, -1 for a 2-D case). A volume without any annotated slice
        gives no item.

    Raises:
        ProbsegError: unreadable file, NaN / infinite intensities, unsupported shape, a 3-D volume in a 2-D
            dataset, a mask that no reordering of axes puts on the image's voxel grid (another shape, spacing or
            position), mask values other than {0,1} / {0,255}.
    """
    raw = read_array(case.image)
    if not np.isfinite(raw).all():
        raise ProbsegError(f"{case.image}: image contains NaN or infinite values")
    raw_shape = raw.shape
    img = _drop_singletons(raw)
    mask_paths = [case.segs[task][a] for a in annotators]
    grid = voxel_grid(case.image)
    first = _read_mask(mask_paths[0], grid)
    volume = False
    if img.ndim == 2:
        image = img[None]  # [1, H, W]
    elif img.ndim == 3 and first.ndim == 2 and img.shape[:2] == first.shape and 2 <= img.shape[2] <= 4:
        image = np.moveaxis(img, -1, 0)  # H x W x C -> [C, H, W]
    elif img.ndim == 3:
        if not dataset.volumetric:
            raise ProbsegError(
                f"{case.image}: a 3-D volume of shape {raw.shape}, but dataset '{dataset.name}' expects 2-D images "
                "(H x W, H x W x 1, or H x W x C with C = 2..4 channels and H x W masks)"
            )
        image, volume = img[None], True  # [1, H, W, D]
    else:
        raise ProbsegError(f"{case.image}: expected a 2-D image or a 3-D volume, got shape {raw.shape}")
    del raw, img
    spatial = image.shape[1:]
    image = window_ct(image) if dataset.modality == "CT" else normalise_mri(image)
    image = model_intensities(image, source=str(case.image))  # float32 in [0, 1]: kept as is

    stack = np.empty((len(mask_paths), *spatial), dtype=np.uint8)
    for k, path in enumerate(mask_paths):
        m = first if k == 0 else _read_mask(path, grid)
        if m.shape != spatial:
            raise ProbsegError(
                f"{path}: mask shape {m.shape} differs from the image shape {raw_shape} of {case.image.name} "
                f"(expected {tuple(spatial)})"
            )
        stack[k] = as_binary_mask(m, path)
        del m
    del first

    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    slices: list[int] = []
    if volume:
        annotated = np.flatnonzero(stack.reshape(-1, spatial[-1]).any(axis=0))  # union over annotators and pixels
        for z in annotated:
            im, mk = crop_item(image[..., z], stack[..., z], crop, size)
            images.append(np.ascontiguousarray(im))
            masks.append(np.ascontiguousarray(mk))
            slices.append(int(z))
    else:
        im, mk = crop_item(image, stack, crop, size)
        images.append(im)
        masks.append(mk)
        slices.append(-1)
    return images, masks, slices


def load_qubiq(
    data_root: Path | None, dataset: str, task: int = 1, crop: str = "roi", size: int = DEFAULT_SIZE
) -> MultiRaterData:
    """Load one task of a QUBIQ 2021 dataset (rules in the module docstring).

    Args:
        data_root: the task folder (holding ``Training/`` / ``Validation/``) or its parent.
        dataset: a key of :data:`QUBIQ_DATASETS`, e.g. ``"qubiq-pancreas"``.
        task: the task number XX of the ``taskXX_segYY.nii.gz`` files.
        crop: ``"roi"`` (centre on the annotations) or ``"center"`` (image centre).
        size: crop size in pixels.

    Returns:
        images float32 [N, C, size, size] in [0, 1]; masks uint8 {0, 1} [N, A, size, size] (A: the annotators
        found); groups str [N] ``"<Training|Validation>/<case>"``; metadata ``case`` (str, the case folder),
        ``subset`` (str), ``slice`` (int64, axial index in the volume, -1 for a 2-D case). Items are ordered by
        subset, case number, slice.

    Raises:
        ProbsegError: unknown dataset or parameter value, missing / wrong data root, no cases, a case without
            image, annotator files differing between many cases (a few odd cases are dropped with a
            :class:`~probseg_bench.data.loading.DatasetWarning` each), absent task, unreadable / corrupt NIfTI,
            mask values wrong or a mask off its image's voxel grid (shape, spacing, position; an axis order
            or direction that differs is reordered, not refused), NaN / infinite intensities, a 3-D volume in a
            2-D dataset, channel counts
            that differ between cases, no annotated slice at all. Each message names the file or folder.
    """
    if dataset not in QUBIQ_DATASETS:
        raise ProbsegError(f"unknown QUBIQ dataset '{dataset}'; known: {', '.join(QUBIQ_DATASETS)}")
    info = QUBIQ_DATASETS[dataset]
    params = resolve_hyperparameters(
        f"dataset '{dataset}'", dataset_parameters(info), {"task": task, "crop": crop, "size": size},
        "dataset parameter",
    )
    task, crop, size = int(params["task"]), str(params["crop"]), int(params["size"])
    if size < 1:
        raise ProbsegError(f"dataset '{dataset}': size must be >= 1, got {size}")
    task_root = find_task_folder(data_root, info)
    cases = scan_cases(task_root, info.layout)
    annotators, cases = discover_annotators(cases, task, task_root, dataset)
    # one crop (float32 image, uint8 masks) must fit before any volume is read
    check_fits(size * size * (4 + len(annotators)), f"dataset '{dataset}': --dataset-param size={size} (one crop)")

    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    groups: list[str] = []
    names: list[str] = []
    subsets: list[str] = []
    slices: list[int] = []
    channels: tuple[int, Path] | None = None
    for case in cases:
        ims, mks, sls = load_case(case, task, annotators, info, crop, size)
        if ims:
            if channels is None:
                channels = (ims[0].shape[0], case.image)
            elif ims[0].shape[0] != channels[0]:
                raise ProbsegError(
                    f"{case.image}: {ims[0].shape[0]} image channel(s), but {channels[1]} has {channels[0]}"
                )
        images += ims
        masks += mks
        slices += sls
        groups += [case.group] * len(ims)
        names += [case.folder.name] * len(ims)
        subsets += [case.subset] * len(ims)
    if not images:
        raise ProbsegError(f"{task_root}: no annotated slice in any case for task {task} (every mask is empty)")
    return MultiRaterData(
        images=np.stack(images).astype(np.float32, copy=False),
        masks=np.stack(masks).astype(np.uint8, copy=False),
        groups=np.array(groups),
        metadata={"case": np.array(names), "subset": np.array(subsets), "slice": np.array(slices, dtype=np.int64)},
    )


# ------------------------------------------------------------------------------------------------------ specs
def _loader(dataset: QubiqDataset) -> Callable[..., MultiRaterData]:
    def load(
        data_root: Path | None = None, task: int = 1, crop: str = "roi", size: int = DEFAULT_SIZE
    ) -> MultiRaterData:
        return load_qubiq(data_root, dataset.name, task=task, crop=crop, size=size)

    load.__name__ = load.__qualname__ = f"load_{dataset.folder.replace('-', '_')}"
    load.__doc__ = f"``load_qubiq(data_root, '{dataset.name}', task, crop, size)``: see :func:`load_qubiq`."
    return load


def _spec(dataset: QubiqDataset) -> DatasetSpec:
    paper = dataset.name in ("qubiq-pancreas", "qubiq-pancreatic-lesion")
    return DatasetSpec(
        name=dataset.name,
        description=dataset.description,
        load=_loader(dataset),
        license=QUBIQ_LICENSE,
        citation=f"{QUBIQ_CITATION}; {PAPER_CITATION}" if paper else QUBIQ_CITATION,
        protocol=ProtocolDefaults(epochs=2500, warmup_epochs=50),
        parameters=dataset_parameters(dataset),
        layout=dataset.layout,
    )


SPECS: tuple[DatasetSpec, ...] = tuple(_spec(d) for d in QUBIQ_DATASETS.values())
"""The six QUBIQ 2021 dataset specs, in the order of :data:`QUBIQ_DATASETS`."""

__all__ = [
    "CROPS",
    "CT_WINDOW",
    "DEFAULT_SIZE",
    "MRI_PERCENTILES",
    "QUBIQ_DATASETS",
    "SPECS",
    "QubiqCase",
    "QubiqDataset",
    "crop_item",
    "crop_window",
    "dataset_parameters",
    "discover_annotators",
    "find_task_folder",
    "load_case",
    "load_qubiq",
    "normalise_mri",
    "roi_window",
    "scan_cases",
    "window_ct",
]
