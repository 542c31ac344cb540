"""LIDC-IDRI in the two formats public code uses.

``lidc``: the pickle of the public PyTorch PU-Net port (``data_lidc.pickle``): a dict of entries
``{"image": float [128, 128] in [0, 1], "masks": [A arrays [128, 128] in {0, 1}], "series_uid": str}``,
possibly split over several ``.pickle`` files in one folder. Unpickling runs code from the file, so it is
refused unless the user passes ``--trust-pickle``; ``probseg-bench data convert lidc --data-root X
--trust-pickle --output Y`` turns it once into plain ``.npy`` files that later runs read memory-mapped without
trusting anything (``--data-root Y``). Groups = ``series_uid`` (the pickle carries no patient id; LIDC-IDRI has
about one CT series per patient). Images are kept as float16 (the 8-bit source values survive to 2.5e-4).

``lidc-crops``: the PNG crops of the Hierarchical PU-Net release ("LIDC v2"):
``[train|val|test/]images/<patient>/z-<z>_c<crop>.png`` with ``[train|val|test/]gt/<patient>/z-<z>_c<crop>_l<a>.png``
per annotator a (numbered from 0 or from 1: discovered), 180 x 180, centre-cropped to 128. Groups = patient.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import MultiRaterData
from probseg_bench.errors import ProbsegError
from probseg_datasets.common import as_binary_mask, center_crop_or_pad, read_array, require_root

PICKLE_LAYOUT = "a folder of .pickle files (or one file) holding {key: {image, masks, series_uid}}"
CROPS_LAYOUT = "[train|val|test/]images/<patient>/z-<z>_c<crop>.png and gt/<patient>/z-<z>_c<crop>_l<annotator>.png"


# ------------------------------------------------------------------------------------------------------- pickle
_FLOAT16_MAX = 65504.0


def _compact(a: np.ndarray) -> np.ndarray:
    """A compact copy of an array as it is unpickled: floats that are all 0/1 -> uint8, other floats within the
    float16 range -> float16 (relative error <= 2**-11), integers within 0..255 -> uint8; anything else as is."""
    if a.dtype.kind == "f" and a.size:
        if ((a == 0) | (a == 1)).all():
            return a.astype(np.uint8)
        if np.isfinite(a).all() and np.abs(a).max() <= _FLOAT16_MAX:
            return a.astype(np.float16)
        return np.array(a)
    if a.dtype.kind in "iu" and a.dtype.itemsize > 1 and a.size and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    return np.array(a)


class _UnpickledArray:
    """Stands in for an ndarray rebuilt by numpy's legacy ``_reconstruct`` + ``__setstate__`` (pickle protocols
    0-4): keeps only the compact copy of the data."""

    array: np.ndarray
    unpickler: _CompactingUnpickler

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        _, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        if isinstance(raw, str):  # protocol 0-2 from Python 2: latin-1 text
            raw = raw.encode("latin-1")
        flat = np.frombuffer(raw, dtype=dtype) if not isinstance(raw, list) else np.array(raw, dtype=dtype)
        self.array = self.unpickler.compact(flat.reshape(shape, order="F" if fortran else "C"))
        del self.unpickler


class _CompactingUnpickler(pickle._Unpickler):  # the Python unpickler: its memo is a dict we may prune
    """A (trusted) unpickler that stores every numpy array compactly as soon as it is read, so that the whole
    LIDC pickle (1.85 GiB of float32 images and uint8 masks for 15k crops) never sits in memory at full size.

    The pickler memoized every raw data buffer, so the unpickler's memo would keep them all alive until the end:
    every 2,000 arrays the buffers already consumed are dropped from the memo (nothing refers back to an
    array's raw buffer) and the freed pages are handed back to the system."""

    memo: dict[int, Any]

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.arrays = 0

    def compact(self, a: np.ndarray) -> np.ndarray:
        self.arrays += 1
        if self.arrays % 2000 == 0:
            consumed = [k for k, v in self.memo.items()
                        if isinstance(v, (bytes, bytearray, pickle.PickleBuffer)) and len(memoryview(v)) >= 4096]
            for k in consumed:
                del self.memo[k]
            _release_freed_memory()
        return _compact(a)

    def _reconstruct(self, *_: Any) -> _UnpickledArray:
        placeholder = _UnpickledArray()
        placeholder.unpickler = self
        return placeholder

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        return self.compact(np.frombuffer(buf, dtype=dtype).reshape(shape, order=order))

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return self._reconstruct
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return self._frombuffer
        return super().find_class(module, name)


def _as_array(x: Any) -> np.ndarray:
    return x.array if isinstance(x, _UnpickledArray) else np.asarray(x)


def _release_freed_memory() -> None:
    """Return freed heap pages to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _pickle_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".pickle", ".pkl"))
    if not files:
        raise ProbsegError(f"{root}: no .pickle files (expected {PICKLE_LAYOUT})")
    return files


def _entry_arrays(path: Path, key: Any, entry: Any) -> tuple[np.ndarray, list[np.ndarray], str]:
    where = f"{path}: entry {key!r}"
    if not isinstance(entry, dict) or not {"image", "masks", "series_uid"} <= set(entry):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ProbsegError(f"{where}: expected a dict with image, masks and series_uid, got {got}")
    image = _as_array(entry["image"])
    if image.ndim != 2:
        raise ProbsegError(f"{where}: expected a 2-D image, got shape {image.shape}")
    if image.dtype.kind not in "fiu" or not np.isfinite(image).all():
        raise ProbsegError(f"{where}: image contains NaN or infinite (or non-numeric) values")
    masks = entry["masks"]
    if not isinstance(masks, (list, tuple, np.ndarray)) or len(masks) == 0:
        raise ProbsegError(f"{where}: expected a list of annotator masks, got {type(masks).__name__}")
    return image, [_as_array(m) for m in masks], str(entry["series_uid"])


def _read_one_pickle(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One trusted pickle file -> (images float16 [n,1,H,W], masks uint8 [n,A,H,W], groups [n], keys [n]).

    Arrays are stored compactly while unpickling (:class:`_CompactingUnpickler`), then moved one entry at a
    time into the output arrays, the freed memory returned to the system as we go: the peak stays near the size
    of the compact output, not of the pickle.
    """
    try:
        with open(path, "rb") as fh:
            content = _CompactingUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError,
            TypeError) as exc:
        raise ProbsegError(f"{path}: truncated or not a pickle of LIDC entries ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict) or not content:
        raise ProbsegError(f"{path}: expected a non-empty dict of entries, got {type(content).__name__}")
    keys = sorted(content, key=str)
    image0, masks0, _ = _entry_arrays(path, keys[0], content[keys[0]])
    h, w = image0.shape
    a = len(masks0)
    images = np.empty((len(keys), 1, h, w), dtype=np.float16)
    masks = np.empty((len(keys), a, h, w), dtype=np.uint8)
    groups = []
    for i, key in enumerate(keys):
        image, mask_list, uid = _entry_arrays(path, key, content.pop(key))
        if image.shape != (h, w):
            raise ProbsegError(f"{path}: entry {key!r}: image shape {image.shape} differs from {(h, w)}")
        if len(mask_list) != a:
            raise ProbsegError(f"{path}: entry {key!r}: {len(mask_list)} annotator masks, expected {a}")
        for j, m in enumerate(mask_list):
            if m.shape != (h, w):
                raise ProbsegError(f"{path}: entry {key!r}: mask {j} has shape {m.shape}, the image {(h, w)}")
            masks[i, j] = as_binary_mask(m, Path(f"{path}: entry {key!r} mask {j}"))
        images[i, 0] = image
        groups.append(uid)
        if i % 1000 == 999:
            _release_freed_memory()
    return images, masks, np.array(groups), np.array([str(k) for k in keys])


def read_lidc_pickles(root: Path, trust_pickle: bool) -> MultiRaterData:
    """Read the pickle(s) of the public PU-Net port.

    Several files are read one at a time (each spilled to a temporary .npy) so that the peak memory stays that
    of the largest file plus the final compact arrays (float16 images, uint8 masks).

    Raises:
        ProbsegError: ``trust_pickle`` not given, no pickle files, a truncated/corrupt file, entries of another
            shape, annotator counts that differ, masks not in {0,1}/{0,255}, NaN/inf intensities.
    """
    files = _pickle_files(root)
    if not trust_pickle:
        raise ProbsegError(
            f"{files[0]}: refusing to unpickle (a pickle can run arbitrary code). If you trust this file, pass "
            f"--trust-pickle, or convert it once: probseg-bench data convert lidc --data-root {root} "
            "--trust-pickle --output lidc-converted"
        )
    if len(files) == 1:
        images, masks, groups, keys = _read_one_pickle(files[0])
        return MultiRaterData(images, masks, groups, metadata={"key": keys})
    with tempfile.TemporaryDirectory(prefix="probseg-lidc-") as tmp:
        shapes: list[tuple[int, ...]] = []
        groups_parts: list[np.ndarray] = []
        keys_parts: list[np.ndarray] = []
        for i, path in enumerate(files):
            images, masks, groups, keys = _read_one_pickle(path)
            if shapes and masks.shape[1:] != shapes[0][1:]:
                raise ProbsegError(
                    f"{path}: entries of shape [A, H, W] = {list(masks.shape[1:])}, but {files[0]} has "
                    f"{list(shapes[0][1:])}"
                )
            np.save(os.path.join(tmp, f"images{i}.npy"), images)
            np.save(os.path.join(tmp, f"masks{i}.npy"), masks)
            shapes.append(masks.shape)
            groups_parts.append(groups)
            keys_parts.append(keys)
            del images, masks
        n = sum(s[0] for s in shapes)
        all_images = np.empty((n, 1, *shapes[0][2:]), dtype=np.float16)
        all_masks = np.empty((n, *shapes[0][1:]), dtype=np.uint8)
        start = 0
        for i, s in enumerate(shapes):
            all_images[start : start + s[0]] = np.load(os.path.join(tmp, f"images{i}.npy"), mmap_mode="r")
            all_masks[start : start + s[0]] = np.load(os.path.join(tmp, f"masks{i}.npy"), mmap_mode="r")
            start += s[0]
    return MultiRaterData(all_images, all_masks, np.concatenate(groups_parts),
                          metadata={"key": np.concatenate(keys_parts)})


def load_lidc(data_root: Path | None, trust_pickle: bool = False) -> MultiRaterData:
    """``lidc``: see the module docstring and :func:`read_lidc_pickles`."""
    if data_root is not None and Path(data_root).is_file():
        return read_lidc_pickles(Path(data_root), trust_pickle)
    return read_lidc_pickles(require_root(data_root, "lidc", PICKLE_LAYOUT), trust_pickle)


# -------------------------------------------------------------------------------------------------------- crops
_IMAGE = re.compile(r"^z-(?P<z>-?[\d.]+)_c(?P<c>\d+)\.png$")
_MASK = re.compile(r"^z-(?P<z>-?[\d.]+)_c(?P<c>\d+)_l(?P<a>\d+)\.png$")


def _crop_roots(root: Path) -> list[tuple[str, Path]]:
    splits = [(name, root / name) for name in ("train", "val", "test") if (root / name / "images").is_dir()]
    if splits:
        return splits
    if (root / "images").is_dir():
        return [("", root)]
    raise ProbsegError(f"{root}: no images/ folder (expected {CROPS_LAYOUT})")


def load_lidc_crops(data_root: Path | None, size: int = 128) -> MultiRaterData:
    """``lidc-crops``: images uint8 PNG / 255 -> float16 [N, 1, size, size] (centre crop of the 180 x 180 crops),
    masks uint8 [N, A, size, size]; groups = patient folder; metadata split, patient, name.

    Raises:
        ProbsegError: missing root or images/ folder, no crops, a crop whose annotator files differ from the
            others, unreadable PNGs, masks not in {0,1}/{0,255}, sizes that differ.
    """
    root = require_root(data_root, "lidc-crops", CROPS_LAYOUT)
    items: list[tuple[str, str, str, Path, dict[int, Path]]] = []
    annotators: tuple[int, ...] | None = None
    first = ""
    for split, base in _crop_roots(root):
        for patient_dir in sorted(p for p in (base / "images").iterdir() if p.is_dir()):
            gt_dir = base / "gt" / patient_dir.name
            gt_files: dict[str, dict[int, Path]] = {}
            if gt_dir.is_dir():
                for p in gt_dir.iterdir():
                    m = _MASK.match(p.name)
                    if m:
                        gt_files.setdefault(f"z-{m['z']}_c{m['c']}", {})[int(m["a"])] = p
            for image_path in sorted(patient_dir.iterdir()):
                if not _IMAGE.match(image_path.name):
                    continue
                stem = image_path.name[: -len(".png")]
                found = gt_files.get(stem, {})
                ids = tuple(sorted(found))
                if annotators is None:
                    if not ids:
                        raise ProbsegError(f"{gt_dir / (stem + '_l<a>.png')}: no annotation files for {image_path}")
                    annotators, first = ids, str(image_path)
                elif ids != annotators:
                    raise ProbsegError(
                        f"{image_path}: annotators {list(ids)} differ from {list(annotators)} of {first} "
                        "(missing annotation files?)"
                    )
                items.append((split, patient_dir.name, stem, image_path, found))
    if not items or annotators is None:
        raise ProbsegError(f"{root}: no crops found (expected {CROPS_LAYOUT})")
    n, a = len(items), len(annotators)
    images = np.empty((n, 1, size, size), dtype=np.float16)
    masks = np.empty((n, a, size, size), dtype=np.uint8)
    for i, (_, _, _, image_path, found) in enumerate(items):
        image = read_array(image_path)
        if image.ndim != 2:
            raise ProbsegError(f"{image_path}: expected a 2-D greyscale image, got shape {image.shape}")
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        images[i, 0] = center_crop_or_pad(image.astype(np.float32) / scale, size)
        for j, ann in enumerate(annotators):
            mask = read_array(found[ann])
            if mask.shape != image.shape:
                raise ProbsegError(f"{found[ann]}: mask shape {mask.shape} differs from the image {image.shape}")
            masks[i, j] = center_crop_or_pad(as_binary_mask(mask, found[ann]), size)
    meta = np.array([(s, p, name) for s, p, name, _, _ in items])
    return MultiRaterData(images, masks, groups=meta[:, 1].copy(),
                          metadata={"split": meta[:, 0].copy(), "patient": meta[:, 1].copy(),
                                    "name": meta[:, 2].copy()})
