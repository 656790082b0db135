"""Host memory while learner processes load a policy of a few hundred million parameters (the policy alone, no
reference), measured by scripts/bench_state.py in fresh processes: per process peak RSS less its RSS just before
`Learner.setup`, summed over the ranks, against the policy's bytes in the load dtype (float32 here)."""

import json
import os
import subprocess
import sys

from train_helpers import REPO


def test_one_or_two_learner_ranks_hold_about_one_copy_of_the_policy():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_state.py"), "--parts", "load", "--no-before",
                           "--params-m", "170", "--ranks", "1", "2"], env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["policy"]["parameters"] > 150e6
    ratios = {r["ranks"]: r["ratio_to_policy_bytes"] for r in result["load"]["after"]}
    assert set(ratios) == {1, 2} and all(ratio <= 1.3 for ratio in ratios.values()), ratios
