"""The decoder protocol the rollout uses: image codes + prompts + seeds -> float images and a validity mask.

Validity is decided on the float tensor, before any uint8 conversion could hide a NaN (casting NaN to
uint8 is undefined) or turn a blown-out image into a plausible-looking one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

CONSTANT_RANGE = 1.0 / 255.0
"""An image whose every channel spans less than one uint8 level is constant: rewards could only score a
flat picture, so it is masked like a NaN one."""


@dataclass
class DecodedImages:
    """images: float32 [N, 3, H, W] in [0, 1] on the CPU (NaN may remain where `valid` is False).
    valid: bool [N]; False for images with NaN/inf or a constant value; they must get a NaN reward."""

    images: torch.Tensor
    valid: torch.Tensor


@runtime_checkable
class ImageDecoder(Protocol):
    """Frozen tokens -> images. Sample i depends only on (tokens[i], prompts[i], seeds[i])."""

    def __call__(self, tokens: torch.Tensor, grid: tuple[int, int], prompts: Sequence[str],
                 seeds: Sequence[int]) -> DecodedImages:
        """tokens: long [N, h*w] image codes in raster order; grid: (h, w) of the token grid."""
        ...


def image_validity(images: torch.Tensor) -> torch.Tensor:
    """images: float [N, C, H, W], nominally in [0, 1] -> bool [N]: finite and not spatially constant.

    The range is measured per channel after clipping to [0, 1], as any conversion would, so a flat
    colour and a fully blown-out image both count as constant.
    """
    pixels = images.flatten(2).float()  # [N, C, H*W]
    finite = torch.isfinite(pixels).flatten(1).all(dim=1)
    clipped = pixels.clamp(0, 1)
    value_range = (clipped.amax(dim=2) - clipped.amin(dim=2)).amax(dim=1)
    return finite & (value_range >= CONSTANT_RANGE)


def to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """float [N, 3, H, W] in [0, 1] -> N uint8 arrays [H, W, 3] (the reward input).

    Non-finite values become 0, so an invalid image still converts deterministically; it must be
    masked by `valid`, not scored.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    pixels = torch.nan_to_num(images.detach().float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    pixels = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(pixels)


def check_decoder_inputs(tokens: torch.Tensor, grid: tuple[int, int], prompts: Sequence[str],
                         seeds: Sequence[int]) -> None:
    """Raise ValueError unless tokens is [N, h*w] with N prompts and N seeds."""
    h, w = grid
    if tokens.ndim != 2 or tokens.shape[1] != h * w:
        raise ValueError(f"tokens must be [N, {h}*{w}] for grid {tuple(grid)}, got {tuple(tokens.shape)}")
    if len(prompts) != tokens.shape[0] or len(seeds) != tokens.shape[0]:
        raise ValueError(f"need one prompt and one seed per image: {tokens.shape[0]} images, "
                         f"{len(prompts)} prompts, {len(seeds)} seeds")
