#!/usr/bin/env bash
# Create .venv at the repo root when it is missing and install what is missing.
#   bash scripts/setup.sh          # runtime dependencies
#   bash scripts/setup.sh test     # plus pytest, ruff and the reference hpsv2 package
# Safe to rerun: a stamp keyed on pyproject.toml skips pip when nothing changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
extra=${1:-}
py="$venv/bin/python"

[ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv"

# A bare `pip install torch` (or any package that pulls a new torchvision) would fetch the newest
# CUDA torch (several GB). Install the CPU 2.13.0 build first when no torch is present, then pin
# whatever torch is installed (a GPU user's CUDA build included) for every later install.
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q torch==2.13.0
fi
constraints="$venv/torch-constraint.txt"
"$py" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > "$constraints"

stamp="$venv/.installed-$( (cat "$root/pyproject.toml"; echo "$extra") | sha1sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  spec="$root"
  [ -n "$extra" ] && spec="$root[$extra]"
  "$py" -m pip install -q -c "$constraints" -e "$spec"
  if [ "$extra" = test ]; then
    # hpsv2x = hpsv2 1.2.0 with its missing BPE vocabulary; its metadata pins old protobuf/pytest.
    "$py" -m pip install -q --no-deps hpsv2x==1.2.0
  fi
  touch "$stamp"
fi
# A CPU torch beside a CUDA-only torchvision (what pip finds for torch 2.13.0): a startup hook in .venv applies
# core/torchvision_compat.py's fix in every process that imports torchvision; nothing is written elsewhere.
"$py" -c "import sys, core.torchvision_compat as c; sys.exit(c.main(['--install']))"
