"""`python -m rl.export`: a training checkpoint -> a complete X-Omni model folder for X-Omni's own code.

    python -m rl.export --checkpoint RUN/checkpoints/step_N --base /ckpt/X-Omni-SFT --out /ckpt/X-Omni-RL
    python -m rl.export --checkpoint runs/demo --out runs/demo/export      # the demo: base from the run's config

The output is the base folder (the one training started from) with its language-model weights replaced:
every file and folder of BASE is copied (config.json with its auto_map and vision_config, tokenizer,
SigLIP encoder, VQ projector, diffusers decoder, modeling code) except the LM weights - the files named by
model.safetensors.index.json and the index, or model.safetensors -, and the trained policy is written in
their place: the base's weights with the checkpoint's trained ones (read from its sharded DCP files, whatever
learner world size wrote them) and, after LoRA training, each adapted weight merged (W + alpha / r * B @ A);
same key names, safetensors, sharded like `XOmniPolicy.save_pretrained`, in the dtype the base's config.json
declares (X-Omni's: bfloat16). Tensors stream through: one output file (5 GB at most) is in memory at a time.
`export_info.json` records the checkpoint, its step and the base. Files follow the umask.

--checkpoint is a checkpoint folder (step_N) or a run.dir (its newest checkpoint). Without --base, the base is
the run's own: model.policy of the checkpoint's saved config (CHECKPOINT/config.yaml): its `path` when it is
XOmniPolicy.from_pretrained (a relative path read from the working directory), else the component is built again
(with model.tokenizer) into a temporary folder - the demo's seeded tiny_policy is the policy its run started from.
That config is code, as any config is: export only runs you trust.

Refused (exit status 2, before anything is written): a path that does not exist (named with its flag or config
key and the resolved path), a checkpoint without its COMPLETE marker, trained tensors the base does not have in
the same shape, and an existing non-empty OUT (unless --overwrite). The folder is built in a temporary sibling of
OUT and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from core.cli import CommandParser, prog
from core.components import instantiate
from core.config import ConfigError, to_container
from core.files import honour_umask
from rl.model.loading import pretrained_arguments
from rl.model.policy import save_policy_state
from rl.model.weights import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, SafetensorsWeights
from rl.state.checkpoint import MARKER, CorruptCheckpoint, is_complete, latest_checkpoint, verify_checkpoint
from rl.state.learner_checkpoint import LEARNER_DIR, CheckpointWeights

INFO_NAME = "export_info.json"
SAVED_CONFIG = "config.yaml"  # the resolved config a checkpoint holds (rl/driver/run_state.py)


class ExportError(ValueError):
    """Why an export is refused, one problem per line."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n".join(f"  - {p}" for p in problems))


def export(checkpoint: str | os.PathLike, base: str | os.PathLike | None, out: str | os.PathLike,
           overwrite: bool = False) -> Path:
    """Write the X-Omni folder OUT = BASE with CHECKPOINT's policy weights (see the module docstring); `base`
    None: the run's own, from CHECKPOINT/config.yaml. `checkpoint` may be a run.dir (its newest checkpoint).

    Raises ExportError, before writing anything, for a missing path, an incomplete or mismatched checkpoint or
    an existing non-empty OUT without `overwrite`. Returns OUT.
    """
    checkpoint, out = resolve_checkpoint(Path(checkpoint)), Path(out)
    if base is not None:
        return write_export(checkpoint, Path(base), "--base", str(Path(base).resolve()), out, overwrite)
    if not is_complete(checkpoint):  # no config.yaml to read the base from: say why, as check_export would
        raise ExportError(input_problems(checkpoint, out, overwrite))
    policy, tokenizer = saved_model(checkpoint)
    arguments = pretrained_arguments(policy)
    if arguments is not None:
        path = Path(arguments["path"])
        key = f"model.policy.path (in {checkpoint / SAVED_CONFIG}; no --base given)"
        return write_export(checkpoint, path, key, str(path.resolve()), out, overwrite)
    # A component policy (the demo's tiny one) is small: checking twice (here, then in write_export) costs little
    # and refuses a bad OUT before the base is built.
    problems = input_problems(checkpoint, out, overwrite)
    if problems:
        raise ExportError(problems)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".base-{out.name}-", dir=out.parent) as tmp:
        instantiate(policy, "model.policy").save_pretrained(tmp)
        if tokenizer is not None:
            instantiate(tokenizer, "model.tokenizer").save_pretrained(tmp)
        about = f"model.policy of {checkpoint / SAVED_CONFIG} ({policy.get('_component_')}), built again"
        return write_export(checkpoint, Path(tmp), "model.policy", about, out, overwrite)


def resolve_checkpoint(path: Path) -> Path:
    """`path` itself, or the newest checkpoint of a run.dir (a folder with checkpoints/ and no COMPLETE marker)."""
    if path.is_dir() and not is_complete(path):
        return latest_checkpoint(path) or path
    return path


