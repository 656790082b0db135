#!/usr/bin/env bash
# The README's main job: set up .venv (if needed), then train configs/tiny.yaml on the CPU with a local
# Ray, draw its curves, print how much the reward rose, and end with the before/after table: each prompt,
# what the policy writes at step 0 and at the end (read back by the OCR reward), and how many fresh samples
# spell their word exactly. Extra arguments are key=value overrides.
# Output: runs/demo/ (metrics.jsonl, tensorboard/, checkpoints/, curves.png); rerunning starts it afresh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m rl.train configs/tiny.yaml run.dir=runs/demo run.overwrite=true "$@"
.venv/bin/python scripts/plot_metrics.py runs/demo/metrics.jsonl --out runs/demo/curves.png --smooth 3
.venv/bin/python - <<'PY'
from rl.evaluation.metrics import read_metrics

rewards = [r["reward/mean"] for r in read_metrics("runs/demo/metrics.jsonl")]
first, last = rewards[:5], rewards[-5:]
print(f"reward/mean: first 5 steps {sum(first) / len(first):.3f} -> last 5 steps {sum(last) / len(last):.3f} "
      f"({len(rewards)} steps; curves in runs/demo/curves.png, tensorboard --logdir runs/demo/tensorboard)")
PY
.venv/bin/python scripts/demo_table.py configs/tiny.yaml runs/demo "$@"
