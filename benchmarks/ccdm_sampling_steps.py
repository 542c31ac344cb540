"""CCDM's quality against its number of sampling steps, on the known-truth validity benchmark (issue 24).

    python -m benchmarks.ccdm_sampling_steps [--storage sqlite:///probseg-results.db] [--steps 250 50 25 10]
                                             [--fold 0] [--figure docs/ccdm_sampling_steps.png]

Takes the ccdm fold of ``probseg-bench validate`` (synthetic with its validation parameters, the quick preset,
fold 0: trained first, as ``validate --model ccdm`` does, when the store holds none), rebuilds the model
from its checkpoint, and evaluates it on the same test images with the evaluation's seed at each number of
sampling steps K (the strided schedule round(linspace(T, 1, K)) with the exact skip posterior; K = the trained
model's own ``sampling_steps``, 250, is the stored evaluation, read from the record). Reports per K: EWD, GED,
HM-IoU and the sample diversity on the whole test split, and the sampling seconds per image for 16 samples (timed
first, on the first ``--timing-images`` test images: keep the machine quiet), next to the oracle's EWD, GED and
true diversity. Prints a markdown table, writes
benchmarks/results/ccdm_sampling_steps.json and the figure (EWD and GED against K, the oracle's as lines).
The training curve (validation loss per epoch) of the fold goes to the JSON, to read what bounds the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def evaluate_steps(record: Any, steps: list[int], device: str = "cpu", timing_images: int = 4
                   ) -> list[dict[str, float]]:
    """One evaluation of the stored ccdm fold per K in ``steps`` (same test images, same seed as the protocol; for
    K = the model's own ``sampling_steps`` the stored record itself), and the sampling seconds per image for 16
    samples at each K, timed first, on the first ``timing_images`` test images (quality and time are measured
    apart: the quality is deterministic, the time wants a quiet machine)."""
    import time

    from probseg_bench.analysis.loading import load_run
    from probseg_bench.evaluation import evaluate
    from probseg_bench.experiment import fold_seed

    run = load_run(record, None, device)
    protocol = record.protocol
    trained_steps = run.model.sampling_steps
    x = torch.as_tensor(run.test.images[:timing_images], device=run.device).float()
    seconds = {}
    for k in steps:
        run.model.sampling_steps = k
        torch.manual_seed(0)
        t0 = time.perf_counter()
        run.model.sample(x, int(protocol["n_eval_samples"]))
        seconds[k] = (time.perf_counter() - t0) / len(x)
    rows = []
    for k in steps:
        if k == trained_steps:  # the stored evaluation itself (same samples): no second pass
            metrics = {m: record.metrics[m] for m in ("ewd", "ged", "hm_iou", "sample_diversity")}
        else:
            run.model.sampling_steps = k
            result = evaluate(run.model, run.test, run.device, n_samples=int(protocol["n_eval_samples"]),
                              batch_size=int(protocol["batch_size"]),
                              seed=fold_seed(record.seed, record.latent_dim, record.fold))
            metrics = {m: result.aggregate[m] for m in ("ewd", "ged", "hm_iou", "sample_diversity")}
        rows.append({"steps": k, **metrics, "sampling_s_per_image": seconds[k]})
        print(f"K={k}: EWD {rows[-1]['ewd']:.3f} GED {rows[-1]['ged']:.3f} "
              f"({rows[-1]['sampling_s_per_image']:.2f} s/image)", flush=True)
    return rows


def figure(rows: list[dict[str, float]], oracle: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    ks = [r["steps"] for r in rows]
    for ax, metric, label in zip(axes, ("ewd", "ged"), ("EWD ↓", "GED ↓"), strict=True):
        ax.plot(ks, [r[metric] for r in rows], "o-", label="ccdm")
        ax.axhline(oracle[metric], color="k", ls="--", label="oracle (true distribution)")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("sampling steps K (of T = 250)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("ccdm on synthetic (validity benchmark, quick preset, fold 0): quality vs sampling steps")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///probseg-results.db")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 50, 25, 10])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timing-images", type=int, default=4, help="test images the sampling time is taken on")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ccdm_sampling_steps.json"))
    parser.add_argument("--figure", type=Path, default=Path("docs/ccdm_sampling_steps.png"))
    args = parser.parse_args()

    from probseg_bench.plugins import get_plugins
    from probseg_bench.protocol import RunPlan
    from probseg_bench.results import FoldKey, ResultsStore
    from probseg_bench.validation import validate, validation_requests

    torch.set_grad_enabled(False)
    store = ResultsStore(args.storage)
    (checked,) = validation_requests(["ccdm"], folds=(args.fold,), device=args.device)
    request = checked.request
    plan = RunPlan.prepare(checked)
    key = FoldKey("ccdm", request.dataset, request.latent_dims[0], args.fold, plan.config_hash)
    if store.get(key) is None:  # train it (and score it against the truth) as `validate --model ccdm` does
        validate([checked], store)
    record = store.get(key)
    assert record is not None and record.status == "ok", f"ccdm fold {args.fold} failed: {record}"
    truth = get_plugins().datasets.get(request.dataset).known_distribution
    assert truth is not None
    oracle_all = truth.oracle_metrics(n_samples=int(record.protocol["n_eval_samples"]),
                                      indices=[int(i) for i in record.test_ids], **record.dataset_params)
    rows = evaluate_steps(record, args.steps, args.device, args.timing_images)
    oracle = {k: float(oracle_all[k]) for k in ("ewd", "ged", "hm_iou", "diversity")}
    print("| sampling steps K | EWD ↓ | GED ↓ | HM-IoU ↑ | sample div. | sampling s / image (16 samples) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['ewd']:.3f} | {r['ged']:.3f} | {r['hm_iou']:.3f} | {r['sample_diversity']:.3f} "
              f"| {r['sampling_s_per_image']:.2f} |")
    print(f"| oracle (true distribution) | {oracle['ewd']:.3f} | {oracle['ged']:.3f} | {oracle['hm_iou']:.3f} | "
          f"{oracle['diversity']:.3f} (true) | – |")
    figure(rows, oracle, args.figure)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "record": {"config_hash": record.config_hash, "fold": record.fold, "preset": record.preset,
                   "dataset_params": record.dataset_params, "best_epoch": record.best_epoch,
                   "torch_threads": record.versions.get("torch_threads")},
        "oracle": oracle, "steps": rows,
        "learning_curve": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val_loss": h["val_loss"]}
                           for h in record.history],
    }, indent=2) + "\n")
    print(f"wrote {args.output} and {args.figure}")


if __name__ == "__main__":
    main()
