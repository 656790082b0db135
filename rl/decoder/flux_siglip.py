"""FLUX transformers conditioned on SigLIP features: X-Omni-En's and X-Omni-Zh's diffusion decoders.

One linear layer `siglip_embed` (SigLIP width -> inner dim, no bias) projects the per-token SigLIP
features; its output is added to the image stream after the double-stream blocks and before the
single-stream blocks. Token grids match 1:1 (VAE /8, then 2x2 packing), so the SigLIP tensor has one row
per packed latent token. Checkpoints written by X-Omni's `FluxTransformer2DModelWithSigLIP` (diffusers
0.34) load unchanged; the forward is written against the blocks of the installed diffusers.

The two releases share that file's class name and config keys but not their layout:
- En (`FluxSigLIPTransformer`): FLUX.1-dev with its text stream (T5 states, CLIP pooled vector).
- Zh (`FluxSigLIPZhTransformer`): text-free. The double-stream blocks are image-only self-attention blocks,
  the pooled vector is a learned parameter `pooled_embeds` and true CFG contrasts SigLIP with zeroed SigLIP.
`FluxSigLIPTransformer.from_pretrained` tells them apart by the weight names (`decoder_variant`) before it
builds anything, builds the matching class, and refuses a file whose names are not exactly the model's.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from typing import Any, ClassVar, Literal

import torch
from diffusers import FluxTransformer2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.normalization import AdaLayerNormZero
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor
from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import safe_open
from torch import nn

from core.weights import check_weight_names
from rl.decoder.teacache import BlockStack, TeaCache

logger = logging.getLogger(__name__)

Variant = Literal["en", "zh"]
ZH_MARKER = "pooled_embeds"  # the learned pooled vector: only X-Omni-Zh's file has it


def weight_names(folder: str | os.PathLike) -> tuple[set[str], str]:
    """(every tensor name of a diffusers folder, the file that lists them: the weights or the shard index),
    read from the safetensors headers only: no tensor is loaded."""
    folder = os.fspath(folder)
    index, single = os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME), os.path.join(folder, SAFETENSORS_WEIGHTS_NAME)
    if os.path.isfile(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"]), index
    if not os.path.isfile(single):
        raise FileNotFoundError(f"no {SAFETENSORS_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} in {folder}")
    with safe_open(single, framework="pt") as f:
        return set(f.keys()), single


def decoder_variant(folder: str | os.PathLike) -> Variant:
    """"zh" when the folder's weights hold X-Omni-Zh's `pooled_embeds`, else "en" (the config cannot tell: both
    releases write the same class name and keys)."""
    return "zh" if ZH_MARKER in weight_names(folder)[0] else "en"


class FluxSigLIPTransformer(FluxTransformer2DModel):
    """X-Omni-En's decoder: `FluxTransformer2DModel` plus the SigLIP injection. Config keys as in X-Omni's
    checkpoints; `variant` says which release a loaded model is ("en" here, "zh" for the subclass).

    siglip_channels: width of the SigLIP features (1536 for SigLIP2-g); None builds no `siglip_embed`.
    drop_token_prob: X-Omni's training-time token dropout on the SigLIP tensor. Kept so the checkpoint
        config round-trips; the frozen decoder never drops tokens.
    """

    variant: ClassVar[Variant] = "en"

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        out_channels: int | None = None,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, int, int] = (16, 56, 56),
        siglip_channels: int | None = None,
        drop_token_prob: float = 0.0,
    ):
        super().__init__(
            patch_size=patch_size,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=axes_dims_rope,
        )
        self.siglip_embed = None
        if siglip_channels is not None:
            # Zero-initialised as in X-Omni, so a fresh model starts as plain FLUX.
            self.siglip_embed = nn.Linear(siglip_channels, self.inner_dim, bias=False)
            nn.init.zeros_(self.siglip_embed.weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> FluxSigLIPTransformer:
        """Load X-Omni-En's or X-Omni-Zh's decoder folder as the class its weights call for.

        Called on `FluxSigLIPTransformer`, either variant loads; called on a variant's class, a folder of the other
        variant is an error. `kwargs` are diffusers' (`torch_dtype`, config overrides such as `siglip_channels`).
        The folder's tensor names must be exactly the model's (ValueError naming a few and the file otherwise), so
        no parameter is ever left at a random initialisation.
        """
        folder = os.fspath(pretrained_model_name_or_path)
        variant = decoder_variant(folder)
        target = VARIANTS[variant]
        if cls is not FluxSigLIPTransformer and cls is not target:
            raise ValueError(f"{folder} holds X-Omni-{variant.capitalize()}'s decoder; {cls.__name__} loads "
                             f"X-Omni-{cls.variant.capitalize()}'s")
        names, source = weight_names(folder)
        check_weight_names(target._expected_names(folder, kwargs), names, where=source)
        logger.info("%s: X-Omni-%s decoder (%s)", folder, variant.capitalize(), target.__name__)
        # diffusers' loader itself, bound to the variant's class.
        return super(FluxSigLIPTransformer, target).from_pretrained(folder, **kwargs)

    @classmethod
    def _expected_names(cls, folder: str, kwargs: dict[str, Any]) -> set[str]:
        """State-dict names of this class built from the folder's config and the config overrides in `kwargs`,
        on the meta device (no memory, no initialisation)."""
        parameters = inspect.signature(cls.__init__).parameters
        config = {**cls.load_config(folder), **{k: v for k, v in kwargs.items() if k in parameters}}
        with torch.device("meta"):
            return set(cls.from_config(config).state_dict())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        siglip_tensor: torch.Tensor | None = None,
        teacache: TeaCache | None = None,
    ) -> torch.Tensor:
        """Predicted flow-matching velocity [B, L_img, out_channels].

        hidden_states: packed latents [B, L_img, in_channels]; encoder_hidden_states: T5 states
        [B, L_txt, joint_attention_dim]; pooled_projections: CLIP pooled [B, pooled_projection_dim];
        timestep, guidance: [B] in [0, 1] (scaled by 1000 inside, as FLUX does); img_ids [L_img, 3],
        txt_ids [L_txt, 3]: rotary position ids; siglip_tensor: [B, L_img, siglip_channels] or None;
        teacache: this decode pass's X-Omni TeaCache (rl/decoder/teacache.py), None to run every block.
        """
        hidden_states = self.x_embedder(hidden_states)
        temb = self._conditioning(timestep, guidance, pooled_projections, hidden_states.dtype)
        encoder_hidden_states = self.context_embedder(encoder_hidden_states)
        rotary = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

        def blocks(hidden: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
            text, emb = _take(encoder_hidden_states, rows), _take(temb, rows)
            for block in self.transformer_blocks:
                text, hidden = block(hidden_states=hidden, encoder_hidden_states=text, temb=emb,
                                     image_rotary_emb=rotary)
            hidden = self._add_siglip(hidden, _take(siglip_tensor, rows))
            return self._single_stream(hidden, text, emb, rotary)

        return self._blocks_and_out(hidden_states, temb, blocks, teacache)

    def _conditioning(self, timestep: torch.Tensor, guidance: torch.Tensor | None, pooled: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
        """temb [B, inner_dim] from timestep and guidance [B] in [0, 1] (FLUX embeds them x 1000) and the
        pooled vector [B, pooled_projection_dim]."""
        timestep = timestep.to(dtype) * 1000
        if guidance is None:
            return self.time_text_embed(timestep, pooled)
        return self.time_text_embed(timestep, guidance.to(dtype) * 1000, pooled)

    def _add_siglip(self, hidden_states: torch.Tensor, siglip_tensor: torch.Tensor | None) -> torch.Tensor:
        """hidden_states [B, L_img, inner_dim] plus siglip_embed(siglip_tensor [B, L_img, siglip_channels])."""
        if siglip_tensor is None:
            return hidden_states
        if self.siglip_embed is None:
            raise ValueError("siglip_tensor given but the model has no siglip_embed (siglip_channels=None)")
        return hidden_states + self.siglip_embed(siglip_tensor.to(hidden_states.dtype))

    def _single_stream(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                       rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The single-stream blocks over [text; image] tokens: image [B, L_img, inner_dim] -> the same shape.
        encoder_hidden_states [B, L_txt, inner_dim] (L_txt = 0 for a text-free model); rotary covers L_txt + L_img
        positions."""
        # In diffusers 0.42 single-stream blocks take and return the text and image streams separately.
        for block in self.single_transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                temb=temb, image_rotary_emb=rotary)
        return hidden_states

    def _blocks_and_out(self, hidden_states: torch.Tensor, temb: torch.Tensor, blocks: BlockStack,
                        teacache: TeaCache | None) -> torch.Tensor:
        """The block stack (through the TeaCache when one is given), then the output head: embedded image tokens
        [B, L_img, inner_dim] -> velocity [B, L_img, out_channels]."""
        if teacache is None:
            hidden_states = blocks(hidden_states, None)
        else:
            modulated = self.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]
            hidden_states = teacache(hidden_states, modulated, blocks)
        return self.proj_out(self.norm_out(hidden_states, temb))


