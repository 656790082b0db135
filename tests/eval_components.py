"""A decoder that writes real text, named by import path (`tests.eval_components.QuotedTextDecoder`) in the
rl.evaluate tests, so the OCR reward has words to find and LongText-Bench's aggregation has matches to count.
Like tests/fault_components.py, it is an ordinary component, not a mock of the project's code."""

from __future__ import annotations

import numpy as np
import torch

from rewards.gating import quoted_spans
from rl.decoder import DecodedImages, PatchDecoder
from tests.render_text import render_text_image


class QuotedTextDecoder(PatchDecoder):
    """A PatchDecoder whose images show the first words of the prompt's first quoted span (as many of the
    first three as fit), dark on light, in the image size the token grid gives."""

    def __call__(self, tokens, grid, prompts, seeds) -> DecodedImages:
        out = super().__call__(tokens, grid, prompts, seeds)
        height, width = out.images.shape[2:]
        pictures = [np.asarray(_fitted(prompt, (width, height)), dtype=np.float32) / 255 for prompt in prompts]
        images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]
        return DecodedImages(images, torch.ones(len(prompts), dtype=torch.bool))


def _fitted(prompt: str, size: tuple[int, int]):
    words = (quoted_spans(prompt) or ["?"])[0].split()
    for count in (3, 2, 1):
        try:
            return render_text_image(" ".join(words[:count]), size, font_size=size[1] // 3)
        except ValueError:  # too wide: fewer words
            continue
    return render_text_image(words[0][: 4], size, font_size=size[1] // 3)
