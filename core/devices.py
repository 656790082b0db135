"""Device and dtype names as configs spell them ("auto", "cuda:1", "bfloat16", ...)."""

from __future__ import annotations

from typing import Literal, get_args

import torch

DtypeName = Literal["float32", "bfloat16", "float16"]
"""The dtypes a config may name (weights, compute, rollout)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto" picks CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: DtypeName | torch.dtype) -> torch.dtype:
    """torch.float32 / bfloat16 / float16 from a dtype or its name; anything else is a ValueError."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) and dtype in get_args(DtypeName) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be one of {list(get_args(DtypeName))}, got {dtype!r}")
    return resolved
