#!/usr/bin/env bash
# Create the SEPARATE reference venv that runs X-Omni's own pipeline code (never the project's .venv).
#
# Pins follow X-Omni's requirements.txt (choyakawa/X-Omni): transformers==4.51.3, protobuf==3.20.3,
# sentencepiece, accelerate, diffusers (unpinned there; 0.34.0 is the release X-Omni's remote code was
# written against and the one the project's other reference fixtures used). X-Omni pins torch==2.6.0, whose
# only Linux wheel on PyPI is a multi-GB CUDA build; this machine ships a CPU torch 2.13.0 wheel, used
# instead (recorded in meta.json). torchvision is left out: nothing on the decoder path imports it.
#
# Usage: make_venv.sh [VENV_DIR]   (default /tmp/xomni_ref_venv)
set -euo pipefail
VENV="${1:-/tmp/xomni_ref_venv}"
PY="${PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q "diffusers==0.34.0" "transformers==4.51.3" "protobuf==3.20.3" sentencepiece \
  accelerate einops safetensors "numpy<2.3"
"$VENV/bin/python" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
