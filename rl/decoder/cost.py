"""What one denoising step of the FLUX-with-SigLIP decoder costs, as a formula over its config (an estimate).

Counted: every matrix multiply (2 FLOPs per multiply-add) and the attention products (QK^T and AV, 4 n^2 d per
block for n joint tokens of width d). Not counted: norms, activations, RoPE, the scheduler and the VAE, all small
next to the transformer. tests/test_decoder.py checks the formula against torch's FlopCounterMode on a tiny
transformer.

For FLUX.1-dev (19 double-stream and 38 single-stream blocks, width 3072) at 384 px (24x24 image tokens) with
512 T5 tokens, the formula gives 14.9 TFLOP per step per image, 29.8 TFLOP with true CFG (the negative branch
is a second full forward): 28 steps with CFG are ~0.83 PFLOP per image. Most of it is the blocks' linear
layers, 24 n d^2 per block: each token uses only its own stream's weights, and the modulation layers run once
per image, so 2 x parameters x tokens (~2.6e13 per forward) overestimates the cost by ~1.7x.

The VAE decodes a chunk's latents in slices (`XOmniDecoder`'s vae_batch_size); `default_vae_batch_size` picks a
slice whose widest activation stays within VAE_ACTIVATION_LIMIT elements: 4 images for FLUX's VAE at 1024 px,
28 at 384 px.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TIMESTEP_CHANNELS = 256  # the sinusoidal timestep / guidance embedding width in FLUX's time_text_embed
VAE_ACTIVATION_LIMIT = 2**30
"""Elements of the widest VAE-decode tensor a default slice may make: half of INT_MAX, with room to spare for the
CUDA kernels (upsampling, group norm) that index a tensor with 32-bit ints."""


def _linear(rows: int, fan_in: int, fan_out: int) -> int:
    return 2 * rows * fan_in * fan_out


def flux_step_flops(config: Mapping[str, Any], grid: tuple[int, int], text_tokens: int, cfg: bool) -> int:
    """Estimated FLOPs of one denoising step for one image (two transformer forwards when `cfg`).

    config: the transformer's config (FluxSigLIPTransformer / FluxTransformer2DModel keys); grid: (h, w) image
    tokens (h*w packed latents; 16 px per token); text_tokens: T5 sequence length (FLUX pads to 512).
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    n_img = grid[0] * grid[1]
    n = n_img + text_tokens
    attention = 4 * n * n * d
    # Double-stream block: per stream AdaLN-Zero modulation (d -> 6d, once per image), q/k/v, output
    # projection and a 4x GELU MLP; the text and image streams together cover all n tokens.
    double = (2 * _linear(1, d, 6 * d) + _linear(n, d, 3 * d) + _linear(n, d, d) + _linear(n, d, 4 * d)
              + _linear(n, 4 * d, d) + attention)
    # Single-stream block: modulation (d -> 3d), q/k/v and the MLP input in parallel, one output projection
    # from the concatenated attention and MLP activations (5d -> d).
    single = _linear(1, d, 3 * d) + _linear(n, d, 3 * d) + _linear(n, d, 4 * d) + _linear(n, 5 * d, d) + attention
    embeddings = (_linear(n_img, config["in_channels"], d) + _linear(text_tokens, config["joint_attention_dim"], d)
                  + _linear(1, config["pooled_projection_dim"], d) + _linear(1, d, d))
    embeddings += (2 if config["guidance_embeds"] else 1) * (_linear(1, TIMESTEP_CHANNELS, d) + _linear(1, d, d))
    if config.get("siglip_channels"):
        embeddings += _linear(n_img, config["siglip_channels"], d)
    out_channels = (config.get("out_channels") or config["in_channels"]) * config["patch_size"] ** 2
    output = _linear(1, d, 2 * d) + _linear(n_img, d, out_channels)
    forward = config["num_layers"] * double + config["num_single_layers"] * single + embeddings + output
    return forward * (2 if cfg else 1)


def vae_widest_activation(vae_config: Mapping[str, Any], height: int, width: int) -> int:
    """Elements of the widest tensor diffusers' VAE `Decoder` makes for one height x width image.

    With c = block_out_channels and n = len(c), level k runs at 1/2^k of the image's side (k = n-1: the latent).
    The up block at level k outputs c[k] channels; its input, the previous block's 2x upsample, has c[k+1]. So
    level k peaks at max(c[k], c[k+1]) x (H/2^k) x (W/2^k): for FLUX (c = 128, 256, 512, 512) level 0's [256, H, W].
    The mid block's single-head attention scores [L, L] over the L latent pixels count as if materialised
    (SDPA's math fallback); at 1024 px they equal level 0's 2^28, and grow faster beyond it.
    """
    channels = vae_config["block_out_channels"]
    levels = len(channels)
    widest = max(max(channels[k:k + 2]) * (height >> k) * (width >> k) for k in range(levels))
    if vae_config.get("mid_block_add_attention", True):
        widest = max(widest, ((height >> (levels - 1)) * (width >> (levels - 1))) ** 2)
    return widest


def default_vae_batch_size(vae_config: Mapping[str, Any], height: int, width: int) -> int:
    """Images per VAE decode call when vae_batch_size is None: as many as keep the widest activation within
    VAE_ACTIVATION_LIMIT elements, at least 1."""
    return max(1, VAE_ACTIVATION_LIMIT // vae_widest_activation(vae_config, height, width))
