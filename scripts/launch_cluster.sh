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
#
# Relative paths mean the directory this script is run from (the submit directory), as they do outside a job:
# it goes to the job as XOMNI_RL_SUBMIT_DIR, and rl.train resolves a relative run.dir against it (Ray's copy of
# the working directory is deleted when the job ends) and looks relative input files up there first.
#
# Token authentication (Ray 2.60): `ray start --head` turns it on when RAY_AUTH_MODE=token, or when RAY_AUTH_MODE
# is unset and a token exists (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token, which
# `ray get-auth-token --generate` writes). `ray job submit` sends the token only when RAY_AUTH_MODE=token, so
# this script applies the head's rule: RAY_AUTH_MODE unset and a token found means token. RAY_AUTH_MODE=disabled
# sends none.
set -euo pipefail
config=${1:?usage: RAY_ADDRESS=http://HEAD:8265 bash scripts/launch_cluster.sh CONFIG [key=value ...]}
shift
# Ray 2.60's `ray start` prints RAY_API_SERVER_ADDRESS for the jobs CLI; RAY_ADDRESS is what older Rays printed.
address=${RAY_API_SERVER_ADDRESS:-${RAY_ADDRESS:-}}
: "${address:?set RAY_ADDRESS (or RAY_API_SERVER_ADDRESS) to the cluster dashboard, e.g. http://head-node:8265}"
submit_dir=$PWD

token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "$token_file" ]; }; then
  export RAY_AUTH_MODE=token
fi
if [ "${RAY_AUTH_MODE:-}" = token ]; then
  if [ -n "${RAY_AUTH_TOKEN:-}" ]; then
    echo "token authentication: on (token from RAY_AUTH_TOKEN)" >&2
  elif [ -s "$token_file" ]; then
    echo "token authentication: on (token from $token_file)" >&2
  else
    echo "error: RAY_AUTH_MODE=token but no token: RAY_AUTH_TOKEN is unset and $token_file is missing or empty" \
      "(copy the head node's ~/.ray/auth_token, or run \`ray get-auth-token --generate\` before \`ray start --head\`)" >&2
    exit 2
  fi
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ray_cli=ray python_cli=python
[ -x .venv/bin/ray ] && ray_cli=.venv/bin/ray python_cli=.venv/bin/python
runtime_env=$("$python_cli" -c 'import json, sys; print(json.dumps({
    "excludes": [".venv", "runs", ".git", "*.safetensors"], "env_vars": {"XOMNI_RL_SUBMIT_DIR": sys.argv[1]}}))' \
  "$submit_dir")
echo "submit directory: $submit_dir (relative run.dir and input paths resolve against it)" >&2
exec "$ray_cli" job submit --address "$address" --working-dir . --runtime-env-json "$runtime_env" \
  -- python -m rl.train "$config" ray.address=auto "$@"
