"""Performance figures of issue 8, measured in one run (ratios comparable within the run).

    python -m benchmarks.perf [--quick-run] [--device cpu|cuda] [--steps 3] [--models punet ssn ...]  (nox -s bench)
    python -m benchmarks.perf --sampling-only     # only what a sample costs, every model

Prints a table and writes benchmarks/results/perf.json:
- the fp32 matrix-multiply rate of this machine (torch.mm 2048^3, best of 5);
- per model (the eight built-ins; each at its paper architecture and reference d: d = 6, phiseg 2 per level,
  hpunet 1 per scale; 128 x 128, 4 annotators, channels_last as in training) and batch (8, 32):
  FLOPs per image per training step (torch.utils.flop_counter), median step time, images/s, achieved FLOP/s
  and its fraction of the matmul rate;
- each model's step-time ratio to punet's next to their FLOP ratio;
- per model, what a sample costs: the time for 16 samples of one 128 x 128 image (``model.sample(x, 16)``, eval
  mode, the reference configuration: ccdm 250 denoiser passes per sample) next to one forward pass of the suite's
  U-Net (filters 32,64,128,192, 3 convolutions per level) on that image, and their ratio;
- 16-sample inference time per image against one U-Net + prior forward (punet, batch 8);
- evaluation (all metrics) time against sampling time for 32 images;
- with --quick-run: the peak resident memory (VmHWM) of one quick-preset punet fold on lidc-sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from probseg_bench.evaluation import image_metrics
from probseg_bench.experiment import build_objective
from probseg_bench.metrics import effective_rank
from probseg_bench.plugins import get_plugins

MODELS = ("punet", "punet-nf", "spunet", "ssn", "unet-ensemble", "phiseg", "hpunet", "ccdm")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 torch.mm rate in FLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def build(name: str, device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    plugins = get_plugins()
    spec = plugins.models.get(name)
    hp = {h.name: h.default for h in spec.hyperparameters}
    torch.manual_seed(0)
    model = spec.factory(latent_dim=spec.default_latent_dim, in_channels=1, **hp)
    model = model.to(device).to(memory_format=torch.channels_last)
    return spec, model, hp


def batch(b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 1, 128, 128, generator=g)
    y = (torch.rand(b, 4, 128, 128, generator=g) > 0.95).to(torch.uint8)
    return x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)


def training_step(name: str, b: int, steps: int, device: torch.device) -> dict[str, float]:
    spec, model, hp = build(name, device)
    objective = build_objective(spec, get_plugins(), hp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = batch(b, device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = objective(model(x, y))
        loss.backward()
    flops_per_image = counter.get_total_flops() / b
    opt.zero_grad(set_to_none=True)
    times = []
    for i in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        loss, _ = objective(model(x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip and float(hp[spec.grad_clip]) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp[spec.grad_clip]))
        opt.step()
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"step_s": step, "images_per_s": b / step, "flops_per_image": flops_per_image,
            "flops_per_s": flops_per_image * b / step}


@torch.no_grad()
def inference(device: torch.device, b: int = 8, n: int = 16, repeats: int = 3) -> dict[str, float]:
    _, model, _ = build("punet", device)
    model.eval()
    x, y = batch(32, device)

    xb = x[:b]
    forward = timed(lambda: (model.unet(xb), model.prior(xb)), device, repeats)
    sampling_b = timed(lambda: model.sample(xb, n), device, repeats)
    sample_32 = timed(lambda: (model.sample(x, n), model.prior(x)), device, repeats)
    logits = model.sample(x, n)[:, :, 0]
    sigma = model.prior(x).scale
    metrics_32 = timed(lambda: (image_metrics(logits, y), effective_rank(sigma)), device, repeats)
    return {"forward_per_image_s": forward / b, "sample16_per_image_s": sampling_b / b,
            "sample_over_forward": sampling_b / forward, "sampling_32_s": sample_32, "metrics_32_s": metrics_32,
            "metrics_over_sampling": metrics_32 / sample_32}


def timed(fn: Any, device: torch.device, repeats: int = 3, slow_s: float = 20.0) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after one warm-up call (one timed call when the
    warm-up took longer than ``slow_s``: its time is the measurement)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    if first > slow_s:
        return first
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


@torch.no_grad()
def sampling_costs(names: list[str], device: torch.device, n: int = 16) -> dict[str, dict[str, float]]:
    """Per model: seconds for ``n`` samples of one 128 x 128 image, one forward of the suite's U-Net on it, ratio."""
    from probseg_bench.nn import UNet

    x, _ = batch(1, device)
    torch.manual_seed(0)
    unet = UNet(1, (32, 64, 128, 192), 3).to(device).to(memory_format=torch.channels_last).eval()
    forward = timed(lambda: unet(x), device, repeats=5)
    out = {}
    for name in names:
        _, model, _ = build(name, device)
        model.eval()
        torch.manual_seed(0)
        seconds = timed(lambda m=model: m.sample(x, n), device)
        out[name] = {"sample16_s": seconds, "unet_forward_s": forward, "over_unet_forward": seconds / forward}
        print(f"{name:13} {n} samples of one 128 x 128 image: {seconds:8.3f} s = {seconds / forward:8.1f} x one "
              f"U-Net forward ({forward * 1e3:.1f} ms)", flush=True)
    return out


