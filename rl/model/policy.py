"""The X-Omni policy: checkpoint-compatible loading/saving, image and text heads, learner log-probs.

`XOmniPolicy` holds `model` (rl.model.xomni_model.XOmniModel), `lm_head` and `mm_head` under X-Omni's own
parameter names, so a folder written by X-Omni's code loads here and a folder saved here loads there.
Image mode is a softmax over the first `image_vocab_size` rows of `mm_head`; the sampler and the
learner both take log-probs from `image_head`, so the first importance ratio is exactly 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache, DynamicCache
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from core.devices import DtypeName, resolve_dtype
from core.files import honour_umask
from core.paths import LocalPath, resolve_local_path
from rl.model.weights import (
    CONFIG_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    PolicyWeights,
    SafetensorsWeights,
    StateDictWeights,
    check_matches,
    fill,
)
from rl.model.xomni_model import XOmniConfig, XOmniModel

__all__ = ["XOmniConfig", "XOmniPolicy", "TokenLogprobs", "save_policy_state", "CONFIG_NAME", "WEIGHTS_NAME",
           "WEIGHTS_INDEX_NAME"]

LOGPROB_CHUNK_ROWS = 1024


class MultimodalHead(nn.Linear):
    """`mm_head`: an nn.Linear (same parameter) whose forward can use only its first `rows` outputs.

    Image mode takes the first `image_vocab_size` rows; going through `forward` rather than reading `.weight`
    lets FSDP2 gather the weight when the head is a sharding unit of its own.
    """

    def forward(self, hidden: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        return F.linear(hidden, self.weight if rows is None else self.weight[:rows])


class TokenLogprobs(NamedTuple):
    """logprobs: float32 [B, T]; entropy: float32 [B, T] of the same distribution, or None."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


