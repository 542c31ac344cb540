"""The GPU check of issue 8: ONE short script (a few minutes) for a machine with CUDA.

    python -m benchmarks.gpu_check [--steps 20]

Checks that training and sampling run on the device with bfloat16 autocast and channels_last (as
`probseg-bench run --device cuda` trains), compares the first steps' losses with float32 (relative difference),
and prints images/s for punet and spunet at batch 32 (paper architecture, 128 x 128, 4 annotators, d = 6) with
the projected minutes per LIDC fold (200 epochs of 8,000 training images). Writes
benchmarks/results/gpu_check.json. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from probseg_bench.data.augment import AffineAugmentation
from probseg_bench.experiment import build_objective
from probseg_bench.plugins import get_plugins

LIDC_FOLD_IMAGES, LIDC_EPOCHS = 8000, 200


def steps(name: str, amp: bool, n: int, batch: int = 32, seed: int = 0) -> tuple[list[float], float, str]:
    """n training steps on the GPU; returns (losses, images/s over the last n - 3 steps, logits dtype)."""
    plugins = get_plugins()
    spec = plugins.models.get(name)
    hp = {h.name: h.default for h in spec.hyperparameters}
    device = torch.device("cuda")
    torch.manual_seed(seed)
    model = spec.factory(latent_dim=6, in_channels=1, **hp).to(device).to(memory_format=torch.channels_last)
    objective = build_objective(spec, plugins, hp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.rand(4 * batch, 1, 128, 128, generator=g).to(device)
    y_all = (torch.rand(4 * batch, 4, 128, 128, generator=g) > 0.95).to(torch.uint8).to(device)
    augment = AffineAugmentation()
    losses, dtype, t0 = [], "", 0.0
    for i in range(n):
        if i == 3:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        sl = slice((i % 4) * batch, (i % 4 + 1) * batch)
        x, y = augment(x_all[sl], y_all[sl], g)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x.contiguous(memory_format=torch.channels_last), y)
        dtype = str(out.logits.dtype)
        loss, _ = objective(out.float() if amp else out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())
    torch.cuda.synchronize()
    rate = batch * (n - 3) / (time.perf_counter() - t0)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        samples = model.sample(x_all[:8], 16)
    assert samples.is_cuda and samples.shape == (8, 16, 1, 128, 128)
    assert all(p.is_cuda for p in model.parameters())
    return [float(v) for v in losses], rate, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check was not run")
        return
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results = {}
    for name in ("punet", "spunet"):
        fp32, _, _ = steps(name, amp=False, n=4)
        bf16, rate, dtype = steps(name, amp=True, n=args.steps)
        rel = [abs(a - b) / abs(a) for a, b in zip(fp32, bf16[:4], strict=False)]
        minutes = LIDC_EPOCHS * LIDC_FOLD_IMAGES / rate / 60
        results[name] = {"images_per_s": rate, "minutes_per_lidc_fold": minutes, "loss_rel_diff_first_steps": rel,
                         "autocast_logits_dtype": dtype}
        print(f"{name}: logits {dtype} under autocast; first 4 losses fp32 vs bf16 relative difference "
              f"{', '.join(f'{r:.2e}' for r in rel)}; {rate:.0f} images/s at batch 32 -> {minutes:.1f} min per "
              f"LIDC fold ({LIDC_EPOCHS} epochs x {LIDC_FOLD_IMAGES} images)")
    results["peak_device_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"peak device memory {results['peak_device_memory_gib']:.2f} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
