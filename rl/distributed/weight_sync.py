"""Moving the learner's weights into the rollout actors after each update.

Two transports, chosen by `learner.weight_sync`:
- object store: the learner puts one CPU copy of the state dict in Ray's object store and every rollout
  actor loads it (works everywhere; the CPU default).
- collective: a process group of its own (learner rank 0 = rank 0, rollout actors = ranks 1..n) built
  from a TCPStore, independent of any FSDP group; the learner broadcasts the weights in flat buckets.
  NCCL moves GPU memory to GPU memory without a host copy; gloo runs the same code on CPU (the tests).
Both sides walk the state dict in the same (sorted-name) order, so no metadata travels.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist

BUCKET_BYTES = 256 * 2**20  # large enough to amortise launch cost, small enough to bound the extra memory


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
        if backend == "nccl":
            self._pg = dist.ProcessGroupNCCL(store, rank, world_size)
        elif backend == "gloo":
            self._pg = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            raise ValueError(f"weight-sync backend must be 'gloo' or 'nccl', got {backend!r}")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self._store = store  # the group needs its store alive

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        self._pg.broadcast([tensor], opts).wait()

    def send_state(self, state: Mapping[str, torch.Tensor], device: torch.device) -> None:
        """Rank 0: broadcast every tensor of `state` (in sorted-name order, bucketed by dtype)."""
        for bucket in _buckets(state):
            flat = torch.cat([state[name].detach().reshape(-1).to(device) for name in bucket])
            self.broadcast(flat)

    def receive_state(self, model: torch.nn.Module, reference: Mapping[str, torch.Tensor],
                      device: torch.device) -> None:
        """Ranks > 0: receive into `model`. `reference` gives the sender's names, shapes and dtypes
        (a state dict of the same architecture in the learner's dtype, e.g. on the meta device)."""
        params = model.state_dict()
        for bucket in _buckets(reference):
            numel = sum(reference[name].numel() for name in bucket)
            flat = torch.empty(numel, dtype=reference[bucket[0]].dtype, device=device)
            self.broadcast(flat)
            offset = 0
            with torch.no_grad():
                for name in bucket:
                    n = reference[name].numel()
                    params[name].copy_(flat[offset:offset + n].view(reference[name].shape))
                    offset += n


def _buckets(state: Mapping[str, torch.Tensor]) -> Iterator[list[str]]:
    """Consecutive names (sorted) of one dtype whose total size stays under BUCKET_BYTES."""
    bucket: list[str] = []
    size = 0
    for name in sorted(state):
        tensor = state[name]
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or tensor.dtype != state[bucket[0]].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(name)
        size += nbytes
    if bucket:
        yield bucket
