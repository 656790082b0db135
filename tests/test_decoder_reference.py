"""Compatibility with X-Omni's own code: the tiny projector and decoder transformer in
tests/data/xomni_tiny/ were written, and their outputs computed, by X-Omni's model code."""

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
