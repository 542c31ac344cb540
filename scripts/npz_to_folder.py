"""Convert a multi-annotator .npz into the ``folder`` dataset layout (probseg_datasets.folder).

    python scripts/npz_to_folder.py SRC.npz OUT_DIR [--images KEY] [--masks KEY] [--ids KEY] [--annotators KEY]

e.g. the BU-BIL cells sample of the developers' workspace::

    python scripts/npz_to_folder.py ../shared/data/bubil-cells/bubil_ds1_phase_rat_smooth_muscle_128.npz bubil-folder
    probseg-bench run --model spunet --dataset folder --data-root bubil-folder --preset quick

Input (read with ``allow_pickle=False``): images [N, H, W] (uint8 or uint16: PNG; float: .npy as stored, so
the folder loader's normalisation gives back exactly ``images / 255``, ``/ 65535`` or the floats) and masks
[N, A, H, W] with values {0, 1} (or bool, or {0, 255}), written as 8-bit PNG 0 / 255. Case folder names come
from the ``--ids`` key (default ``ids``) when the file has it, with an image suffix such as ``.png`` removed,
else ``0000``, ``0001``, ...; annotator names from the ``--annotators`` key (default ``rater_names``) when
present, else ``a0``, ``a1``, ...; both are sanitised for file names (characters other than letters, digits,
``.``, ``_`` and ``-`` become ``_``) and must stay unique. A key given explicitly must exist. A LICENSE.txt
(or LICENSE, LICENSE.md, COPYING) lying next to the .npz is copied into OUT_DIR: keep it with any copy.

OUT_DIR must not exist or be empty. Everything is written into a temporary sibling folder first and renamed
into place at the end, so a failed conversion leaves nothing half-written. Exit status 0 on success, 2 with
one ``error:`` line on bad input.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from probseg_bench.errors import ProbsegError

LICENSE_FILES = ("LICENSE.txt", "LICENSE", "LICENSE.md", "COPYING")
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|tiff?|nii|nii\.gz|npy)$", re.IGNORECASE)


def sanitise(name: str) -> str:
    """A file-name-safe version of ``name`` (letters, digits, ``.``, ``_``, ``-``; no leading dot)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).lstrip(".")


