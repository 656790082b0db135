"""scripts/gpu_check.sh in its CPU smoke mode (tiny shapes, the same code paths as on a GPU), so the prepared
GPU check cannot rot: every stage's line in the JSONL, a line kept when the check is killed after its first
stage, and a stage that overruns its budget reported in its place. The GPU figures themselves need a GPU (never
run so far)."""

import json
import os
import signal
import subprocess
import sys
import time

from train_helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
from gpu_check import BUDGET_S, guarded  # noqa: E402


def smoke_env(tmp_path, **extra) -> dict:
    """The check's environment, with a `ray` package that refuses to be imported: the GPU image has no Ray."""
    blocker = tmp_path / "no_ray" / "ray"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text("raise ImportError('the GPU check must not import Ray')\n")
    path = os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "PYTHONPATH": path, **extra}


def lines(tmp_path) -> list[dict]:
    path = tmp_path / "gpu_check.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_smoke_mode_appends_one_line_per_stage(tmp_path):
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, env=smoke_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(tmp_path)
    assert [r["stage"] for r in records] == list(BUDGET_S)
    assert [json.loads(line) for line in done.stdout.splitlines()] == records  # printed as written
    result = {r["stage"]: r for r in records}
    for record in records:
        assert "error" not in record, record
        assert record["smoke"] is True and record["device"] == "cpu" and record["wall_s"] >= 0
    assert set(result["sampler_b16"]["image_tokens_per_s"]) == {"ours", "generate"}
    assert result["learner_lora"]["trained_params"] < result["learner_full"]["trained_params"]
    assert result["decoder"]["s_per_image_cfg"] > 0 and result["decoder"]["s_per_image_no_cfg"] > 0
    assert result["weight_sync"]["bytes_per_s"] > 0
    step = result["train_step"]
    assert list(step["phases"]) == ["weight sync", "rolling out", "update", "weight sync again", "rolling out again",
                                    "save", "load"]
    assert all(phase["planned_gib"] > 0 for phase in step["phases"].values())
    assert step["first_update_ratio"] == {"mean": 1.0, "min": 1.0, "max": 1.0}  # old log-probs recomputed
    assert step["pinned_host_gib"] == step["planned_pinned_host_gib"] > 0


def test_a_check_killed_after_its_first_stage_keeps_that_stages_line(tmp_path):
    check = subprocess.Popen(["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, env=smoke_env(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not lines(tmp_path) and time.monotonic() < deadline:
        assert check.poll() is None, "the check ended before its first stage was written"
        time.sleep(0.2)
    os.killpg(check.pid, signal.SIGKILL)
    check.wait()
    first = lines(tmp_path)[0]  # complete JSON: written, flushed and synced before the next stage began
    assert first["stage"] == next(iter(BUDGET_S)) and "error" not in first
    assert first["phases"]["update"]["s"] > 0


def test_a_stage_past_its_budget_is_reported_and_the_next_still_runs(tmp_path):
    """The check runs each stage under `timeout`; a stub python that hangs on the first stage stands in for a
    stage that overruns (a real one takes minutes to overrun)."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\ncase "$*" in *--list*) printf "hangs 1\\nfine 30\\n";;\n'
                    '  *"--only hangs"*) sleep 30;;\n'
                    '  *"--only fine"*) echo \'{"stage": "fine"}\' >> "$OUT/gpu_check.jsonl";;\n'
                    'esac\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, capture_output=True, text=True,
                          env=smoke_env(tmp_path, PYTHON=str(stub)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert lines(tmp_path) == [{"stage": "hangs", "error": "timed out after 1 s (its budget)"}, {"stage": "fine"}]


def test_a_failing_measurement_is_reported_and_the_next_still_runs():
    results = {}
    guarded(results, "broken", lambda: 1 / 0)
    guarded(results, "fine", lambda: {"value": 1})
    assert results["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert results["fine"]["value"] == 1
