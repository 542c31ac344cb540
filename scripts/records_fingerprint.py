"""Bit-identity check for refactors: tiny trainings of every built-in model (punet, punet-nf with a planar flow,
spunet, spunet with the split correction) on `synthetic`, seed 3, one thread, in a fresh store; every record's
metrics, per-image values, training history (without wall times) and configuration hash written to one JSON.

Run it before and after a change and compare the files (`cmp`): identical bytes = unchanged behaviour.

    OMP_NUM_THREADS=1 python scripts/records_fingerprint.py before.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def main(out: Path) -> None:
    import torch

    from probseg_bench.presets import PRESETS, Preset
    from probseg_bench.protocol import run_protocol
    from probseg_bench.request import RunRequest, check_request
    from probseg_bench.results import ResultsStore

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    os.chdir(work)
    PRESETS["fingerprint"] = Preset(name="fingerprint", description="refactor check", epochs=2, warmup_epochs=1,
                                    batch_size=4, n_eval_samples=4)
    store = ResultsStore(str(work / "r.db"))
    dump = {}
    for model, hp in [("punet", {}), ("punet-nf", {"flow": "planar"}), ("spunet", {}),
                      ("spunet", {"samples_per_annotation": 2, "sinkhorn_correction": "split"})]:
        request = RunRequest(model=model, dataset="synthetic", latent_dims=(2,), folds=(0,), seed=3,
                             preset="fingerprint", device="cpu", dataset_params={"n_images": 40, "size": 32},
                             hyperparameters={"filters": "4,8", "convs_per_block": 1, **hp}, run_dir=work / "runs")
        for r in run_protocol(check_request(request), store):
            dump[f"{model} {sorted(hp.items())}"] = {
                "config_hash": r.config_hash, "metrics": r.metrics, "per_image": r.per_image,
                "history": [{k: v for k, v in h.items() if k != "seconds"} for h in r.history],
                "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss, "variant": r.variant,
            }
    out.write_text(json.dumps(dump, indent=1, sort_keys=True, default=str))
    print(f"wrote {out}: {len(dump)} records")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/records_fingerprint.py OUT.json")
    main(Path(sys.argv[1]).resolve())
