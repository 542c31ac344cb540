"""SPU-Net's sample collapse, measured (issue 14): one training per configuration on data with a known truth.

    python -m benchmarks.spunet_collapse [--configs NAME ...] [--store benchmarks/results/collapse.db]
                                         [--output benchmarks/results/spunet_collapse.json] [--list]

Every configuration trains fold 0, d = 6, seed 0 (unless it says otherwise) through the standard protocol (a
configuration already in ``--store`` is not retrained): by default on ``synthetic`` (the validation defaults:
size 64, 160 images, 4 annotators, 3 blobs x 3 radius levels; quick preset; same split, same test images, scored
against the known truth by :func:`probseg_bench.validation.validate`), a few on ``lidc-sample`` under the paper
preset. For each it reports GED and EWD (next to the oracle's on synthetic), the effective rank, the sample
diversity next to the annotators', and from the stored checkpoint, on the test images:

* ``prior_sigma``: the mean prior standard deviation over test images and latent dimensions;
* ``unit_diversity``: the sample diversity when z is drawn from N(mu_prior, I) instead of the prior: whether the
  decoder still reacts to z at unit scale (the latent scale shrank but z is used) or ignores it (collapsed).

Prints a markdown table and writes the JSON (rows in the order of the configurations).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Config:
    name: str
    model: str
    hp: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    dataset: str = "synthetic"
    preset: str = "quick"
    seed: int = 0


FIX2 = {"samples_per_annotation": 2, "sinkhorn_correction": "split"}
FIX = {"samples_per_annotation": 4, "sinkhorn_correction": "split"}  # the recommended setting (README)
CONFIGS = [
    Config("punet", "punet"),
    Config("punet-nf", "punet-nf"),
    Config("spunet", "spunet", note="the paper's formulation (alpha 10, beta 100, eps 0.0025)"),
    Config("spunet-alpha1", "spunet", {"alpha": 1.0}),
    Config("spunet-beta0", "spunet", {"beta": 0.0}, note="no Sinkhorn term"),
    Config("spunet-beta25", "spunet", {"beta": 25.0}, note="beta / 4: the term's weight relative to the "
           "reconstruction sum over 64 x 64 pixels that beta 100 has at 128 x 128"),
    Config("spunet-eps0.05", "spunet", {"epsilon": 0.05}),
    Config("spunet-eps0.5", "spunet", {"epsilon": 0.5}),
    Config("spunet-prior64", "spunet", {"sinkhorn_prior_samples": 64}, note="64 prior samples vs 4 posterior"),
    Config("spunet-noprior-grad", "spunet", {"sinkhorn_prior_gradient": False}),
    Config("spunet-r2", "spunet", {"samples_per_annotation": 2}, note="8 posterior vs 8 prior samples"),
    Config("spunet-split", "spunet", FIX2, note="8 vs 8, split correction"),
    Config("spunet-split-seed1", "spunet", FIX, seed=1, note="another split and initialisation"),
    Config("spunet-noprior-grad-seed1", "spunet", {"sinkhorn_prior_gradient": False}, seed=1),
    Config("punet-seed1", "punet", seed=1),
    Config("spunet-split-r4", "spunet", FIX, note="16 vs 16, split correction"),
    Config("spunet-split-noprior-grad", "spunet", {**FIX, "sinkhorn_prior_gradient": False}),
    Config("spunet-noprior-grad-2x", "spunet", {"sinkhorn_prior_gradient": False}, protocol={"epochs": 146},
           note="twice the quick length"),
    Config("spunet-2x", "spunet", protocol={"epochs": 146}, note="twice the quick length"),
    Config("spunet-split-2x", "spunet", FIX, protocol={"epochs": 146}, note="twice the quick length"),
    Config("spunet-128", "spunet", dataset_params={"size": 128}, note="128 x 128 images"),
    Config("spunet-split-128", "spunet", FIX2, dataset_params={"size": 128}, note="128 x 128 images"),
    Config("punet-128", "punet", dataset_params={"size": 128}, note="128 x 128 images"),
    Config("spunet-lidc-paper", "spunet", dataset="lidc-sample", preset="paper",
           note="paper protocol: 128 x 128, full width, 200 epochs of one batch (22 training images < 32)"),
    Config("spunet-split-lidc-paper", "spunet", FIX2, dataset="lidc-sample", preset="paper",
           note="lidc-sample, paper protocol"),
    Config("punet-lidc-paper", "punet", dataset="lidc-sample", preset="paper", note="lidc-sample, paper protocol"),
    Config("spunet-lidc-quick", "spunet", dataset="lidc-sample", note="the README's quick start, fold 0"),
    Config("spunet-split-lidc-quick", "spunet", FIX, dataset="lidc-sample", note="the quick start, fold 0"),
    Config("spunet-scaled-lidc-quick", "spunet", {"alpha": 0.625, "beta": 6.25}, dataset="lidc-sample",
           note="alpha and beta x (32 x 32) / (128 x 128): the paper's balance against the reconstruction sum"),
    Config("spunet-noprior-grad-lidc-quick", "spunet", {"sinkhorn_prior_gradient": False}, dataset="lidc-sample",
           note="the quick start, fold 0"),
]
SYNTHETIC = {"size": 64, "n_images": 160, "annotators": 4, "structures": 3, "levels": 3}


def latent_diagnostics(record: Any) -> dict[str, float]:
    """``prior_sigma`` and ``unit_diversity`` (see the module docstring) of one stored fold."""
    import torch

    from probseg_bench.analysis.loading import load_run
    from probseg_bench.metrics import diversity

    run = load_run(record, None, "cpu")
    torch.manual_seed(0)
    sigmas, unit = [], []
    with torch.no_grad():
        for start in range(0, len(run.test), 8):
            x = torch.as_tensor(run.test.images[start : start + 8]).float()
            prior = run.model.prior(x)
            sigmas.append(prior.scale.mean(1))
            z = prior.loc[:, None] + torch.randn(x.shape[0], 16, prior.loc.shape[1])  # [B, 16, d]
            masks = run.model.decode(x, z)[:, :, 0] > 0  # [B, 16, H, W]
            unit.append(torch.as_tensor(diversity(masks)))
    return {"prior_sigma": float(torch.cat(sigmas).mean()), "unit_diversity": float(torch.cat(unit).mean())}


def main(argv: list[str] | None = None) -> None:
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import CommandLine, build_requests, check_request
    from probseg_bench.results import ResultsStore
    from probseg_bench.validation import validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--store", default="benchmarks/results/collapse.db")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/spunet_collapse.json"))
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for c in CONFIGS:
            changed = ", ".join([f"{k}={v}" for d in (c.hp, c.dataset_params, c.protocol) for k, v in d.items()]
                                + ([f"seed={c.seed}"] if c.seed else []))
            note = f" - {c.note}" if c.note else ""
            print(f"{c.name:32s} {c.dataset:12s} {c.preset:6s} {changed or 'defaults'}{note}")
        return
    chosen = [c for c in CONFIGS if args.configs is None or c.name in args.configs]
    unknown = set(args.configs or ()) - {c.name for c in CONFIGS}
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))} (see --list)")
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(f"sqlite:///{args.store}")
    rows = []
    for c in chosen:
        params = {**SYNTHETIC, **c.dataset_params} if c.dataset == "synthetic" else dict(c.dataset_params)
        (request,), _ = build_requests(CommandLine(
            model=c.model, dataset=c.dataset, latent_dims=(6,), folds=(0,), seed=c.seed, preset=c.preset, device="cpu",
            hyperparameters=c.hp, dataset_params=params, protocol_overrides=c.protocol,
            run_dir=Path(args.store).with_suffix(".runs")))
        start = time.perf_counter()
        row = {"name": c.name, "model": c.model, "dataset": c.dataset, "preset": c.preset, "seed": c.seed, "hp": c.hp,
               "dataset_params": c.dataset_params, "protocol": c.protocol, "note": c.note}
        if c.dataset == "synthetic":  # a known truth: the validity benchmark's numbers
            report = validate([check_request(request)], store)
            m = report.models[0]
            record, metrics = m.records[0], m.metrics
            row.update(oracle_ged=report.oracle["ged"], oracle_ewd=report.oracle["ewd"],
                       true_diversity=report.oracle["diversity"], nearest_true_iou=metrics["nearest_true_iou"],
                       reconstruction_iou=metrics["reconstruction_iou"])
        else:
            record = run_protocol(check_request(request), store)[0]
            metrics = record.metrics
        row.update({k: float(metrics[k]) for k in ("ged", "ewd", "er", "sample_diversity", "annotator_diversity")})
        row.update(latent_diagnostics(record), train_s=record.timings.get("train_s"),
                   wall_s=time.perf_counter() - start)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print()
    print("| configuration | GED | EWD | ER | sample div. | annot. div. | div. ratio | prior sigma | div. at unit "
          "scale | recon. IoU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['ged']:.3f} | {r['ewd']:.3f} | {r['er']:.2f} | {r['sample_diversity']:.3f} "
              f"| {r['annotator_diversity']:.3f} | {r['sample_diversity'] / r['annotator_diversity']:.2f} "
              f"| {r['prior_sigma']:.3f} | {r['unit_diversity']:.3f} "
              f"| {r.get('reconstruction_iou', float('nan')):.3f} |")
    known = [r for r in rows if "oracle_ged" in r]
    if known:
        print(f"| oracle (true distribution) | {known[0]['oracle_ged']:.3f} | {known[0]['oracle_ewd']:.3f} | (4) "
              f"| {known[0]['true_diversity']:.3f} | | | | | |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
    merged = {r["name"]: r for r in previous} | {r["name"]: r for r in rows}
    args.output.write_text(json.dumps({"rows": list(merged.values()), "numpy": np.__version__}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
