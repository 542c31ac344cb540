"""Shared pieces of the dataset plugins: file readers with one clear error per bad file, mask binarisation,
centre crop / pad, the data-root check, and the rule for cases whose annotators differ from the others'
(:func:`consistent_annotators`).

Every error is a :class:`probseg_bench.errors.ProbsegError` whose message starts with the offending path.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from probseg_bench.data.loading import DatasetWarning
from probseg_bench.errors import ProbsegError

T = TypeVar("T", bound=Hashable)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz", ".npy")


def suffix(path: Path) -> str:
    """The file's format suffix, lower case, ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def require_root(data_root: Path | None, dataset: str, layout: str) -> Path:
    """``data_root`` as an existing folder.

    Raises:
        ProbsegError: no ``--data-root`` given, or not a folder; the message shows the expected ``layout``.
    """
    if data_root is None:
        raise ProbsegError(f"dataset '{dataset}' needs --data-root PATH (expected layout: {layout})")
    root = Path(data_root)
    if not root.is_dir():
        raise ProbsegError(f"{root}: --data-root of dataset '{dataset}' is not a folder (expected layout: {layout})")
    return root


def read_array(path: Path, *, mask: bool = False) -> np.ndarray:
    """Read an image or mask file into a numpy array, by suffix.

    PNG / JPEG / TIFF with Pillow: greyscale (colour images are converted to luminance; 16-bit and float as
    stored), turned upright by the file's EXIF orientation tag when it has one (Pillow's
    ``ImageOps.exif_transpose``: the array a viewer and an annotation tool such as labelme show). A palette
    image (mode ``P``, transparency or not) read with ``mask=True`` gives its palette indices (uint8; labelme
    and VOC-style tools store class k as index k), read as an image the luminance of its colours. NIfTI (``.nii``,
    ``.nii.gz``) with nibabel (the data array as stored, float or integer; bring a mask onto its image's grid
    with :func:`probseg_datasets.geometry.to_image_grid`). ``.npy`` with numpy (``allow_pickle=False``).

    Raises:
        ProbsegError: an unknown suffix, or a missing, truncated or corrupt file.
    """
    kind = suffix(path)
    try:
        if kind in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            from PIL import Image, ImageOps, UnidentifiedImageError

            try:
                with Image.open(path) as opened:
                    opened.load()
                    im = ImageOps.exif_transpose(opened)
                    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                        return np.asarray(im)
                    if mask and im.mode == "P":
                        return np.asarray(im)
                    return np.asarray(im.convert("L"))
            except UnidentifiedImageError as exc:
                raise ProbsegError(f"{path}: not a readable image ({exc})") from None
        if kind in (".nii", ".nii.gz"):
            import nibabel as nib

            try:
                image: Any = nib.load(str(path))
                return np.asarray(image.get_fdata(caching="unchanged", dtype=np.float32))
            except Exception as exc:  # nibabel raises many types for a damaged file
                raise ProbsegError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        if kind == ".npy":
            try:
                return np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise ProbsegError(f"{path}: not a plain numpy array file ({exc})") from None
    except OSError as exc:
        raise ProbsegError(f"{path}: cannot read the file ({exc})") from None
    raise ProbsegError(f"{path}: unsupported file type; expected one of {', '.join(IMAGE_SUFFIXES)}")


def as_image_2d(arr: np.ndarray, path: Path) -> np.ndarray:
    """A 2-D float32 image with finite values (a trailing singleton axis is dropped).

    Raises:
        ProbsegError: not 2-D, or NaN / infinite values.
    """
    a = np.squeeze(arr) if arr.ndim > 2 else arr
    if a.ndim != 2:
        raise ProbsegError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ProbsegError(f"{path}: image contains NaN or infinite values")
    return a


def as_binary_mask(arr: np.ndarray, path: Path) -> np.ndarray:
    """A mask with values in {0, 1} or {0, 255} -> uint8 {0, 1}.

    Raises:
        ProbsegError: other values (the message lists a few), or NaN.
    """
    values = np.unique(arr)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ProbsegError(f"{path}: mask contains NaN or infinite values")
    allowed = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
    if not allowed:
        shown = ", ".join(f"{v:g}" for v in values[:6])
        raise ProbsegError(f"{path}: mask values must be {{0, 1}} or {{0, 255}}, found {shown}"
                           f"{' ...' if values.size > 6 else ''}")
    return (arr > 0).astype(np.uint8)


