"""Training-step time of the paper models, measured in one run so the ratios are comparable.

    python -m benchmarks.step_time [--batch 8] [--steps 5] [--latent-dim 6] [--filters 32,64,128,192]

One step = forward (all annotations' posteriors for spunet), the full objective, backward, Adam update, on
128 x 128 images with 4 annotators (LIDC shape), the paper's architecture by default. Prints a table and writes
benchmarks/results/step_time.json (median over --steps timed steps after 2 warm-up steps).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from probseg_bench.experiment import build_objective
from probseg_bench.plugins import get_plugins


def time_model(name: str, batch: int, steps: int, latent_dim: int, filters: str, annotators: int = 4) -> float:
    plugins = get_plugins()
    spec = plugins.models.get(name)
    hp = {h.name: h.default for h in spec.hyperparameters} | {"filters": filters}
    torch.manual_seed(0)
    model = spec.factory(latent_dim=latent_dim, in_channels=1, **hp)
    objective = build_objective(spec, plugins, hp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 128, 128)
    y = (torch.rand(batch, annotators, 128, 128) > 0.95).to(torch.uint8)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss, _ = objective(model(x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip and float(hp[spec.grad_clip]) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp[spec.grad_clip]))
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=6)
    parser.add_argument("--filters", default="32,64,128,192")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_time.json"))
    args = parser.parse_args()
    results = {}
    for name in ("punet", "spunet"):
        sec = time_model(name, args.batch, args.steps, args.latent_dim, args.filters)
        results[name] = {"step_s": sec, "images_per_s": args.batch / sec}
    ratio = results["spunet"]["step_s"] / results["punet"]["step_s"]
    print(f"batch {args.batch}, 128x128, 4 annotators, d={args.latent_dim}, filters {args.filters}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':8} {'step (s)':>9} {'images/s':>9}")
    for name, r in results.items():
        print(f"{name:8} {r['step_s']:9.3f} {r['images_per_s']:9.2f}")
    print(f"spunet / punet step time: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "config": vars(args) | {"out": str(args.out)}, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.machine(), "results": results,
        "spunet_over_punet": ratio,
    }, indent=2))


if __name__ == "__main__":
    main()
