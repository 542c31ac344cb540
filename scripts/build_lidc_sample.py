"""Convert the LIDC crops JPEG folder (../shared/data/lidc-crops-sample) into the package's compact npz.

    python scripts/build_lidc_sample.py ../shared/data/lidc-crops-sample

Writes plugins/probseg_datasets/data/lidc_sample.npz (uint8 images and masks, no pickles) atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from probseg_datasets.cimd import read_cimd_folder
from probseg_datasets.lidc import LIDC_SAMPLE_FILE


def main(src: str) -> None:
    images, masks, case, subset = read_cimd_folder(Path(src))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=LIDC_SAMPLE_FILE.parent)
    os.close(fd)
    np.savez_compressed(tmp, images=images, masks=masks, case=case, subset=subset)
    os.chmod(tmp, 0o644)
    os.replace(tmp, LIDC_SAMPLE_FILE)
    print(f"wrote {LIDC_SAMPLE_FILE}: images {images.shape}, masks {masks.shape}, {len(case)} cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lidc-crops-sample")
