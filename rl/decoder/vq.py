"""The decode half of X-Omni's SigLIP-VQ projector: image codes -> the SigLIP features that condition FLUX.

Decoding looks up raw codebook rows (not l2-normalised: the normalisation only serves nearest-neighbour
search when encoding), maps them back to the SigLIP width with a 1x1 conv and refines them with residual
blocks. The encoder side (`quant_conv`, nearest-code search) needs the SigLIP ViT and is not part of RL.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from core.weights import check_weight_names

GROUP_NORM_GROUPS = 32  # fixed in X-Omni's ResidualBlock


class ResidualBlock(nn.Module):
    """x + conv(gelu(norm(conv(gelu(norm(x)))))) with 3x3 convs; shape-preserving [B, C, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUP_NORM_GROUPS, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUP_NORM_GROUPS, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(h)))


class VQProjector(nn.Module):
    """Image codes [B, h*w] (raster order) -> features [B, z_channels, h, w].

    Sizes of the released model: codebook 16384 x 2048, z_channels 1536, two residual blocks.
    """

    def __init__(self, codebook_size: int, codebook_dim: int, z_channels: int, num_blocks: int = 2):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.post_quant_conv = nn.Conv2d(codebook_dim, z_channels, 1)
        self.post_conv = nn.Sequential(*[ResidualBlock(z_channels) for _ in range(num_blocks)])

    @property
    def codebook_size(self) -> int:
        return self.codebook.num_embeddings

    @property
    def z_channels(self) -> int:
        return self.post_quant_conv.out_channels

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> VQProjector:
        """Load X-Omni's projector state dict (`quant_conv.*`, `quantize.embedding.weight`,
        `post_quant_conv.*`, `post_conv.{i}.*`); sizes are read from the tensor shapes."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "quantize.embedding.weight" not in state or "post_quant_conv.weight" not in state:
            raise ValueError(f"{path}: not an X-Omni VQ projector state dict (keys: {sorted(state)[:6]}...)")
        codebook_size, codebook_dim = state["quantize.embedding.weight"].shape
        z_channels = state["post_quant_conv.weight"].shape[0]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"post_conv\.(\d+)\.", k))}
        projector = cls(codebook_size, codebook_dim, z_channels, num_blocks=len(blocks))
        # quant_conv.* belongs to the encoder side, which decoding never uses.
        decode_state = {k.replace("quantize.embedding.", "codebook."): v
                        for k, v in state.items() if not k.startswith("quant_conv.")}
        check_weight_names(projector.state_dict(), decode_state, where=os.fspath(path))
        projector.load_state_dict(decode_state)
        return projector

    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """tokens: long [B, height*width] in raster order -> features [B, z_channels, height, width]."""
        if tokens.ndim != 2 or tokens.shape[1] != height * width:
            raise ValueError(f"tokens must be [B, {height}*{width}], got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            raise ValueError(f"image codes must lie in [0, {self.codebook_size}), "
                             f"got [{int(tokens.min())}, {int(tokens.max())}]")
        z = self.codebook(tokens)  # [B, h*w, D]
        z = z.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)  # [B, D, h, w]
        return self.post_conv(self.post_quant_conv(z))
