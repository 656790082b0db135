"""The learner side and where every actor goes: `learner` and `placement`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Ge, Gt

from core.devices import DtypeName


@dataclass
class LearnerConfig:
    """The learner actors: one, or `world_size` ranks that shard the policy with FSDP2."""

    world_size: Annotated[int, Ge(1)] = 1
    """Learner actors; more than 1 shards the policy with FSDP2 across them (torch.distributed inside the Ray
    actors: NCCL on GPUs, gloo on CPUs)."""
    num_gpus: Annotated[float, Ge(0)] = 0.0
    """GPU share of one learner actor, in [0, 1]. In colocated placement, the share of one worker (which also holds
    a rollout replica)."""
    num_cpus: Annotated[float, Ge(0)] = 1.0
    """CPUs of one learner actor (in colocated placement a worker gets learner.num_cpus + rollout.num_cpus)."""
    dtype: DtypeName = "float32"
    """dtype of the trained parameters; keep "float32": AdamW on bf16 weights loses small updates."""
    reference_dtype: DtypeName = "bfloat16"
    """dtype of the frozen reference policy (with LoRA: of the whole frozen base, which is the reference)."""
    mixed_precision: bool = False
    """bf16 compute with fp32 master weights (FSDP's MixedPrecisionPolicy when sharded, autocast otherwise)."""
    grad_sync: Literal["last_micro_batch", "every_micro_batch"] = "last_micro_batch"
    """When sharded: "last_micro_batch" reduce-scatters gradients once per optimizer step (earlier micro-batches
    accumulate unsharded fp32 gradients: one full gradient copy per GPU); "every_micro_batch" after each
    micro-batch (sharded gradient memory, more communication)."""
    collective_timeout_s: Annotated[float, Gt(0)] = 1800.0
    """How long a rank of the learner's process group or of the weight-sync group waits in a collective before it
    fails (NCCL's default is 10 minutes): above the longest step a rank can spend alone, such as a 7B sharded
    checkpoint save to shared storage."""
    weight_sync: Literal["auto", "object_store", "collective"] = "auto"
    """How trained weights reach the rollout actors: "auto" (an NCCL broadcast when the learner and rollout actors
    have GPUs, else the object store), "object_store" or "collective". Colocated placement copies them within
    each worker's process ("auto")."""


@dataclass
class PlacementConfig:
    """Where the actors go, and the memory plan checked before any of them starts (`python -m rl.plan`)."""

    mode: Literal["colocated", "split"] = "split"
    """"split": learner ranks and rollout replicas on GPUs of their own. "colocated": one worker per GPU holds a
    learner rank and a rollout replica and time-shares the GPU (rl/distributed/colocated.py)."""
    separate_nodes: bool = False
    """Split placement only: learner ranks and rollout replicas on disjoint nodes (learner first)."""
    offload_decoder: bool | None = None
    """Colocated placement only: move the decoder and text encoders to host memory while the learner works (and
    back for the rollout). null lets the memory plan decide (offloaded when a GPU's learning phases would not fit
    with them; never when the GPUs' memory is unknown)."""
    check: Literal["error", "warn"] = "error"
    """"error" refuses to start a run the plan says does not fit (exit 2); "warn" prints the plan and starts."""
    gpu_memory_gib: Annotated[float, Gt(0)] | None = None
    """Memory of one GPU to plan against; null reads it on each node with nvidia-smi (declared GPUs without
    devices then go unchecked)."""
    prompt_tokens: Annotated[int, Ge(1)] = 256
    """Prompt length in tokens (with the image prefix) the plan assumes for the KV cache and activations; longer
    prompts need more."""
