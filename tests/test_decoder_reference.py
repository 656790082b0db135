"""Compatibility with X-Omni's own code: the tiny projector and decoder transformer in
tests/data/xomni_tiny/ were written, and their outputs computed, by X-Omni's model code."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from rl.decoder import FluxSigLIPTransformer, VQProjector

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "xomni_tiny")

FORWARD_INPUTS = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids",
                  "txt_ids", "guidance", "siglip_tensor")


def test_vq_projector_decodes_like_xomni():
    projector = VQProjector.from_file(os.path.join(REFERENCE, "vq_projector.pth"))
    expected = load_file(os.path.join(REFERENCE, "vq_expected.safetensors"))
    assert (projector.codebook_size, projector.z_channels) == (16384, 64)
    with torch.no_grad():
        features = projector.decode(expected["tokens"], 4, 6)
    torch.testing.assert_close(features, expected["features"], atol=1e-5, rtol=0)


def test_vq_projector_rejects_bad_tokens():
    projector = VQProjector.from_file(os.path.join(REFERENCE, "vq_projector.pth"))
    with pytest.raises(ValueError, match="16384"):
        projector.decode(torch.full((1, 24), 16384), 4, 6)
    with pytest.raises(ValueError, match="4\\*6"):
        projector.decode(torch.zeros(1, 23, dtype=torch.long), 4, 6)


@pytest.mark.parametrize("with_siglip", [True, False])
def test_flux_siglip_transformer_matches_xomni(with_siglip):
    model = FluxSigLIPTransformer.from_pretrained(os.path.join(REFERENCE, "decoder_transformer")).eval()
    data = load_file(os.path.join(REFERENCE, "decoder_expected.safetensors"))
    inputs = {k: data[k] for k in FORWARD_INPUTS}
    if not with_siglip:
        inputs["siglip_tensor"] = None
    with torch.no_grad():
        sample = model(**inputs)
    expected = data["sample" if with_siglip else "sample_without_siglip"]
    torch.testing.assert_close(sample, expected, atol=1e-5, rtol=0)
    # The SigLIP injection must matter, or the comparison above could not tell the two paths apart.
    assert (data["sample"] - data["sample_without_siglip"]).abs().max() > 1e-2


def test_decoder_equals_diffusers_flux_pipeline_without_siglip():
    """Pins everything around the transformer against diffusers' FluxPipeline on tiny random parts: the shifted
    sigmas, true CFG with the empty negative prompt (pipeline: two passes; ours: one batched pass), latent
    packing, VAE scaling and shift, and the final [0, 1] mapping. With siglip_embed zeroed (X-Omni's
    initialisation) our transformer must act as plain FLUX, which the pipeline runs with the same weights."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from rl.decoder.tiny import tiny_xomni_decoder

    decoder = tiny_xomni_decoder(seed=3, num_inference_steps=3, cfg_scale=2.5, max_batch_size=2)
    torch.nn.init.zeros_(decoder.transformer.siglip_embed.weight)
    plain_config = {k: v for k, v in decoder.transformer.config.items()
                    if not k.startswith("_") and k not in ("siglip_channels", "drop_token_prob")}
    flux = FluxTransformer2DModel(**plain_config).eval()
    missing, unexpected = flux.load_state_dict(decoder.transformer.state_dict(), strict=False)
    assert missing == [] and unexpected == ["siglip_embed.weight"]
    text = decoder.prompt_encoder
    pipeline = FluxPipeline(scheduler=decoder.scheduler, vae=decoder.vae, text_encoder=text.text_encoder,
                            tokenizer=text.tokenizer, text_encoder_2=text.text_encoder_2,
                            tokenizer_2=text.tokenizer_2, transformer=flux)
    pipeline.set_progress_bar_config(disable=True)

    grid, prompts, seeds = (2, 3), ["a red cat", "a lighthouse at dusk", "a red cat"], [5, 6, 7]
    tokens = torch.randint(0, 16384, (3, 6), generator=torch.Generator().manual_seed(0))
    ours = decoder(tokens, grid, prompts, seeds).images
    # Our per-sample noise contract, packed by diffusers' own packing.
    noise = torch.stack([torch.randn(4, 4, 6, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def run_pipeline(true_cfg_scale):
        return pipeline(prompt=prompts, negative_prompt=[""] * 3, true_cfg_scale=true_cfg_scale,
                        guidance_scale=1.0, height=32, width=48, num_inference_steps=3, max_sequence_length=16,
                        latents=FluxPipeline._pack_latents(noise, 3, 4, 4, 6), output_type="pt").images

    with torch.no_grad():
        reference = run_pipeline(2.5)
        without_cfg = run_pipeline(1.0)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # The comparison can fail: CFG moves the pictures well beyond the tolerance.
    assert (reference - without_cfg).abs().max() > 1e-2


ZH_REFERENCE = os.path.join(os.path.dirname(__file__), "data", "xomni_zh_tiny")
ZH_INPUTS = ("hidden_states", "timestep", "img_ids", "guidance", "siglip_tensor")


@pytest.mark.parametrize("zero_siglip", [False, True])
def test_zh_transformer_matches_xomni(zero_siglip):
    """X-Omni-Zh's text-free decoder, called as its pipeline calls it: the positive branch with the SigLIP
    tensor and the negative CFG branch with a zeroed one."""
    model = FluxSigLIPTransformer.from_pretrained(os.path.join(ZH_REFERENCE, "decoder_transformer")).eval()
    data = load_file(os.path.join(ZH_REFERENCE, "zh_decoder_expected.safetensors"))
    with open(os.path.join(ZH_REFERENCE, "zh_meta.json")) as f:
        meta = json.load(f)
    inputs = {k: data[k] for k in ZH_INPUTS}
    assert inputs["siglip_tensor"].shape[1:] == (meta["grid"][0] * meta["grid"][1], meta["siglip_channels"])
    if zero_siglip:
        inputs["siglip_tensor"] = torch.zeros_like(inputs["siglip_tensor"])
    with torch.no_grad():
        sample = model(**inputs)
    assert model.variant == "zh"
    torch.testing.assert_close(sample, data["sample_with_zero_siglip" if zero_siglip else "sample"],
                               atol=1e-5, rtol=0)
    # The two branches must differ well beyond the tolerance, or matching one could pass for the other.
    assert (data["sample"] - data["sample_with_zero_siglip"]).abs().max() > 1e-2
