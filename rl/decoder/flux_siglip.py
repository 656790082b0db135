"""FLUX transformer conditioned on SigLIP features, as X-Omni's diffusion decoder.

One linear layer `siglip_embed` (SigLIP width -> inner dim, no bias) projects the per-token SigLIP
features; its output is added to the image stream after the double-stream blocks and before the
single-stream blocks. Token grids match 1:1 (VAE /8, then 2x2 packing), so the SigLIP tensor has one row
per packed latent token. Checkpoints written by X-Omni's `FluxTransformer2DModelWithSigLIP` (diffusers
0.34) load unchanged; the forward is written against the blocks of the installed diffusers.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from diffusers.configuration_utils import register_to_config
from torch import nn


class FluxSigLIPTransformer(FluxTransformer2DModel):
    """`FluxTransformer2DModel` plus the SigLIP injection. Config keys as in X-Omni's checkpoints.

    siglip_channels: width of the SigLIP features (1536 for SigLIP2-g); None builds no `siglip_embed`.
    drop_token_prob: X-Omni's training-time token dropout on the SigLIP tensor. Kept so the checkpoint
        config round-trips; the frozen decoder never drops tokens.
    """

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
    ) -> torch.Tensor:
        """Predicted flow-matching velocity [B, L_img, out_channels].

        hidden_states: packed latents [B, L_img, in_channels]; encoder_hidden_states: T5 states
        [B, L_txt, joint_attention_dim]; pooled_projections: CLIP pooled [B, pooled_projection_dim];
        timestep, guidance: [B] in [0, 1] (scaled by 1000 inside, as FLUX does); img_ids [L_img, 3],
        txt_ids [L_txt, 3]: rotary position ids; siglip_tensor: [B, L_img, siglip_channels] or None.
        """
        if siglip_tensor is not None and self.siglip_embed is None:
            raise ValueError("siglip_tensor given but the model has no siglip_embed (siglip_channels=None)")
        hidden_states = self.x_embedder(hidden_states)
        timestep = timestep.to(hidden_states.dtype) * 1000
        if guidance is None:
            temb = self.time_text_embed(timestep, pooled_projections)
        else:
            temb = self.time_text_embed(timestep, guidance.to(hidden_states.dtype) * 1000, pooled_projections)
        encoder_hidden_states = self.context_embedder(encoder_hidden_states)
        rotary = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

        for block in self.transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                temb=temb, image_rotary_emb=rotary)
        if siglip_tensor is not None:
            hidden_states = hidden_states + self.siglip_embed(siglip_tensor.to(hidden_states.dtype))
        # In diffusers 0.42 single-stream blocks take and return the text and image streams separately.
        for block in self.single_transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                temb=temb, image_rotary_emb=rotary)

        return self.proj_out(self.norm_out(hidden_states, temb))