def saved_model(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """model.policy and model.tokenizer of the config saved in `checkpoint` (ExportError when it has none)."""
    saved = checkpoint / SAVED_CONFIG
    if not saved.is_file():
        raise ExportError([f"--base: not given, and {saved.resolve()} (the run's saved config, which names the "
                           "policy it started from) does not exist; give --base"])
    model = to_container(OmegaConf.load(saved)).get("model") or {}
    if not isinstance(model.get("policy"), dict):
        raise ExportError([f"--base: not given, and {saved.resolve()} has no model.policy; give --base"])
    return model["policy"], model.get("tokenizer")


def write_export(checkpoint: Path, base: Path, base_key: str, base_about: str, out: Path, overwrite: bool) -> Path:
    """OUT from a checked checkpoint and an existing BASE folder (named `base_key` in errors, `base_about` in
    export_info.json)."""
    weights = check_export(checkpoint, base, out, overwrite, base_key)
    raw = json.loads((base / CONFIG_NAME).read_text(encoding="utf-8"))
    dtype = raw.get("torch_dtype") or raw.get("dtype") or "float32"  # X-Omni's config.json says torch_dtype
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{time.time_ns()}"
    try:
        save_policy_state(weights, tmp, dtype=dtype)
        skip = lm_weight_files(base)
        for item in sorted(base.iterdir()):
            if item.name not in skip:  # config.json too: it replaces the one written with the weights
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, tmp / item.name)
        info = {"checkpoint": str(checkpoint.resolve()), "step": _step(checkpoint), "base": base_about,
                "dtype": dtype}
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=1), encoding="utf-8")
        honour_umask([tmp, tmp / INFO_NAME])
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def input_problems(checkpoint: Path, out: Path, overwrite: bool) -> list[str]:
    """What is wrong with the checkpoint and OUT, whatever the base."""
    problems = []
    if not checkpoint.exists():
        problems.append(f"--checkpoint: {checkpoint.resolve()} does not exist")
    elif not is_complete(checkpoint):
        problems.append(f"--checkpoint: {checkpoint} is not a complete training checkpoint (no {MARKER} marker)")
    elif not (checkpoint / LEARNER_DIR).is_dir():
        problems.append(f"--checkpoint: {checkpoint} holds no {LEARNER_DIR}/ (not a training checkpoint)")
    else:
        try:
            verify_checkpoint(checkpoint)
        except CorruptCheckpoint as e:
            problems.append(f"--checkpoint: {e}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        problems.append(f"--out: {out} exists and is not empty (pass --overwrite to replace it)")
    if checkpoint.exists() and _overlaps(out, checkpoint):
        problems.append(f"--out: {out} overlaps --checkpoint {checkpoint}; choose a separate folder")
    return problems


def check_export(checkpoint: Path, base: Path, out: Path, overwrite: bool, base_key: str = "--base") \
        -> CheckpointWeights:
    """Every reason to refuse the export (ExportError), or the checkpoint's weights over the base's."""
    problems = input_problems(checkpoint, out, overwrite)
    if not base.exists():
        raise ExportError([*problems, f"{base_key}: {base.resolve()} does not exist"])
    try:
        base_weights = SafetensorsWeights(base)
    except (OSError, ValueError) as e:
        problems.append(f"{base_key}: {e}")
    if _overlaps(out, base):
        problems.append(f"--out: {out} overlaps {base_key} {base}; choose a separate folder")
    if problems:
        raise ExportError(problems)
    weights = CheckpointWeights(checkpoint, base_weights)
    mismatched = weights.problems()
    if mismatched:
        shown = "; ".join(mismatched[:3]) + ("; ..." if len(mismatched) > 3 else "")
        raise ExportError([f"--checkpoint: its trained tensors do not fit the base model ({len(mismatched)} "
                           f"differ: {shown}); was it trained from another model?"])
    return weights


def lm_weight_files(base: Path) -> set[str]:
    """Names of the base's language-model weight files: the index and the shards it names, or
    model.safetensors. Other safetensors files (a vision encoder) are not LM weights."""
    index = base / WEIGHTS_INDEX_NAME
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            return {WEIGHTS_INDEX_NAME, *json.load(f)["weight_map"].values()}
    return {WEIGHTS_NAME}


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


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog("python -m rl.export"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="a training checkpoint (step_N), or a run.dir: its newest checkpoint")
    parser.add_argument("--base", metavar="DIR", help="the X-Omni folder training started from (default: the run's "
                        "own, from CHECKPOINT/config.yaml)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the X-Omni folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export(args.checkpoint, args.base, args.out, args.overwrite)
    except ExportError as e:
        print(f"error: cannot export:\n{e}", file=sys.stderr)
        return 2
    except ConfigError as e:  # the saved model.policy could not be built again
        print(f"error: cannot export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
