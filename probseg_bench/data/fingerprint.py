"""The content fingerprint of a dataset: what identifies the data a result was computed on.

A stored result is reused only for the same configuration AND the same data (DESIGN.md section 5): the fingerprint
is part of the configuration hash of every record (:class:`probseg_bench.protocol.RunPlan`), of a tuning study's
settings, and is checked again when a stored run's checkpoint is evaluated on the data (``analyze``,
``validate``). Replacing a mask, an image, a case's group or name, or the dtype the images are stored in gives
another fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Sequence

import numpy as np

from probseg_bench.data.container import MultiRaterData

FINGERPRINT_VERSION = 1
"""Bumped when what the fingerprint covers changes (every fingerprint, and so every configuration hash, changes)."""
SHOWN = 8
"""Characters of a fingerprint shown in tables and messages (the records hold all 64)."""
_CHUNK_ITEMS = 256


def _hash_array(digest: hashlib._Hash, array: np.ndarray) -> None:
    """Feed dtype, shape and the C-order bytes of ``array`` to ``digest``, item chunk by item chunk; the pages of a
    memory map are dropped after each chunk (as :meth:`MultiRaterData.subset` does), so a converted LIDC is hashed
    without loading it."""
    digest.update(json.dumps([np.dtype(array.dtype).str, list(array.shape)]).encode())
    mapping = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    for start in range(0, int(array.shape[0]), _CHUNK_ITEMS):
        chunk = np.ascontiguousarray(array[start : start + _CHUNK_ITEMS])
        digest.update(chunk.reshape(-1).view(np.uint8).data)  # the bytes, without a copy
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)


def _labels(values: Sequence[object] | np.ndarray) -> bytes:
    """A column of ids / groups / metadata as bytes: its dtype kind and each value as text (JSON, unambiguous).
    Text stored as Python objects, unicode or bytes counts as one kind (a converted folder stores it as unicode);
    numbers keep their kind (the integer 10 sorts before 2, the text "10" after "2": other groups, other splits)."""
    array = np.asarray(values)
    kind = "U" if array.dtype.kind in "OUS" else array.dtype.kind
    return json.dumps([kind, [str(v) for v in array.tolist()]]).encode()


def data_fingerprint(data: MultiRaterData) -> str:
    """The SHA-256 (hex, 64 characters) of a dataset's content as a run uses it.

    Covers, in order: :data:`FINGERPRINT_VERSION`; the images' dtype, shape [N, C, H, W] and bytes; the masks'
    dtype, shape [N, A, H, W] and bytes (uint8 {0, 1}); the groups [N] as text; each metadata column (sorted by
    name: e.g. the case names, a ``split`` column) as text. Two datasets have the same fingerprint only when every
    one of these is equal; float16 and float32 images of the same values differ (a run computes on what is stored).

    Cost: one pass over the bytes (SHA-256 through OpenSSL, with the CPU's SHA instructions where present); a
    memory-mapped set is read in chunks of 256 items and its pages released, so memory stays at one chunk.

    Args:
        data: the dataset, in memory or memory-mapped (as loaded, after any crop the preset applies).

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256(f"probseg-data-fingerprint/{FINGERPRINT_VERSION}".encode())
    _hash_array(digest, data.images)
    _hash_array(digest, data.masks)
    digest.update(b"groups")
    digest.update(_labels(data.groups))
    for key in sorted(data.metadata):
        digest.update(json.dumps(["metadata", key]).encode())
        digest.update(_labels(data.metadata[key]))
    return digest.hexdigest()


def short(fingerprint: str | None) -> str:
    """The first :data:`SHOWN` characters of a fingerprint; ``unrecorded`` for a record stored before fingerprints
    existed (None)."""
    return "unrecorded" if not fingerprint else fingerprint[:SHOWN]


__all__ = ["FINGERPRINT_VERSION", "SHOWN", "data_fingerprint", "short"]
