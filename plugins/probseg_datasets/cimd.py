"""Reader for the per-case JPEG folder layout of the LIDC crops (the CIMD example-data layout).

Layout: ``<root>/<subset>/<case>/image_<n>.jpg`` (8-bit grey) with ``label<a>_.jpg`` per annotator a
(0 or 255, JPEG-compressed, so values near 0 and near 255). ``<subset>`` is e.g. ``training`` / ``testing``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from probseg_bench.api import MultiRaterData
from probseg_bench.data.intensity import model_intensities
from probseg_bench.errors import ProbsegError
from probseg_datasets.common import consistent_annotators

_LABEL = re.compile(r"^label(\d+)_\.jpe?g$", re.IGNORECASE)
_IMAGE = re.compile(r"^image_\d+\.jpe?g$", re.IGNORECASE)
MASK_THRESHOLD = 128
"""A mask pixel is foreground when its grey value is >= 128."""
AMBIGUOUS = (64, 192)
"""Mask grey values strictly inside this band are not JPEG noise around 0 or 255: the file is refused."""


def _read_grey(path: Path) -> np.ndarray:
    """8-bit grey [H, W], turned upright by the file's EXIF orientation tag (as a viewer shows it)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            if opened.mode not in ("L", "I;16", "I", "RGB", "RGBA"):
                raise ProbsegError(f"{path}: unsupported image mode {opened.mode}")
            return np.asarray(ImageOps.exif_transpose(opened).convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ProbsegError(f"{path}: not a readable image ({exc})") from None


def _read_mask(path: Path) -> np.ndarray:
    grey = _read_grey(path)
    ambiguous = (grey > AMBIGUOUS[0]) & (grey < AMBIGUOUS[1])
    if ambiguous.any():
        raise ProbsegError(
            f"{path}: expected a binary mask (values near 0 or 255), found {int(ambiguous.sum())} pixels "
            f"with grey values in ({AMBIGUOUS[0]}, {AMBIGUOUS[1]})"
        )
    return (grey >= MASK_THRESHOLD).astype(np.uint8)


def read_cimd_folder(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read every case under ``root``.

    Every case holds the annotators the most cases have; a case with fewer (or other) label files is dropped
    with one :class:`~probseg_bench.data.loading.DatasetWarning` line naming it and its file count
    (:func:`probseg_datasets.common.consistent_annotators`).

    Returns:
        images uint8 [N, 1, H, W] (the decoded JPEG grey values), masks uint8 {0,1} [N, A, H, W],
        case ids str [N] (``"<subset>/<case>"``), subsets str [N]. Cases are sorted by subset then case
        (numerically where the name is a number).

    Raises:
        ProbsegError: missing folder, no cases, a case without exactly one image, no label file at all,
            annotators that differ between so many cases that at most half share one set, sizes that differ,
            unreadable or non-binary files (each error names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise ProbsegError(f"{root}: not a folder (expected <root>/<subset>/<case>/image_*.jpg + label<a>_.jpg)")
    cases = sorted(
        (p for p in root.glob("*/*") if p.is_dir()),
        key=lambda p: (p.parent.name, int(p.name) if p.name.isdigit() else 10**9, p.name),
    )
    if not cases:
        raise ProbsegError(f"{root}: no case folders found (expected <root>/<subset>/<case>/)")
    listed: list[tuple[str, dict[int, str]]] = []
    for case in cases:
        files = sorted(p.name for p in case.iterdir() if p.is_file())
        image_files = [f for f in files if _IMAGE.match(f)]
        if len(image_files) != 1:
            raise ProbsegError(f"{case}: expected exactly one image_<n>.jpg, found {image_files or 'none'}")
        listed.append((image_files[0], {int(m.group(1)): f for f in files if (m := _LABEL.match(f))}))
    if not any(labels for _, labels in listed):
        raise ProbsegError(f"{cases[0]}: no annotation files label<a>_.jpg")

    def refuse(i: int, have: frozenset[int], common: frozenset[int]) -> str:
        first = next(c for c, (_, labels) in zip(cases, listed, strict=True) if frozenset(labels) == common)
        return (f"{cases[i]}: annotators {sorted(have)} differ from {sorted(common)} in {first} "
                "(missing annotator files?)")

    check = consistent_annotators(
        str(root), [(f"case {c.parent.name}/{c.name}", labels) for c, (_, labels) in zip(cases, listed, strict=True)],
        unit="label files", name=lambda a: f"label{a}_.jpg", refuse=refuse,
    )
    annotators = sorted(check.reference)
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ids: list[str] = []
    subsets: list[str] = []
    for k in check.kept:
        case, (image_file, labels) = cases[k], listed[k]
        image = _read_grey(case / image_file)
        stack = np.stack([_read_mask(case / labels[a]) for a in annotators])
        if stack.shape[1:] != image.shape:
            raise ProbsegError(f"{case}: masks of size {stack.shape[1:]} do not match the image {image.shape}")
        if images and image.shape != images[0].shape[1:]:
            raise ProbsegError(f"{case}: image size {image.shape} differs from {images[0].shape[1:]} in {cases[0]}")
        images.append(image[None])
        masks.append(stack)
        ids.append(f"{case.parent.name}/{case.name}")
        subsets.append(case.parent.name)
    return np.stack(images), np.stack(masks), np.array(ids), np.array(subsets)


def to_multirater(
    images: np.ndarray, masks: np.ndarray, ids: np.ndarray, subsets: np.ndarray, source: str
) -> MultiRaterData:
    """uint8 images -> float32 in [0, 1] by the intensity rule of every loader
    (:func:`probseg_bench.data.intensity.model_intensities`: value / 255); every case is its own group (no
    patient ids)."""
    data = MultiRaterData(
        images=model_intensities(images, source=source),
        masks=masks.astype(np.uint8),
        groups=ids.astype(str),
        metadata={"case": ids.astype(str), "subset": subsets.astype(str)},
    )
    data.validate(source)
    return data
