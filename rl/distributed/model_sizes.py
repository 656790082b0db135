"""Sizes of a run's models from their real classes built on the meta device: exact parameter counts, no
weights read, nothing allocated.

A component that loads a checkpoint (`XOmniPolicy.from_pretrained`, `XOmniDecoder.from_pretrained`) is
sized from the config files in its folder, or, while that folder is still `???`, from the config-only
folders shipped in configs/shapes/ (X-Omni-7B, X-Omni-Zh's decoder with `model.decoder.variant: zh`, FLUX.1-dev;
see configs/shapes/README.md). Any other model
component (the tiny models built in code) is built once for its config, and the policy is then counted on
the meta device from that config. A reward whose `model` argument names an open_clip architecture is sized
from that name.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from core.components import instantiate, resolve_component
from core.config import ConfigError, missing_reason, to_container
from rl.distributed.memory import DTYPE_BYTES, DecoderShape, PolicyShape, RewardShape
from rl.model.lora import LoraSettings, add_adapters, lora_layers
from rl.model.policy import XOmniConfig, XOmniPolicy
from rl.model.weights import read_config

SHAPES = Path(__file__).resolve().parents[2] / "configs" / "shapes"
XOMNI_SHAPES, FLUX_SHAPES = SHAPES / "x-omni-7b", SHAPES / "flux.1-dev"
DECODER_SHAPES = {"en": XOMNI_SHAPES, "zh": SHAPES / "x-omni-zh"}  # by model.decoder.variant (null: en)
T5_MAX_TOKENS = 512  # XOmniDecoder.from_pretrained's max_sequence_length default (FLUX pads T5 to it)


def count_parameters(build: Callable[[], nn.Module]) -> int:
    """Parameters of the module `build()` makes under the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class PolicySize:
    """shape: for the formulas; config: the policy's config; load_dtype: what its component loads weights in;
    source: where the shape came from (a folder, configs/shapes, or the component built on meta)."""

    shape: PolicyShape
    config: XOmniConfig
    load_dtype: str
    source: str


def policy_shape(config: XOmniConfig) -> PolicyShape:
    """The formulas' view of a policy, counted on the meta device."""
    with torch.device("meta"):
        policy = XOmniPolicy(config)
    total = sum(p.numel() for p in policy.parameters())
    layer = max(sum(p.numel() for p in layer.parameters()) for layer in policy.model.layers)
    layers = sum(p.numel() for p in policy.model.layers.parameters())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    units = {name: sum(p.numel() for p in module.parameters()) for name, module in (
        ("text_head", policy.lm_head), ("text_embedding", policy.model.lm_embed_tokens),
        ("image_embedding", policy.model.mm_embed_tokens), ("image_head", policy.mm_head))}
    text = {id(p) for p in [*policy.lm_head.parameters(), *policy.model.lm_embed_tokens.parameters()]}
    largest = max(p.numel() for p in policy.parameters() if id(p) not in text)
    return PolicyShape(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                       config.num_attention_heads, config.num_key_value_heads, head_dim, config.image_vocab_size,
                       total, layer, total - layers, **units, largest=largest)


def policy_size(node: DictConfig) -> PolicySize:
    """The `model.policy` component's size."""
    target = resolve_component(str(node["_component_"]))
    if target == XOmniPolicy.from_pretrained:
        folder, source = _folder(node, "model.policy", "path", XOMNI_SHAPES)
        config = read_config(str(folder))
    else:  # a model built in code (small): built once for its config
        config, source = instantiate(node, "model.policy").config, str(node["_component_"])
    load_dtype = str(_arguments(target, node).get("torch_dtype", "float32")).removeprefix("torch.")
    return PolicySize(policy_shape(config), config, load_dtype, source)


