"""Parameter counts from the real classes built on the meta device (rl/distributed/model_sizes.py) equal the
counts of the same models really instantiated, and the shipped shapes (configs/shapes/) reproduce the
published sizes of Qwen2.5-7B and of FLUX.1-dev's parts."""

import dataclasses

import open_clip
import torch
from omegaconf import OmegaConf
from tiny_clip import register_tiny_clip

from core.config import load_config
from rl.decoder.tiny import save_tiny_folders, tiny_xomni_decoder
from rl.distributed.memory import VAE_COPIES, decoder_activation_bytes
from rl.distributed.model_sizes import decoder_size, lora_size, policy_size, reward_shape
from rl.model.lora import LoraSettings
from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy, tiny_policy_config

REFERENCE_POLICY = "tests/data/xomni_tiny/policy"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def node(**values):
    return OmegaConf.create(values)


def test_policy_counts_equal_real_instantiation(tmp_path):
    # X-Omni's own tiny checkpoint (written by its model code), a folder saved here, a component built in code.
    reference = policy_size(node(_component_="rl.model.policy.XOmniPolicy.from_pretrained", path=REFERENCE_POLICY))
    assert reference.shape.parameters == count(XOmniPolicy.from_pretrained(REFERENCE_POLICY))
    policy = tiny_policy(hidden_size=96, num_attention_heads=6, num_key_value_heads=2)
    policy.save_pretrained(tmp_path)
    saved = policy_size(node(_component_="rl.model.policy.XOmniPolicy.from_pretrained", path=str(tmp_path)))
    built = policy_size(node(_component_="rl.model.tiny.tiny_policy", hidden_size=96, num_attention_heads=6,
                             num_key_value_heads=2))
    assert saved.shape.parameters == built.shape.parameters == count(policy)
    assert saved.shape.layer == count(policy.model.layers[0])
    assert saved.shape.root == count(policy) - count(policy.model.layers)


def test_decoder_parts_equal_real_instantiation(tmp_path):
    decoder = tiny_xomni_decoder()
    xomni, flux = save_tiny_folders(decoder, tmp_path)
    shape, _ = decoder_size(node(_component_="rl.decoder.XOmniDecoder.from_pretrained", xomni_path=xomni,
                                 flux_path=flux, dtype="bfloat16", max_batch_size=4, vae_batch_size=2))
    text = decoder.prompt_encoder
    assert dict(shape.parts) == {"VQ projector": count(decoder.projector),
                                 "decoder transformer": count(decoder.transformer), "VAE": count(decoder.vae),
                                 "CLIP text encoder": count(text.text_encoder),
                                 "T5 text encoder": count(text.text_encoder_2)}
    assert (shape.bytes, shape.max_batch_size, shape.cfg, shape.inner) == (2, 4, True, decoder.transformer.inner_dim)
    assert shape.vae_batch_size == 2
    assert list(shape.vae_config["block_out_channels"]) == list(decoder.vae.config.block_out_channels)


def test_open_clip_reward_counts_equal_real_instantiation():
    name = register_tiny_clip()
    shape, about = reward_shape(node(_component_="rewards.clip_align.CLIPAlignReward", model=name,
                                     weights="/not/read", dtype="bfloat16"))
    assert shape.parameters == count(open_clip.create_model(name)) and shape.bytes == 2
    assert shape.tokens == (224 // 32) ** 2 + 1 and shape.width == 64 and name in about
    none, about = reward_shape(node(_component_="rewards.ocr.OCRReward", backends=["rapidocr"]))
    assert none.parameters == 0 and "no model" in about


def test_lora_counts_equal_real_adapters():
    from peft import LoraConfig, inject_adapter_in_model

    config = tiny_policy_config()
    lora = LoraSettings(r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
    real = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                              target_modules=lora.target_modules), tiny_policy())
    size = lora_size(config, lora)
    assert size.parameters == sum(p.numel() for n, p in real.named_parameters() if "lora_" in n)
    # per layer, the inputs the dropout copies: q and v take the hidden size, down_proj the MLP width
    assert size.dropout_inputs == 2 * config.hidden_size + config.intermediate_size


def test_shipped_shapes_reproduce_the_published_sizes():
    cfg = load_config("configs/xomni.yaml")  # every paths.* is ???: planned from configs/shapes/
    policy = policy_size(cfg.model.policy)
    config, shape = policy.config, policy.shape
    assert "configs/shapes/x-omni-7b" in policy.source
    image_blocks = (config.num_mm_adap_layers + config.num_mm_head_layers) * shape.layer
    image_tables = 2 * config.mm_vocab_size * config.hidden_size + config.hidden_size  # mm embed, head, norm
    assert shape.parameters - image_blocks - image_tables == 7_615_616_512  # Qwen2.5-7B
    assert shape.parameters == 9_597_981_696  # "about 9.6B" (XOMNI_FACTS.md)
    decoder, _ = decoder_size(cfg.model.decoder)
    siglip_embed = 1536 * 3072
    assert decoder.parts["decoder transformer"] - siglip_embed == 11_901_408_320  # FLUX.1-dev transformer
    assert decoder.parts["T5 text encoder"] == 4_762_310_656 and decoder.parts["CLIP text encoder"] == 123_060_480
    assert decoder.parts["VAE"] == 83_819_683
    # At 1024 px (64 x 64 tokens) the VAE, the widest stage there, decodes a pass of 8 images in slices of 4
    # (default_vae_batch_size for FLUX's VAE): its [n, 128, 1024, 1024] tensors count 4 images, not 8.
    assert decoder.vae_batch_size is None and decoder.vae_config["block_out_channels"] == [128, 256, 512, 512]
    one_slice = VAE_COPIES * 4 * 1024 * 1024 * 128 * decoder.bytes
    assert decoder_activation_bytes(decoder, 32, 2, (64, 64)) == one_slice
    assert decoder_activation_bytes(dataclasses.replace(decoder, vae_batch_size=8), 32, 2, (64, 64)) == 2 * one_slice
    hps, _ = reward_shape(cfg.rewards.hpsv2)
    clip, _ = reward_shape(cfg.rewards.clip_align)
    assert abs(hps.parameters / 986e6 - 1) < 0.01 and abs(clip.parameters / 428e6 - 1) < 0.01
