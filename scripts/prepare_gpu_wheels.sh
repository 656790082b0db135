#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels scripts/gpu_check.sh installs on a GPU machine that
# reaches no package index: the GPU image has torch and transformers but not diffusers, omegaconf, peft,
# accelerate or annotated-types. The versions are this environment's, so the GPU check runs the code the tests
# ran. A few MB.
#
#   bash scripts/prepare_gpu_wheels.sh            # here, with network access; then send .whl/ along
#   (the device tool: run(..., carry=[".whl"]))
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .whl
# What the check imports that the GPU image lacks, with every dependency of theirs that the image's torch and
# transformers do not bring: the closure of the installed requirements (extras left out), this venv's versions.
specs=$("$PYTHON" - <<'PY'
import importlib.metadata as m
import re

def closure(names):
    seen, todo = {}, list(names)
    while todo:
        dist = m.distribution(todo.pop())
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in seen:
            continue
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            dep = re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]
            try:
                m.distribution(dep)
            except m.PackageNotFoundError:  # an optional or platform-specific requirement not installed here
                continue
            todo.append(dep)
    return seen

roots = ["diffusers", "omegaconf", "peft", "accelerate", "annotated-types"]
needed, on_image = closure(roots), closure(["torch", "transformers"])
print(" ".join(f"{n}=={v}" for n, v in sorted(needed.items()) if n in roots or n not in on_image))
PY
)
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d .whl $specs
# Only pure-Python wheels install on any GPU image; a platform wheel (psutil, Pillow) is expected there already.
for wheel in .whl/*.whl; do
  case "$wheel" in
    *-none-any.whl) ;;
    *) echo "left out (not pure Python; the GPU image must have it): $(basename "$wheel")"; rm "$wheel" ;;
  esac
done
ls -l .whl
