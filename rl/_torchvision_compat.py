"""Let a CUDA-only torchvision wheel import next to a CPU torch.

The only torchvision matching torch 2.13.0 is a CUDA build: on a CPU torch its C extension fails to
load, and `import torchvision` then raises "operator torchvision::nms does not exist" while
registering fake kernels, which also breaks transformers, diffusers, open_clip and trl. Defining the
two missing operator schemas before torchvision is first imported is enough for transforms and models
(C++ ops and torchvision.io stay unavailable; we use PIL for image I/O).

This runs on import of `rl` and `rewards`, so every process that imports them (Ray workers included)
is covered. It does nothing when torchvision is absent, already imported, or its extension loads.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # keeps the schema registrations alive for the life of the process


def _extension_loads(package_dir: str) -> bool:
    import torch

    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
            return True
        except OSError:
            return False
    return False


def apply() -> bool:
    """Define `torchvision::nms`/`qnms` when torchvision's extension cannot load. Returns True if it did."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _extension_loads(os.path.dirname(spec.origin)):
        return False
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms" + _SCHEMA)
    _library.define("qnms" + _SCHEMA)
    return True
