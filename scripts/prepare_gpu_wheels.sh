#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels scripts/gpu_check.sh installs on a GPU machine that
# reaches no package index: the GPU image has torch and transformers but not diffusers, omegaconf, peft or
# accelerate. The versions are this environment's, so the GPU check runs the code the tests ran. A few MB.
#
#   bash scripts/prepare_gpu_wheels.sh            # here, with network access; then send .whl/ along
#   (the device tool: run(..., carry=[".whl"]))
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .whl
specs=$("$PYTHON" - <<'PY'
import importlib.metadata as m
print(" ".join(f"{name}=={m.version(name)}" for name in ("diffusers", "omegaconf", "peft", "accelerate")))
PY
)
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d .whl $specs
# Only pure-Python wheels install on any GPU image: a platform wheel fails here, not there.
if ls .whl/*.whl | grep -v -- '-none-any\.whl$'; then
  echo "error: the wheels above are not pure Python" >&2
  exit 1
fi
ls -l .whl
