"""`python -m rl.export`: a training checkpoint -> a complete X-Omni model folder for X-Omni's own code.

    python -m rl.export --checkpoint RUN/checkpoints/step_N --base /ckpt/X-Omni-SFT --out /ckpt/X-Omni-RL

The output is the base folder (the one training started from) with its language-model weights replaced:
every file and folder of BASE is copied (config.json with its auto_map and vision_config, tokenizer,
SigLIP encoder, VQ projector, diffusers decoder, modeling code) except the LM weights - the files named by
model.safetensors.index.json and the index, or model.safetensors -, and the trained policy is written
from CHECKPOINT/policy in their place: same key names, safetensors, sharded like
`XOmniPolicy.save_pretrained`, in the dtype the base's config.json declares (X-Omni's: bfloat16).
`export_info.json` records the checkpoint, its step and the base.

Refused (exit status 2, before anything is written): a checkpoint without its COMPLETE marker, a policy
whose tensor shapes differ from the base config's model, and an existing non-empty OUT (unless
--overwrite). The folder is built in a temporary sibling of OUT and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rl.distributed.learner import POLICY_DIR
from rl.model.policy import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, XOmniConfig, XOmniPolicy
from rl.state.checkpoint import MARKER, is_complete

INFO_NAME = "export_info.json"


class ExportError(ValueError):
    """Why an export is refused, one problem per line."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n".join(f"  - {p}" for p in problems))


def export(checkpoint: str | os.PathLike, base: str | os.PathLike, out: str | os.PathLike,
           overwrite: bool = False) -> Path:
    """Write the X-Omni folder OUT = BASE with CHECKPOINT's policy weights (see the module docstring).

    Raises ExportError, before writing anything, for an incomplete or mismatched checkpoint or an
    existing non-empty OUT without `overwrite`. Returns OUT.
    """
    checkpoint, base, out = Path(checkpoint), Path(base), Path(out)
    base_raw = check_export(checkpoint, base, out, overwrite)
    dtype = base_raw.get("torch_dtype") or base_raw.get("dtype") or "float32"
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{time.time_ns()}"
    try:
        XOmniPolicy.from_pretrained(checkpoint / POLICY_DIR, torch_dtype=dtype).save_pretrained(tmp)
        skip = lm_weight_files(base)
        for item in sorted(base.iterdir()):
            if item.name not in skip:  # config.json too: it replaces the checkpoint's
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, tmp / item.name)
        info = {"checkpoint": str(checkpoint.resolve()), "step": _step(checkpoint), "base": str(base.resolve()),
                "dtype": dtype}
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=1), encoding="utf-8")
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_export(checkpoint: Path, base: Path, out: Path, overwrite: bool) -> dict:
    """Every reason to refuse the export (ExportError), or the base's raw config.json."""
    problems = []
    if not is_complete(checkpoint):
        problems.append(f"--checkpoint: {checkpoint} is not a complete training checkpoint (no {MARKER} marker)")
    configs = {}
    for flag, folder in (("--checkpoint", checkpoint / POLICY_DIR), ("--base", base)):
        try:
            configs[flag] = _read_config(folder)
        except (OSError, ValueError) as e:
            problems.append(f"{flag}: {e}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        problems.append(f"--out: {out} exists and is not empty (pass --overwrite to replace it)")
    for flag, folder in (("--base", base), ("--checkpoint", checkpoint)):
        if _overlaps(out, folder):
            problems.append(f"--out: {out} overlaps {flag} {folder}; choose a separate folder")
    if len(configs) == 2:
        problems += _shape_problems(XOmniConfig.from_dict(configs["--checkpoint"]),
                                    XOmniConfig.from_dict(configs["--base"]))
    if problems:
        raise ExportError(problems)
    return configs["--base"]


def lm_weight_files(base: Path) -> set[str]:
    """Names of the base's language-model weight files: the index and the shards it names, or
    model.safetensors. Other safetensors files (a vision encoder) are not LM weights."""
    index = base / WEIGHTS_INDEX_NAME
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            return {WEIGHTS_INDEX_NAME, *json.load(f)["weight_map"].values()}
    return {WEIGHTS_NAME}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if raw.get("model_type") != XOmniConfig.model_type:
        raise ValueError(f"{path}: model_type must be {XOmniConfig.model_type!r}, got {raw.get('model_type')!r}")
    return raw


def _shape_problems(trained: XOmniConfig, base: XOmniConfig) -> list[str]:
    """The checkpoint's weights are written under the base's config.json: every tensor must keep its shape."""
    got, expected = _tensor_shapes(trained), _tensor_shapes(base)
    differ = [k for k in sorted(got.keys() | expected.keys()) if got.get(k) != expected.get(k)]
    if not differ:
        return []
    shown = "; ".join(f"{k}: checkpoint {got.get(k)}, base {expected.get(k)}" for k in differ[:3])
    return [f"--checkpoint: its policy does not have the base model's shape ({len(differ)} tensors differ: "
            f"{shown}{'; ...' if len(differ) > 3 else ''}); was it trained from another model?"]


def _tensor_shapes(config: XOmniConfig) -> dict[str, list[int]]:
    with torch.device("meta"):  # shapes only, no memory
        policy = XOmniPolicy(config)
    return {k: list(v.shape) for k, v in policy.state_dict().items()}


def _overlaps(a: Path, b: Path) -> bool:
    """True when one folder is the other or lies inside it (an overwrite or the copy would destroy data)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _step(checkpoint: Path) -> int | None:
    return json.loads((checkpoint / MARKER).read_text(encoding="utf-8")).get("step")


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place; an existing OUT is moved aside first and removed after."""
    old = out.parent / f".old-{tmp.name}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.is_dir():
        shutil.rmtree(old)
    elif old.exists():
        old.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="a training checkpoint (step_N)")
    parser.add_argument("--base", required=True, metavar="DIR", help="the X-Omni folder training started from")
    parser.add_argument("--out", required=True, metavar="DIR", help="the X-Omni folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.base, args.out, args.overwrite)
    except ExportError as e:
        print(f"error: cannot export:\n{e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
