"""A tiny open_clip architecture for tests: both towers real, about 2M parameters, 224-px input.

The config is registered under a name (like `ViT-H-14`) so every code path that builds a model from an
architecture name works unchanged. `module` may be open_clip or a vendored copy with the same
registry API (hpsv2's `hpsv2.src.open_clip`), so weights can be written by one and read by the other.
"""

from __future__ import annotations

import json
import os
import tempfile
from types import ModuleType

import open_clip
import torch

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# Lives as long as the process: open_clip re-reads every registered config path on each registration.
_CONFIG_DIR = tempfile.TemporaryDirectory(prefix="tiny_clip_")


def register_tiny_clip(name: str = "tiny-clip-test", module: ModuleType = open_clip) -> str:
    """Register the tiny architecture as `name` in `module`'s model registry (idempotent); return `name`."""
    if name not in module.list_models():
        path = os.path.join(_CONFIG_DIR.name, f"{name}.json")  # open_clip keys configs by file stem
        with open(path, "w") as f:
            json.dump(TINY_CLIP_CONFIG, f)
        module.add_model_config(path)
    return name


def save_tiny_clip_weights(
    path: str | os.PathLike, seed: int = 0, name: str = "tiny-clip-test", module: ModuleType = open_clip
) -> str:
    """Build the tiny model in `module` with random weights from `seed`; save `{"state_dict": ...}`."""
    register_tiny_clip(name, module)
    torch.manual_seed(seed)
    model = module.create_model(name)
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)
