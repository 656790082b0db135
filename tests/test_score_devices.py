"""Rewards on different devices score a batch concurrently in `python -m rewards.score`.

No GPU exists here: the rewards declare `device: cuda:0` in their config (which is what the scorer groups
by) and run on the CPU. Concurrency is proven without timing: the two Rendezvous rewards wait for each
other at a barrier, which only passes when their calls overlap; run one after the other, the first
call gives up after 20 s and fails.
"""

import json

import pytest
from PIL import Image

from rewards.score import main
from rewards.store import read_scores
from tests.score_rewards import Rendezvous, logged


def test_rewards_on_different_devices_run_concurrently_keeping_row_order_and_faults(tmp_path):
    images, log = tmp_path / "images", tmp_path / "calls.log"
    images.mkdir()
    for i in range(5):
        Image.new("RGB", (8, 8), (50 * i,) * 3).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"prompt {i}")
    component = "tests.score_rewards.Rendezvous"
    rewards = {"gpu": {"_component_": component, "log": str(log), "device": "cuda:0"},
               "cpu": {"_component_": component, "log": str(log)},  # the class default: cpu
               "other_gpu": {"_component_": component, "log": str(log), "device": "cuda:1", "raises": True}}
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"rewards": rewards, "ensemble": {
        "weights": dict.fromkeys(rewards, 1.0), "normalize": "range", "nan_policy": "renormalize",
        "timeout_s": None}}))
    Rendezvous.barrier.reset()
    out = tmp_path / "out"
    assert main(["--images", str(images), "--config", str(config), "--out", str(out), "--batch-size", "3"]) == 0
    rows = read_scores(out)
    assert [r["image"] for r in rows] == [f"{i}.png" for i in range(5)]
    for i, row in enumerate(rows):
        assert row["gpu"] == row["cpu"] == pytest.approx(50 * i / 255) and row["total"] == pytest.approx(50 * i / 255)
        # the failing reward is NaN for its rows only, with the reason
        assert row["other_gpu"] is None and "injected failure on cuda:1" in row["reward_errors"]["other_gpu"]
    assert len(logged(log, "rendezvous-cuda:0")) == len(logged(log, "rendezvous-cpu")) == 5
