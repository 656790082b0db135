"""X-Omni's autoregressive transformer on transformers' Qwen2 building blocks (no remote code).

Qwen2.5 with `num_mm_adap_layers` image-only blocks before and `num_mm_head_layers` after the language
layers. Text ids embed through `lm_embed_tokens`, ids >= vocab_size through `mm_embed_tokens[id -
vocab_size]`; in the image-only blocks every token attends to the whole sequence but only image
positions take the block's output (text positions keep their input); the final norm is `mm_norm` at
image positions and `lm_norm` at text positions. Parameter names match X-Omni's checkpoints.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import Qwen2Config
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)

MM_SPECIAL_TOKENS = ("<SOM>", "<EOM>", "<IMAGE>")


def _cache_argument(function: Callable) -> str:
    """The name under which `function` takes the KV cache in the installed transformers.

    transformers 5.24 renamed `past_key_values` to `cache` (the old name still works until 5.40 but warns on
    every call); 5.17-5.23 take `past_key_values`. Reading the signature (through the deprecation wrapper)
    passes the current name on every version, with no warning.
    """
    parameters = inspect.signature(function).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise ImportError(f"{function.__qualname__} takes no KV cache argument: unsupported transformers version")


LAYER_CACHE_ARG = _cache_argument(Qwen2DecoderLayer.forward)
MASK_CACHE_ARG = _cache_argument(create_causal_mask)


@strict
class XOmniConfig(Qwen2Config):
    """Qwen2 config plus X-Omni's multimodal keys; unknown keys (auto_map, vision_config) round-trip.

    num_mm_adap_layers: image-only blocks before the language layers.
    num_mm_head_layers: image-only blocks after the language layers.
    mm_vocab_size: rows of `mm_embed_tokens` / outputs of `mm_head` (16384 codes + 64 extra rows).
    image_vocab_size: image codes; image mode is a softmax over `mm_head` rows [0, image_vocab_size).
    mm_special_tokens: tokenizer strings for start of image, end of image and the grid/image separator.
    """

    model_type = "x-omni"

    num_mm_adap_layers: int = 4
    num_mm_head_layers: int = 4
    mm_vocab_size: int = 16448
    image_vocab_size: int = 16384
    mm_special_tokens: list[str] | None = None

    def __post_init__(self, **kwargs):
        if self.mm_special_tokens is None:
            self.mm_special_tokens = list(MM_SPECIAL_TOKENS)
        super().__post_init__(**kwargs)
        if self.num_mm_adap_layers + self.num_mm_head_layers > self.num_hidden_layers:
            raise ValueError(f"num_mm_adap_layers + num_mm_head_layers ({self.num_mm_adap_layers} + "
                             f"{self.num_mm_head_layers}) exceeds num_hidden_layers ({self.num_hidden_layers})")
        if not 0 < self.image_vocab_size <= self.mm_vocab_size:
            raise ValueError(f"image_vocab_size ({self.image_vocab_size}) must be in (0, mm_vocab_size "
                             f"({self.mm_vocab_size})]")

    def to_dict(self) -> dict:
        """Also writes the pre-5.0 RoPE keys: X-Omni's released code (transformers 4.x) reads `rope_theta`
        and would silently fall back to 10000 without it."""
        out = super().to_dict()
        rope = out.get("rope_parameters") or {}
        if "rope_theta" in rope:
            out["rope_theta"] = rope["rope_theta"]
            out["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else dict(rope)
        return out


class StaticKVCache(NamedTuple):
    """Keys and values of every layer in fixed slots, written in place by `XOmniModel.decode`.

    keys, values: [layers, R, kv_heads, slots, head_dim], model dtype.
    pad: long [R], each row's left padding (slot s of row r holds position s - pad[r]).
    key_valid: bool [R, slots], slot >= pad: the padding part of the attention mask, built once per sampling call.
    """

    keys: torch.Tensor
    values: torch.Tensor
    pad: torch.Tensor
    key_valid: torch.Tensor


class XOmniModel(nn.Module):
    """Embeddings, decoder layers and the per-position final norm: ids [B, L] -> hidden [B, L, C]."""

    def __init__(self, config: XOmniConfig):
        super().__init__()
        self.config = config
        # padding_idx=-1 (the last row) as in X-Omni: that row is zero at init and never gets a gradient.
        self.lm_embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=-1)
        self.mm_embed_tokens = nn.Embedding(config.mm_vocab_size, config.hidden_size, padding_idx=-1)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.lm_norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mm_norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        first_lm = config.num_mm_adap_layers
        self.is_lm_layer = [first_lm <= i < config.num_hidden_layers - config.num_mm_head_layers
                            for i in range(config.num_hidden_layers)]
        self.gradient_checkpointing = False

    def _apply(self, fn, recurse=True):
        """Device moves and dtype casts (`policy.to(torch.bfloat16)`), then exact float32 RoPE frequencies
        again: X-Omni's transformers model keeps them in float32, and rounded to bf16 they would turn image
        positions (thousands) by whole radians."""
        super()._apply(fn, recurse)
        device = self.rotary_emb.inv_freq.device
        if device.type != "meta":
            with torch.device("cpu"):
                exact = Qwen2RotaryEmbedding(config=self.config)
            self.rotary_emb.inv_freq = exact.inv_freq.to(device)
            self.rotary_emb.original_inv_freq = exact.original_inv_freq.to(device)
        return self

    def embed(self, input_ids: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, L, C]; each lookup's index is clamped into its own table, and `where` keeps the
        right one (the other branch gets a zero gradient)."""
        vocab = self.config.vocab_size
        text = self.lm_embed_tokens(input_ids.clamp(max=vocab - 1))
        image = self.mm_embed_tokens((input_ids - vocab).clamp(min=0))
        return torch.where(is_image[..., None], image, text)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states [B, L, C] for ids [B, L].

        attention_mask: [B, past + L], 1 for real tokens, 0 for (left) padding; None = no padding.
        past_key_values: a cache holding `past` earlier positions (`XOmniPolicy.new_cache`); extended in place.
            The sampler's steps run `decode` on a static cache instead.
        Positions come from the mask (cumulative count of real tokens), so left padding does not shift them.
        """
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        length = input_ids.shape[1]
        # Slots [past, past + L) hold this call's tokens.
        slots = torch.arange(length, device=input_ids.device) + past
        if attention_mask is None:
            position_ids = slots[None].expand_as(input_ids)
        else:
            key_slots = past_key_values.get_mask_sizes(length, 0)[0] if past_key_values is not None else length
            if attention_mask.shape != (input_ids.shape[0], key_slots):
                raise ValueError(f"attention_mask must be [B, key slots] = {[input_ids.shape[0], key_slots]} "
                                 f"(past + L), got {list(attention_mask.shape)}")
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0).index_select(1, slots)
        is_image = input_ids >= self.config.vocab_size  # [B, L]
        hidden = self.embed(input_ids, is_image)
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  position_ids=position_ids, **{MASK_CACHE_ARG: past_key_values})
        rope = self.rotary_emb(hidden, position_ids)
        gate = is_image[..., None]  # [B, L, 1]
        for layer, is_lm in zip(self.layers, self.is_lm_layer, strict=True):
            args = (layer, is_lm, hidden, gate, mask, rope, position_ids, past_key_values)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(_run_layer, *args, use_reentrant=False)
            else:
                hidden = _run_layer(*args)
        return torch.where(gate, self.mm_norm(hidden), self.lm_norm(hidden))

    # -- incremental decoding on a static cache (the sampler) ------------------------------------------------

    def new_static_cache(self, pad: torch.Tensor, slots: int) -> StaticKVCache:
        """An empty cache of `slots` key slots for rows left-padded by `pad` (long [R], on the model's device)."""
        config, weight = self.config, self.mm_embed_tokens.weight
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, pad.shape[0], config.num_key_value_heads, slots, head_dim)
        key_valid = torch.arange(slots, device=pad.device) >= pad[:, None]
        return StaticKVCache(weight.new_zeros(shape), weight.new_zeros(shape), pad, key_valid)

    def decode(self, input_ids: torch.Tensor, start: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """The last position's final-normed hidden state [R, C] for ids [R, L] in slots [start, start + L) of
        `cache` (start: long 0-dim tensor on the device), whose keys and values it writes there in place.

        The same function as `forward` (same layers, gating and norms; tests compare them), but with no host
        read of data: positions and mask come from `start` and `cache.pad` on the device, so one graph of
        `torch.compile(fullgraph=True)` serves every step. A row attends to its real slots up to its own; a
        padding slot also to itself (attending to nothing would give NaN keys and values later rows skip only
        by masking, and 0 x NaN is NaN).
        """
        if any(layer.self_attn.sliding_window is not None for layer in self.layers):
            raise ValueError("decode supports full attention only (X-Omni's config: use_sliding_window false)")
        slots = start + torch.arange(input_ids.shape[1], device=input_ids.device)  # [L]
        position_ids = (slots[None] - cache.pad[:, None]).clamp(min=0)  # [R, L], as forward's mask cumsum
        key_slots = torch.arange(cache.keys.shape[3], device=input_ids.device)
        allowed = (key_slots <= slots[:, None]) & (cache.key_valid[:, None] | (key_slots == slots[:, None]))
        is_image = input_ids >= self.config.vocab_size
        hidden = self.embed(input_ids, is_image)
        rope = self.rotary_emb(hidden, position_ids)
        gate = is_image[..., None]
        for index, (layer, is_lm) in enumerate(zip(self.layers, self.is_lm_layer, strict=True)):
            out = _static_layer(layer, hidden, rope, allowed[:, None], slots, cache.keys[index], cache.values[index])
            hidden = out if is_lm else torch.where(gate, out, hidden)
        last, image = hidden[:, -1], gate[:, -1]
        return torch.where(image, self.mm_norm(last), self.lm_norm(last))


def _static_layer(layer: Qwen2DecoderLayer, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                  allowed: torch.Tensor, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Qwen2DecoderLayer.forward on a static cache: hidden [R, L, C] -> [R, L, C]; writes this call's keys and
    values into `keys`, `values` [R, kv_heads, S, D] at `slots` [L]; allowed: bool [R, 1, L, S]."""
    attn = layer.self_attn
    rows, length, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    q = attn.q_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)  # [R, H, L, D]
    k = attn.k_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)  # [R, KV, L, D]
    v = attn.v_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *rope)
    keys.index_copy_(2, slots, k)
    values.index_copy_(2, slots, v)
    out = _grouped_attention(q, keys, values, allowed, attn.scaling)
    hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(rows, length, -1))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _grouped_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """GQA without repeated keys and values: q [R, H, L, D], keys/values [R, KV, S, D], allowed bool
    [R, 1, L, S] -> [R, H, L, D].

    The G = H / KV query heads that share a key head are stacked as G x L query rows of one SDPA head (head h
    uses key head h // G, as transformers' repeat_kv), so every kernel reads each key and value once: SDPA's
    `enable_gqa` does the same only in the kernels that implement it, and falls back to copying K/V G times.
    """
    rows, heads, length, dim = q.shape
    kv_heads = keys.shape[1]
    groups = heads // kv_heads
    mask = allowed[:, :, None].expand(rows, 1, groups, length, allowed.shape[-1]).reshape(rows, 1, groups * length, -1)
    out = F.scaled_dot_product_attention(q.reshape(rows, kv_heads, groups * length, dim), keys, values,
                                         attn_mask=mask, scale=scale)
    return out.view(rows, heads, length, dim)


def _run_layer(layer, is_lm, hidden, gate, mask, rope, position_ids, past_key_values) -> torch.Tensor:
    """One decoder layer; an image-only layer updates image positions only."""
    out = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rope,
                **{LAYER_CACHE_ARG: past_key_values})
    return out if is_lm else torch.where(gate, out, hidden)
