"""X-Omni's frozen image decoder: image codes -> SigLIP features -> FLUX (flow matching, true CFG) -> VAE.

Same computation as X-Omni's `FluxPipelineWithSigLIP`, both releases: velocity = neg + s * (pos - neg),
guidance embedding 1.0, sigmas linspace(1, 1/steps, steps) shifted by `calculate_shift` of the image sequence
length, latents / scaling_factor + shift_factor into the VAE, image size 16h x 16w for an h x w token grid.
The releases differ only in the transformer's text inputs, so one denoising loop serves both:
- X-Omni-En: the prompt through CLIP + T5; the negative CFG branch has the empty prompt AND a zeroed SigLIP tensor.
- X-Omni-Zh (`modeling_siglip_flux_zh.py`): text-free, no T5 or CLIP loaded; the negative branch is the zeroed
  SigLIP tensor alone and the prompt is never read.
Differences, each for RL: both CFG branches run in one batch, every sample draws its noise from its own
generator (its image does not depend on its batch companions), each distinct prompt is encoded once per call,
invalid images are flagged on the float output, and at cfg_scale 1 the negative branch is skipped (X-Omni-Zh's
pipeline runs it and computes neg + 1 * (pos - neg): the same velocity up to rounding).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Le
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from core.devices import DtypeName, resolve_device, resolve_dtype
from core.paths import LocalPath, resolve_local_path
from rl.compiled_shapes import graph_limit, pad_rows, padded_rows
from rl.decoder.base import DecodedImages, check_decoder_inputs, image_validity
from rl.decoder.cost import default_vae_batch_size
from rl.decoder.flux_siglip import FluxSigLIPTransformer, Variant, decoder_variant
from rl.decoder.teacache import TeaCache
from rl.decoder.text import FluxPromptEncoder, TextInputs
from rl.decoder.vq import VQProjector

# What each release reads from the FLUX.1-dev folder: X-Omni-Zh has no text encoders.
FLUX_SUBFOLDERS: dict[Variant, tuple[str, ...]] = {
    "en": ("vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    "zh": ("vae", "scheduler")}


@dataclass
class _Conditioning:
    """Transformer inputs shared by all steps for one chunk of n images (2n rows when CFG is on)."""

    siglip: torch.Tensor  # [n or 2n, h*w, z_channels]; the negative half is zero
    img_ids: torch.Tensor  # [h*w, 3]
    guidance: torch.Tensor | None  # [n or 2n]
    text: TextInputs  # En: encoder_hidden_states [n or 2n, L_txt, d_t5], pooled_projections, txt_ids [L_txt, 3]
    #                   Zh: empty (the text-free transformer takes none)

    @property
    def text_tokens(self) -> int:
        return self.text["txt_ids"].shape[0] if self.text else 0


class XOmniDecoder:
    """Frozen decoder implementing `ImageDecoder`: `decoder(tokens [N, h*w], (h, w), prompts, seeds)`.

    transformer: X-Omni-En's `FluxSigLIPTransformer` with a `prompt_encoder`, or X-Omni-Zh's text-free
        `FluxSigLIPZhTransformer` with prompt_encoder None (then prompts are accepted and not read).
    num_inference_steps, cfg_scale: flow-matching steps and true-CFG scale (X-Omni's model config holds them).
    guidance_scale: value of FLUX's distilled-guidance embedding (X-Omni uses 1.0).
    max_batch_size: images per transformer pass (a pass holds 2x as many rows when cfg_scale != 1).
    vae_batch_size: images per VAE decode call within a pass; None: `default_vae_batch_size` for the image size.
    teacache_threshold: X-Omni's TeaCache (rl/decoder/teacache.py): while an image's accumulated rescaled change
        stays under it, a step reuses the block stack's last residual; 0 runs every step (today's images exactly).
    cfg_until: the fraction of the steps, from the first, that run the negative CFG branch; the later steps run
        the positive branch alone (its velocity unguided). 1.0 is X-Omni's pipeline.

    transformer_calls / transformer_calls_skipped: rows (an image in one CFG branch at one step) whose block stack
    ran / was replaced by TeaCache, summed over every call so far: what a setting costs and what the cache saved.
    """

    def __init__(
        self,
        projector: VQProjector,
        transformer: FluxSigLIPTransformer,
        vae: AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler,
        prompt_encoder: FluxPromptEncoder | None,
        num_inference_steps: int,
        cfg_scale: float,
        guidance_scale: float = 1.0,
        max_batch_size: int = 8,
        dtype: DtypeName | torch.dtype = "float32",
        device: str | None = None,
        vae_batch_size: int | None = None,
        teacache_threshold: float = 0.0,
        cfg_until: float = 1.0,
    ):
        if num_inference_steps < 1 or max_batch_size < 1:
            raise ValueError("num_inference_steps and max_batch_size must be >= 1")
        if not (math.isfinite(teacache_threshold) and teacache_threshold >= 0) or not 0 <= cfg_until <= 1:
            raise ValueError(f"teacache_threshold must be a finite number >= 0 and cfg_until in [0, 1], got "
                             f"{teacache_threshold!r}, {cfg_until!r}")
        if vae_batch_size is not None and (type(vae_batch_size) is not int or vae_batch_size < 1):
            raise ValueError(f"vae_batch_size must be an int >= 1 or None, got {vae_batch_size!r}")
        if scheduler.config.get("stochastic_sampling", False):
            raise ValueError("stochastic_sampling schedulers draw noise without the per-sample generators")
        if transformer.siglip_embed is None or transformer.siglip_embed.in_features != projector.z_channels:
            raise ValueError(f"the transformer's siglip_embed must take the projector's {projector.z_channels} "
                             "channels (set siglip_channels)")
        text_free = transformer.variant == "zh"
        if text_free and prompt_encoder is not None:
            raise ValueError("X-Omni-Zh's decoder is text-free: pass prompt_encoder=None (no T5 or CLIP)")
        if not text_free and prompt_encoder is None:
            raise ValueError("X-Omni-En's decoder reads the prompt: it needs a FluxPromptEncoder (CLIP + T5)")
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        modules = [projector, transformer, vae]
        if prompt_encoder is not None:
            modules += [prompt_encoder.text_encoder, prompt_encoder.text_encoder_2]
        for module in modules:
            module.to(self.device).eval().requires_grad_(False)
            if next(module.parameters()).dtype != self.dtype:  # from_pretrained already loads in dtype
                module.to(self.dtype)
        self.projector, self.transformer, self.vae = projector, transformer, vae
        self.scheduler, self.prompt_encoder = scheduler, prompt_encoder
        self.num_inference_steps, self.cfg_scale = num_inference_steps, float(cfg_scale)
        self.guidance_scale, self.max_batch_size = float(guidance_scale), max_batch_size
        self.vae_batch_size = vae_batch_size
        self.teacache_threshold, self.cfg_until = float(teacache_threshold), float(cfg_until)
        self.transformer_calls = self.transformer_calls_skipped = 0
        self.compiled_shapes: set[tuple[int, int, int]] | None = None  # set by compile()
        self.latent_channels = vae.config.latent_channels
        self.pixels_per_token = 2 ** len(vae.config.block_out_channels)  # VAE /8 then 2x2 packing = 16

    @property
    def variant(self) -> Variant:
        """"en" or "zh": the X-Omni release whose decoder this is."""
        return self.transformer.variant

    @classmethod
    def from_pretrained(
        cls,
        xomni_path: LocalPath,
        flux_path: LocalPath,
        num_inference_steps: int | None = None,
        cfg_scale: float | None = None,
        dtype: DtypeName | None = None,
        device: str | None = None,
        max_batch_size: int = 8,
        max_sequence_length: int = 512,
        vae_batch_size: int | None = None,
        variant: Variant | None = None,
        teacache_threshold: Annotated[float, Ge(0)] = 0.0,
        cfg_until: Annotated[float, Ge(0), Le(1)] = 1.0,
    ) -> XOmniDecoder:
        """Load from an X-Omni model folder (its config.json `vision_config` names the projector file and
        the decoder's diffusers subfolder) and a FLUX.1-dev folder (VAE, scheduler and, for X-Omni-En, CLIP + T5).

        Which release the folder holds is read from the decoder's weight names (`decoder_variant`) before anything
        loads: X-Omni-Zh's text-free decoder loads no T5 or CLIP and needs only `vae/` and `scheduler/` there.

        Args:
            xomni_path: the X-Omni model folder (projector weights and the decoder's diffusers subfolder).
            flux_path: a FLUX.1-dev folder: its VAE, scheduler and (X-Omni-En only) text encoders are used.
            num_inference_steps: flow-matching steps; None: the X-Omni config's `vision_config.decoder`.
            cfg_scale: true-CFG scale (1.0: no unconditional pass); None: the X-Omni config's.
            dtype: decoder precision; None: the X-Omni config's `vision_config.dtype`.
            device: "cuda", "cpu", ...; None or "auto" picks CUDA when available.
            max_batch_size: images per transformer pass (a pass holds 2x as many rows when cfg_scale != 1).
            max_sequence_length: T5 tokens per prompt (X-Omni-En; X-Omni-Zh reads no prompt).
            vae_batch_size: images per VAE decode call (the VAE decodes a pass's images in slices of it); None:
                as many as keep every VAE activation within 2^30 elements (rl/decoder/cost.py; FLUX's VAE: 4 at
                1024 px, 28 at 384 px).
            variant: "en" or "zh": the release xomni_path must hold (ValueError naming both otherwise); None:
                whichever it holds.
            teacache_threshold: X-Omni's TeaCache threshold (`rel_l1_thresh`); 0 (the default) runs every step.
            cfg_until: fraction of the steps that run the negative CFG branch (1.0: all, as X-Omni).
        """
        xomni_path = resolve_local_path(xomni_path, "xomni_path")
        flux_path = resolve_local_path(flux_path, "flux_path")
        vision = _read_vision_config(xomni_path)
        encoder_cfg, decoder_cfg = vision.get("encoder", {}), vision.get("decoder", {})
        steps = num_inference_steps if num_inference_steps is not None else decoder_cfg.get("num_inference_steps")
        scale = cfg_scale if cfg_scale is not None else decoder_cfg.get("cfg_scale")
        if steps is None or scale is None:
            raise ValueError(f"{xomni_path}: vision_config.decoder lacks num_inference_steps/cfg_scale; "
                             "pass them explicitly")
        model_path = _inside(xomni_path, decoder_cfg, "model_path", "vision_config.decoder.model_path")
        found = decoder_variant(model_path)
        if variant is not None and variant != found:
            raise ValueError(f"variant: {model_path} holds X-Omni-{found.capitalize()}'s decoder, not "
                             f"X-Omni-{variant.capitalize()}'s (xomni_path: {xomni_path})")
        missing = [s for s in FLUX_SUBFOLDERS[found] if not os.path.isdir(os.path.join(flux_path, s))]
        if missing:
            raise FileNotFoundError(f"flux_path: {flux_path} lacks the FLUX.1 subfolders {missing}")
        torch_dtype = resolve_dtype(dtype or vision.get("dtype", "float32"))
        # Checked before any weights load: VAE /8 and 2x2 packing must give X-Omni's pixels per token.
        pixels_per_token = 2 ** len(AutoencoderKL.load_config(os.path.join(flux_path, "vae"))["block_out_channels"])
        if decoder_cfg.get("upscale_factor", pixels_per_token) != pixels_per_token:
            raise ValueError(f"vision_config.decoder.upscale_factor is {decoder_cfg['upscale_factor']} but the "
                             f"FLUX VAE and 2x2 packing give {pixels_per_token} pixels per token")

        projector = VQProjector.from_file(
            _inside(xomni_path, encoder_cfg, "projector_path", "vision_config.encoder.projector_path"))
        transformer = FluxSigLIPTransformer.from_pretrained(
            model_path, siglip_channels=projector.z_channels, torch_dtype=torch_dtype)
        prompt_encoder = _load_prompt_encoder(flux_path, torch_dtype, max_sequence_length) if found == "en" else None
        return cls(projector, transformer,
                   AutoencoderKL.from_pretrained(os.path.join(flux_path, "vae"), torch_dtype=torch_dtype),
                   FlowMatchEulerDiscreteScheduler.from_pretrained(os.path.join(flux_path, "scheduler")),
                   prompt_encoder,
                   num_inference_steps=steps, cfg_scale=scale, max_batch_size=max_batch_size,
                   dtype=torch_dtype, device=device, vae_batch_size=vae_batch_size,
                   teacache_threshold=teacache_threshold, cfg_until=cfg_until)

    def compile(self) -> XOmniDecoder:
        """torch.compile the FLUX transformer in place (`rollout.compile`); returns self.

        Shapes are static per (rows, image tokens, text tokens), the text padded to a fixed length: a pass's
        images are padded up to one of `row_buckets(max_batch_size)` (rl/compiled_shapes.py; 1, 2, 4, 8 at the
        default 8), so one grid compiles at most that many graphs (`compiled_shapes` holds them), all denoising
        steps reusing one. Passes run with dynamo's recompile limit raised to the shapes seen, and hitting it is an
        error, never a silent fall back to eager. Tested against eager on the CPU; never run on a GPU.
        TeaCache decides on the host and runs a varying subset of rows, so it cannot be compiled (ValueError).
        """
        if self.teacache_threshold > 0:
            raise ValueError("teacache_threshold > 0 decodes eagerly: set it to 0 or rollout.compile to false")
        self.transformer.compile(dynamic=False)
        self.compiled_shapes = set()
        return self

    @property
    def compiled_graphs(self) -> int:
        """The transformer's graphs compiled so far: one per shape (0 when not compiled)."""
        return len(self.compiled_shapes or ())

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, grid: tuple[int, int], prompts: Sequence[str],
                 seeds: Sequence[int]) -> DecodedImages:
        """tokens: long [N, h*w] -> images float32 [N, 3, 16h, 16w] in [0, 1] and valid bool [N]."""
        check_decoder_inputs(tokens, grid, prompts, seeds)
        text = self.prompt_encoder.transformer_inputs(prompts) if self.prompt_encoder is not None else {}
        images = []
        for start in range(0, tokens.shape[0], self.max_batch_size):
            chunk = slice(start, start + self.max_batch_size)
            images.append(self._decode_chunk(tokens[chunk], grid, {k: v[chunk] for k, v in text.items()},
                                             seeds[chunk]))
        raw = torch.cat(images).float().cpu()  # CPU: the images travel to reward actors
        return DecodedImages(images=raw.clamp(0, 1), valid=image_validity(raw))

    def _decode_chunk(self, tokens: torch.Tensor, grid: tuple[int, int], text: TextInputs,
                      seeds: Sequence[int]) -> torch.Tensor:
        """n images: tokens [n, h*w] and their text inputs (each [n, ...]; none for X-Omni-Zh) -> float
        [n, 3, 16h, 16w] in [0, 1], not yet clamped."""
        h, w = grid
        num_images = tokens.shape[0]
        if self.compiled_shapes is not None:
            tokens, text, seeds = self._pad_chunk(tokens, text, seeds)
        features = self.projector.decode(tokens.to(self.device), h, w)  # [n, C, h, w]
        siglip = features.flatten(2).transpose(1, 2)  # [n, h*w, C], raster order = packed latent order
        cond = self._conditioning(siglip, text, grid)
        latents = self._initial_latents(seeds, grid)  # [n, h*w, 4 * latent_channels]
        sigmas = np.linspace(1.0, 1 / self.num_inference_steps, self.num_inference_steps)
        cfg = self.scheduler.config
        mu = calculate_shift(h * w, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        self.scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=self.device)
        cache = (TeaCache(self.teacache_threshold, self.num_inference_steps, latents.shape[0])
                 if self.teacache_threshold > 0 else None)
        with self._graph_limit(cond):
            for step, t in enumerate(self.scheduler.timesteps):
                velocity = self._velocity(latents, t, cond, step < self.cfg_steps, cache)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
        if cache is not None:
            self.transformer_calls += cache.calls
            self.transformer_calls_skipped += cache.skipped
        return self._to_pixels(latents[:num_images], grid)  # the padding rows go before the VAE

    @property
    def cfg_steps(self) -> int:
        """How many steps, from the first, run the negative CFG branch (`cfg_until` of them, rounded up)."""
        return math.ceil(round(self.cfg_until * self.num_inference_steps, 6))

    def _pad_chunk(self, tokens: torch.Tensor, text: TextInputs,
                   seeds: Sequence[int]) -> tuple[torch.Tensor, TextInputs, list[int]]:
        """A compiled pass's n images padded to `padded_rows(n, max_batch_size)` by repeating the last one: tokens
        [n', h*w], each text input [n', ...], n' seeds. Each image's noise comes from its own seed and rows do not
        mix, so the padding changes no real image."""
        rows = padded_rows(tokens.shape[0], self.max_batch_size)
        seeds = list(seeds) + [seeds[-1]] * (rows - len(seeds))
        return pad_rows(tokens, rows), {k: pad_rows(v, rows) for k, v in text.items()}, seeds

    def _graph_limit(self, cond: _Conditioning) -> AbstractContextManager:
        """Compiled: records this pass's transformer shape (rows, image tokens, text tokens) and gives dynamo room
        for one graph per shape seen (use as `with`). Eager: nothing."""
        if self.compiled_shapes is None:
            return nullcontext()
        rows = cond.siglip.shape[0]
        self.compiled_shapes.add((rows, cond.siglip.shape[1], cond.text_tokens))
        if self.cfg_steps < self.num_inference_steps and self.cfg_scale != 1.0:  # the positive rows alone
            self.compiled_shapes.add((rows // 2, cond.siglip.shape[1], cond.text_tokens))
        return graph_limit(len(self.compiled_shapes))

    def _conditioning(self, siglip: torch.Tensor, text: TextInputs, grid: tuple[int, int]) -> _Conditioning:
        """siglip [n, h*w, C] and the text inputs (each [n, ...]) -> the transformer inputs of every step."""
        text = {k: v.to(self.device, self.dtype) for k, v in text.items()}
        if self.cfg_scale != 1.0:  # batch the negative branch: zeroed SigLIP tensor (En: and the empty prompt)
            empty = self.prompt_encoder.empty_inputs() if self.prompt_encoder is not None else {}
            text = {k: torch.cat([v, empty[k].to(v).expand_as(v)]) for k, v in text.items()}
            siglip = torch.cat([siglip, torch.zeros_like(siglip)])
        if text:
            text["txt_ids"] = torch.zeros(text["encoder_hidden_states"].shape[1], 3, device=self.device,
                                          dtype=self.dtype)
        h, w = grid
        img_ids = torch.zeros(h, w, 3, device=self.device)
        img_ids[..., 1] = torch.arange(h, device=self.device)[:, None]
        img_ids[..., 2] = torch.arange(w, device=self.device)[None, :]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((siglip.shape[0],), self.guidance_scale, device=self.device)
        return _Conditioning(siglip, img_ids.reshape(h * w, 3).to(self.dtype), guidance, text)

    def _velocity(self, latents: torch.Tensor, t: torch.Tensor, cond: _Conditioning, guided: bool,
                  cache: TeaCache | None) -> torch.Tensor:
        """Velocity [n, h*w, 4 * latent_channels], guided when CFG is on and `guided` (this step is within
        cfg_until), else the positive branch's alone. Both releases step through here: X-Omni-En's text inputs
        are in `cond.text`, X-Omni-Zh has none."""
        n = latents.shape[0]
        rows = cond.siglip.shape[0] if guided else n
        hidden = latents if rows == n else torch.cat([latents, latents])
        text = {k: v if k == "txt_ids" else v[:rows] for k, v in cond.text.items()}  # txt_ids: positions, no rows
        guidance = cond.guidance[:rows] if cond.guidance is not None else None
        velocity = self.transformer(
            hidden_states=hidden, timestep=t.expand(rows).to(self.dtype) / 1000, img_ids=cond.img_ids,
            guidance=guidance, siglip_tensor=cond.siglip[:rows], teacache=cache, **text)
        if cache is None:  # TeaCache counts its own rows, added once the pass ends
            self.transformer_calls += rows
        if rows == n:
            return velocity
        positive, negative = velocity.chunk(2)
        return negative + self.cfg_scale * (positive - negative)

    def _initial_latents(self, seeds: Sequence[int], grid: tuple[int, int]) -> torch.Tensor:
        """Packed noise [n, h*w, 4 * latent_channels], sample i from a CPU generator seeded with seeds[i].

        CPU generators in float32 make a seed's noise the same on every device and dtype.
        """
        h, w = grid
        noise = torch.stack([
            torch.randn(self.latent_channels, 2 * h, 2 * w, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds])
        return pack_latents(noise).to(self.device, self.dtype)

    def _to_pixels(self, latents: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Packed latents [n, h*w, 4c] -> images [n, 3, 16h, 16w] mapped from [-1, 1] to [0, 1].

        The VAE decodes slices of vae_batch_size images: at 1024 px its full-resolution tensors are 2^28 elements
        per image, so 8 at once pass the 32-bit indexing limit of some CUDA kernels. (AutoencoderKL's own
        slicing decodes one image at a time, slower for small images.)
        """
        latents = unpack_latents(latents, grid)  # [n, c, 2h, 2w]
        config = self.vae.config
        latents = latents / config.scaling_factor + (config.shift_factor or 0.0)
        height, width = (self.pixels_per_token * side for side in grid)
        size = self.vae_batch_size or default_vae_batch_size(config, height, width)
        pixels = [self.vae.decode(part, return_dict=False)[0] for part in latents.split(size)]
        return torch.cat(pixels) / 2 + 0.5


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, c, 2h, 2w] -> [B, h*w, 4c]: each 2x2 patch becomes one token (FLUX's packing, raster order)."""
    b, c, hh, ww = latents.shape
    latents = latents.view(b, c, hh // 2, 2, ww // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (hh // 2) * (ww // 2), c * 4)


def unpack_latents(latents: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, h*w, 4c] -> [B, c, 2h, 2w]; the inverse of `pack_latents`."""
    (h, w), (b, _, channels) = grid, latents.shape
    latents = latents.view(b, h, w, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, channels // 4, 2 * h, 2 * w)


def _load_prompt_encoder(flux_path: str, dtype: torch.dtype, max_sequence_length: int) -> FluxPromptEncoder:
    def sub(name: str) -> str:
        return os.path.join(flux_path, name)

    return FluxPromptEncoder(
        CLIPTextModel.from_pretrained(sub("text_encoder"), dtype=dtype),
        CLIPTokenizer.from_pretrained(sub("tokenizer")),
        T5EncoderModel.from_pretrained(sub("text_encoder_2"), dtype=dtype),
        T5Tokenizer.from_pretrained(sub("tokenizer_2")),
        max_sequence_length=max_sequence_length)


def _read_vision_config(xomni_path: str) -> dict:
    config_file = os.path.join(xomni_path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"xomni_path: {xomni_path} has no config.json")
    with open(config_file) as f:
        vision = json.load(f).get("vision_config")
    if not isinstance(vision, dict):
        raise ValueError(f"{config_file}: no vision_config (not an X-Omni checkpoint?)")
    return vision


def _inside(root: str, section: dict, name: str, key: str) -> str:
    """Path `section[name]` relative to the X-Omni folder, or a clear error naming the config key."""
    if name not in section:
        raise ValueError(f"{root}/config.json: {key} is not set")
    path = os.path.join(root, section[name])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {path} not found")
    return path
