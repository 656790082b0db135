#!/usr/bin/env bash
# The prepared GPU check (issue 13): fits 8 minutes on one H100/H200, needs no downloads and no Ray, prints
# JSON (and writes $OUT/gpu_check.json when OUT is set). See scripts/gpu_check.py for what it measures.
#
#   bash scripts/prepare_gpu_wheels.sh      # once, on a machine with network access: fills .whl/
#   bash scripts/gpu_check.sh               # on the GPU machine (installs the missing wheels from .whl/)
#   bash scripts/gpu_check.sh --smoke       # tiny shapes on the CPU (tests/test_gpu_check.py)
#
# Extra arguments go to scripts/gpu_check.py (--only, --repeats, --no-compile, ...).
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
exec timeout "${GPU_CHECK_TIMEOUT_S:-480}" "$PYTHON" scripts/gpu_check.py "$@"
