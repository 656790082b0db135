"""Where the actors go (rl/distributed/placement.py), without Ray: first-fit over nodes and GPUs, split
placement on separate nodes, reward GPU shares, and the numbers given when the cluster is too small."""

from pathlib import Path

import pytest
from train_helpers import tiny_spec

from core.config import ConfigError
from rl.distributed.placement import NodeInfo, Slot, Unit, assign, nccl_share_problems, run_units


def nodes(count: int, gpus: int, cpus: float | None = None) -> list[NodeInfo]:
    return [NodeInfo(i, gpus, cpus) for i in range(count)]


def units(kind: str, count: int, gpus: float, cpus: float = 1.0) -> list[Unit]:
    return [Unit(kind, i, f"{kind} {i}", cpus, gpus) for i in range(count)]


def test_split_fills_nodes_in_order_unless_asked_to_separate_them():
    run = units("learner", 2, 1) + units("rollout", 2, 1)
    packed = assign(run, nodes(2, 4))
    assert [packed.slots[u] for u in run] == [Slot(0, 0), Slot(0, 1), Slot(0, 2), Slot(0, 3)]
    separate = assign(run, nodes(2, 4), separate_nodes=True)
    assert [separate.slots[u] for u in run] == [Slot(0, 0), Slot(0, 1), Slot(1, 0), Slot(1, 1)]
    assert not packed.problems and not separate.problems


def test_reward_shares_fit_where_a_gpu_has_them_left():
    run = units("learner", 2, 0.9) + [Unit("reward", 0, "reward a", 1, 0.05), Unit("reward", 1, "reward b", 1, 0.05),
                                      Unit("reward", 2, "reward big", 1, 0.5), Unit("reward", 3, "reward cpu", 1, 0)]
    placement = assign(run, nodes(1, 3))
    assert [placement.slots[u] for u in run] == [Slot(0, 0), Slot(0, 1), Slot(0, 0), Slot(0, 0), Slot(0, 2),
                                                  Slot(0, None)]
    full = assign(run, nodes(1, 2))  # the 0.5 share finds no GPU with half of it free
    assert full.problems and "reward big" in full.problems[0] and "1 of 6 actors cannot be placed" in full.problems[0]


def test_a_cluster_too_small_is_reported_with_the_numbers():
    run = units("learner", 4, 1, cpus=2) + units("rollout", 2, 1, cpus=2)
    placement = assign(run, nodes(2, 2, cpus=8))
    (problem,) = placement.problems
    assert "asks for 6 GPUs and 12 CPUs (learner 4 x (2 CPU, 1 GPU), rollout 2 x (2 CPU, 1 GPU))" in problem
    assert "the cluster has 4 GPUs on 2 node(s) (node 0: 2 GPUs, 8 CPUs; node 1: 2 GPUs, 8 CPUs)" in problem
    assert "2 of 6 actors cannot be placed: rollout 0, rollout 1" in problem
    cpus = assign(units("rollout", 3, 0, cpus=4), nodes(1, 0, cpus=8))
    assert "1 of 3 actors cannot be placed: rollout 2" in cpus.problems[0]


def test_run_units_follow_the_config(tmp_path: Path):
    spec = tiny_spec(tmp_path, overrides=("learner.world_size=2", "learner.num_gpus=1", "rollout.num_actors=3",
                                          "rollout.num_gpus=0.5", "reward_workers.resources={ocr: {num_gpus: 0.25}}"))
    kinds = [(u.kind, u.cpus, u.gpus) for u in run_units(spec, ["ocr"])]
    assert kinds == [("learner", 1, 1), ("learner", 1, 1), ("rollout", 1, 0.5), ("rollout", 1, 0.5),
                     ("rollout", 1, 0.5), ("reward", 1, 0.25)]
    colocated = tiny_spec(tmp_path, overrides=("placement.mode=colocated", "learner.world_size=2", "learner.num_gpus=1",
                                               "rollout.num_actors=2"))
    assert [(u.kind, u.cpus, u.gpus) for u in run_units(colocated, [])] == [("worker", 2, 1), ("worker", 2, 1)]


def test_placement_keys_are_validated(tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        tiny_spec(tmp_path, overrides=("placement.mode=colocated", "placement.separate_nodes=true",
                                       "rollout.num_actors=2", "rollout.num_gpus=2",
                                       "learner.weight_sync=collective"))
    problems = "\n".join(error.value.problems)
    for key in ("rollout.num_actors: colocated placement", "learner.num_gpus: colocated workers",
                "placement.separate_nodes: applies to split", "rollout.num_gpus: must be in [0, 1]",
                "learner.weight_sync: colocated workers copy"):
        assert key in problems
    # A value out of its type's range is reported with the other sections' such problems, before cross-field checks.
    with pytest.raises(ConfigError, match="ray.start_timeout_s: must be > 0"):
        tiny_spec(tmp_path, overrides=("ray.start_timeout_s=0",))
    with pytest.raises(ConfigError, match="placement.offload_decoder: applies to colocated placement only"):
        tiny_spec(tmp_path, overrides=("placement.offload_decoder=true",))


@pytest.mark.parametrize("overrides, keys", [
    # FSDP's group: two learner ranks
    (("learner.world_size=2", "learner.num_gpus=0.5", "learner.weight_sync=object_store"), ["learner.num_gpus"]),
    # the weight-sync group: learner rank 0 and the rollout replicas ("auto" is collective on GPUs)
    (("learner.num_gpus=1", "rollout.num_actors=2", "rollout.num_gpus=0.5"), ["rollout.num_gpus"]),
    (("learner.num_gpus=0.5", "rollout.num_gpus=0.5"), ["learner.num_gpus + rollout.num_gpus"]),
    (("learner.num_gpus=0.6", "rollout.num_actors=2", "rollout.num_gpus=0.6"), []),  # room for a reward actor
    # no NCCL group to join: shares are fine
    (("learner.num_gpus=0.5", "rollout.num_actors=2", "rollout.num_gpus=0.5", "learner.weight_sync=object_store"),
     []),
    (("placement.mode=colocated", "learner.world_size=2", "rollout.num_actors=2", "learner.num_gpus=0.9"), []),
    (("learner.world_size=2", "learner.num_gpus=1", "rollout.num_actors=2", "rollout.num_gpus=1"), []),
])
def test_actors_of_an_nccl_group_never_share_a_gpu(tmp_path: Path, overrides, keys):
    problems = nccl_share_problems(tiny_spec(tmp_path, overrides=overrides))
    assert [p.split(":")[0] for p in problems] == keys
    assert all("Duplicate GPU detected" in p for p in problems)
