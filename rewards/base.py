"""The one extension point for rewards: a callable class built once, scoring a batch.

A reward is any class whose constructor takes its config kwargs (and loads its model once) and whose
`__call__(images, prompts, metadata)` returns a `RewardOutput`. There is nothing to inherit: name the
class in YAML by import path (`_component_: my_module.MyReward`) and it works in training and in
`python -m rewards.score`.

NaN in `scores` means "cannot or must not score this image" (TRL's convention): the ensemble skips it
and the GRPO group baseline ignores it. Never return 0 for that case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

ImageLike = Image.Image | np.ndarray
"""A PIL image, or a uint8 array [H, W, 3] (RGB)."""


@dataclass
class RewardOutput:
    """Scores for a batch of N images.

    scores: float32 tensor [N]; NaN where the reward cannot or must not score.
    details: optional per-image values for logging, each a list of length N (e.g. the OCR text read).
    """

    scores: torch.Tensor
    details: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)


@runtime_checkable
class Reward(Protocol):
    """Scores `images[i]` for `prompts[i]`, with `metadata[i]` (e.g. `text`: target strings)."""

    def __call__(
        self, images: Sequence[ImageLike], prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput: ...


def to_pil(image: ImageLike) -> Image.Image:
    """RGB PIL image from a PIL image or a uint8 [H, W, 3] / [H, W] array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 [H, W, 3], got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image arrays must be [H, W, 3], got shape {tuple(array.shape)}")
    return Image.fromarray(array, "RGB")


def to_uint8(image: ImageLike) -> np.ndarray:
    """uint8 RGB array [H, W, 3] from a PIL image or array."""
    return np.asarray(to_pil(image))



def check_batch(images: Sequence[ImageLike], prompts: Sequence[str],
                metadata: Sequence[Mapping[str, Any]] | None = None) -> list[Mapping[str, Any]]:
    """The batch's metadata (empty mappings when None); ValueError unless there is one prompt and one metadata
    entry per image."""
    metadata = [{} for _ in images] if metadata is None else list(metadata)
    if not len(images) == len(prompts) == len(metadata):
        raise ValueError(f"got {len(images)} images and {len(prompts)} prompts ({len(metadata)} metadata entries): "
                         "each image needs one prompt and one metadata entry")
    return metadata
