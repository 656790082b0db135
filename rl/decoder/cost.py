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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TIMESTEP_CHANNELS = 256  # the sinusoidal timestep / guidance embedding width in FLUX's time_text_embed


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
