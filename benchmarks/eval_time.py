"""Evaluation cost against sampling cost, measured in one run.

    python -m benchmarks.eval_time [--batch 32] [--samples 16] [--repeats 3] [--device cpu]

For a batch of LIDC-sample test images (128 x 128, 4 annotators; the 28 cases repeated to fill the batch) and
a PU-Net of the paper's architecture (d = 6): the time to draw the samples (U-Net + prior once, the head per
sample) and the time of all per-image metrics (`probseg_bench.evaluation.image_metrics` + effective rank).
Prints the median of --repeats runs and the ratio metrics / sampling; writes benchmarks/results/eval_time.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from probseg_bench.evaluation import image_metrics
from probseg_bench.metrics import effective_rank
from probseg_bench.plugins import get_plugins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_time.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    plugins = get_plugins()
    data = plugins.datasets.get("lidc-sample").load(None)
    idx = np.arange(args.batch) % len(data)
    x = torch.as_tensor(data.images[idx], device=device)
    y = torch.as_tensor(data.masks[idx], device=device)
    torch.manual_seed(0)
    model = plugins.models.get("punet").factory(latent_dim=6, in_channels=1).to(device).eval()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sampling, metrics = [], []
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first run warms up
            sync()
            t0 = time.perf_counter()
            logits = model.sample(x, args.samples)[:, :, 0]
            sigma = model.prior(x).scale
            sync()
            t1 = time.perf_counter()
            image_metrics(logits, y)
            effective_rank(sigma)
            sync()
            t2 = time.perf_counter()
            sampling.append(t1 - t0)
            metrics.append(t2 - t1)
    s, m = statistics.median(sampling[1:]), statistics.median(metrics[1:])
    print(f"batch {args.batch} x {args.samples} samples x {y.shape[1]} annotations, 128x128, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"sampling {s:.3f} s   metrics {m:.3f} s   metrics / sampling = {m / s:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "sampling_s": s,
                                    "metrics_s": m, "ratio": m / s}, indent=2))


if __name__ == "__main__":
    main()
