"""LIDC-IDRI: the embedded sample and the two formats public code uses (:data:`SPECS`: ``lidc-sample``, ``lidc``,
``lidc-crops``).

``lidc-sample``: 28 real LIDC-IDRI lung-nodule CT crops (128 x 128, 4 radiologists), embedded in this package
as ``data/lidc_sample.npz`` (converted from the JPEG folder layout by ``scripts/build_lidc_sample.py``).
Licence CC BY 3.0, see ``data/LIDC-IDRI-ATTRIBUTION.txt``.

``lidc``: the pickle of the public PyTorch PU-Net port (``data_lidc.pickle``): a dict of entries
``{"image": float [128, 128] in [0, 1], "masks": [A arrays [128, 128] in {0, 1}], "series_uid": str}``,
possibly split over several ``.pickle`` files in one folder. Unpickling runs code from the file, so it is
refused unless the user passes ``--trust-pickle``; ``probseg-bench data convert lidc --data-root X
--trust-pickle --output Y`` turns it once into plain ``.npy`` files that later runs read memory-mapped without
trusting anything (``--data-root Y``). Groups = ``series_uid`` (the pickle carries no patient id; LIDC-IDRI has
about one CT series per patient). Other keys of an entry are ignored. Intensities follow the rule of every loader
(:func:`probseg_bench.data.intensity.model_intensities`, by the dtype stored in the pickle): the port's float
images in [0, 1] as stored, the uint8 images 0..255 of the MedicalMatting variant (7 masks, an extra key per
entry) / 255. Images are kept as float16 (the 8-bit source values survive to 2.5e-4). Every entry holds the
annotator count of the most entries; another entry is dropped with one warning line naming it.

``lidc-crops``: the PNG crops of the Hierarchical PU-Net release ("LIDC v2"):
``[train|val|test/]images/<patient>/z-<z>_c<crop>.png`` with ``[train|val|test/]gt/<patient>/z-<z>_c<crop>_l<a>.png``
per annotator a (numbered from 0 or from 1: discovered; a crop with other annotation files than most crops is
dropped with one warning line), 180 x 180, centre-cropped to 128. Groups = patient.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import DatasetSpec, HyperParameter, MultiRaterData, ProtocolDefaults
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

__all__ = [
    "CROPS_LAYOUT",
    "LIDC",
    "LIDC_CITATION",
    "LIDC_CROPS",
    "LIDC_LICENSE",
    "LIDC_SAMPLE",
    "LIDC_SAMPLE_FILE",
    "PICKLE_LAYOUT",
    "SPECS",
    "load_lidc",
    "load_lidc_crops",
    "load_lidc_sample",
    "read_lidc_pickles",
]

LIDC_SAMPLE_FILE = Path(__file__).parent / "data" / "lidc_sample.npz"
LIDC_LICENSE = "CC BY 3.0 (The Cancer Imaging Archive)"
LIDC_CITATION = (
    "Armato III S. G. et al., The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative "
    "(IDRI): a completed reference database of lung nodules on CT scans, Medical Physics 38(2), 2011; "
    "The Cancer Imaging Archive (TCIA)"
)
PICKLE_LAYOUT = "a folder of .pickle files (or one file) holding {key: {image, masks, series_uid}}"
CROPS_LAYOUT = "[train|val|test/]images/<patient>/z-<z>_c<crop>.png and gt/<patient>/z-<z>_c<crop>_l<annotator>.png"


# ------------------------------------------------------------------------------------------------------ sample
def load_lidc_sample(data_root: Path | None = None) -> MultiRaterData:
    """The embedded LIDC-IDRI sample: images float32 [28, 1, 128, 128] in [0, 1] (JPEG grey / 255), masks uint8
    [28, 4, 128, 128], one group per case (the sample carries no patient ids); metadata ``case`` and ``subset``
    (the original training/testing folder, not used by the protocol's split).

    Raises:
        ProbsegError: when a ``data_root`` is given (the sample is embedded) or the package file is damaged.
    """
    from probseg_datasets.cimd import to_multirater

    if data_root is not None:
        raise ProbsegError(
            "dataset 'lidc-sample' is embedded in the package and takes no --data-root"
        )
    try:
        with np.load(LIDC_SAMPLE_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("images", "masks", "case", "subset")}
    except (OSError, KeyError, ValueError) as exc:
        raise ProbsegError(f"{LIDC_SAMPLE_FILE}: damaged package data ({exc}); reinstall probseg-bench") from None
    return to_multirater(arrays["images"], arrays["masks"], arrays["case"], arrays["subset"], str(LIDC_SAMPLE_FILE))


# ------------------------------------------------------------------------------------------------------- pickle
_FLOAT16_MAX = 65504.0


def _compact(a: np.ndarray) -> np.ndarray:
    """A compact copy of an array as it is unpickled, with the same values under the intensity rule of
    :func:`probseg_bench.data.intensity.model_intensities` (which goes by dtype): floats that are all 0/1 -> bool,
    other floats within the float16 range -> float16 (relative error <= 2**-11), integers of more than 2 bytes
    that are all 0/1 -> bool, within the int16 range -> int16; anything else (uint8 and uint16 included) as is."""
    if a.dtype.kind == "f" and a.size:
        if ((a == 0) | (a == 1)).all():
            return a.astype(bool)
        if np.isfinite(a).all() and np.abs(a).max() <= _FLOAT16_MAX:
            return a.astype(np.float16)
        return np.array(a)
    if a.dtype.kind in "iu" and a.dtype.itemsize > 2 and a.size:
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi <= 1:
            return a.astype(bool)
        if lo >= -32768 and hi <= 32767:
            return a.astype(np.int16)
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


def _mask_count(path: Path, key: Any, entry: Any) -> int:
    """The number of annotator masks of one entry, after checking its keys."""
    where = f"{path}: entry {key!r}"
    if not isinstance(entry, dict) or not {"image", "masks", "series_uid"} <= set(entry):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ProbsegError(f"{where}: expected a dict with image, masks and series_uid, got {got}")
    masks = entry["masks"]
    if isinstance(masks, _UnpickledArray):
        masks = masks.array
    if not isinstance(masks, (list, tuple, np.ndarray)) or len(masks) == 0:
        raise ProbsegError(f"{where}: expected a list of annotator masks, got {type(masks).__name__}")
    return len(masks)


def _entry_arrays(path: Path, key: Any, entry: Any) -> tuple[np.ndarray, list[np.ndarray], str]:
    where = f"{path}: entry {key!r}"
    _mask_count(path, key, entry)
    image = _as_array(entry["image"])
    if image.ndim != 2:
        raise ProbsegError(f"{where}: expected a 2-D image, got shape {image.shape}")
    if image.dtype.kind not in "fiub" or not np.isfinite(image).all():
        raise ProbsegError(f"{where}: image contains NaN or infinite (or non-numeric) values")
    return image, [_as_array(m) for m in _as_array_or_list(entry["masks"])], str(entry["series_uid"])


def _as_array_or_list(x: Any) -> Any:
    return x.array if isinstance(x, _UnpickledArray) else x


_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""The entries of one pickle file with one annotator count: images float16 [n, 1, H, W], masks uint8
[n, A, H, W], groups [n], keys [n]."""


def _read_one_pickle(path: Path) -> tuple[list[tuple[str, int]], dict[int, _Part]]:
    """One trusted pickle file -> ((key, annotator count) of every entry in key order, the entries per annotator
    count). Which count the dataset keeps is decided over all files (:func:`read_lidc_pickles`).

    Images follow the intensity rule of every loader (:func:`probseg_bench.data.intensity.model_intensities`,
    by the dtype stored in the pickle: uint8 / 255, uint16 / 65535, floats as stored) and are kept as float16.
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
    counts = [_mask_count(path, key, content[key]) for key in keys]
    h, w = _entry_arrays(path, keys[0], content[keys[0]])[0].shape
    parts = {
        a: (np.empty((n, 1, h, w), dtype=np.float16), np.empty((n, a, h, w), dtype=np.uint8),
            np.empty(n, dtype=object), np.empty(n, dtype=object))
        for a, n in Counter(counts).items()
    }
    filled = dict.fromkeys(parts, 0)
    for i, (key, a) in enumerate(zip(keys, counts, strict=True)):
        image, mask_list, uid = _entry_arrays(path, key, content.pop(key))
        if image.shape != (h, w):
            raise ProbsegError(f"{path}: entry {key!r}: image shape {image.shape} differs from {(h, w)}")
        images, masks, groups, names = parts[a]
        k = filled[a]
        for j, m in enumerate(mask_list):
            if m.shape != (h, w):
                raise ProbsegError(f"{path}: entry {key!r}: mask {j} has shape {m.shape}, the image {(h, w)}")
            masks[k, j] = as_binary_mask(m, Path(f"{path}: entry {key!r} mask {j}"))
        images[k, 0] = model_intensities(image, source=f"{path}: entry {key!r}")
        groups[k], names[k] = uid, str(key)
        filled[a] += 1
        if i % 1000 == 999:
            _release_freed_memory()
    out = {a: (im, mk, gr.astype(str), nm.astype(str)) for a, (im, mk, gr, nm) in parts.items()}
    return [(str(k), a) for k, a in zip(keys, counts, strict=True)], out


def _annotator_count(files: list[Path], entries: list[tuple[Path, str, int]]) -> int:
    """The annotator count the dataset keeps: that of the most entries over all files; every other entry is
    dropped with a DatasetWarning naming it (:func:`probseg_datasets.common.consistent_annotators`)."""

    def refuse(i: int, have: frozenset[int], common: frozenset[int]) -> str:
        path, key, _ = entries[i]
        return f"{path}: entry {key!r}: {len(have)} annotator masks, expected {len(common)}"

    check = consistent_annotators(
        "lidc",
        [(f"entry {key!r} of {path.name if len(files) > 1 else path}", range(a)) for path, key, a in entries],
        unit="annotator masks", kind="entries", name=None, refuse=refuse,
    )
    return len(check.reference)


def read_lidc_pickles(root: Path, trust_pickle: bool) -> MultiRaterData:
    """Read the pickle(s) of the public PU-Net port.

    Several files are read one at a time (each spilled to a temporary .npy) so that the peak memory stays that
    of the largest file plus the final compact arrays (float16 images, uint8 masks). Every entry holds the
    annotator count of the most entries; another entry is dropped with one
    :class:`~probseg_bench.data.loading.DatasetWarning` line naming it and its mask count.

    Raises:
        ProbsegError: ``trust_pickle`` not given, no pickle files, a truncated/corrupt file, entries of another
            size, annotator counts that differ between so many entries that at most half share one, masks not
            in {0,1}/{0,255}, NaN/inf intensities.
    """
    files = _pickle_files(root)
    if not trust_pickle:
        raise ProbsegError(
            f"{files[0]}: refusing to unpickle (a pickle can run arbitrary code). If you trust this file, pass "
            f"--trust-pickle, or convert it once: probseg-bench data convert lidc --data-root {root} "
            "--trust-pickle --output lidc-converted"
        )
    if len(files) == 1:
        order, parts = _read_one_pickle(files[0])
        a = _annotator_count(files, [(files[0], key, n) for key, n in order])
        images, masks, groups, keys = parts[a]
        return MultiRaterData(images, masks, groups, metadata={"key": keys})
    with tempfile.TemporaryDirectory(prefix="probseg-lidc-") as tmp:
        entries: list[tuple[Path, str, int]] = []
        size: tuple[int, ...] = ()
        stored: list[dict[int, tuple[int, np.ndarray, np.ndarray]]] = []
        for i, path in enumerate(files):
            order, parts = _read_one_pickle(path)
            entries += [(path, key, n) for key, n in order]
            stored.append({})
            for a, (images, masks, groups, keys) in parts.items():
                size = size or masks.shape[2:]
                if masks.shape[2:] != size:
                    raise ProbsegError(
                        f"{path}: entries of size [H, W] = {list(masks.shape[2:])}, but {files[0]} has {list(size)}"
                    )
                np.save(os.path.join(tmp, f"images{i}_{a}.npy"), images)
                np.save(os.path.join(tmp, f"masks{i}_{a}.npy"), masks)
                stored[-1][a] = (len(images), groups, keys)
            del parts
        a = _annotator_count(files, entries)
        n = sum(part[a][0] for part in stored if a in part)
        h, w = size
        all_images = np.empty((n, 1, h, w), dtype=np.float16)
        all_masks = np.empty((n, a, h, w), dtype=np.uint8)
        start = 0
        for i, part in enumerate(stored):
            if a not in part:
                continue
            k = part[a][0]
            all_images[start : start + k] = np.load(os.path.join(tmp, f"images{i}_{a}.npy"), mmap_mode="r")
            all_masks[start : start + k] = np.load(os.path.join(tmp, f"masks{i}_{a}.npy"), mmap_mode="r")
            start += k
    groups_all = np.concatenate([part[a][1] for part in stored if a in part])
    keys_all = np.concatenate([part[a][2] for part in stored if a in part])
    return MultiRaterData(all_images, all_masks, groups_all, metadata={"key": keys_all})


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
    """``lidc-crops``: images PNG -> float16 [N, 1, size, size] (centre crop of the 180 x 180 crops) by the
    intensity rule of every loader (:func:`probseg_bench.data.intensity.model_intensities`: 8-bit / 255,
    16-bit / 65535), masks uint8 [N, A, size, size] (files in {0, 1} or {0, 255}; a palette PNG by its
    indices); groups = patient folder; metadata split, patient, name.

    Every crop holds the annotators the most crops have; a crop with fewer (or other) annotation files is
    dropped with one :class:`~probseg_bench.data.loading.DatasetWarning` line naming it and its file count.

    Raises:
        ProbsegError: missing root or images/ folder, no crops, annotation files that differ between so many
            crops that at most half share one set, unreadable PNGs, masks not in {0,1}/{0,255}, sizes that
            differ.
    """
    root = require_root(data_root, "lidc-crops", CROPS_LAYOUT)
    found_items: list[tuple[str, str, str, Path, dict[int, Path]]] = []
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
                found_items.append((split, patient_dir.name, stem, image_path, gt_files.get(stem, {})))
    if not found_items:
        raise ProbsegError(f"{root}: no crops found (expected {CROPS_LAYOUT})")
    if not any(found for *_, found in found_items):
        split, patient, stem, image_path, _ = found_items[0]
        raise ProbsegError(f"{root / split / 'gt' / patient / (stem + '_l<a>.png')}: no annotation files for "
                           f"{image_path}")

    def refuse(i: int, have: frozenset[int], common: frozenset[int]) -> str:
        first = next(item[3] for item in found_items if frozenset(item[4]) == common)
        return (f"{found_items[i][3]}: annotators {sorted(have)} differ from {sorted(common)} of {first} "
                "(missing annotation files?)")

    check = consistent_annotators(
        "lidc-crops",
        [(f"crop {image_path.relative_to(root)}", found) for _, _, _, image_path, found in found_items],
        unit="annotation files", kind="crops", name=lambda a: f"_l{a}.png", refuse=refuse,
    )
    annotators = sorted(check.reference)
    items = [found_items[i] for i in check.kept]
    n, a = len(items), len(annotators)
    # float16 images and uint8 masks, refused before allocating when they cannot fit
    check_fits(n * size * size * (2 + a), f"dataset 'lidc-crops': --dataset-param size={size} ({n} crops)")
    images = np.empty((n, 1, size, size), dtype=np.float16)
    masks = np.empty((n, a, size, size), dtype=np.uint8)
    for i, (_, _, _, image_path, found) in enumerate(items):
        image = read_array(image_path)
        if image.ndim != 2:
            raise ProbsegError(f"{image_path}: expected a 2-D greyscale image, got shape {image.shape}")
        images[i, 0] = center_crop_or_pad(model_intensities(image, source=str(image_path)), size)
        for j, ann in enumerate(annotators):
            mask = read_array(found[ann], mask=True)  # a palette PNG: its indices
            if mask.shape != image.shape:
                raise ProbsegError(f"{found[ann]}: mask shape {mask.shape} differs from the image {image.shape}")
            masks[i, j] = center_crop_or_pad(as_binary_mask(mask, found[ann]), size)
    meta = np.array([(s, p, name) for s, p, name, _, _ in items])
    return MultiRaterData(images, masks, groups=meta[:, 1].copy(),
                          metadata={"split": meta[:, 0].copy(), "patient": meta[:, 1].copy(),
                                    "name": meta[:, 2].copy()})


# ------------------------------------------------------------------------------------------------------- specs
LIDC_SAMPLE = DatasetSpec(
    name="lidc-sample",
    description="28 real LIDC-IDRI lung-nodule CT crops, 128x128, 4 annotators (embedded, no download)",
    load=load_lidc_sample,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    # every annotation of the 28 crops lies in rows 56..74, columns 53..76: inside the central 32 x 32 window
    # (48..79), 13.6 pixels from the centre at most (tests/test_datasets.py checks this)
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5, roi_size=32),
)

LIDC = DatasetSpec(
    name="lidc",
    description="LIDC-IDRI crops in the PU-Net port's pickle (--trust-pickle, or `data convert` once)",
    load=load_lidc,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(HyperParameter("trust_pickle", False, "allow unpickling (set by --trust-pickle)", tunable=False),),
    layout=PICKLE_LAYOUT,
)

LIDC_CROPS = DatasetSpec(
    name="lidc-crops",
    description="LIDC-IDRI PNG crops of the Hierarchical PU-Net release, centre-cropped 180 -> 128",
    load=load_lidc_crops,
    license=LIDC_LICENSE,
    citation=LIDC_CITATION,
    protocol=ProtocolDefaults(epochs=200, warmup_epochs=5),
    parameters=(HyperParameter("size", 128, "centre crop side in pixels", tunable=False, minimum=1),),
    layout=CROPS_LAYOUT,
)

SPECS: tuple[DatasetSpec, ...] = (LIDC_SAMPLE, LIDC, LIDC_CROPS)
