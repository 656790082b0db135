"""Moving the learner's trained weights into the rollout actors after each update.

Only what the learner trains travels (never the frozen text head; with LoRA, the adapted layers' merged
weights), cast to the rollout dtype, in buckets of about BUCKET_BYTES. The learner side is one generator,
`gathered_buckets`: it turns each bucket's FSDP shards into full tensors with one all-gather over the learner's
ranks, starting the next bucket's all-gather before handing out the current one, so that gather and the
consumer's transfer overlap (async work handles: NCCL streams on GPUs, gloo's threads on CPU). Consumers:
- `CollectiveGroup.send_buckets`: a process group of its own (learner rank 0 = rank 0, rollout actors = ranks
  1..n) built from a TCPStore, independent of the FSDP group; each bucket is one flat broadcast, device to
  device over NCCL (no host copy), gloo on CPU (the tests).
- the object store (`learner.weight_sync: object_store`): rank 0 puts each bucket in it.
- a colocated rollout replica in the learner's process: `load_bucket` on each bucket, an in-process copy.
Every side walks the same `SyncSpec` (names, shapes, dtype, bucket boundaries), so no metadata travels.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from rl.distributed import collectives

BUCKET_BYTES = 256 * 2**20  # large enough to amortise launch cost, small enough to bound the extra memory
Bucket = list[tuple[str, torch.Tensor]]


@dataclass(frozen=True)
class SyncItem:
    """One tensor the rollout actors receive: `name` (X-Omni's), its full `shape`, and `local()`: the rows of it
    this learner rank holds ([rows_r, ...] in any dtype; FSDP2's torch.chunk layout on dim 0; all rows when
    unsharded). `local` may run a collective (LoRA gathers A), so every rank calls it in the same order."""

    name: str
    shape: torch.Size
    local: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class SyncSpec:
    """What one sync sends: `buckets` of (name, shape), in order, all in `dtype` (a torch dtype name)."""

    dtype: str
    buckets: list[list[tuple[str, tuple[int, ...]]]]

    @property
    def nbytes(self) -> int:
        size = torch.empty(0, dtype=getattr(torch, self.dtype)).element_size()
        return sum(_numel(shape) * size for bucket in self.buckets for _, shape in bucket)


def plan_buckets(items: Sequence[SyncItem], dtype: torch.dtype, bucket_bytes: int = BUCKET_BYTES
                 ) -> list[list[SyncItem]]:
    """Consecutive items whose full size in `dtype` stays under `bucket_bytes` (a larger tensor goes alone)."""
    size = torch.empty(0, dtype=dtype).element_size()
    buckets: list[list[SyncItem]] = []
    total = 0
    for item in items:
        nbytes = _numel(item.shape) * size
        if not buckets or total + nbytes > bucket_bytes:
            buckets.append([])
            total = 0
        buckets[-1].append(item)
        total += nbytes
    return buckets


def spec_of(buckets: Sequence[Sequence[SyncItem]], dtype: torch.dtype) -> SyncSpec:
    return SyncSpec(str(dtype).removeprefix("torch."),
                    [[(item.name, tuple(item.shape)) for item in bucket] for bucket in buckets])


def gathered_buckets(buckets: Sequence[Sequence[SyncItem]], dtype: torch.dtype,
                     group: dist.ProcessGroup | None) -> Iterator[Bucket]:
    """Each bucket as [(name, full tensor in `dtype`)], on the learner's device.

    group: the learner's ranks (every one iterates: each bucket is one all-gather), or None when unsharded. The
    all-gather of bucket k + 1 is in flight while the caller consumes bucket k; a yielded bucket stays valid
    until the next one is asked for.
    """
    if not buckets:
        return
    pending = _start_gather(buckets[0], dtype, group)
    for k in range(len(buckets)):
        following = _start_gather(buckets[k + 1], dtype, group) if k + 1 < len(buckets) else None
        yield _finish_gather(buckets[k], *pending)
        pending = following


def _start_gather(bucket: Sequence[SyncItem], dtype: torch.dtype, group: dist.ProcessGroup | None):
    """This rank's rows of every item, padded to the per-rank chunk and concatenated: [S]; with the all-gather
    into [world * S] started (async). Unsharded: the full tensors, nothing to gather."""
    if group is None:
        return [item.local().to(dtype) for item in bucket], None, 1
    world = group.size()
    pieces = []
    for item in bucket:
        local = item.local().to(dtype).reshape(-1)
        padded = _chunk_rows(item.shape, world) * _numel(item.shape[1:])
        pieces.append(torch.nn.functional.pad(local, (0, padded - local.numel())))
    flat = torch.cat(pieces)
    out = flat.new_empty(world * flat.numel())
    return out, collectives.all_gather_into_tensor(out, flat, group, "the weight-sync all-gather"), world


def _finish_gather(bucket: Sequence[SyncItem], gathered, work, world: int) -> Bucket:
    if work is None:
        return [(item.name, tensor) for item, tensor in zip(bucket, gathered, strict=True)]
    work.wait()
    per_rank = gathered.view(world, -1)  # [world, S]: rank r's padded rows of every item, in order
    out, offset = [], 0
    for item in bucket:
        rows = _chunk_rows(item.shape, world)
        padded = rows * _numel(item.shape[1:])
        full = per_rank[:, offset:offset + padded].reshape(world * rows, *item.shape[1:])[: item.shape[0]]
        out.append((item.name, full))
        offset += padded
    return out


def _chunk_rows(shape: Sequence[int], world: int) -> int:
    return -(-shape[0] // world) if len(shape) else 1


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def load_bucket(params: Mapping[str, torch.Tensor], bucket: Bucket) -> None:
    """Copy a bucket into a model's tensors (its `state_dict()`): the colocated / object-store receiver."""
    with torch.no_grad():
        for name, tensor in bucket:
            params[name].copy_(tensor)


def free_port() -> int:
    """A TCP port that was free a moment ago on this host (for the group's store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    """An address of this host that other nodes can reach (Ray's view when Ray runs)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


class CollectiveGroup:
    """A standalone process group (not the default one) for broadcasting weights.

    Rank 0 hosts the TCPStore at (host, port). Every member must construct it; construction blocks until
    all `world_size` members have joined or `timeout_s` passes.
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 timeout_s: float = 300.0):
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        store = dist.PrefixStore("xomni-weight-sync", store)
        self._pg = collectives.standalone_group(store, backend, rank, world_size, timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self._store = store  # the group needs its store alive

    def _broadcast(self, tensor: torch.Tensor) -> dist.Work:
        return collectives.broadcast(self._pg, self.backend, tensor, "the weight-sync broadcast")

    def send_buckets(self, buckets: Iterator[Bucket]) -> int:
        """Rank 0: broadcast each bucket as one flat tensor; returns the bytes sent. A bucket's broadcast runs
        while the next bucket is gathered; at most two are in flight."""
        sent, in_flight = 0, []
        for bucket in buckets:
            flat = torch.cat([tensor.reshape(-1) for _, tensor in bucket])
            in_flight.append((self._broadcast(flat), flat))
            sent += flat.numel() * flat.element_size()
            if len(in_flight) > 1:
                in_flight.pop(0)[0].wait()
        for work, _ in in_flight:
            work.wait()
        return sent

    def receive_buckets(self, model: nn.Module, spec: SyncSpec, device: torch.device) -> None:
        """Ranks > 0: receive every bucket of `spec` into `model`'s tensors of the same names."""
        params = model.state_dict()
        dtype = getattr(torch, spec.dtype)
        for bucket in spec.buckets:
            flat = torch.empty(sum(_numel(shape) for _, shape in bucket), dtype=dtype, device=device)
            self._broadcast(flat).wait()
            views, offset = [], 0
            for name, shape in bucket:
                views.append((name, flat[offset:offset + _numel(shape)].view(shape)))
                offset += _numel(shape)
            load_bucket(params, views)
