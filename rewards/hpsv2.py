"""HPSv2 (Human Preference Score v2): how much people would like an image for its prompt.

The score is the cosine similarity of the image and prompt embeddings of an open_clip ViT-H-14
fine-tuned on human preference pairs, computed exactly as the `hpsv2` package scores an image, but
with the model loaded once, from a local file, and the batch scored together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision.transforms import InterpolationMode

from core.devices import DtypeName
from core.paths import LocalPath
from rewards.base import ImageLike, RewardOutput, check_batch, to_pil
from rewards.open_clip_model import OpenClipModel


def hps_pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """hpsv2's scoring transform, batched: float32 [N, 3, size, size] from RGB images.

    hpsv2 scores with its "light augmentation" validation transform: to a [0, 1] tensor first, then
    an antialiased bicubic resize of the tensor so the longer side is `size`, zero padding centred to
    a square (so a wide image is letterboxed, not cropped), then the OpenAI mean/std. Images of one
    size are resized together. hpsv2 skips resize and padding when the longer side is already `size`
    (and then fails on a non-square image); here such an image is padded.
    """
    out = torch.zeros(len(images), 3, size, size)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_size[(image.height, image.width)].append(i)
    for (height, width), index in by_size.items():
        pixels = torch.from_numpy(np.stack([np.asarray(images[i]) for i in index]))  # [n, H, W, 3] uint8
        pixels = pixels.permute(0, 3, 1, 2).float().div(255)  # [n, 3, H, W] in [0, 1]
        scale = size / max(height, width)
        new_h, new_w = round(height * scale), round(width * scale)
        if (new_h, new_w) != (height, width):
            pixels = TF.resize(pixels, [new_h, new_w], InterpolationMode.BICUBIC, antialias=True)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        out[index, :, top:top + new_h, left:left + new_w] = pixels
    return TF.normalize(out, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


class HPSv2Reward:
    """Human preference score of each image for its prompt (HPSv2 or HPSv2.1 weights).

    Args:
        checkpoint: HPS_v2_compressed.pt or HPS_v2.1_compressed.pt, a `{"state_dict": ...}` of the
            whole open_clip model (both towers), so no LAION weights are needed.
        model: open_clip architecture of the checkpoint.
        device: "cuda", "cpu", ...; None or "auto" picks CUDA when available.
        dtype: "float32" (matches the hpsv2 package to ~1e-6), "bfloat16" or "float16".
        batch_size: images per forward pass.

    Scores are cosine similarities, so in [-1, 1]; `score_range` = (0.0, 0.4) is where HPSv2 scores
    of generated images lie in practice (typically 0.2-0.35), for the ensemble's optional range
    normalisation. No image is refused: scores are never NaN.
    """

    score_range: tuple[float, float] = (0.0, 0.4)

    def __init__(self, checkpoint: LocalPath, model: str = "ViT-H-14", device: str | None = None,
                 dtype: DtypeName = "float32", batch_size: int = 16):
        self.clip = OpenClipModel(model, checkpoint, "checkpoint", device, dtype, batch_size)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return hps_pixels(images, self.clip.image_size)

    def __call__(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> RewardOutput:
        """Scores float32 [N] for `images[i]` with `prompts[i]`; `metadata` is not used."""
        check_batch(images, prompts, metadata)
        return RewardOutput(self.clip.score([to_pil(image) for image in images], prompts, self._pixels))
