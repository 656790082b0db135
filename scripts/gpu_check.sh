#!/usr/bin/env bash
# The prepared GPU check: fits 5 minutes on one H100/H200, needs no downloads and no Ray. Each stage of
# scripts/gpu_check.py runs in a process of its own under its budget (`gpu_check.py --list`) and appends its JSON
# line to $OUT/gpu_check.jsonl (./gpu_check.jsonl without OUT) as soon as it ends; a stage that times out or
# crashes gets a line with its error, and the next stage still runs.
#
#   bash scripts/prepare_gpu_wheels.sh      # once, on a machine with network access: fills .whl/
#   bash scripts/gpu_check.sh               # on the GPU machine (installs the missing wheels from .whl/)
#   bash scripts/gpu_check.sh --smoke       # tiny shapes on the CPU (tests/test_gpu_check.py)
#
# Extra arguments go to every stage (--smoke, --repeats, --no-compile, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
# Install a wheel only when its distribution is missing: the GPU image's own torch/transformers stay as they are.
for wheel in .whl/*.whl; do
  [ -e "$wheel" ] || break
  dist=$(basename "$wheel" | cut -d- -f1)
  if ! "$PYTHON" -m pip show -q "$dist" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --no-deps --no-index "$wheel"
  fi
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
out="${OUT:-.}/gpu_check.jsonl"
"$PYTHON" scripts/gpu_check.py --list "$@" | while read -r stage budget; do
  status=0
  timeout --kill-after=10 "$budget" "$PYTHON" scripts/gpu_check.py --only "$stage" --out "$out" "$@" </dev/null \
    || status=$?
  if [ "$status" -ne 0 ]; then  # the stage wrote nothing: say why, in its place
    why="exit status $status"
    [ "$status" -eq 124 ] || [ "$status" -eq 137 ] && why="timed out after ${budget} s (its budget)"
    printf '{"stage": "%s", "error": "%s"}\n' "$stage" "$why" | tee -a "$out"
  fi
done