def quick_run_memory() -> dict[str, float]:
    code = (
        "import sys\nfrom probseg_bench.cli import main\n"
        "sys.argv = ['probseg-bench', 'run', '--model', 'punet', '--dataset', 'lidc-sample', '--preset', 'quick',"
        " '--fold', '0', '--device', 'cpu']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print('VMHWM', int(hwm) * 1024)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t0
    hwm = int(next(line for line in out.stdout.splitlines() if line.startswith("VMHWM")).split()[1])
    return {"peak_rss_gib": hwm / 2**30, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--quick-run", action="store_true", help="also measure a quick-preset fold's memory")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="models (default: the eight built-ins)")
    parser.add_argument("--sampling-only", action="store_true", help="only the per-model sampling costs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/perf.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    rate = matmul_rate(device)
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {device}: "
          f"fp32 matmul {rate / 1e9:.1f} GFLOP/s")
    results: dict[str, Any] = {"matmul_flops_per_s": rate, "training": {}}
    if args.sampling_only:
        results["sampling"] = sampling_costs(args.models, device)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
        return
    print(f"{'model':13} {'batch':>5} {'GFLOP/img':>9} {'step s':>8} {'img/s':>7} {'GFLOP/s':>8} {'of matmul':>9} "
          f"{'time/punet':>10} {'FLOP/punet':>10}")
    for b in (int(v) for v in args.batches.split(",")):
        for name in args.models:
            r = training_step(name, b, args.steps, device)
            results["training"][f"{name}@{b}"] = r
            pu = results["training"].get(f"punet@{b}")
            if pu is not None:
                r["time_over_punet"] = r["step_s"] / pu["step_s"]
                r["flops_over_punet"] = r["flops_per_image"] / pu["flops_per_image"]
            ratios = (f"{r['time_over_punet']:10.2f} {r['flops_over_punet']:10.2f}" if pu is not None
                      else f"{'':>10} {'':>10}")
            print(f"{name:13} {b:5d} {r['flops_per_image'] / 1e9:9.2f} {r['step_s']:8.3f} {r['images_per_s']:7.2f} "
                  f"{r['flops_per_s'] / 1e9:8.1f} {r['flops_per_s'] / rate:9.2f} {ratios}", flush=True)
    results["sampling"] = sampling_costs(args.models, device)
    inf = inference(device)
    results["inference"] = inf
    print(f"16 samples {inf['sample16_per_image_s'] * 1e3:.1f} ms/image vs one U-Net + prior forward "
          f"{inf['forward_per_image_s'] * 1e3:.1f} ms/image: {inf['sample_over_forward']:.2f}x")
    print(f"32 images x 16 samples: sampling {inf['sampling_32_s']:.2f} s, all metrics {inf['metrics_32_s']:.2f} s "
          f"({100 * inf['metrics_over_sampling']:.1f}% of sampling)")
    if device.type == "cuda":
        results["peak_device_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak device memory {results['peak_device_memory_gib']:.2f} GiB")
    if args.quick_run:
        mem = quick_run_memory()
        results["quick_run"] = mem
        print(f"quick punet fold on lidc-sample: peak RSS {mem['peak_rss_gib']:.2f} GiB ({mem['seconds']:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
