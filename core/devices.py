"""Device and dtype names as configs spell them ("auto", "cuda:1", "bfloat16", ...), and the device of a process:
the one module that asks which accelerator there is (`torch.accelerator`), so that the CPU tests run the same
branches as a GPU node. CUDA-only: the `set_device_index` call in `actor_device` (scripts/gpu_check.sh covers it)."""

from __future__ import annotations

import os
import sys
from typing import Literal, get_args

import torch

DtypeName = Literal["float32", "bfloat16", "float16"]
"""The dtypes a config may name (weights, compute, rollout)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto" picks the accelerator (CUDA) when this process may use one, else the CPU; see `may_use_gpu`."""
    if device in (None, "auto"):
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        return torch.device(accelerator.type if accelerator is not None and may_use_gpu() else "cpu")
    return torch.device(device)


def may_use_gpu() -> bool:
    """False in a Ray worker that Ray gave no GPU. Ray 2.60 no longer hides the GPUs from an actor that asked for
    none (CUDA_VISIBLE_DEVICES is left as it is), so such an actor would see, and pick, every GPU of its node."""
    ray = sys.modules.get("ray")  # every Ray worker has imported it; a process without Ray need not
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return True
    return bool(ray.get_gpu_ids())


# Colocated workers load and free models of very different sizes at every phase switch; expandable segments let
# the caching allocator reuse that memory instead of fragmenting it. Set for GPU actors unless the user set it.
ALLOC_CONF = ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def free_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back (the CPU has none): between phases whose tensors differ in
    size, so the next phase's allocations do not fragment around the last one's cached blocks."""
    if device.type != "cpu":
        torch.accelerator.empty_cache()


def actor_device(num_gpus: float) -> torch.device:
    """The device of an actor that asked Ray for `num_gpus`: its GPU, made the current device (NCCL, DCP and
    `torch.device("cuda")` all use the current one), else the CPU (no accelerator, or GPUs only declared to Ray).
    Call it before anything allocates on the GPU: it sets the allocator's configuration (`ALLOC_CONF`)."""
    if num_gpus <= 0:
        return torch.device("cpu")
    os.environ.setdefault(*ALLOC_CONF)  # read when CUDA allocates first, so also set where GPUs are only declared
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None:
        return torch.device("cpu")
    torch.accelerator.set_device_index(0)  # Ray shows an actor only its own GPUs: the first of them is index 0
    return torch.device(accelerator.type, 0)


def resolve_dtype(dtype: DtypeName | torch.dtype) -> torch.dtype:
    """torch.float32 / bfloat16 / float16 from a dtype or its name; anything else is a ValueError."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) and dtype in get_args(DtypeName) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be one of {list(get_args(DtypeName))}, got {dtype!r}")
    return resolved
