"""Prompt-image alignment as CLIP cosine similarity (the product card's stand-in for the paper's VLM judge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.devices import DtypeName
from core.paths import LocalPath
from rewards.base import ImageLike, RewardOutput, check_batch, to_pil
from rewards.open_clip_model import OpenClipModel


class CLIPAlignReward:
    """Cosine similarity of the normalised image and prompt embeddings of an open_clip model.

    Args:
        model: open_clip architecture name, e.g. "ViT-L-14". A weights file does not say which
            activation its model was trained with: for OpenAI's CLIP weights name the `-quickgelu`
            variant (e.g. "ViT-L-14-quickgelu"), as open_clip's own pretrained tags do.
        weights: local open_clip checkpoint (a state dict or `{"state_dict": ...}`), or
            `hf://org/repo/file` already in the HF cache.
        device: "cuda", "cpu", ...; None or "auto" picks CUDA when available.
        dtype: "float32", "bfloat16" or "float16".
        batch_size: images per forward pass.

    Images get open_clip's validation preprocessing for the architecture (shortest side resized,
    centre crop, OpenAI mean/std). `score_range` = (-1.0, 1.0) is the bound of a cosine (trained CLIPs
    give matching pairs about 0.2-0.4). No image is refused: scores are never NaN.
    """

    score_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self, model: str, weights: LocalPath, device: str | None = None, dtype: DtypeName = "float32",
                 batch_size: int = 16):
        self.clip = OpenClipModel(model, weights, "weights", device, dtype, batch_size)

    def __call__(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> RewardOutput:
        """Scores float32 [N] in [-1, 1] for `images[i]` with `prompts[i]`; `metadata` is not used."""
        check_batch(images, prompts, metadata)
        pil = [to_pil(image) for image in images]
        return RewardOutput(self.clip.score(pil, prompts, self.clip.preprocess_images))
