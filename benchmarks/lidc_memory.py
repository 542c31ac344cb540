"""Peak memory of loading a full-size LIDC pickle (15,096 crops) through the `lidc` plugin.

    python -m benchmarks.lidc_memory [--n 15096] [--mask-dtype uint8] [--workdir DIR]

Writes a pickle in the public PU-Net port's format (a dict of {image: float32 128x128, masks: 4 x 128x128,
series_uid}) of the given size into a temporary folder, then measures, each in a fresh process, the peak
resident memory (VmHWM) of: (1) `data convert lidc --trust-pickle` (unpickle + convert), (2) loading the
converted folder and selecting an 80% training split, (3) a direct trusted load. Prints a table, writes
benchmarks/results/lidc_memory.json. Needs about 2.5 GB of free disk per 15k crops.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# VmHWM (peak resident set of this process image): unlike ru_maxrss it is not inherited across exec from the
# parent, which held the whole dict while writing the pickle.
CHILD = """
import sys, time
t = time.perf_counter()
{body}
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(int(hwm) * 1024, time.perf_counter() - t)
"""

STEPS = {
    "convert (trusted unpickle -> .npy)": """
from pathlib import Path
from probseg_bench.plugins import get_plugins
from probseg_bench.data.converted import write_converted
from probseg_bench.data.loading import load_dataset
spec = get_plugins().datasets.get("lidc")
data = load_dataset(spec, Path(sys.argv[1]), {{}}, trust_pickle=True)
write_converted(data, Path(sys.argv[2]), "lidc", {{}}, source=sys.argv[1])
""",
    "converted: open + 80% training split": """
from pathlib import Path
import numpy as np
from probseg_bench.plugins import get_plugins
from probseg_bench.data.loading import load_dataset
data = load_dataset(get_plugins().datasets.get("lidc"), Path(sys.argv[2]), {{}})
train = data.subset(np.arange(int(0.8 * len(data))))
""",
    "direct trusted load (no conversion)": """
from pathlib import Path
from probseg_bench.plugins import get_plugins
from probseg_bench.data.loading import load_dataset
data = load_dataset(get_plugins().datasets.get("lidc"), Path(sys.argv[1]), {{}}, trust_pickle=True)
""",
}


def write_pickle(path: Path, n: int, mask_dtype: str) -> None:
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(n):
        masks = [np.zeros((128, 128), dtype=mask_dtype) for _ in range(4)]
        for m in masks:
            m[60:68, 60 : 60 + rng.integers(0, 8)] = 1
        entries[f"{i:05d}.png"] = {"image": rng.random((128, 128), dtype=np.float32), "masks": masks,
                                   "series_uid": f"series-{i // 15}"}
    with open(path, "wb") as fh:
        pickle.dump(entries, fh, protocol=pickle.HIGHEST_PROTOCOL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15096)
    parser.add_argument("--mask-dtype", default="uint8")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lidc_memory.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "pickles"
        src.mkdir()
        t0 = time.perf_counter()
        write_pickle(src / "data_lidc.pickle", args.n, args.mask_dtype)
        size = (src / "data_lidc.pickle").stat().st_size
        print(f"wrote {args.n} crops, pickle {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s")
        results = {}
        for name, body in STEPS.items():
            code = CHILD.format(body=body.format())
            out = subprocess.run([sys.executable, "-c", code, str(src), str(Path(tmp) / "converted")],
                                 check=True, capture_output=True, text=True).stdout.split()
            results[name] = {"peak_rss_gib": int(out[0]) / 2**30, "seconds": float(out[1])}
            print(f"{name:40} peak RSS {results[name]['peak_rss_gib']:.2f} GiB  {results[name]['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "mask_dtype": args.mask_dtype, "pickle_gib": size / 2**30,
                                    "results": results}, indent=2))


if __name__ == "__main__":
    main()