def _take(tensor: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    """The given rows of a batch-first tensor (all of it when rows is None)."""
    return tensor if tensor is None or rows is None else tensor[rows]


class ImageSelfAttentionBlock(nn.Module):
    """X-Omni-Zh's double-stream block without its text stream: AdaLayerNormZero, self-attention, MLP.

    Parameter names follow FLUX's double-stream block (`norm1`, `attn`, `ff`) as X-Omni's file does.
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim)
        self.attn = FluxAttention(query_dim=dim, heads=num_attention_heads, dim_head=attention_head_dim,
                                  out_dim=dim, bias=True, eps=eps, processor=FluxAttnProcessor())
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim=dim, dim_out=dim, activation_fn="gelu-approximate")

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """hidden_states [B, L_img, dim], temb [B, dim] -> [B, L_img, dim]."""
        norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)
        # FLUX's processor applies `attn.to_out` only when there is a text stream, so without one the attention
        # output is used as it is: X-Omni-Zh's file saves `to_out` weights that its forward never reads.
        hidden_states = hidden_states + gate_msa[:, None] * self.attn(norm_hidden, image_rotary_emb=image_rotary_emb)
        norm_hidden = self.norm2(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return hidden_states + gate_mlp[:, None] * self.ff(norm_hidden)


class FluxSigLIPZhTransformer(FluxSigLIPTransformer):
    """X-Omni-Zh's text-free decoder: same config keys as `FluxSigLIPTransformer`.

    `context_embedder` and the CLIP projection `time_text_embed.text_embedder` stay, as in X-Omni's file: the
    first is saved but unused, the second embeds the learned `pooled_embeds` [1, pooled_projection_dim].
    """

    variant: ClassVar[Variant] = "zh"

    # The signature is the parent's, spelled out again: diffusers' `register_to_config` records a model's config
    # from its own `__init__` parameters, so a subclass that takes `**kwargs` would save and load no keys.
    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        out_channels: int | None = None,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, int, int] = (16, 56, 56),
        siglip_channels: int | None = None,
        drop_token_prob: float = 0.0,
    ):
        super().__init__(patch_size, in_channels, out_channels, num_layers, num_single_layers, attention_head_dim,
                         num_attention_heads, joint_attention_dim, pooled_projection_dim, guidance_embeds,
                         axes_dims_rope, siglip_channels, drop_token_prob)
        self.transformer_blocks = nn.ModuleList(
            [ImageSelfAttentionBlock(self.inner_dim, num_attention_heads, attention_head_dim)
             for _ in range(num_layers)])
        self.pooled_embeds = nn.Parameter(torch.zeros(1, pooled_projection_dim))

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        siglip_tensor: torch.Tensor | None = None,
        teacache: TeaCache | None = None,
    ) -> torch.Tensor:
        """Predicted flow-matching velocity [B, L_img, out_channels], called as X-Omni-Zh's pipeline calls it.

        hidden_states: packed latents [B, L_img, in_channels]; timestep, guidance: [B] in [0, 1];
        img_ids [L_img, 3]; siglip_tensor [B, L_img, siglip_channels] (zeros for the negative CFG branch);
        teacache: this decode pass's X-Omni TeaCache, None to run every block.
        """
        hidden_states = self.x_embedder(hidden_states)
        pooled = self.pooled_embeds.to(hidden_states.dtype).expand(hidden_states.shape[0], -1)
        temb = self._conditioning(timestep, guidance, pooled, hidden_states.dtype)
        rotary = self.pos_embed(img_ids)

        def blocks(hidden: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
            emb = _take(temb, rows)
            for block in self.transformer_blocks:
                hidden = block(hidden, emb, rotary)
            hidden = self._add_siglip(hidden, _take(siglip_tensor, rows))
            no_text = hidden.new_empty(hidden.shape[0], 0, hidden.shape[2])
            return self._single_stream(hidden, no_text, emb, rotary)

        return self._blocks_and_out(hidden_states, temb, blocks, teacache)


VARIANTS: dict[Variant, type[FluxSigLIPTransformer]] = {"en": FluxSigLIPTransformer, "zh": FluxSigLIPZhTransformer}
