#!/usr/bin/env bash
# Submit a training run to a running Ray cluster with `ray job submit`.
#
#   RAY_ADDRESS=http://HEAD_NODE:8265 bash scripts/launch_cluster.sh configs/xomni.yaml \
#       paths.xomni=/ckpt/X-Omni-SFT paths.flux=/ckpt/FLUX.1-dev \
#       paths.hpsv2=/ckpt/HPS_v2.1_compressed.pt paths.clip=/ckpt/open_clip_vit_l14.bin run.dir=/shared/runs/xomni
#
# The project's code travels as the job's working directory; every node needs the dependencies installed
# (the same image, or `pip install -e .` with the node's CUDA torch). Weights paths and run.dir must be
# visible at the same path on every node (shared storage). Add resume=auto to continue a stopped run.
set -euo pipefail
config=${1:?usage: RAY_ADDRESS=http://HEAD:8265 bash scripts/launch_cluster.sh CONFIG [key=value ...]}
shift
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://head-node:8265}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ray_cli=ray
[ -x .venv/bin/ray ] && ray_cli=.venv/bin/ray
exec "$ray_cli" job submit --address "$RAY_ADDRESS" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", ".git", "*.safetensors"]}' \
  -- python -m rl.train "$config" ray.address=auto "$@"
