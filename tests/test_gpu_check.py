"""scripts/gpu_check.sh in its CPU smoke mode (tiny shapes, the same code paths as on a GPU), so the prepared
GPU check cannot rot. The GPU figures themselves need a GPU (never run so far)."""

import json
import os
import subprocess
import sys

from train_helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
from gpu_check import guarded  # noqa: E402

CHECKS = ("sampler_b16", "sampler_b64", "learner_full", "learner_lora", "decoder", "weight_sync")


def test_smoke_mode_prints_every_measurement_as_json_and_writes_it_to_out(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert json.loads(done.stdout) == result
    for name in CHECKS:
        assert "error" not in result[name], result[name]
    assert set(result["sampler_b16"]["image_tokens_per_s"]) == {"ours", "generate"}
    assert result["learner_lora"]["trained_params"] < result["learner_full"]["trained_params"]
    assert result["decoder"]["s_per_image_cfg"] > 0 and result["decoder"]["s_per_image_no_cfg"] > 0
    assert result["weight_sync"]["bytes_per_s"] > 0


def test_a_failing_measurement_is_reported_and_the_next_still_runs():
    results = {}
    guarded(results, "broken", lambda: 1 / 0)
    guarded(results, "fine", lambda: {"value": 1})
    assert results["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert results["fine"]["value"] == 1