def decoder_size(node: DictConfig) -> tuple[DecoderShape, str]:
    """The `model.decoder` component's parts (parameters per part) and where they came from."""
    from rl.decoder.pipeline import XOmniDecoder

    target = resolve_component(str(node["_component_"]))
    if target == XOmniDecoder.from_pretrained:
        return _pretrained_decoder(node)
    decoder = instantiate(node, "model.decoder")  # the demo and tiny decoders are small: build them for real
    if isinstance(decoder, XOmniDecoder):
        text = decoder.prompt_encoder  # None: X-Omni-Zh's text-free decoder
        modules = {"VQ projector": decoder.projector, "decoder transformer": decoder.transformer,
                   "VAE": decoder.vae, "CLIP text encoder": text and text.text_encoder,
                   "T5 text encoder": text and text.text_encoder_2}
        counts = {name: _count(m) for name, m in modules.items()}
        shape = _decoder_shape(counts, next(decoder.transformer.parameters()).dtype, decoder.transformer.inner_dim,
                               text.max_sequence_length if text else 0, text and text.text_encoder_2,
                               dict(decoder.vae.config), decoder.cfg_scale, decoder.max_batch_size,
                               decoder.vae_batch_size)
        return shape, str(node["_component_"])
    counts = {name: sum(p.numel() for p in m.parameters())
              for name, m in vars(decoder).items() if isinstance(m, nn.Module)}
    return DecoderShape(parts=counts, bytes=4), f"{node['_component_']} ({sum(counts.values())} parameters)"


def _pretrained_decoder(node: DictConfig) -> tuple[DecoderShape, str]:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from rl.decoder.flux_siglip import VARIANTS
    from rl.decoder.vq import VQProjector

    kwargs = _arguments(resolve_component(str(node["_component_"])), node)
    variant = kwargs.get("variant")
    if variant not in (None, *VARIANTS):
        raise ConfigError([f"model.decoder.variant: must be one of {tuple(VARIANTS)} or null, got {variant!r}"])
    xomni, xomni_source = _folder(node, "model.decoder", "xomni_path", DECODER_SHAPES[variant or "en"])
    flux, flux_source = _folder(node, "model.decoder", "flux_path", FLUX_SHAPES, "vae/config.json")
    with open(xomni / "config.json") as f:
        vision = json.load(f)["vision_config"]
    encoder, decoder = vision["encoder"], vision["decoder"]
    variant = _decoder_variant(xomni, decoder["model_path"], variant)
    transformer_config = VARIANTS[variant].load_config(str(xomni / decoder["model_path"]))
    transformer_config["siglip_channels"] = encoder["z_channels"]
    vae_config = AutoencoderKL.load_config(str(flux / "vae"))
    text_free = variant == "zh"  # X-Omni-Zh loads no CLIP or T5
    with torch.device("meta"):
        modules = {
            "VQ projector": VQProjector(encoder["codebook_size"], encoder["codebook_dim"], encoder["z_channels"]),
            "decoder transformer": VARIANTS[variant].from_config(transformer_config),
            "VAE": AutoencoderKL.from_config(vae_config),
            "CLIP text encoder": None if text_free else CLIPTextModel(
                CLIPTextConfig.from_pretrained(str(flux / "text_encoder"))),
            "T5 text encoder": None if text_free else T5EncoderModel(
                T5Config.from_pretrained(str(flux / "text_encoder_2")))}
    counts = {name: _count(m) for name, m in modules.items()}
    dtype = kwargs.get("dtype") or vision.get("dtype", "float32")
    cfg_scale = kwargs.get("cfg_scale") if kwargs.get("cfg_scale") is not None else decoder.get("cfg_scale", 1.0)
    shape = _decoder_shape(counts, getattr(torch, dtype), modules["decoder transformer"].inner_dim,
                           0 if text_free else kwargs.get("max_sequence_length", T5_MAX_TOKENS),
                           modules["T5 text encoder"], vae_config, cfg_scale, kwargs.get("max_batch_size", 8),
                           kwargs.get("vae_batch_size"))
    return shape, f"{xomni_source}; {flux_source}; X-Omni-{variant.capitalize()} decoder"


