"""Let a CUDA-only torchvision wheel import next to a CPU torch.

The only torchvision matching torch 2.13.0 is a CUDA build: on a CPU torch its C extension fails to
load, and `import torchvision` then raises "operator torchvision::nms does not exist" while
registering fake kernels, which also breaks transformers, diffusers, open_clip and trl. Defining the
two missing operator schemas before torchvision is first imported is enough for transforms and models
(C++ ops and torchvision.io stay unavailable; we use PIL for image I/O).

Importing a package of this project changes nothing. The fix is applied in one of two ways:
- `apply()`, called before torchvision is first imported;
- `python -m core.torchvision_compat --install` (what `scripts/setup.sh` runs) writes a `.pth` file into the
  environment's site-packages, when the fix is needed there, so that every Python process of that environment
  (Ray workers, subprocesses, scripts) applies it just before its first `import torchvision`, and no other
  process pays for it. `--uninstall` removes the file.
Both do nothing when torchvision is absent, already imported, or its extension loads (a GPU install).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import site
import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # keeps the schema registrations alive for the life of the process
PTH_NAME = "xomni_rl_torchvision_compat.pth"
# A .pth line must start with `import`; the rest keeps every process of the environment starting cleanly should
# this project be uninstalled and the file left behind.
PTH_LINE = ('import sys; exec("try:\\n import core.torchvision_compat as c\\nexcept ImportError:\\n pass\\n'
            'else:\\n c.install_hook()")\n')


def _extension_loads(package_dir: str) -> bool:
    import torch

    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
            return True
        except OSError:
            return False
    return False


def needed() -> bool:
    """Whether torchvision is installed, not yet imported, and its C extension fails to load."""
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    return spec is not None and spec.origin is not None and not _extension_loads(os.path.dirname(spec.origin))


def apply() -> bool:
    """Define `torchvision::nms`/`qnms` when torchvision's extension cannot load. Returns True if it did."""
    global _library
    if not needed():
        return False
    import torch

    try:
        library = torch.library.Library("torchvision", "DEF")
    except RuntimeError:  # defined already, by another copy of this fix (an older checkout on the path)
        return False
    library.define("nms" + _SCHEMA)
    library.define("qnms" + _SCHEMA)
    _library = library
    return True


class _BeforeTorchvision:
    """A meta-path finder that finds nothing: it runs `apply()` once, when torchvision is first imported."""

    def find_spec(self, name: str, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            apply()
        return None  # the regular finders import the module


def install_hook() -> None:
    """Apply the fix right before this process first imports torchvision (the `.pth` file's one line)."""
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.torchvision_compat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--install", action="store_true", help="write the .pth file when the fix is needed here")
    action.add_argument("--uninstall", action="store_true", help="remove the .pth file")
    args = parser.parse_args(argv)
    path = os.path.join(site.getsitepackages()[0], PTH_NAME)
    if args.install and needed():
        with open(path, "w") as f:
            f.write(PTH_LINE)
        print(f"torchvision's extension does not load with this torch: wrote {path}")
    elif os.path.exists(path):
        os.remove(path)
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
