"""The converted dataset format: a folder any dataset can be written to once and read memory-mapped later.

``probseg-bench data convert DATASET --data-root SRC --output DIR`` writes::

    DIR/probseg-dataset.json   {"format": "probseg-multirater", "version": 1, "dataset": ..., "parameters": ...,
                                "n": N, "annotators": A, "height": H, "width": W, "channels": C,
                                "image_dtype": "float16" | "float32", "source": ...,
                                "warnings": [...]}     the loader's DatasetWarning lines, raised again on load
    DIR/images.npy             [N, C, H, W] float16 (default) or float32
    DIR/masks.npy              uint8 {0, 1} [N, A, H, W]
    DIR/groups.npy             [N] unicode
    DIR/meta_<key>.npy         one per metadata column (unicode or numeric)

The images hold the intensities the loader feeds to the model (the rule of :mod:`probseg_bench.data.intensity`
applied), read back as stored. Plain ``.npy`` files (``allow_pickle=False``): nothing is executed when reading.
Images and masks are opened memory-mapped, so a converted LIDC (15k crops) costs almost no RAM until a split is
selected. The folder is written under a temporary name and renamed when complete, so a killed conversion leaves
no half-written dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probseg_bench.api import MultiRaterData
from probseg_bench.errors import ProbsegError
from probseg_bench.outputs import write_error

MARKER = "probseg-dataset.json"
FORMAT = "probseg-multirater"


def is_converted(root: Path | None) -> bool:
    """Whether ``root`` is a converted dataset folder."""
    return root is not None and (Path(root) / MARKER).is_file()


def _write_npy(path: Path, array: np.ndarray, dtype: np.dtype) -> None:
    """Write ``array`` as ``dtype`` to a .npy file in chunks of items, through plain file writes (no memory map,
    so the written pages do not count against this process)."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": array.shape}
        )
        for start in range(0, array.shape[0], 512):
            fh.write(np.ascontiguousarray(array[start : start + 512], dtype=dtype).tobytes())


def write_converted(
    data: MultiRaterData, out: Path, dataset: str, parameters: Mapping[str, Any], source: str,
    image_dtype: str = "float16", notes: Sequence[str] = (),
) -> Path:
    """Write ``data`` to the folder ``out`` (which must not exist or be empty), atomically.

    Args:
        image_dtype: ``float16`` (half the size; the error on [0, 1] intensities is below 2.5e-4) or ``float32``.
        notes: the :class:`~probseg_bench.data.loading.DatasetWarning` messages of the load (e.g. a dropped
            case), stored as ``"warnings"`` and raised again whenever the folder is loaded.

    Raises:
        ProbsegError: ``out`` exists and is not empty, or cannot be created (:func:`check_output`), or an unknown
            image dtype.
        OutputError: a write failed (no space left, a file size limit): one line naming ``out``; nothing of the
            folder is left.
    """
    out = check_output(out, image_dtype)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise write_error(out, exc) from None
    try:
        n, a, h, w = data.masks.shape
        _write_npy(tmp / "images.npy", data.images, np.dtype(image_dtype))
        _write_npy(tmp / "masks.npy", data.masks, np.dtype(np.uint8))
        np.save(tmp / "groups.npy", np.asarray(data.groups).astype(str), allow_pickle=False)
        for key, col in data.metadata.items():
            arr = np.asarray(col)
            np.save(tmp / f"meta_{key}.npy", arr if arr.dtype.kind in "iufb" else arr.astype(str),
                    allow_pickle=False)
        info = {
            "format": FORMAT, "version": 1, "dataset": dataset, "parameters": dict(parameters), "n": n,
            "annotators": a, "height": h, "width": w, "channels": int(data.images.shape[1]),
            "image_dtype": image_dtype, "source": source, "warnings": list(notes),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_output(out: Path, image_dtype: str = "float16") -> Path:
    """The checks of :func:`write_converted` that need no data (``data convert`` makes them before loading it):
    ``out`` does not exist or is an empty folder, and it can be created and written in.

    Raises:
        ProbsegError: one line naming ``out`` (or ``--image-dtype``) and what is wrong.
    """
    from probseg_bench.outputs import check_output_folder

    out = Path(out)
    if image_dtype not in ("float16", "float32"):
        raise ProbsegError(f"--image-dtype: expected float16 or float32, got {image_dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProbsegError(f"{out}: the output folder exists and is not empty; choose a new folder")
    return check_output_folder(out, "--output")


def read_info(root: Path) -> dict[str, Any]:
    """The folder's ``probseg-dataset.json``.

    Raises:
        ProbsegError: unreadable or not this format.
    """
    path = Path(root) / MARKER
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProbsegError(f"{path}: not a readable converted-dataset description ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ProbsegError(f"{path}: not a {FORMAT} description")
    return info


def read_converted(root: Path) -> tuple[MultiRaterData, dict[str, Any]]:
    """Open a converted folder: images and masks memory-mapped (read-only), groups and metadata in memory.

    Returns:
        (the data, the description from probseg-dataset.json).

    Raises:
        ProbsegError: a missing or damaged file, or arrays that disagree with the description.
    """
    root = Path(root)
    info = read_info(root)

    def load(name: str, mmap: bool) -> np.ndarray:
        path = root / name
        try:
            array: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            return array
        except (OSError, ValueError) as exc:
            raise ProbsegError(f"{path}: missing or damaged ({exc})") from None

    images, masks, groups = load("images.npy", True), load("masks.npy", True), load("groups.npy", False)
    expected = (info.get("n"), info.get("annotators"), info.get("height"), info.get("width"))
    if tuple(masks.shape) != expected or images.shape[0] != info.get("n"):
        raise ProbsegError(
            f"{root}: images {images.shape} / masks {masks.shape} do not match the description "
            f"(n, annotators, height, width) = {expected}"
        )
    metadata = {p.name[len("meta_") : -len(".npy")]: load(p.name, False) for p in sorted(root.glob("meta_*.npy"))}
    data = MultiRaterData(images=images, masks=masks, groups=groups, metadata=metadata)
    return data, info
