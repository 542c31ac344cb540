"""SSN's over-diverse samples at the quick budget, measured (issue 18): one training per configuration.

    python -m benchmarks.ssn_diversity [--configs NAME ...] [--store benchmarks/results/ssn.db]
                                       [--output benchmarks/results/ssn_diversity.json] [--list]

Every configuration trains fold 0 of ``lidc-sample`` under the quick preset, seed 0 (``ssn`` takes no d; its
records carry d = 6), through the standard protocol (a configuration already in ``--store`` is not retrained),
and reports HM-IoU, GED, EWD and the sample diversity next to the annotators', and, from the stored checkpoint
on the 6 test images (32 x 32 crops), what the logits' Gaussian N(mu, F F^T + D) looks like:

* ``mean_logit``: the median over pixels of the mean foreground logit mu_1 - mu_0 (negative: background);
* ``logit_std``: the median over pixels of the standard deviation of the foreground logit eta_1 - eta_0 (the
  factor's and the diagonal's part together), and ``diag_std`` the diagonal's part alone;
* ``outside_union``: of the foreground pixels of 16 samples per image, the fraction outside the union of the
  four annotations (0 for samples that only vary where the radiologists disagree).

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
    hp: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    note: str = ""


CONFIGS = [
    Config("ssn", note="the reference defaults: rank 10, S = 20 MC samples"),
    Config("ssn-S1", {"mc_samples": 1}, note="one MC sample: the expected per-sample loss"),
    Config("ssn-S4", {"mc_samples": 4}),
    Config("ssn-S100", {"mc_samples": 100}),
    Config("ssn-antithetic", {"antithetic": True}, note="the PyTorch SSN's antithetic pairs"),
    Config("ssn-rank1", {"rank": 1}),
    Config("ssn-4x", protocol={"epochs": 1600}, note="four times the quick length"),
]


def covariance_diagnostics(record: Any) -> dict[str, float]:
    """``mean_logit``, ``logit_std``, ``diag_std`` and ``outside_union`` (module docstring) of a stored fold."""
    import torch

    from probseg_bench.analysis.loading import load_run

    run = load_run(record, None, "cpu")
    model = run.model
    x = torch.as_tensor(run.test.images).float()
    masks = torch.as_tensor(run.test.masks).bool()
    torch.manual_seed(0)
    with torch.no_grad():
        mu, factor, diag = model.distribution(x)
        b = x.shape[0]
        mean = mu.reshape(b, 2, -1)
        f = factor.reshape(b, 2, -1, factor.shape[-1])
        d = diag.reshape(b, 2, -1)
        low_rank = ((f[:, 1] - f[:, 0]) ** 2).sum(-1)  # var of F eps on eta_1 - eta_0, [B, P]
        samples = model.sample(x, 16)[:, :, 0] > 0  # [B, 16, H, W]
    union = masks.any(1)[:, None]
    foreground = samples.sum().item()
    return {
        "mean_logit": float((mean[:, 1] - mean[:, 0]).median()),
        "logit_std": float((low_rank + d.sum(1)).sqrt().median()),
        "diag_std": float(d.sum(1).sqrt().median()),
        "outside_union": float((samples & ~union).sum().item() / foreground) if foreground else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import CommandLine, build_requests, check_request
    from probseg_bench.results import ResultsStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--store", default="benchmarks/results/ssn.db")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ssn_diversity.json"))
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for c in CONFIGS:
            changed = ", ".join(f"{k}={v}" for d in (c.hp, c.protocol) for k, v in d.items())
            print(f"{c.name:16s} {changed or 'defaults'}{f' - {c.note}' if c.note else ''}")
        return
    unknown = set(args.configs or ()) - {c.name for c in CONFIGS}
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))} (see --list)")
    chosen = [c for c in CONFIGS if args.configs is None or c.name in args.configs]
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(f"sqlite:///{args.store}")
    rows = []
    for c in chosen:
        (request,), _ = build_requests(CommandLine(
            model="ssn", dataset="lidc-sample", latent_dims=(6,), folds=(0,), preset="quick", device="cpu",
            hyperparameters=c.hp, protocol_overrides=c.protocol, run_dir=Path(args.store).with_suffix(".runs")))
        start = time.perf_counter()
        record = run_protocol(check_request(request), store)[0]
        row: dict[str, Any] = {"name": c.name, "hp": c.hp, "protocol": c.protocol, "note": c.note}
        row.update({k: float(record.metrics[k])
                    for k in ("hm_iou", "ged", "ewd", "sample_diversity", "annotator_diversity")})
        row.update(covariance_diagnostics(record), best_epoch=record.best_epoch,
                   train_s=record.timings.get("train_s"), wall_s=time.perf_counter() - start)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print()
    print("| configuration | HM-IoU ↑ | GED ↓ | EWD ↓ | sample div. (x annotators') | mean fg logit | fg logit std "
          "(diagonal part) | sampled fg outside the annotations' union |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["sample_diversity"] / r["annotator_diversity"]
        print(f"| {r['name']} | {r['hm_iou']:.3f} | {r['ged']:.3f} | {r['ewd']:.3f} | {r['sample_diversity']:.3f} "
              f"({ratio:.2f}x) | {r['mean_logit']:.1f} | {r['logit_std']:.1f} ({r['diag_std']:.1f}) "
              f"| {r['outside_union']:.2f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
    merged = {r["name"]: r for r in previous} | {r["name"]: r for r in rows}
    args.output.write_text(json.dumps({"rows": list(merged.values()), "numpy": np.__version__}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