def _decoder_variant(xomni: Path, model_path: str, variant: str | None) -> str:
    """The release the decoder folder holds: read from its weight names (as the loader does), or, in a shipped
    shapes folder (no weights), the one it was picked for. A mismatch with `model.decoder.variant` is a
    ConfigError, so the plan refuses what the loader would."""
    from rl.decoder.flux_siglip import decoder_variant

    if xomni.parent == SHAPES:
        return variant or "en"
    try:
        found = decoder_variant(xomni / model_path)
    except FileNotFoundError as e:
        raise ConfigError([f"model.decoder.xomni_path: {e} (needed to tell X-Omni-En from X-Omni-Zh)"]) from e
    if variant is not None and variant != found:
        raise ConfigError([f"model.decoder.variant: {variant}, but {xomni / model_path} holds X-Omni-"
                           f"{found.capitalize()}'s decoder"])
    return found


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _decoder_shape(counts: dict[str, int], dtype: torch.dtype, inner: int, text_tokens: int, t5: nn.Module | None,
                   vae_config: dict[str, Any], cfg_scale: float, max_batch_size: int,
                   vae_batch_size: int | None) -> DecoderShape:
    """t5: the T5 encoder (its d_ff sizes the text activations), None for a text-free decoder."""
    return DecoderShape(parts=counts, bytes=torch.empty(0, dtype=dtype).element_size(), inner=inner,
                        text_tokens=text_tokens, text_ff=2 * t5.config.d_ff if t5 is not None else 0,
                        vae_config=vae_config, cfg=float(cfg_scale) != 1.0, max_batch_size=max_batch_size,
                        vae_batch_size=vae_batch_size)


def reward_shape(node: DictConfig) -> tuple[RewardShape, str]:
    """A reward's model: sized from its open_clip architecture name, an OCR reward from its GOT-OCR2 backends, or
    empty when it has none (PP-OCR engines run on CPUs; the weight-free quality score, rewards the plan does not
    know)."""
    from rewards.ocr import OCRReward

    target = resolve_component(str(node["_component_"]))
    kwargs = _arguments(target, node)
    if target is OCRReward:
        return _ocr_shape(node, kwargs)
    name = kwargs.get("model")
    if not isinstance(name, str):
        return RewardShape(), "no model the plan knows"
    import open_clip

    if name not in open_clip.list_models():
        return RewardShape(), f"model {name!r} is not an open_clip architecture: not sized"
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that no pretrained weights were loaded
    try:
        parameters = count_parameters(lambda: open_clip.create_model(name, device="meta"))
    finally:
        logging.getLogger().setLevel(quiet)
    vision = open_clip.get_model_config(name)["vision_cfg"]
    tokens = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    dtype = str(kwargs.get("dtype", "float32"))
    shape = RewardShape(parameters, DTYPE_BYTES[dtype], int(kwargs.get("batch_size", 16)), tokens, vision["width"])
    return shape, f"open_clip {name}, {parameters / 1e6:.0f}M parameters, {dtype}"