def _names(values: np.ndarray | None, n: int, fallback: str, what: str, src: Path, strip_suffix: bool) -> list[str]:
    if values is None:
        width = max(4, len(str(n - 1))) if fallback == "" else 0
        return [f"{fallback}{i:0{width}d}" if width else f"{fallback}{i}" for i in range(n)]
    if values.shape != (n,):
        raise ProbsegError(f"{src}: {what} must have shape ({n},), got {values.shape}")
    out = []
    for value in values.tolist():
        text = value.decode() if isinstance(value, bytes) else str(value)
        out.append(sanitise(_IMAGE_SUFFIX.sub("", text) if strip_suffix else text))
    empty = [i for i, s in enumerate(out) if not s]
    if empty:
        raise ProbsegError(f"{src}: {what} entry {empty[0]} ({values[empty[0]]!r}) is empty after sanitising")
    seen: dict[str, int] = {}
    for i, s in enumerate(out):
        if s in seen:
            raise ProbsegError(
                f"{src}: {what} entries {seen[s]} and {i} both give the name '{s}' after sanitising; names must be "
                "unique"
            )
        seen[s] = i
    return out


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def convert(src: Path | str, out_dir: Path | str, images_key: str = "images", masks_key: str = "masks",
            ids_key: str | None = None, annotators_key: str | None = None) -> tuple[int, int]:
    """Write the folder layout of ``src`` into ``out_dir`` (see the module docstring).

    Args:
        src: the .npz file.
        out_dir: the output folder (absent or empty).
        images_key, masks_key: keys of images [N, H, W] and masks [N, A, H, W].
        ids_key, annotators_key: keys of the case names [N] and annotator names [A]; None = ``ids`` /
            ``rater_names`` when present, else generated names.

    Returns:
        (number of cases, number of annotators).

    Raises:
        ProbsegError: unreadable file, missing key, wrong shapes / dtypes, non-binary masks, names that collide
            after sanitising, a non-empty ``out_dir``.
    """
    src, out_dir = Path(src), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ProbsegError(f"{out_dir}: output folder exists and is not empty; refusing to write into it")
    try:
        with np.load(src, allow_pickle=False) as z:
            keys = set(z.files)
            for key, given in ((images_key, True), (masks_key, True), (ids_key, ids_key is not None),
                               (annotators_key, annotators_key is not None)):
                if given and key not in keys:
                    raise ProbsegError(f"{src}: no array '{key}'; the file has: {', '.join(sorted(keys))}")
            images, masks = z[images_key], z[masks_key]
            ids_name = ids_key or ("ids" if "ids" in keys else None)
            ann_name = annotators_key or ("rater_names" if "rater_names" in keys else None)
            ids = z[ids_name] if ids_name else None
            annotators = z[ann_name] if ann_name else None
    except ProbsegError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # missing, not a zip, pickled object arrays, truncated
        raise ProbsegError(f"{src}: not a readable .npz without pickles ({type(exc).__name__}: {exc})") from None
    if images.ndim != 3:
        raise ProbsegError(f"{src}: '{images_key}' must have shape [N, H, W], got {images.shape}")
    if masks.ndim != 4 or masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[1:]:
        raise ProbsegError(f"{src}: '{masks_key}' must have shape [N, A, H, W] = [{images.shape[0]}, A, "
                           f"{images.shape[1]}, {images.shape[2]}], got {masks.shape}")
    if images.dtype.kind not in "uif" or (images.dtype.kind == "f" and not np.isfinite(images).all()):
        raise ProbsegError(f"{src}: '{images_key}' must hold finite numbers, got dtype {images.dtype}")
    if images.dtype.kind in "ui" and images.dtype not in (np.uint8, np.uint16):
        raise ProbsegError(f"{src}: '{images_key}': integer images must be uint8 or uint16, got {images.dtype}")
    values = set(np.unique(masks).tolist())
    if not (values <= {0, 1} or values <= {0, 255}):
        raise ProbsegError(f"{src}: '{masks_key}' must hold {{0, 1}} or {{0, 255}}, found {sorted(values)[:6]}")
    n, a = masks.shape[:2]
    cases = _names(ids, n, "", f"'{ids_name}'", src, strip_suffix=True)
    raters = _names(annotators, a, "a", f"'{ann_name}'", src, strip_suffix=False)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        binary = (masks > 0).astype(np.uint8) * np.uint8(255)
        for i, case in enumerate(cases):
            folder = tmp / case
            folder.mkdir()
            if images.dtype.kind == "f":
                np.save(folder / "image.npy", images[i])
            else:
                _save_png(np.ascontiguousarray(images[i]), folder / "image.png")
            for j, rater in enumerate(raters):
                _save_png(binary[i, j], folder / f"mask_{rater}.png")
        for name in LICENSE_FILES:
            if (src.parent / name).is_file():
                shutil.copyfile(src.parent / name, tmp / name)
        tmp.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n, a


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse ``argv`` (default ``sys.argv[1:]``), convert, print one line; 0 or 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the .npz file (images [N, H, W], masks [N, A, H, W])")
    parser.add_argument("out_dir", help="the output folder (must be absent or empty)")
    parser.add_argument("--images", default="images", help="key of the images (default: images)")
    parser.add_argument("--masks", default="masks", help="key of the masks (default: masks)")
    parser.add_argument("--ids", default=None, help="key of the case names (default: ids, if present)")
    parser.add_argument("--annotators", default=None,
                        help="key of the annotator names (default: rater_names, if present)")
    args = parser.parse_args(argv)
    try:
        n, a = convert(args.src, args.out_dir, args.images, args.masks, args.ids, args.annotators)
    except ProbsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} cases x {a} annotators to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
