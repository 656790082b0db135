"""The frozen image decoder: X-Omni's SigLIP-VQ projector + FLUX-with-SigLIP, and a patch decoder for demos.

Every decoder follows `ImageDecoder`: `decoder(tokens [N, h*w], (h, w), prompts, seeds) -> DecodedImages`.
The diffusers-based classes are imported on first use: importing diffusers costs seconds in every Ray
actor, and the CPU demo's PatchDecoder does not need it.
"""

import importlib

from rl.decoder.base import DecodedImages, ImageDecoder, image_validity, to_uint8_images
from rl.decoder.patch import PatchDecoder
from rl.decoder.vq import VQProjector

_LAZY = {"FluxSigLIPTransformer": "rl.decoder.flux_siglip", "XOmniDecoder": "rl.decoder.pipeline",
         "FluxPromptEncoder": "rl.decoder.text"}

__all__ = ["DecodedImages", "FluxPromptEncoder", "FluxSigLIPTransformer", "ImageDecoder", "PatchDecoder",
           "VQProjector", "XOmniDecoder", "image_validity", "to_uint8_images"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rl.decoder' has no attribute {name!r}")
