"""Every collective of the project goes through here, so that one rule holds for all of them: a collective takes
tensors on a device its group has a backend for.

NCCL groups have no CPU backend ("No backend type associated with device type cpu"); gloo takes CPU and CUDA
tensors alike, so a CPU tensor that slips into a collective passes every CPU test and crashes the first GPU run
with more than one rank. The check below reads the group's backends, not the machine, so a group made on the CPU
with only an accelerator backend (`init_process_group("cuda:gloo")`, tests/test_collectives.py) refuses a CPU
tensor here exactly as NCCL would, with a message that names the tensor's device and the group's.

What CPU tests cannot reach: on a CPU rank the CPU is the right device, so a rank that computes on the CPU by
mistake while its group is NCCL only shows on a GPU (scripts/gpu_check.sh runs the learner there).
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist


def join_default_group(device: torch.device, address: str, rank: int, world_size: int, timeout_s: float) -> None:
    """Join the default process group at `address` ("tcp://host:port") with the backend for `device`'s type
    (gloo for the CPU, NCCL for CUDA) and bound to `device` when it is an accelerator, as NCCL wants."""
    backend = dist.Backend.default_device_backend_map[device.type]
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=None if device.type == "cpu" else device)


def device_types(group: dist.ProcessGroup | None = None, backend: str | None = None) -> set[str]:
    """The device types `group` has a backend for: from its backend config ("cuda:nccl" -> {"cuda"}) for a group
    of the default world, or from `backend`'s capability for a standalone group (`dist.ProcessGroupNCCL(...)`)."""
    if backend is not None:
        return set(dist.Backend.backend_capability[backend])
    config = dist.get_backend_config(group)  # "cpu:gloo,cuda:gloo", "cuda:nccl", ...
    return {entry.split(":")[0] for entry in config.split(",")}


def check_device(tensor: torch.Tensor, types: set[str], what: str) -> None:
    """Refuse `tensor` unless its device type is one of `types` (the group's)."""
    if tensor.device.type not in types:
        raise RuntimeError(f"{what}: a {tensor.device.type} tensor sent to a collective of a group with backends "
                           f"for {sorted(types)} only; build it on the rank's device (rl/distributed/collectives.py)")


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp, what: str, group: dist.ProcessGroup | None = None) -> None:
    """In-place all-reduce of `tensor` over `group` (the default group when None)."""
    check_device(tensor, device_types(group), what)
    dist.all_reduce(tensor, op=op, group=group)


def all_gather_into_tensor(out: torch.Tensor, local: torch.Tensor, group: dist.ProcessGroup, what: str) -> dist.Work:
    """Start gathering every rank's `local` [S] into `out` [world * S]; returns the work to wait on."""
    types = device_types(group)
    check_device(local, types, what)
    check_device(out, types, what)
    return dist.all_gather_into_tensor(out, local, group=group, async_op=True)


def standalone_group(store: dist.Store, backend: str, rank: int, world_size: int,
                     timeout_s: float) -> dist.ProcessGroup:
    """A process group outside the default world (the weight sync's), on `store`, with `timeout_s` per collective."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":  # CUDA only: scripts/gpu_check.sh
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    raise ValueError(f"weight-sync backend must be 'gloo' or 'nccl', got {backend!r}")


def broadcast(group: dist.ProcessGroup, backend: str, tensor: torch.Tensor, what: str) -> dist.Work:
    """Start broadcasting `tensor` from rank 0 of the standalone `group` (built with `backend`)."""
    check_device(tensor, device_types(backend=backend), what)
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)