def _ocr_shape(node: DictConfig, kwargs: Mapping[str, Any]) -> tuple[RewardShape, str]:
    """The GOT-OCR2 backends of an OCR reward: their parameters, and the vision tower's tokens and width for one
    batch (its Qwen2 decoder's KV cache for the short readings is left to the margin). A backend whose `path` is
    unset is sized from transformers' GotOcr2Config defaults, which are the released model's widths."""
    from transformers import GotOcr2Config, GotOcr2ForConditionalGeneration

    from rewards.got_ocr2 import GotOcr2Backend, check_folder, resolve_folder
    from rewards.ocr_backends import backend_class

    shapes, sources = [], []
    for i, spec in enumerate(node.get("backends") or []):
        cls = backend_class(spec if isinstance(spec, str) else spec.get("name"))
        if not (isinstance(cls, type) and issubclass(cls, GotOcr2Backend)):
            continue
        spec = spec if isinstance(spec, DictConfig) else DictConfig({"name": spec})
        args = _arguments(cls, {k: spec[k] for k in spec if k != "name" and missing_reason(spec, k) is None})
        if "path" in args:
            key = f"backends[{i}].path"
            try:
                folder = resolve_folder(str(args["path"]), key)
                check_folder(folder, key)
            except (OSError, ValueError) as e:
                raise ConfigError([f"{e} (or leave it ??? to plan with GotOcr2Config's default widths)"]) from e
            config, source = GotOcr2Config.from_pretrained(folder), folder
        else:
            config, source = GotOcr2Config(), "GotOcr2Config defaults (path is not set)"
        parameters = count_parameters(lambda config=config: GotOcr2ForConditionalGeneration(config))
        dtype = str(spec.get("dtype", kwargs.get("dtype", "float32")))
        vision = config.vision_config
        shapes.append(RewardShape(parameters, DTYPE_BYTES[dtype], int(args["batch_size"]),
                                  (vision.image_size // vision.patch_size) ** 2, vision.hidden_size))
        sources.append(f"GOT-OCR2 from {source}, {parameters / 1e6:.0f}M parameters, {dtype}")
    if not shapes:
        return RewardShape(), "no model the plan knows"
    largest = max(shapes, key=lambda r: r.parameters)
    total = sum(r.parameters for r in shapes)
    return dataclasses.replace(largest, parameters=total), "; ".join(sources)


def _folder(node: DictConfig, section: str, key: str, shapes: Path, marker: str = "config.json") -> tuple[Path, str]:
    """The folder `node[key]` names, or `shapes` while it is `???` (directly or through `${paths.x}`).

    A folder that is set but holds no `marker` file is a ConfigError naming `section.key`: planning without the
    weights works by leaving the path unset, not by pointing it somewhere empty."""
    reason = missing_reason(node, key)
    if reason is not None:
        via = reason.removeprefix("set ").removesuffix(", which it interpolates") if reason != "???" else key
        return shapes, f"{os.path.relpath(shapes, SHAPES.parents[1])} ({via} is not set)"
    folder = Path(os.path.expanduser(str(node[key])))
    if not (folder / marker).is_file():
        raise ConfigError([f"{section}.{key}: no {marker} in {folder} (set it to the checkpoint's folder, or "
                           f"leave it ??? to plan with the shapes in {os.path.relpath(shapes, SHAPES.parents[1])})"])
    return folder, str(node[key])


def _arguments(target: Any, node: DictConfig | Mapping) -> dict[str, Any]:
    """The component's keyword arguments as it would be called: the config's values over the defaults."""
    values = {k: to_container(node[k]) for k in node if k != "_component_" and missing_reason(node, k) is None}
    try:
        bound = inspect.signature(target).bind_partial(**values)
    except TypeError:
        return values
    bound.apply_defaults()
    return dict(bound.arguments)



@dataclass(frozen=True)
class LoraSize:
    """LoRA adapters on the policy: their parameters, per token the input elements their dropout copies (0 without
    dropout), and the adapted layers' base weights (what the weight sync moves, merged)."""

    parameters: int
    dropout_inputs: int
    adapted: int = 0


def lora_size(config: XOmniConfig, lora: LoraSettings) -> LoraSize:
    """Adapters of `trainer.lora` injected by peft into the policy on the meta device, counted."""
    with torch.device("meta"):
        model = XOmniPolicy(config)
        add_adapters(model, lora)
    parameters = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    layers = [layer for _, layer in lora_layers(model)]
    inputs = sum(m.in_features for m in layers) // max(config.num_hidden_layers, 1) if lora.dropout else 0
    return LoraSize(parameters, inputs, sum(m.base_layer.weight.numel() for m in layers))
