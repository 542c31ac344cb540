"""The data container every dataset plugin returns: :class:`MultiRaterData` (images, the masks of every
annotator, patient/case groups and per-item metadata), fully in memory or memory-mapped.

Part of the plugin contract: a plugin imports it from :mod:`probseg_bench.api`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probseg_bench.errors import ProbsegError


@dataclass
class MultiRaterData:
    """A multi-annotator segmentation dataset, fully or lazily (memory-mapped) in memory.

    Attributes:
        images: float32 (or float16, to halve the memory of large sets) [N, C, H, W], intensities normalised by
            the dataset plugin (documented there); training and evaluation compute in float32.
        masks: uint8 [N, A, H, W] with values in {0, 1}; A annotators, every image has all A masks (a mask may be
            empty: the annotator marked nothing).
        groups: [N] patient/case ids (str or int). Splits never put one group on both sides.
        metadata: optional per-item columns, each of length N (e.g. the original file name).
    """

    images: np.ndarray
    masks: np.ndarray
    groups: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_annotators(self) -> int:
        return int(self.masks.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def validate(self, source: str = "dataset", full: bool = False) -> None:
        """Check shapes, dtypes and values (for memory-mapped arrays, values only when ``full``: a scan of every
        item in chunks).

        Raises:
            ProbsegError: naming ``source`` and what was expected.
        """
        im, mk, gr = self.images, self.masks, np.asarray(self.groups)
        if im.ndim != 4:
            raise ProbsegError(f"{source}: images must have shape [N, C, H, W], got {tuple(im.shape)}")
        if im.dtype not in (np.float32, np.float16):
            raise ProbsegError(f"{source}: images must be float32 or float16, got {im.dtype}")
        if mk.ndim != 4:
            raise ProbsegError(f"{source}: masks must have shape [N, A, H, W], got {tuple(mk.shape)}")
        if mk.dtype != np.uint8:
            raise ProbsegError(f"{source}: masks must be uint8 in {{0, 1}}, got {mk.dtype}")
        if mk.shape[0] != im.shape[0] or mk.shape[2:] != im.shape[2:]:
            raise ProbsegError(
                f"{source}: masks {tuple(mk.shape)} do not match images {tuple(im.shape)} "
                "(expected the same N, H, W)"
            )
        if mk.shape[1] < 1:
            raise ProbsegError(f"{source}: expected at least one annotator, got A = 0")
        if gr.shape != (im.shape[0],):
            raise ProbsegError(f"{source}: groups must have shape [N] = [{im.shape[0]}], got {gr.shape}")
        if full or not (isinstance(im, np.memmap) or isinstance(mk, np.memmap)):
            for start in range(0, im.shape[0], 512):  # in chunks: a memory-mapped set is not loaded at once
                block = np.asarray(im[start : start + 512])
                finite = np.isfinite(block).reshape(block.shape[0], -1).all(1)
                if not finite.all():
                    bad = start + int(np.argmin(finite))
                    raise ProbsegError(f"{source}: image {bad} contains NaN or infinite values")
                top = int(np.asarray(mk[start : start + 512]).max(initial=0))
                if top > 1:
                    raise ProbsegError(f"{source}: masks must hold only 0 and 1, found {top}")
        for key, col in self.metadata.items():
            if len(col) != im.shape[0]:
                raise ProbsegError(f"{source}: metadata column '{key}' has {len(col)} rows, expected {im.shape[0]}")

    def subset(self, index: np.ndarray) -> MultiRaterData:
        """The items at ``index`` (int array), metadata included, copied into memory.

        From memory-mapped arrays the copy is made in chunks, and the mapped pages are released after each
        chunk, so selecting a split of a large converted set costs only the split's own memory.
        """
        return MultiRaterData(
            images=_take(self.images, index),
            masks=_take(self.masks, index),
            groups=np.asarray(self.groups)[index],
            metadata={k: np.asarray(v)[index] for k, v in self.metadata.items()},
        )


def _take(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]`` as a new in-memory array; for a memory map, chunk by chunk, dropping mapped pages."""
    if not isinstance(array, np.memmap):
        return np.ascontiguousarray(array[index])
    import mmap

    index = np.asarray(index)
    out = np.empty((len(index), *array.shape[1:]), dtype=array.dtype)
    mapping = getattr(array, "_mmap", None)
    for start in range(0, len(index), 256):
        out[start : start + 256] = array[index[start : start + 256]]
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)
    return out