class XOmniPolicy(nn.Module):
    """X-Omni's AR model. Build with `from_pretrained`, `from_config`, or `rl.model.tiny.tiny_policy`.

    Set `policy.model.gradient_checkpointing = True` to recompute decoder layers in the backward pass.
    """

    def __init__(self, config: XOmniConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        config._attn_implementation = attn_implementation
        self.config = config
        self.model = XOmniModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mm_head = MultimodalHead(config.hidden_size, config.mm_vocab_size, bias=False)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: XOmniConfig, seed: int = 0, torch_dtype: DtypeName | torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> XOmniPolicy:
        """Random weights like X-Omni's init: N(0, initializer_range) for linear and embedding weights,
        zero biases and padding rows, unit norms. Deterministic for a given seed, dtype and device type."""
        policy = cls._empty(config, torch_dtype, device)
        generator = torch.Generator(device=policy.mm_head.weight.device).manual_seed(seed)
        std = config.initializer_range
        with torch.no_grad():
            for module in policy.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.normal_(0.0, std, generator=generator)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
                if isinstance(module, nn.Embedding):
                    module.weight[module.padding_idx].zero_()
                if isinstance(module, Qwen2RMSNorm):
                    module.weight.fill_(1.0)
        return policy

    @classmethod
    def from_pretrained(cls, path: LocalPath, torch_dtype: DtypeName | torch.dtype = torch.float32,
                        device: torch.device | str | None = None,
                        attn_implementation: str = "sdpa") -> XOmniPolicy:
        """Load an X-Omni folder: config.json (model_type "x-omni") and model.safetensors or shards
        listed in model.safetensors.index.json. Every weight must be present and used (a mismatch is an
        error listing the keys); weights are read one tensor at a time straight into `torch_dtype` on `device`,
        so the host never holds more than one tensor beyond the model (none when `device` is a GPU).

        Args:
            path: the X-Omni folder (X-Omni-SFT to start RL from, or an exported checkpoint).
            torch_dtype: dtype the weights are read into (the learner keeps its own; the rollout casts).
            device: where they are allocated (None: the CPU).
            attn_implementation: transformers' attention kernel ("sdpa", "eager", ...).
        """
        folder = resolve_local_path(str(path), "path")
        weights = SafetensorsWeights(folder)
        policy = cls._empty(weights.config, torch_dtype, device, attn_implementation)
        check_matches(policy, weights, where=weights.source)
        fill(policy, weights)
        return policy

    @classmethod
    def _empty(cls, config: XOmniConfig, torch_dtype: DtypeName | torch.dtype, device: torch.device | str | None,
               attn_implementation: str = "sdpa") -> XOmniPolicy:
        """Allocate without initialising (weights are filled next; XOmniModel restores RoPE frequencies)."""
        with torch.device("meta"):
            policy = cls(config, attn_implementation)
        return policy.to(resolve_dtype(torch_dtype)).to_empty(device=device or "cpu")

    def save_pretrained(self, path: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and safetensors weights (see `save_policy_state`)."""
        save_policy_state(StateDictWeights(self.config, self.state_dict()), path, max_shard_size=max_shard_size)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: Cache | None = None) -> torch.Tensor:
        """Final-normed hidden states [B, L, C]; see XOmniModel.forward for mask and cache."""
        return self.model(input_ids, attention_mask, past_key_values)

    def new_cache(self) -> Cache:
        """An empty, growing KV cache (`DynamicCache`) for incremental decoding with `forward`. The sampler decodes
        on a static cache instead (`XOmniModel.decode`)."""
        return DynamicCache(config=self.config)

    def image_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Image-mode logits [..., image_vocab_size] from hidden states [..., C] (model dtype)."""
        return self.mm_head(hidden, self.config.image_vocab_size)

    def image_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """float32 [B, L, image_vocab_size]: log-softmax over the image codes for the next token at every
        position (X-Omni's image mode). Materialises all positions: for analysis, not for the learner."""
        return torch.log_softmax(self.image_head(self(input_ids, attention_mask)).float(), dim=-1)

    def text_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-mode logits [B, L, vocab_size] (model dtype)."""
        return self.lm_head(self(input_ids, attention_mask))

    def token_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, num_image_tokens: int,
                       temperature: float = 1.0, with_entropy: bool = False) -> TokenLogprobs:
        """Log-probs of the image tokens that end every row, for the learner (gradient flows).

        input_ids, attention_mask: [B, L] = left-padded prompt + `num_image_tokens` (T) image ids, as built
        by `PromptBatch.with_image_tokens`. Returns float32 [B, T]: log softmax(image logits / temperature)
        of each image token given its prefix (and the entropy of that distribution if asked). Logits are
        only formed at the T predicting positions, in chunks recomputed in the backward pass.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        length = input_ids.shape[1]
        if not 0 < num_image_tokens < length:
            raise ValueError(f"num_image_tokens must be in [1, {length - 1}] for sequences of length {length}")
        codes = input_ids[:, -num_image_tokens:] - self.config.vocab_size  # [B, T]
        if codes.min() < 0 or codes.max() >= self.config.image_vocab_size:
            raise ValueError("the last num_image_tokens ids of every row must be image ids "
                             f"(vocab_size + code, code < {self.config.image_vocab_size})")
        mask = None if attention_mask is None else attention_mask[:, :-1]
        hidden = self(input_ids[:, :-1], mask)[:, -num_image_tokens:]  # [B, T, C]: position t predicts t + 1
        logprobs, entropy = [], []
        flat_hidden, flat_codes = hidden.reshape(-1, hidden.shape[-1]), codes.reshape(-1)
        for start in range(0, flat_codes.numel(), LOGPROB_CHUNK_ROWS):
            rows = slice(start, start + LOGPROB_CHUNK_ROWS)
            args = (flat_hidden[rows], self.image_head, flat_codes[rows], temperature, with_entropy)
            if torch.is_grad_enabled() and (flat_hidden.requires_grad or self.mm_head.weight.requires_grad):
                out = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
            else:
                out = _chunk_logprobs(*args)
            logprobs.append(out[0])
            entropy.append(out[1])
        shape = codes.shape
        return TokenLogprobs(torch.cat(logprobs).view(shape),
                             torch.cat(entropy).view(shape) if with_entropy else None)


def save_policy_state(weights: PolicyWeights, path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                      max_shard_size: int | str = "5GB") -> None:
    """Write an X-Omni folder from a source of weights (a module's state dict, a training checkpoint over its
    base): config.json and safetensors weights in `dtype` (default: the source's), sharded with
    model.safetensors.index.json above `max_shard_size`, in the layout and key names X-Omni's own loader reads.

    One output file is in memory at a time. Files are readable as the umask says (safetensors alone writes 0600).
    """
    os.makedirs(path, exist_ok=True)
    shapes = weights.shapes()
    names = sorted(shapes)
    dtype = resolve_dtype(dtype) if dtype is not None else weights.read(names[0], slice(0, 0)).dtype
    meta = {name: torch.empty(shapes[name], dtype=dtype, device="meta") for name in names}
    split = split_torch_state_dict_into_shards(meta, max_shard_size=max_shard_size)
    config = weights.config
    config.dtype = dtype  # what `torch_dtype="auto"` loads, as transformers does
    written = [os.path.join(path, CONFIG_NAME)]
    config.to_json_file(written[0], use_diff=False)
    for filename, keys in split.filename_to_tensors.items():
        tensors = {k: weights.read(k).to(dtype).contiguous() for k in keys}
        written.append(os.path.join(path, filename))
        save_file(tensors, written[-1], metadata={"format": "pt"})
        del tensors
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        written.append(os.path.join(path, WEIGHTS_INDEX_NAME))
        with open(written[-1], "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    honour_umask(written)


def _chunk_logprobs(hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor,
                    temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [R, C], codes [R] -> (log-prob [R], entropy [R] or an empty tensor), float32."""
    logits = head(hidden).float() / temperature  # [R, K]
    logz = torch.logsumexp(logits, dim=-1)
    logprob = logits.gather(-1, codes[:, None]).squeeze(-1) - logz
    if not with_entropy:
        return logprob, logprob.new_empty(0)
    entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprob, entropy

