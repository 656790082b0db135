"""Collectives take tensors on their group's device (rl/distributed/collectives.py), checked on the CPU with a
gloo group that has a backend for CUDA only (`"cuda:gloo"`): it refuses CPU tensors as an NCCL group does
("No backend type associated with device type cpu"), so the rule is tested without a GPU. That the learner's own
tensors are on its device is not reachable here (a CPU rank's device is the CPU); scripts/gpu_check.sh covers it."""

import ast
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rl.distributed import collectives
from rl.distributed.micro_batches import reduce_stats
from rl.distributed.weight_sync import SyncItem, gathered_buckets, plan_buckets

REPO = Path(__file__).resolve().parents[1]
# torch.distributed's collectives, and the ProcessGroup methods behind them (names no tensor method has).
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
               "broadcast", "all_to_all", "all_to_all_single", "reduce", "gather", "scatter", "all_gather_object",
               "broadcast_object_list", "gather_object", "scatter_object_list", "send", "recv", "isend", "irecv",
               "barrier"}
GROUP_METHODS = {"allreduce", "allgather", "broadcast", "reduce_scatter", "alltoall_base", "barrier"}


@pytest.fixture
def group(tmp_path, request):
    """The default group of this process (world size 1) with backends for the devices in `request.param`."""
    dist.init_process_group(request.param, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


@pytest.mark.parametrize("group", ["cuda:gloo"], indirect=True)
def test_a_cpu_tensor_is_refused_by_every_collective_of_an_accelerator_group(group):
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        dist.all_reduce(torch.ones(2))  # what NCCL says, deep in a Ray traceback, without the rule
    assert collectives.device_types(group) == {"cuda"}
    with pytest.raises(RuntimeError, match=r"the learner's stat loss/total: a cpu tensor .* for \['cuda'\] only"):
        reduce_stats({"loss/total": torch.tensor(1.0)}, world_size=2)  # as a learner of 2 ranks reduces
    item = SyncItem("w", torch.Size([2, 2]), lambda: torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="the weight-sync all-gather: a cpu tensor"):
        next(gathered_buckets(plan_buckets([item], torch.float32), torch.float32, group))
    with pytest.raises(RuntimeError, match="the weight-sync broadcast: a cpu tensor"):
        collectives.broadcast(group, "nccl", torch.zeros(2), "the weight-sync broadcast")


@pytest.mark.parametrize("group", ["gloo"], indirect=True)
def test_a_cpu_group_reduces_cpu_tensors(group):
    assert collectives.device_types(group) == {"cpu", "cuda"}
    stats = reduce_stats({"loss/total": torch.tensor(3.0), "ratio/max": torch.tensor(2.0)}, world_size=1)
    assert stats == {"loss/total": 3.0, "ratio/max": 2.0}
    value = torch.tensor([1.0, 2.0])
    collectives.all_reduce(value, dist.ReduceOp.SUM, "a test", group)
    assert value.tolist() == [1.0, 2.0]


def test_no_collective_is_called_outside_the_collectives_module():
    """The rule holds in one place only if every collective passes through it."""
    calls = []
    for package in ("core", "rewards", "prompts", "rl"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "rl" / "distributed" / "collectives.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                receiver, name = ast.unparse(node.func.value), node.func.attr
                if receiver == "collectives":
                    continue
                if (receiver in ("dist", "torch.distributed") and name in COLLECTIVES) or name in GROUP_METHODS:
                    calls.append(f"{path.relative_to(REPO)}:{node.lineno} {receiver}.{name}(")
    assert calls == []


def wait_alone(rank: int, port: int, out: str) -> None:
    """Rank 0 all-reduces; rank 1 never does, so rank 0 waits until learner.collective_timeout_s (2 s) ends it.
    Rank 1 stays in the group until rank 0 has its answer (a rank that left would end the wait early)."""
    collectives.join_default_group(torch.device("cpu"), f"tcp://127.0.0.1:{port}", rank, 2, timeout_s=2.0)
    if rank == 1:
        deadline = time.monotonic() + 20
        while not Path(out).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return
    began = time.monotonic()
    try:
        collectives.all_reduce(torch.ones(1), dist.ReduceOp.SUM, "a test")
        Path(out).write_text("returned")
    except RuntimeError as e:
        Path(out).write_text(f"{time.monotonic() - began:.1f} {e}")


def test_a_collective_waits_no_longer_than_the_configured_timeout(tmp_path):
    from rl.distributed.weight_sync import free_port

    out = tmp_path / "rank0.txt"
    mp.spawn(wait_alone, args=(free_port(), str(out)), nprocs=2, join=True)
    waited, message = out.read_text().split(" ", 1)
    assert float(waited) < 15 and "timed out" in message.lower(), message
