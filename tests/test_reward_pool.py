"""The reward actors on a real local Ray: calls in chunks of `ensemble.batch_size`, per-reward replicas
sharing the chunks with rows kept in order, and the fault rules (timeouts, restarts, failure windows) holding
per replica. The rewards are tests/fault_rewards.py classes that report which actor (pid) scored which rows
in calls of which size; the images are real arrays put in Ray's object store as the rollout actors do."""

import math

import numpy as np
import pytest
import ray
import torch
from train_helpers import tiny_spec

from core.config import ConfigError
from rl.distributed.placement import run_units
from rl.distributed.reward_pool import RewardPool, RunAborted
from rl.train_config import RewardWorkersConfig


def step_rows(count: int, per_chunk: int, prompts=None):
    """`count` grey images of distinct brightness spread over rollout chunks of `per_chunk` images, as
    RolloutGroup.generate returns them: (image refs, (chunk, index) per row, prompts, metadata, values)."""
    values = [10 * i + 5 for i in range(count)]
    images = [np.full((8, 8, 3), v, dtype=np.uint8) for v in values]
    refs = [ray.put(images[s:s + per_chunk]) for s in range(0, count, per_chunk)]
    rows = [(i // per_chunk, i % per_chunk) for i in range(count)]
    prompts = prompts or [f"prompt {i}" for i in range(count)]
    return refs, rows, prompts, [{} for _ in range(count)], values


def pool_of(reward: dict, replicas: int, batch_size: int, timeout_s: float = 60, **workers) -> RewardPool:
    config = RewardWorkersConfig(num_cpus=0.5, resources={"r": {"replicas": replicas}}, **workers)
    pool = RewardPool({"r": reward}, config, timeout_s, batch_size)
    pool.ready()
    return pool


def test_rows_go_in_chunks_of_batch_size_across_the_replicas_and_keep_their_order(local_ray):
    pool = pool_of({"_component_": "tests.fault_rewards.Recorder"}, replicas=3, batch_size=3)
    try:
        refs, rows, prompts, metadata, values = step_rows(16, per_chunk=8)
        applies = torch.ones(16, dtype=torch.bool)
        applies[[5, 9]] = False  # gated out: never sent
        result = pool.score(refs, rows, prompts, metadata, {"r": applies})["r"]
    finally:
        pool.shutdown()
    scored = applies.nonzero().flatten().tolist()
    assert result.scores[scored].tolist() == pytest.approx([values[i] / 255 for i in scored])
    assert result.scores[[5, 9]].isnan().all() and not result.failed.any() and result.error is None
    assert [result.details["prompt"][i] for i in scored] == [prompts[i] for i in scored]
    # The 14 rows went as chunks of consecutive rows of at most 3: 3, 3, 3, 3, 2.
    chunks = [scored[s:s + 3] for s in range(0, 14, 3)]
    assert [[result.details["batch"][i] for i in chunk] for chunk in chunks] == [[len(c)] * len(c) for c in chunks]
    pids = [{result.details["pid"][i] for i in chunk} for chunk in chunks]
    assert all(len(p) == 1 for p in pids)  # one call, one actor per chunk
    assert len(set.union(*pids)) == 3  # ... and all three replicas scored


def test_a_hung_or_dead_replica_loses_only_its_chunk_and_is_restarted_alone(local_ray):
    reward = {"_component_": "tests.fault_rewards.SlowOn", "marker": "[hang]", "seconds": 60}
    pool = pool_of(reward, replicas=2, batch_size=2, timeout_s=3)
    try:
        refs, rows, prompts, metadata, values = step_rows(8, per_chunk=4, prompts=["[hang]"] + ["ok"] * 7)
        result = pool.score(refs, rows, prompts, metadata, {"r": torch.ones(8, dtype=torch.bool)})["r"]
        # Chunk 0 (rows 0-1) went to replica 0 and outlived the timeout; the other chunks still scored.
        assert result.failed.tolist() == [True, True] + [False] * 6 and "timed out after 3s" in result.error
        assert result.scores[2:].tolist() == pytest.approx([v / 255 for v in values[2:]])
        assert pool.restarts == {"r": [1, 0]}

        ray.kill(pool.actors["r"][1], no_restart=True)
        prompts = ["ok"] * 8
        result = pool.score(refs, rows, prompts, metadata, {"r": torch.ones(8, dtype=torch.bool)})["r"]
        # Chunk 1 (rows 2-3) went to the dead replica 1: lost and counted; it was restarted and scored on.
        assert result.failed.tolist() == [False, False, True, True] + [False] * 4 and "actor died" in result.error
        assert not any(math.isnan(result.scores[i]) for i in (0, 1, 4, 5, 6, 7))
        assert pool.restarts == {"r": [1, 1]}
        state = pool.state_dict()
        assert state["restarts"] == {"r": [1, 1]} and [len(h) for h in state["history"]["r"]] == [2, 2]
    finally:
        pool.shutdown()


def test_one_failing_replica_stops_the_run_even_when_the_reward_as_a_whole_is_under_the_limit(
        local_ray, tmp_path):
    reward = {"_component_": "tests.fault_rewards.FailsWhereMarked", "marker_dir": str(tmp_path), "delay_s": 3}
    pool = pool_of(reward, replicas=3, batch_size=2, failure_window=1, max_failure_frac=0.5)
    try:
        refs, rows, prompts, metadata, _ = step_rows(12, per_chunk=6)
        everything = {"r": torch.ones(12, dtype=torch.bool)}
        first = pool.score(refs, rows, prompts, metadata, everything)["r"]
        (tmp_path / str(first.details["pid"][0])).touch()  # the actor of chunk 0, replica 0, breaks
        with pytest.raises(RunAborted, match=r"reward 'r' \(replica 0 of 3\) failed on (\d+) of \1 samples over "
                                             r"the last 1 steps .*injected replica failure"):
            pool.score(refs, rows, prompts, metadata, everything)
    finally:
        pool.shutdown()
    # The slow failure kept replica 0 on one chunk (or two) while the others scored the rest: at most half the
    # 12 rows failed in all, which a check on the reward as a whole (limit 0.5) would have let through.
    failed, total = (sum(h[-1][k] for h in pool.history["r"]) for k in (0, 1))
    assert total == 12 and 2 <= failed <= 6


def test_replicas_are_validated_and_counted_in_the_resources_asked_for(tmp_path):
    rewards = {"r": {"_component_": "tests.fault_rewards.Recorder"}}
    spec = tiny_spec(tmp_path, rewards, ("reward_workers.num_cpus=0.5", "reward_workers.resources.r.replicas=3"))
    assert [(u.name, u.cpus, u.gpus) for u in run_units(spec, ["r"]) if u.reward == "r"] == [
        (f"reward r replica {k}", 0.5, 0) for k in range(3)]
    with pytest.raises(ConfigError) as error:
        tiny_spec(tmp_path, rewards, ("reward_workers.replicas=0", "reward_workers.resources.r.replicas=1.5",
                                      "reward_workers.resources.r.gpus=1"))
    assert error.value.problems == [  # ranges of the plain sections first, then the per-reward mappings
        "reward_workers.replicas: must be >= 1, got 0",
        "reward_workers.resources.r.replicas: must be an integer >= 1, got 1.5",
        "reward_workers.resources.r.gpus: unknown key (accepted: num_cpus, num_gpus, replicas)"]