def center_crop_or_pad(arr: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Centre-crop or zero-pad (``fill``) the last two axes to ``size`` x ``size``.

    For an odd excess the extra row / column is removed from (or added at) the end.
    """
    out = arr
    for axis in (-2, -1):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            before = (size - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad, constant_values=fill)
    return out


# ------------------------------------------------------------------------------------------ annotators per case
@dataclass(frozen=True)
class AnnotatorCheck(Generic[T]):
    """What :func:`consistent_annotators` decided: the dataset's annotator set (``reference``, as a frozenset:
    the caller orders it), the indices of the cases kept (those holding exactly ``reference``), and per dropped
    case ``(index, missing annotators, extra annotators)``."""

    reference: frozenset[T]
    kept: tuple[int, ...]
    dropped: tuple[tuple[int, frozenset[T], frozenset[T]], ...]


def consistent_annotators(
    dataset: str,
    cases: Sequence[tuple[str, Collection[T]]],
    unit: str,
    name: Callable[[T], str] | None = str,
    kind: str = "cases",
    refuse: Callable[[int, frozenset[T], frozenset[T]], str] | None = None,
) -> AnnotatorCheck[T]:
    """The annotator set of a dataset whose cases may differ: the rule every loader applies.

    Every item of a :class:`~probseg_bench.api.MultiRaterData` holds the same A annotators (masks [N, A, H, W];
    padding a short case with empty or repeated masks would invent annotations). So the dataset's annotators are
    the set the MOST cases have (a tie: the larger set, then the one seen first); a case with another set (fewer
    annotator files, or extra ones) is dropped, with one :class:`~probseg_bench.data.loading.DatasetWarning`
    line per case naming it, its number of files, the expected number, and the missing / extra annotators.

    When that set is held by no more than half of the cases (or is empty) this is a layout problem, not a few
    short cases: nothing is dropped and the load is refused.

    Args:
        dataset: the dataset name that starts each warning line.
        cases: per case (in load order), its label in messages and its annotators.
        unit: what an annotator is in this layout, plural, e.g. ``"annotator files (taskXX_segYY.nii.gz)"``.
        name: the name of one annotator in messages (e.g. its file name); None: annotators are positions in a
            list, and messages give the counts only.
        kind: what a case is in this layout, plural (``"cases"``, ``"entries"``, ``"crops"``).
        refuse: the error message for the first odd case, from ``(its index, its annotators, the most common
            set)``, when the load is refused (default: a generic one naming the case).

    Raises:
        ProbsegError: no case, no annotator at all, or the most common set held by at most half of the cases.
    """
    sets = [frozenset(a) for _, a in cases]
    if not sets:
        raise ProbsegError(f"dataset '{dataset}': no case")
    counts = Counter(sets)
    first = {s: sets.index(s) for s in counts}
    reference = max(counts, key=lambda s: (counts[s], len(s), -first[s]))
    kept = tuple(i for i, s in enumerate(sets) if s == reference)
    odd = tuple((i, reference - s, s - reference) for i, s in enumerate(sets) if s != reference)

    def names(items: frozenset[T]) -> str:
        return ", ".join(sorted((name(a) for a in items), key=_natural)) if name is not None else ""

    if not reference:
        raise ProbsegError(f"{dataset}: {len(kept)} of the {len(sets)} {kind} have no {unit}")
    if odd and 2 * len(kept) <= len(sets):
        i, missing, extra = odd[0]
        if refuse is not None:
            raise ProbsegError(refuse(i, sets[i], reference))
        raise ProbsegError(
            f"{cases[i][0]}: {len(sets[i])} {unit} where {len(kept)} of the {len(sets)} {kind} have "
            f"{len(reference)}" + (f" (missing {names(missing)})" if missing and name is not None else "")
            + (f" (extra {names(extra)})" if extra and name is not None else "")
            + f"; the {kind}' annotators differ too much to drop the odd ones: all need the same annotators"
        )
    for i, missing, extra in odd:
        what = "; ".join(
            part for part in (f"missing {names(missing)}" if missing else "",
                              f"extra {names(extra)}" if extra else "") if part and name is not None
        )
        warnings.warn(
            f"{dataset}: dropped {cases[i][0]}: {len(sets[i])} {unit} where the other {len(kept)} {kind} have "
            f"{len(reference)}{f' ({what})' if what else ''}; every item needs the same annotators",
            DatasetWarning, stacklevel=2,
        )
    return AnnotatorCheck(reference, kept, odd)


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text) if t)
