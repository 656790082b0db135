"""Placement through the real `rl.train` driver, with GPUs declared to Ray on this GPU-less machine (the actors
run on the CPU): a split run on 4 declared GPUs, a split run across a two-node `ray.cluster_utils.Cluster`
with the learner ranks on one node and the rollout replicas on the other, a joined cluster too small for the
run, and an oversubscribed local Ray. None of them may wait without a bound."""

import os
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from train_helpers import REPO, save_config, tiny_spec

from rl.distributed.reward_pool import RunAborted
from rl.driver.trainer import Trainer
from rl.evaluation.metrics import read_metrics
from rl.plan import DoesNotFit
from rl.train import main

FOUR_GPUS = ("learner.world_size=2", "learner.num_gpus=1", "rollout.num_actors=2", "rollout.num_gpus=1",
             "placement.gpu_memory_gib=16", "trainer.steps=1")


def train(tmp_path, capsys, *overrides) -> tuple[int, str, str]:
    """`python -m rl.train` (its `main`, in this process: it starts and stops its own local Ray)."""
    config = save_config(tiny_spec(tmp_path).cfg, tmp_path / "tiny.yaml")
    code = main([str(config), *overrides])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_split_run_on_four_declared_gpus(tmp_path, capsys):
    code, out, err = train(tmp_path, capsys, "ray.num_gpus=4", "ray.num_cpus=6", *FOUR_GPUS)
    assert code == 0, err[-3000:]
    assert "node 0 GPUs 0-1 (each): learner rank" in out
    assert "node 0 GPUs 2-3 (each): rollout replica" in out and "verdict: fits" in out
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_an_oversubscribed_local_ray_stops_with_the_numbers(tmp_path, capsys):
    """40 rollout actors on a 2-core machine: Ray accepts them (64 CPUs declared) but cannot start them all (each
    loads torch and the policy: a few seconds of CPU). The timeout is short because the actors that do start burn
    the machine's cores until it ends."""
    began = time.monotonic()
    code, _, err = train(tmp_path, capsys, "ray.num_cpus=64", "rollout.num_actors=40", "ray.start_timeout_s=8")
    assert code == 1, err[-3000:]
    assert time.monotonic() - began < 300
    stopped = err[err.index("run stopped:"):]
    assert "after 8s (ray.start_timeout_s) only" in stopped and "of 40 rollout actors" in stopped
    assert f"this machine has {os.cpu_count()} CPU cores" in stopped and "declares 64 CPUs (ray.num_cpus)" in stopped


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of 2 declared GPUs and 3 CPUs each; this process joins it as rl.train's driver would."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "num_gpus": 2})
    nodes.add_node(num_cpus=3, num_gpus=2)
    nodes.wait_for_nodes()
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(address=nodes.address, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield nodes.address
    ray.shutdown()
    nodes.shutdown()


def where(actors) -> set[str]:
    return set(ray.get([a.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                        for a in actors]))


def test_split_run_across_two_nodes_puts_learner_and_rollout_on_different_nodes(cluster, tmp_path):
    spec = tiny_spec(tmp_path, overrides=(f"ray.address={cluster}", *FOUR_GPUS, "placement.separate_nodes=true"))
    with Trainer(spec) as trainer:
        trainer.fit()
        learner, rollout = where(trainer.learner.ranks), where(trainer.rollout.actors)
    nodes = [n.node_id for n in trainer.plan.nodes]
    assert learner == {nodes[0]} and rollout == {nodes[1]} and nodes[0] != nodes[1]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_a_joined_cluster_without_enough_gpus_fails_fast_with_the_numbers(cluster, tmp_path):
    too_big = (f"ray.address={cluster}", *FOUR_GPUS, "learner.world_size=4", "ray.placement_timeout_s=3")
    began = time.monotonic()
    with pytest.raises(DoesNotFit) as refused:
        Trainer(tiny_spec(tmp_path, overrides=too_big))
    assert time.monotonic() - began < 60
    message = str(refused.value)
    assert "the run asks for 6 GPUs" in message and "the cluster has 4 GPUs on 2 node(s)" in message
    # Started anyway, the rollout replicas' placement group waits 3 s, then the run stops with the numbers.
    with pytest.raises(RunAborted, match=r"rollout replicas could not be placed within 3s .* 0 GPUs and \d+ CPUs free"):
        Trainer(tiny_spec(tmp_path, overrides=(*too_big, "placement.check=warn", "run.overwrite=true")))
    deadline = time.monotonic() + 30  # the learner's group is released (Ray frees a removed group's bundles soon after)
    while ray.available_resources().get("GPU") != 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("GPU") == 4


def test_an_actor_resolves_to_a_gpu_only_when_ray_gave_it_one(cluster):
    """Ray 2.60 leaves CUDA_VISIBLE_DEVICES as it is for an actor that asked for no GPU, so "auto" devices must ask
    Ray, not CUDA. The GPU is mocked (none exists here): the accelerator and CUDA are said to be available."""

    def resolved() -> str:
        from unittest import mock

        import torch

        from core.devices import resolve_device

        with (mock.patch.object(torch.accelerator, "current_accelerator", return_value=torch.device("cuda")),
              mock.patch.object(torch.cuda, "is_available", return_value=True)):
            return str(resolve_device(None))

    probes = [ray.remote(num_gpus=gpus, num_cpus=0)(resolved).remote() for gpus in (0, 1)]
    assert ray.get(probes) == ["cpu", "cuda"]


def test_the_drivers_nccl_and_cuda_settings_reach_the_actors(monkeypatch):
    """On a joined cluster the workers inherit `ray start`'s environment, so init_ray passes these on."""
    from rl.distributed.actors import actor_env

    for key, value in {"NCCL_DEBUG": "INFO", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "CUDA_LAUNCH_BLOCKING": "1",
                       "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False", "CUDA_VISIBLE_DEVICES": "3",
                       "TOKENIZERS_PARALLELISM": "true"}.items():
        monkeypatch.setenv(key, value)
    env = actor_env()
    assert env["NCCL_DEBUG"] == "INFO" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert env["CUDA_LAUNCH_BLOCKING"] == "1" and "CUDA_VISIBLE_DEVICES" not in env  # Ray's to set per actor
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"  # the user's, kept
    assert env["TOKENIZERS_PARALLELISM"] == "false"
