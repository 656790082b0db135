"""Colocated placement (`placement.mode: colocated`): one Ray actor per GPU holds a learner rank (an FSDP shard)
and a rollout replica, and time-shares the GPU between them, as verl's hybrid engine does.

    rolling out   the learner's gradients are freed, its FSDP parameters resharded and its AdamW state moved
                  to host memory; the replica samples, the decoder decodes.
    learning      AdamW state back on the device; the replica's trained weights (rewritten by the next sync
                  anyway), its static KV cache and, with `placement.offload_decoder`, the decoder and text
                  encoders are off the device.
    weight sync   the learner's buckets (FSDP shards gathered per bucket in the rollout dtype) are copied
                  into the replica's parameters in this process: no broadcast, no host copy.

The worker itself imports no Ray (scripts/gpu_check_step.py runs it in a plain process); the driver's handles on
it, `colocated_groups` and `ColocatedSync`, are in rl/distributed/actors.py.

Offloading keeps every tensor object (modules, the optimizer and compiled graphs hold them) and moves or drops
its storage only: a device storage resized to 0 bytes is freed, and one resized back is refilled from its host
copy (or by the sync). The same holds on the CPU, where the tests watch storage sizes change.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.devices import free_cached_memory
from rl.distributed import collectives
from rl.distributed.host_staging import HostStaging
from rl.distributed.learner import Learner
from rl.distributed.memory import GIB
from rl.distributed.rollout import RolloutResult, RolloutWorker
from rl.distributed.weight_sync import load_bucket
from rl.train_config import LearnerConfig, RolloutConfig, TrainerConfig

SEARCH_DEPTH = 5  # attribute levels searched for a decoder's or a cache's tensors (pipeline -> encoder -> module)


class Offload:
    """The storages of some tensors, taken off their device and put back.

    keep: copy each storage to host memory first and copy it back on `restore`; without it the contents are
    dropped and `restore` hands back uninitialised storage for the caller to fill. Storages shared by several
    tensors move once. The host copies live in packed chunks (rl/distributed/host_staging.py; pinned with `pin`,
    a GPU's copies), reused from one offload to the next while their sizes stay the same."""

    def __init__(self, keep: bool, pin: bool = False):
        self.keep = keep
        self._held: list[tuple[torch.UntypedStorage, int]] = []
        self._staging = HostStaging(pin)

    @property
    def active(self) -> bool:
        return bool(self._held)

    @property
    def nbytes(self) -> int:
        """Bytes currently off the device."""
        return sum(size for _, size in self._held)

    @property
    def host_bytes(self) -> int:
        """Bytes of host buffers held (pinned with `pin`), offloaded or not: they stay for the next offload."""
        return self._staging.nbytes

    def offload(self, tensors: Iterable[torch.Tensor]) -> int:
        """Take the tensors' storages off the device (no-op while already offloaded); returns the bytes freed."""
        if self._held:
            return 0
        seen: set[int] = set()
        for tensor in tensors:
            storage = _local(tensor).untyped_storage()
            size = storage.nbytes()
            if size == 0 or storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            self._held.append((storage, size))
        if self.keep:
            self._staging.stage([storage for storage, _ in self._held])
        for storage, _ in self._held:
            storage.resize_(0)
        return self.nbytes

    def restore(self) -> None:
        """Give every offloaded storage its bytes back (and its contents, when kept)."""
        for storage, size in self._held:
            storage.resize_(size)
        if self.keep:
            self._staging.unstage([storage for storage, _ in self._held])
        self._held = []


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2 parameters and their AdamW state); any other tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def tensors_in(obj: Any, device: torch.device) -> list[torch.Tensor]:
    """The tensors on `device` that `obj` holds: a module's parameters and buffers, tensors in attributes, lists
    and dicts, searched SEARCH_DEPTH levels deep (a decoder pipeline's modules, a KV cache's layers)."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()

    def visit(x: Any, depth: int) -> None:
        if id(x) in seen or depth > SEARCH_DEPTH:
            return
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            found.extend([x] if _on(x, device) else [])
        elif isinstance(x, nn.Module):
            found.extend(t for t in [*x.parameters(), *x.buffers()] if _on(t, device))
        elif isinstance(x, (list, tuple, dict)):
            for item in x.values() if isinstance(x, dict) else x:
                visit(item, depth + 1)
        elif hasattr(x, "__dict__") and not (inspect.isroutine(x) or isinstance(x, type)):
            for item in vars(x).values():
                visit(item, depth + 1)

    visit(obj, 0)
    return found


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    """On `device`; a device without an index ("cuda", as actors pick it) matches any of its type."""
    return tensor.device.type == device.type and device.index in (None, tensor.device.index)


class ColocatedWorker(Learner):
    """A learner rank and a rollout replica in one process: every `Learner` method (so `LearnerGroup` drives it
    as a learner rank) and `generate` (so `RolloutGroup` drives it as a replica). Each call first arranges the
    device for its phase (see the module docstring).

    offload_decoder: move the decoder and text encoders to host memory while learning (`placement.offload_decoder`,
    or rl.plan's verdict)."""

    def __init__(self, model: Mapping[str, Any], trainer: TrainerConfig, learner: LearnerConfig,
                 rollout: RolloutConfig, temperature: float, rank: int = 0, seed: int = 0,
                 offload_decoder: bool = False):
        super().__init__(model, trainer, learner, rollout.grid, temperature, rank, seed)
        # The replica uses this worker's device: the GPU share is the learner's (learner.num_gpus).
        self.replica = RolloutWorker(model, dataclasses.replace(rollout, num_gpus=learner.num_gpus))
        self.offload_decoder = offload_decoder
        pin = self.device.type == "cuda"
        self.optimizer_state = Offload(keep=True, pin=pin)
        self.decoder = Offload(keep=True, pin=pin)
        self.rollout_weights = Offload(keep=False)  # rewritten by the next sync
        self.kv_cache = Offload(keep=False)  # reset before every use
        self.layout = "built"  # then "rollout" or "learning": what the device holds (to_rollout, to_learning)

    # -- phases --------------------------------------------------------------------------------------

    def to_rollout(self) -> None:
        """Learner state off the device: gradients freed, FSDP parameters resharded, AdamW state on the host;
        then the decoder back. The replica's weights must have been synced since the last update."""
        self._park_learner()
        if self.rollout_weights.active:
            raise RuntimeError("the rollout replica's trained weights were released for the update and not synced "
                               "since: call sync_replica (the driver's sync_weights) after update")
        free_cached_memory(self.device)
        self.decoder.restore()
        self.kv_cache.restore()
        self.layout = "rollout"

    def to_learning(self) -> None:
        """Rollout state off the device: trained weights and static KV cache released, the decoder on the host
        when configured; then AdamW state back."""
        if getattr(self, "_sync_buckets", None) is not None:
            params = self.replica.policy.state_dict()
            self.rollout_weights.offload(params[item.name] for bucket in self._sync_buckets for item in bucket)
        compiled = self.replica.compiled
        self.kv_cache.offload(tensors_in(compiled._cache, self.device) if compiled is not None else [])
        if self.offload_decoder:
            self.decoder.offload(tensors_in(self.replica.decoder, self.device))
        free_cached_memory(self.device)
        self.optimizer_state.restore()
        self.layout = "learning"

    def _park_learner(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        for module in self.policy.modules():
            if hasattr(module, "reshard"):  # FSDP2 units
                module.reshard()
        self.optimizer_state.offload(t for state in self.optimizer.state.values() for t in state.values()
                                     if isinstance(t, torch.Tensor) and t.dim() > 0)

    # -- the calls the driver makes --------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], policy_seeds: Sequence[int],
                 decoder_seeds: Sequence[int]) -> tuple[RolloutResult, list[np.ndarray]]:
        self.to_rollout()
        return self.replica.generate(prompts, policy_seeds, decoder_seeds)

    def begin(self, prompts: list[str]) -> None:
        """A batch starts the learning phase: its no-grad passes (add_rows) and the update run in that layout."""
        self.to_learning()
        super().begin(prompts)

    @torch.no_grad()
    def sync_replica(self) -> int:
        """Every rank: gather the trained weights bucket by bucket (FSDP shards, rollout dtype) and copy them into
        this process's replica; returns the bytes copied. Parks the learner first, so the replica's weights come
        back where the AdamW state was."""
        self._park_learner()
        self.rollout_weights.restore()
        params, copied = self.replica.policy.state_dict(), 0
        for bucket in self.weight_buckets():
            load_bucket(params, bucket)
            copied += sum(tensor.numel() * tensor.element_size() for _, tensor in bucket)
        self.to_rollout()
        return copied

    def save(self, path: str) -> None:
        """The checkpoint needs the AdamW state on the device: saved from the learning layout (the plan's learning
        phase; restoring AdamW beside the rollout layout would hold both), then the replica re-synced in process
        and the rollout layout back."""
        self.to_learning()
        super().save(path)
        self.sync_replica()

    def load(self, path: str) -> None:
        self.to_learning()  # the sync that follows a load refills the replica
        super().load(path)

    def train(self, advantages: torch.Tensor) -> dict[str, float]:
        """Learner.train's stats plus `memory/pinned_host_gib`: the largest `host_bytes` of any worker (pinned on a
        GPU; on the CPU the same staging bytes, unpinned). Every rank calls train, so the max is a collective."""
        stats = super().train(advantages)
        return stats | {"memory/pinned_host_gib": self._largest_over_ranks(self.host_bytes) / GIB}

    @property
    def host_bytes(self) -> int:
        """Host staging bytes this worker holds (pinned on a GPU): the AdamW state's chunks, once it has been
        offloaded (after the first update), and the decoder's, with offload_decoder."""
        return self.optimizer_state.host_bytes + self.decoder.host_bytes

    def _largest_over_ranks(self, value: int) -> int:
        if self.world_size == 1:
            return value
        largest = torch.tensor([value], device=self.device)  # NCCL reduces device tensors only
        collectives.all_reduce(largest, dist.ReduceOp.MAX, "the largest worker's pinned host bytes")
        return int(largest.item())

    def ping(self) -> bool:
        return True
