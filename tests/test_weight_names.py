"""Every loader of weights refuses a file whose tensor names are not exactly its model's, naming a few names and
the file, instead of leaving a parameter at its random initialisation (diffusers' and torch's non-strict default).

The folders are the X-Omni-written fixtures in tests/data, copied and edited one tensor at a time.
"""

import logging
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_clip import register_tiny_clip, save_tiny_clip_weights

from core.weights import check_weight_names
from rewards.hpsv2 import HPSv2Reward
from rl.decoder import VQProjector
from rl.decoder.flux_siglip import FluxSigLIPTransformer, FluxSigLIPZhTransformer, decoder_variant

DATA = os.path.join(os.path.dirname(__file__), "data")
EN = os.path.join(DATA, "xomni_tiny", "decoder_transformer")
ZH = os.path.join(DATA, "xomni_zh_tiny", "decoder_transformer")
WEIGHTS = "diffusion_pytorch_model.safetensors"


def edited_copy(folder: str, tmp_path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> str:
    """A copy of a diffusers folder with the tensors `drop` removed and zero tensors `add` added."""
    copy = shutil.copytree(folder, tmp_path / os.path.basename(folder))
    weights = load_file(copy / WEIGHTS)
    for name in drop:
        del weights[name]
    weights.update({name: torch.zeros(2) for name in add})
    save_file(weights, copy / WEIGHTS, metadata={"format": "pt"})
    return str(copy)


def test_the_message_counts_and_shows_a_few_sorted_names():
    check_weight_names(["a", "b"], {"b", "a"}, "f.safetensors")
    with pytest.raises(ValueError, match=re.escape(
            "weights in f.safetensors do not match the model: missing 7 [m0, m1, m2, m3, m4 and 2 more]; "
            "unexpected 1 [x]")):
        check_weight_names([f"m{i}" for i in range(7)] + ["k"], ["x", "k"], "f.safetensors")


def test_the_variant_is_read_from_the_weights_and_reported(caplog):
    assert (decoder_variant(EN), decoder_variant(ZH)) == ("en", "zh")
    with caplog.at_level(logging.INFO, logger="rl.decoder.flux_siglip"):
        zh = FluxSigLIPTransformer.from_pretrained(ZH)
        en = FluxSigLIPTransformer.from_pretrained(EN)
    assert (type(zh), zh.variant, type(en), en.variant) == (FluxSigLIPZhTransformer, "zh", FluxSigLIPTransformer, "en")
    assert f"{ZH}: X-Omni-Zh decoder" in caplog.text and f"{EN}: X-Omni-En decoder" in caplog.text


def test_a_variant_class_refuses_the_other_variants_folder():
    with pytest.raises(ValueError, match="holds X-Omni-En's decoder; FluxSigLIPZhTransformer loads X-Omni-Zh's"):
        FluxSigLIPZhTransformer.from_pretrained(EN)


def test_a_zh_folder_no_longer_loads_into_the_en_layout(tmp_path):
    """Without its marker a Zh folder reads as En: the En blocks' text-stream tensors, which the file lacks, are
    named with the file instead of being drawn at random (what loading it as En did before)."""
    folder = edited_copy(ZH, tmp_path, drop=("pooled_embeds",))
    prefix = re.escape(f"weights in {os.path.join(folder, WEIGHTS)} do not match the model: missing 32 "
                       "[transformer_blocks.0.attn.add_k_proj.bias, ")
    with pytest.raises(ValueError, match=prefix + r".* and 27 more\]; unexpected none"):
        FluxSigLIPTransformer.from_pretrained(folder)


@pytest.mark.parametrize("folder", [EN, ZH], ids=["en", "zh"])
def test_a_missing_or_an_extra_tensor_is_named_with_the_file(folder, tmp_path):
    missing = edited_copy(folder, tmp_path / "missing", drop=("siglip_embed.weight",))
    with pytest.raises(ValueError, match=re.escape(f"weights in {os.path.join(missing, WEIGHTS)} do not match the "
                                                   "model: missing 1 [siglip_embed.weight]; unexpected none")):
        FluxSigLIPTransformer.from_pretrained(missing)
    extra = edited_copy(folder, tmp_path / "extra", add=("controlnet.weight",))
    with pytest.raises(ValueError, match=re.escape("missing none; unexpected 1 [controlnet.weight]")):
        FluxSigLIPTransformer.from_pretrained(extra, torch_dtype=torch.bfloat16)


def test_a_config_override_counts_in_the_expected_names():
    """The pipeline passes `siglip_channels` from the projector; without a projection the file's is unexpected."""
    with pytest.raises(ValueError, match=re.escape("unexpected 1 [siglip_embed.weight]")):
        FluxSigLIPTransformer.from_pretrained(EN, siglip_channels=None)


def test_vq_projector_names_the_file_and_the_tensor(tmp_path):
    state = torch.load(os.path.join(DATA, "xomni_tiny", "vq_projector.pth"), weights_only=True)
    del state["post_conv.1.norm2.bias"]
    state["post_quant_conv.scale"] = torch.zeros(1)
    path = tmp_path / "vq_projector.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(f"weights in {path} do not match the model: missing 1 "
                                                   "[post_conv.1.norm2.bias]; unexpected 1 [post_quant_conv.scale]")):
        VQProjector.from_file(path)


def test_open_clip_rewards_load_strictly(tmp_path):
    """HPSv2 and CLIP alignment leave loading to open_clip, whose full-model load is strict: pinned here so that
    an open_clip upgrade relaxing it cannot go unnoticed."""
    register_tiny_clip()
    path = save_tiny_clip_weights(tmp_path / "hps.pt", seed=0)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["text_projection"]
    checkpoint["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=rf"(?s)cannot load {re.escape(str(path))} .*Missing key\(s\) in state_dict: "
                                         r"\"text_projection\".*Unexpected key\(s\) in state_dict: \"extra.weight\""):
        HPSv2Reward(str(path), model="tiny-clip-test", device="cpu")


def test_a_sharded_folder_is_read_through_its_index(tmp_path):
    FluxSigLIPTransformer.from_pretrained(ZH).save_pretrained(tmp_path, max_shard_size="50KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    assert FluxSigLIPTransformer.from_pretrained(tmp_path).variant == "zh"
