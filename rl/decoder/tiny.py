"""Tiny random X-Omni decoders built in code (diffusers-test style), for tests and the CPU config.

Every part has the real class and wiring (FLUX-with-SigLIP transformer, AutoencoderKL with /8, FLUX.1's
scheduler config, CLIP + T5 text encoders with offline-built tokenizers) at toy widths, so loading,
batching, seeding and CFG are exercised exactly as with the released weights. `variant="zh"` builds
X-Omni-Zh's text-free decoder instead: its transformer class, no text encoders. Tokenizers are built from
vocabularies written here: a byte-level CLIP BPE with no merges, a T5 Unigram over single characters
(transformers' tokenizers-backed T5Tokenizer; no sentencepiece model is needed).
"""

from __future__ import annotations

import json
import os
import string
from typing import Annotated

import torch
from annotated_types import Ge, Le
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from rl.decoder.flux_siglip import VARIANTS, Variant
from rl.decoder.pipeline import XOmniDecoder
from rl.decoder.text import FluxPromptEncoder
from rl.decoder.vq import VQProjector

CODEBOOK_SIZE = 16384  # the policy's image vocabulary; the tiny codebook keeps it
TEXT_WIDTH = 32


def tiny_xomni_decoder(seed: int = 0, num_inference_steps: int = 2, cfg_scale: float = 2.0,
                       max_sequence_length: int = 16, max_batch_size: int = 8,
                       vae_batch_size: int | None = None, variant: Variant = "en",
                       teacache_threshold: Annotated[float, Ge(0)] = 0.0,
                       cfg_until: Annotated[float, Ge(0), Le(1)] = 1.0) -> XOmniDecoder:
    """A random X-Omni decoder: 16 px per token, 4 latent channels, 32-wide SigLIP features. The other arguments
    are `XOmniDecoder`'s.

    variant: "en" (FLUX's text path, CLIP + T5) or "zh" (X-Omni-Zh's text-free transformer with a random learned
    pooled vector; max_sequence_length is then unused).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = VQProjector(CODEBOOK_SIZE, codebook_dim=8, z_channels=32)
        transformer = VARIANTS[variant](
            in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=TEXT_WIDTH, pooled_projection_dim=TEXT_WIDTH, guidance_embeds=True,
            axes_dims_rope=(2, 2, 4), siglip_channels=32)
        # X-Omni zero-initialises siglip_embed; a random one lets the image codes change the picture.
        torch.nn.init.normal_(transformer.siglip_embed.weight, std=0.2)
        if variant == "zh":  # X-Omni zero-initialises it too; a random one makes the pooled path matter
            torch.nn.init.normal_(transformer.pooled_embeds, std=1.0)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
        prompt_encoder = _tiny_prompt_encoder(max_sequence_length) if variant == "en" else None
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    return XOmniDecoder(projector, transformer, vae, scheduler, prompt_encoder,
                        num_inference_steps=num_inference_steps, cfg_scale=cfg_scale,
                        max_batch_size=max_batch_size, device="cpu", vae_batch_size=vae_batch_size,
                        teacache_threshold=teacache_threshold, cfg_until=cfg_until)


def save_tiny_folders(decoder: XOmniDecoder, root: str | os.PathLike) -> tuple[str, str]:
    """Write `decoder` as an X-Omni model folder and a FLUX.1-dev folder under `root`.

    Returns (xomni_path, flux_path) for `XOmniDecoder.from_pretrained`. The X-Omni folder holds only the
    decoder side (config.json with `vision_config`, the projector state dict, the diffusers subfolder); the FLUX
    folder has no text encoders for an X-Omni-Zh decoder.
    """
    xomni, flux = os.path.join(root, "xomni"), os.path.join(root, "flux")
    os.makedirs(xomni, exist_ok=True)
    projector = decoder.projector
    state = {("quantize.embedding.weight" if k == "codebook.weight" else k): v
             for k, v in projector.state_dict().items()}
    # The encoder-side 1x1 conv ships in X-Omni's file; decoding ignores it.
    codebook_dim = projector.codebook.embedding_dim
    state["quant_conv.weight"] = torch.zeros(codebook_dim, projector.z_channels, 1, 1)
    state["quant_conv.bias"] = torch.zeros(codebook_dim)
    torch.save(state, os.path.join(xomni, "vq_projector.pth"))
    decoder.transformer.save_pretrained(os.path.join(xomni, "diffusers"))
    vision = {
        "dtype": "float32",
        "encoder": {"projector_path": "vq_projector.pth", "z_channels": projector.z_channels,
                    "codebook_size": projector.codebook_size, "codebook_dim": codebook_dim},
        "decoder": {"model_path": "diffusers", "upscale_factor": decoder.pixels_per_token,
                    "num_inference_steps": decoder.num_inference_steps, "cfg_scale": decoder.cfg_scale,
                    "cfg_scale_2": decoder.cfg_scale},
    }
    with open(os.path.join(xomni, "config.json"), "w") as f:
        json.dump({"model_type": "x-omni", "vision_config": vision}, f, indent=1)

    parts = [("vae", decoder.vae), ("scheduler", decoder.scheduler)]
    text = decoder.prompt_encoder
    if text is not None:
        parts += [("text_encoder", text.text_encoder), ("tokenizer", text.tokenizer),
                  ("text_encoder_2", text.text_encoder_2), ("tokenizer_2", text.tokenizer_2)]
    for name, part in parts:
        part.save_pretrained(os.path.join(flux, name))
    return xomni, flux


def _tiny_prompt_encoder(max_sequence_length: int) -> FluxPromptEncoder:
    clip_tokenizer = _tiny_clip_tokenizer()
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=clip_tokenizer.model_max_length,
        bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id))
    t5_tokenizer = _tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=TEXT_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=t5_tokenizer.pad_token_id))
    return FluxPromptEncoder(clip, clip_tokenizer, t5, t5_tokenizer, max_sequence_length=max_sequence_length)


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    """Byte-level BPE over single bytes (each also in its end-of-word form), no merges, 77 positions."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pieces = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=77)


def _tiny_t5_tokenizer() -> T5Tokenizer:
    """Unigram over printable characters, with and without the word-start marker."""
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)
