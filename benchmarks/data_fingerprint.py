"""What the data's content fingerprint costs on LIDC-sized data (docs/results.md).

    python -m benchmarks.data_fingerprint [--workdir DIR]

15,096 images of 1 x 128 x 128 float32 (944 MiB) with 4 uint8 masks each (944 MiB), the size of the v1 pickle:
:func:`probseg_bench.data.fingerprint.data_fingerprint` timed twice in memory, then twice on the same data written as
a converted folder (memory-mapped, float16 images) in a temporary folder (or ``--workdir``). Keep the machine quiet.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the converted copy goes")
    args = parser.parse_args()

    from probseg_bench.api import MultiRaterData
    from probseg_bench.data.converted import read_converted, write_converted
    from probseg_bench.data.fingerprint import data_fingerprint

    n = 15096
    rng = np.random.default_rng(0)
    images = np.empty((n, 1, 128, 128), np.float32)
    for s in range(0, n, 1024):
        images[s:s + 1024] = rng.random((min(1024, n - s), 1, 128, 128), dtype=np.float32)
    masks = (rng.random((n, 4, 128, 128), dtype=np.float32) > 0.9).astype(np.uint8)
    data = MultiRaterData(images, masks, np.array([f"LIDC-IDRI-{i // 8:04d}" for i in range(n)]),
                          {"case": np.array([f"case{i}" for i in range(n)])})
    print(f"images {images.nbytes / 2**20:.0f} MiB (float32), masks {masks.nbytes / 2**20:.0f} MiB (uint8)")
    for _ in range(2):
        t = time.perf_counter()
        data_fingerprint(data)
        print(f"in memory: {time.perf_counter() - t:.2f} s", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        out = Path(tmp) / "converted"
        write_converted(data, out, "lidc", {}, "benchmark")
        del data, images, masks
        mapped, _ = read_converted(out)
        for _ in range(2):
            t = time.perf_counter()
            data_fingerprint(mapped)
            print(f"memory-mapped converted folder (float16 images): {time.perf_counter() - t:.2f} s", flush=True)


if __name__ == "__main__":
    main()
