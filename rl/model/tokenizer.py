"""Tokenizer loading and X-Omni's image-generation prompt format.

A generation prompt is `prompt + "<SOM>{h} {w}<IMAGE>"` (no chat template), followed by exactly h*w
image tokens (id = vocab_size + code) and then `<EOM>`; the unconditional (CFG) prefix is
`"<SOM>{h} {w}<IMAGE>"` alone. Where the special ids fall (below vocab_size or among the extra
multimodal rows) is read from the tokenizer, never assumed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from core.paths import LocalPath, resolve_local_path
from rl.model.xomni_model import MM_SPECIAL_TOKENS, XOmniConfig

SOM, _EOM, IMAGE = MM_SPECIAL_TOKENS  # <EOM> closes a finished image; generation never writes it


def load_tokenizer(path: LocalPath) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer folder (e.g. X-Omni's Qwen2.5 tokenizer), local files only.

    Args:
        path: the folder (an X-Omni model folder holds one).

    Raises if it lacks `<SOM>`, `<EOM>` or `<IMAGE>`, or a pad token (prompts are left-padded).
    """
    folder = resolve_local_path(str(path), "path")
    # In an X-Omni folder, AutoTokenizer would read config.json as a generic config (transformers does not know
    # model_type "x-omni") and warn twice on every load: an unknown model type and a deprecated `rope_scaling`.
    # Our own config class reads it silently; the tokenizer class still comes from tokenizer_config.json.
    config_file = os.path.join(folder, "config.json")
    config = None
    if os.path.isfile(config_file):
        with open(config_file) as f:
            raw = json.load(f)
        if raw.get("model_type") == XOmniConfig.model_type:
            config = XOmniConfig.from_dict(raw)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **({"config": config} if config else {}))
    check_tokenizer(tokenizer)
    return tokenizer


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError unless the tokenizer has X-Omni's special tokens and a pad token."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in MM_SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks X-Omni's special tokens {missing} (is it X-Omni's tokenizer?)")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; prompts of different lengths are left-padded with it")


def image_prefix(grid: tuple[int, int]) -> str:
    """`<SOM>{h} {w}<IMAGE>` for a token grid of h rows and w columns."""
    if len(grid) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid):
        raise ValueError(f"grid must be two positive ints (h, w), got {grid!r}")
    h, w = grid
    return f"{SOM}{h} {w}{IMAGE}"


@dataclass(frozen=True)
class PromptBatch:
    """Encoded generation prompts for one token grid.

    input_ids: long [N, P], prompt + image prefix, left-padded.
    attention_mask: long [N, P], 1 for real tokens.
    uncond_ids: long [P_u], the image prefix alone (the CFG branch).
    grid: (h, w); the image is h*w tokens.
    vocab_size: the policy's text vocabulary size: image code k has id vocab_size + k.
    pad_id: the id used for padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    uncond_ids: torch.Tensor
    grid: tuple[int, int]
    vocab_size: int
    pad_id: int

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def with_image_tokens(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The full sequences the learner scores: (input_ids, attention_mask), both long [N, P + h*w].

        codes: long [N, h*w] image codes in [0, image_vocab_size), raster order.
        """
        if codes.shape != (self.input_ids.shape[0], self.num_image_tokens):
            raise ValueError(f"codes must be [N, h*w] = {[self.input_ids.shape[0], self.num_image_tokens]}, "
                             f"got {list(codes.shape)}")
        codes = codes.to(self.input_ids.device)
        input_ids = torch.cat([self.input_ids, codes + self.vocab_size], dim=1)
        attention_mask = torch.cat([self.attention_mask, torch.ones_like(codes)], dim=1)
        return input_ids, attention_mask

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(self.input_ids.to(device), self.attention_mask.to(device), self.uncond_ids.to(device),
                           self.grid, self.vocab_size, self.pad_id)


class PromptFormat:
    """Encodes prompts in X-Omni's generation format for a policy with text vocabulary `vocab_size`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int):
        check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    def encode(self, prompts: list[str], grid: tuple[int, int]) -> PromptBatch:
        """Left-padded ids for `prompt + <SOM>{h} {w}<IMAGE>`, as X-Omni's generation script builds them."""
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        prefix = image_prefix(grid)
        encoded = self.tokenizer([p + prefix for p in prompts], padding="longest", padding_side="left",
                                 return_tensors="pt")
        uncond = self.tokenizer(prefix, add_special_tokens=False, return_tensors="pt").input_ids[0]
        return PromptBatch(encoded.input_ids, encoded.attention_mask.long(), uncond, tuple(grid),
                           self.vocab_size, self.tokenizer.pad_token_id)
