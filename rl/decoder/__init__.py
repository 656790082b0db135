"""The frozen image decoder: X-Omni's SigLIP-VQ projector + FLUX-with-SigLIP, and a patch decoder for demos.

Every decoder follows `ImageDecoder`: `decoder(tokens [N, h*w], (h, w), prompts, seeds) -> DecodedImages`.
"""

from rl.decoder.base import DecodedImages, ImageDecoder, image_validity, to_uint8_images
from rl.decoder.flux_siglip import FluxSigLIPTransformer
from rl.decoder.patch import PatchDecoder
from rl.decoder.pipeline import XOmniDecoder
from rl.decoder.text import FluxPromptEncoder
from rl.decoder.vq import VQProjector

__all__ = [
    "DecodedImages",
    "FluxPromptEncoder",
    "FluxSigLIPTransformer",
    "ImageDecoder",
    "PatchDecoder",
    "VQProjector",
    "XOmniDecoder",
    "image_validity",
    "to_uint8_images",
]
