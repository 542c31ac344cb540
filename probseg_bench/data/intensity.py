"""The one intensity rule of every dataset loader: how stored pixel values become the intensities fed to the model.

By the dtype the values were STORED with (in the file, the pickle entry or the array a loader generated):

=================================  ==================================================
stored dtype                       intensity fed to the model (float32)
=================================  ==================================================
``bool``                           0 / 1
``uint8``                          value / 255 (0..255 -> [0, 1])
``uint16``                         value / 65535 (0..65535 -> [0, 1])
any other integer, any float       the value as stored (e.g. CT in HU stays in HU)
=================================  ==================================================

NaN or infinite values are refused. A loader that knows the modality may normalise BEFORE this rule and hand it
floats, which it keeps: the QUBIQ loaders window CT ([-160, 240] HU -> [0, 1]) and map MRI percentiles to [0, 1]
(:mod:`probseg_datasets.qubiq`). A converted folder (``data convert``) stores the result of the rule and is read
as stored, so it feeds the model the same values as the source it was converted from. ``data inspect`` reports
the range of these values (``intensity_min`` / ``intensity_max``).
"""

from __future__ import annotations

import numpy as np

from probseg_bench.errors import ProbsegError

SCALES: dict[np.dtype, float] = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""The stored integer dtypes whose values are divided (uint8 by 255, uint16 by 65535); bool gives 0 / 1."""


def model_intensities(values: np.ndarray, stored: np.dtype | type | None = None, source: str = "image") -> np.ndarray:
    """Stored pixel values (any shape) -> float32 intensities fed to the model, by the module's rule.

    Args:
        values: the values as read (any numeric or bool dtype).
        stored: the dtype the values were stored with, when the reader converted them already (e.g. a NIfTI
            read as float32 whose file holds uint8); default ``values.dtype``.
        source: names the file or entry in the error message.

    Returns:
        float32: bool -> 0 / 1, uint8 -> / 255, uint16 -> / 65535, other integers and floats as stored. The
        input is never modified; a float32 input with nothing to change is returned itself (no copy).

    Raises:
        ProbsegError: a non-numeric dtype, or NaN / infinite values.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ProbsegError(f"{source}: expected numeric intensities, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ProbsegError(f"{source}: image contains NaN or infinite values")
    scale = SCALES.get(np.dtype(stored) if stored is not None else arr.dtype)
    return out / np.float32(scale) if scale is not None else out


__all__ = ["SCALES", "model_intensities"]
