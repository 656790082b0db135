#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite on TEST_WORKERS pytest-xdist workers (default 2), then print
# the 15 slowest tests. Extra arguments go to pytest (`-n 0` runs in this process, for a debugger).
# --dist loadfile keeps each test module on one worker: modules share a local Ray and their models per module.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh" test
cd "$root"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
