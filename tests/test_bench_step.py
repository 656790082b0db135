"""scripts/bench_step.py's simulation on small costs: rl.train's own driver loop (Trainer.fit, the pipeline, the real
reward pool) over stand-in rollout and learner actors that sleep (no GPU exists here; the stand-ins stand for
GPU work). One step off-policy runs the learner's update while the next rollout is sampled and scored; the
sequential step never does. Only the order of the stand-ins' busy intervals is checked, no speed."""

import sys

import pytest
from train_helpers import REPO

sys.path.insert(0, str(REPO))  # as scripts.bench_step: the name Ray's workers import its stand-ins by
import scripts.bench_step as bench_step  # noqa: E402

# 2 GPUs split 1 + 1; 32 samples in 2 chunks of 16: 2 s of rollout and 1 s of update per step.
COSTS = {"gpus": 2, "samples": 32, "decoding_s": 1.0, "sampling_s": 0.0, "rewards_s": 0.4, "reward_replicas": 1,
         "learner_s": 0.5, "weight_sync_s": 0.0}


@pytest.mark.parametrize(("mode", "overlapped"), [("sync", False), ("async", True)])
def test_the_simulated_update_overlaps_the_next_rollout_only_one_step_off_policy(tmp_path, local_ray, mode,
                                                                                 overlapped):
    result = bench_step.simulate_one(COSTS, "split", mode, rollout_gpus=1, steps=3, scale=1.0, work=tmp_path)
    assert set(result["busy"]) == {"rollout_gpus", "learner_gpus", "reward_cpus"}
    assert all(0 < value <= 1.01 for value in result["busy"].values()), result
    if overlapped:
        assert result["learner_hidden"] > 0.5, result
    else:
        assert result["learner_hidden"] == 0.0, result
