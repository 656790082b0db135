#!/usr/bin/env bash
# Serve the documentation site locally (http://127.0.0.1:8000), rebuilt on every change; extra arguments go to
# `mkdocs serve` (e.g. -a 0.0.0.0:8000). `mkdocs build --strict` is what the test suite runs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh" test
cd "$root"
exec .venv/bin/mkdocs serve "$@"
