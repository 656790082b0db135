"""A deliberately simple decoder for the CPU demo: each image code becomes one flat `patch` x `patch` tile.

No weights, deterministic, milliseconds per batch, and a reward can be climbed by choosing codes: the
palette holds black, white and saturated colours (contrast, dynamic range, colourfulness) among seeded
random ones. In glyph mode a code draws a black character on white, or a blank white tile, so an OCR
reward can be demonstrated on rows that spell a word exactly (a 3-letter word in 6 tiles: `" CAT  "`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rl.decoder.base import DecodedImages, check_decoder_inputs, image_validity

FIXED_COLOURS = [(0, 0, 0), (1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
GLYPHS = string.ascii_uppercase + string.digits + " "  # the last tile is blank: words shorter than the row


class PatchDecoder:
    """`ImageDecoder` drawing code k as tile `palette[code_to_tile[k]]`; prompts are ignored (the CPU demo's decoder).

    Args:
        patch: tile side in pixels (an h x w grid gives (h*patch) x (w*patch) images).
        palette_size: number of distinct colours (colour mode; at least the 8 fixed ones).
        seed: seeds the palette and the code -> tile assignment.
        noise: std of Gaussian pixel noise drawn from the per-sample generator (0 = none).
        mode: "colour" (flat colour tiles) or "glyph" (black letters/digits on white: one code per character,
            all other codes blank white; needs codebook_size >= 37).
        codebook_size: number of image codes (X-Omni's 16384).
    """

    def __init__(self, patch: int = 8, palette_size: int = 64, seed: int = 0, noise: float = 0.0,
                 mode: Literal["colour", "glyph"] = "colour", codebook_size: int = 16384):
        if patch < 1 or noise < 0 or codebook_size < 1:
            raise ValueError("patch and codebook_size must be >= 1 and noise >= 0")
        if mode == "colour":
            if palette_size < len(FIXED_COLOURS):
                raise ValueError(f"palette_size must be >= {len(FIXED_COLOURS)}")
            generator = torch.Generator().manual_seed(seed)
            random_colours = torch.rand(palette_size - len(FIXED_COLOURS), 3, generator=generator)
            colours = torch.cat([torch.tensor(FIXED_COLOURS, dtype=torch.float32), random_colours])
            self.tiles = colours[:, :, None, None].expand(-1, -1, patch, patch)  # [K, 3, p, p]
        elif mode == "glyph":
            if codebook_size < len(GLYPHS):
                raise ValueError(f"glyph mode needs codebook_size >= {len(GLYPHS)} (36 characters and a blank)")
            self.tiles = _glyph_tiles(patch)
            generator = torch.Generator().manual_seed(seed)
        else:
            raise ValueError(f"mode must be 'colour' or 'glyph', got {mode!r}")
        perm = torch.randperm(codebook_size, generator=generator)
        if mode == "glyph":
            # One code per character, chosen by the seed; every other code draws blank paper, as most codes of
            # a real image tokenizer draw background. A random row then holds a few letters, like a short word.
            self.code_to_tile = perm.clamp(max=len(GLYPHS) - 1)
        else:
            # A shuffled round-robin: every colour gets codebook_size / len(tiles) codes (+-1), so even a small
            # codebook reaches every colour.
            self.code_to_tile = perm % len(self.tiles)
        self.patch, self.noise, self.mode = patch, noise, mode

    def codes_for_tile(self, tile: int) -> torch.Tensor:
        """All codes drawn as tile `tile` (a palette colour or GLYPHS[tile]); for demos and tests."""
        return (self.code_to_tile == tile).nonzero().flatten()

    def __call__(self, tokens: torch.Tensor, grid: tuple[int, int], prompts: Sequence[str],
                 seeds: Sequence[int]) -> DecodedImages:
        """tokens: long [N, h*w] -> images float32 [N, 3, h*patch, w*patch] in [0, 1], valid bool [N]."""
        check_decoder_inputs(tokens, grid, prompts, seeds)
        tokens = tokens.cpu()
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(self.code_to_tile)):
            raise ValueError(f"image codes must lie in [0, {len(self.code_to_tile)})")
        (h, w), n, p = grid, tokens.shape[0], self.patch
        tiles = self.tiles[self.code_to_tile[tokens]]  # [N, h*w, 3, p, p]
        images = tiles.view(n, h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h * p, w * p)
        if self.noise > 0:
            noise = torch.stack([torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                                 for s in seeds])
            images = (images + self.noise * noise).clamp(0, 1)
        return DecodedImages(images=images.contiguous(), valid=image_validity(images))


def _glyph_tiles(patch: int) -> torch.Tensor:
    """[len(GLYPHS), 3, patch, patch]: each character black, centred, on white (the blank is all white)."""
    font = ImageFont.load_default(size=max(6, int(patch * 0.8)))
    tiles = []
    for char in GLYPHS:
        image = Image.new("L", (patch, patch), 255)
        ImageDraw.Draw(image).text((patch / 2, patch / 2), char, font=font, fill=0, anchor="mm")
        tiles.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
    return torch.stack(tiles)[:, None].expand(-1, 3, -1, -1)
