"""FLUX.1's prompt encoding (CLIP pooled vector + T5 token states) for the English X-Omni decoder.

X-Omni-Zh's decoder is text-free: it has no prompt encoder, and its transformer takes no text inputs (an empty
`TextInputs`).

Same computation as diffusers' FluxPipeline.encode_prompt: both tokenizers pad to their maximum length,
no attention mask is passed to either encoder, CLIP contributes only its pooled output. In RL a batch
repeats each prompt G times, so each distinct prompt is encoded once; the empty prompt of the negative
CFG branch is encoded once per decoder and cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

TextInputs = dict[str, torch.Tensor]
"""The decoder transformer's text keyword arguments: X-Omni-En's `encoder_hidden_states` [rows, L, d_t5] and
`pooled_projections` [rows, d_clip] (the pipeline adds `txt_ids` [L, 3]); empty for X-Omni-Zh."""


class FluxPromptEncoder:
    """prompts -> (T5 states [P, max_sequence_length, d_t5], CLIP pooled [P, d_clip]). Frozen."""

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 text_encoder_2: T5EncoderModel, tokenizer_2: T5Tokenizer, max_sequence_length: int = 512):
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2.eval().requires_grad_(False)
        self.tokenizer_2 = tokenizer_2
        self.max_sequence_length = max_sequence_length
        self._empty: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode `prompts`; each distinct string goes through the encoders once."""
        unique = list(dict.fromkeys(prompts))
        states, pooled = self._encode(unique)
        index = torch.tensor([unique.index(p) for p in prompts], device=states.device)
        return states[index], pooled[index]

    def empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty prompt's encoding [1, L, d_t5], [1, d_clip], computed once."""
        if self._empty is None:
            self._empty = self([""])
        return self._empty

    def transformer_inputs(self, prompts: Sequence[str]) -> TextInputs:
        """`self(prompts)` under the En transformer's argument names: one row per prompt."""
        states, pooled = self(prompts)
        return {"encoder_hidden_states": states, "pooled_projections": pooled}

    def empty_inputs(self) -> TextInputs:
        """The negative CFG branch's text inputs: the empty prompt's, one row each."""
        states, pooled = self.empty()
        return {"encoder_hidden_states": states, "pooled_projections": pooled}

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        clip_ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids
        pooled = self.text_encoder(clip_ids.to(self.text_encoder.device)).pooler_output
        t5_ids = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
        states = self.text_encoder_2(t5_ids.to(self.text_encoder_2.device)).last_hidden_state
        return states, pooled.to(states.device)
