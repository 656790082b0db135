"""`python -m rl.train` end to end in subprocesses (each starts its own local Ray): resume equivalence across
a SIGKILL, and the errors a user sees before anything loads."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import REPO, save_config, tiny_config

from rl.evaluation.metrics import read_metrics
from rl.state.checkpoint import list_checkpoints, save_checkpoint
from rl.state.run_state import TRAINER_STATE

# Wall-clock figures differ between runs; everything else must not.
TIMING = ("time/", "rollout/tokens_per_s", "rollout/images_per_s")


def train(config, *overrides, wait=True):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "rl.train", str(config), *overrides]
    if wait:
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # A session of its own, so the kill takes the local Ray the driver started with it.
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def assert_same_metrics(got, expected):
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        for key in keys:  # CPU float32 with the same seeds: equal up to rounding (in practice bit-equal)
            assert a[key] == (b[key] if b[key] is None else pytest.approx(b[key], rel=1e-6, abs=1e-7)), key


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path):
    config = save_config(tiny_config(tmp_path, overrides=("trainer.steps=4", "checkpoint.every=1",
                                                          "checkpoint.keep=2")), tmp_path / "tiny.yaml")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = train(config, f"run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]

    process = train(config, f"run.dir={broken}", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not any(step >= 2 for step, _ in list_checkpoints(broken)):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = list_checkpoints(broken)[-1][0]
    assert 2 <= killed_at < 4

    resumed = train(config, f"run.dir={broken}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {killed_at}" in resumed.stdout

    expected, got = read_metrics(straight / "metrics.jsonl"), read_metrics(broken / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert_same_metrics(got, expected)
    assert [s for s, _ in list_checkpoints(broken)] == [3, 4]  # keep=2 rotated the older ones away
    final = {name: load_file(path / "policy" / "model.safetensors")
             for name, path in (("a", straight / "checkpoints/step_00000004"),
                                ("b", broken / "checkpoints/step_00000004"))}
    assert all(torch.allclose(final["a"][k], final["b"][k], atol=1e-5, rtol=0) for k in final["a"])


def test_a_changed_seed_or_group_size_is_refused_on_resume(tmp_path):
    """Refused before Ray starts, so a checkpoint written by rl.state.run_state's layout is enough here."""
    config = save_config(tiny_config(tmp_path, overrides=("trainer.steps=2",)), tmp_path / "tiny.yaml")
    state = {"step": 1, "seed": 0, "group_size": 4}
    save_checkpoint(tmp_path, 1, lambda path: (path / TRAINER_STATE).write_text(json.dumps(state)), keep=1)
    refused = train(config, "resume=auto", "run.seed=1", "rollout.group_size=2")
    assert refused.returncode == 2
    assert "run.seed: the checkpoint" in refused.stderr and "rollout.group_size: the checkpoint" in refused.stderr
    again = train(config)  # neither resume nor overwrite: the earlier run is kept
    assert again.returncode == 2 and "holds an earlier run" in again.stderr


def test_the_paper_config_lists_every_missing_weights_path_before_loading_anything():
    result = train(REPO / "configs" / "xomni.yaml")
    assert result.returncode == 2
    # each unset path once, naming every key that interpolates it
    assert "4 problem(s) in the config" in result.stderr and result.stderr.count("paths.xomni") == 1
    assert ("paths.xomni: required value is missing (???); interpolated by model.policy.path, model.tokenizer.path, "
            "model.decoder.xomni_path") in result.stderr
    for key, source in (("model.decoder.flux_path", "paths.flux"), ("rewards.hpsv2.checkpoint", "paths.hpsv2"),
                        ("rewards.clip_align.weights", "paths.clip")):
        assert f"{source}: required value is missing (???); interpolated by {key}\n" in result.stderr
    paths = ["paths.xomni=/nonexistent/xomni", "paths.flux=/nonexistent/flux", "paths.hpsv2=/nonexistent/hps.pt",
             "paths.clip=/nonexistent/clip.bin"]
    result = train(REPO / "configs" / "xomni.yaml", *paths)
    assert result.returncode == 2 and "file or folder not found: /nonexistent/flux" in result.stderr
