#!/usr/bin/env bash
# GPU check of the CUDA path (run on a machine with a GPU and PyTorch CUDA already installed):
#   bash scripts/gpu_check.sh [WHEEL_DIR]
# Installs the package without dependencies (plus wheels from WHEEL_DIR for what the image lacks), runs the
# unit tests, then the quick protocol of spunet and punet on lidc-sample with --device cuda, and prints timings.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if [ -n "${1:-}" ]; then python3 -m pip install -q --no-deps --no-index "$1"/*.whl; fi
python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
python3 -m pytest -q -x -p no:cacheprovider 2>&1 | tail -n 5
cd "$OUT"
for model in spunet punet; do
  start=$(date +%s.%N)
  probseg-bench run --model "$model" --dataset lidc-sample --preset quick --device cuda --format json > "run-$model.json"
  end=$(date +%s.%N)
  echo "$model quick on cuda: $(python3 -c "print(f'{$end - $start:.1f}')") s"
done
probseg-bench leaderboard --format json > leaderboard.json
python3 - <<'PY'
import json, sqlite3
rows = json.load(open("leaderboard.json"))
for r in rows:
    print(r["model"], {k: round(r[k], 3) for k in ("ged_mean", "hm_iou_mean", "ewd_mean", "er_mean")})
con = sqlite3.connect("probseg-results.db")
devices = {json.loads(rec)["versions"]["device"] for (rec,) in con.execute("select record from fold_results")}
print("record devices:", devices)
assert devices == {"cuda"}, devices
PY
