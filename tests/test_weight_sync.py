"""The weight sync's learner side, `gathered_buckets`, on two gloo ranks in spawned processes: FSDP2-style
row shards (uneven, one rank holding none of a tensor) come back as the full tensors in the rollout dtype, bucket
by bucket, and the next bucket's all-gather is already started when the current one is handed out."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rl.distributed.weight_sync import SyncItem, gathered_buckets, load_bucket, plan_buckets, spec_of

SHAPES = {"a": (5, 3), "b": (1, 4), "c": (8,), "d": (7, 2, 2)}  # "b": rank 1 holds no row


def full_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}


def run_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    started = []

    def local(name: str) -> torch.Tensor:  # this rank's torch.chunk rows, as FSDP2 holds them
        started.append(name)
        chunks = torch.chunk(full_tensors()[name], world)
        return chunks[rank] if rank < len(chunks) else full_tensors()[name][:0]

    items = [SyncItem(name, torch.Size(shape), lambda n=name: local(n)) for name, shape in SHAPES.items()]
    buckets = plan_buckets(items, torch.bfloat16, bucket_bytes=40)  # several buckets of one or two tensors
    received, started_when_handed = {}, []
    for bucket in gathered_buckets(buckets, torch.bfloat16, dist.group.WORLD):
        started_when_handed.append(list(started))
        received.update({name: tensor.clone() for name, tensor in bucket})
    torch.save({"received": received, "started": started_when_handed,
                "buckets": [[i.name for i in b] for b in buckets]}, out.format(rank=rank))
    dist.destroy_process_group()


def test_shards_come_back_whole_in_the_sync_dtype_bucket_by_bucket(tmp_path):
    from rl.distributed.weight_sync import free_port

    out = str(tmp_path / "rank{rank}.pt")
    mp.spawn(run_rank, args=(2, free_port(), out), nprocs=2, join=True)
    expected = full_tensors()
    for rank in (0, 1):
        result = torch.load(out.format(rank=rank), weights_only=True)
        assert len(result["buckets"]) > 2
        for name, tensor in expected.items():
            assert torch.equal(result["received"][name], tensor.to(torch.bfloat16)), name
        # When bucket k is handed out, bucket k + 1's shards were already taken (its all-gather is in flight).
        names = [n for bucket in result["buckets"] for n in bucket]
        for k, started in enumerate(result["started"]):
            upto = sum(len(b) for b in result["buckets"][: k + 2])
            assert started == names[:upto]


def test_a_spec_lists_the_buckets_and_their_bytes_and_load_bucket_copies_in_place():
    items = [SyncItem(name, torch.Size(shape), lambda: None) for name, shape in SHAPES.items()]
    spec = spec_of(plan_buckets(items, torch.bfloat16, bucket_bytes=40), torch.bfloat16)
    assert [n for bucket in spec.buckets for n, _ in bucket] == list(SHAPES)
    assert spec.dtype == "bfloat16" and spec.nbytes == 2 * (15 + 4 + 8 + 28)
    target = {name: torch.zeros(shape) for name, shape in SHAPES.items()}
    load_bucket(target, [("a", torch.ones(5, 3, dtype=torch.bfloat16))])
    assert torch.equal(target["a"], torch.ones(5, 3)) and not target["b"].any()
