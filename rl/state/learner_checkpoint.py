"""The learner's part of a training checkpoint, through torch.distributed.checkpoint (DCP).

    learner/             DCP: `.metadata` plus one `__<rank>_0.distcp` per learner rank holding that rank's shards
                         of the trained parameters (`model.<name>`: every weight but the frozen ones; with LoRA,
                         the adapters only) and their AdamW state (`optim.state.<name>.exp_avg|exp_avg_sq|step`,
                         `optim.param_groups`)
    learner_state.json   LR schedule, the non-finite-step counter, and what was trained (`lora`,
                         `freeze_text_embedding`)

No rank gathers the whole state: each writes and reads its own shards, and DCP reshards when a run resumes with
another `learner.world_size`. Frozen weights are not stored (they are the starting policy's), so turning a
checkpoint into a model takes the folder training started from as its base: `CheckpointWeights` serves the
base's tensors with the trained ones (and LoRA's merged weights) in their place, one tensor at a time, for
`python -m rl.export` and `python -m rl.generate --checkpoint`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from core.files import honour_umask
from core.paths import LocalPath, resolve_local_path
from rl.model.lora import LORA_A, LORA_B, LoraSettings, lora_delta
from rl.model.weights import PolicyWeights, StateDictWeights, fill

LEARNER_DIR, STATE_FILE = "learner", "learner_state.json"
MODEL_PREFIX = "model."
# Frozen weights stay out of the files; loading fills only the trained ones (the rest came from the base).
OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def save_learner(path: str | os.PathLike, policy: nn.Module, optimizer: torch.optim.Optimizer,
                 state: Mapping[str, Any]) -> None:
    """Every learner rank writes its shards into `path`/learner (a collective); rank 0 also writes `state`."""
    model, optim = get_state_dict(policy, optimizer, options=OPTIONS)
    folder = Path(path) / LEARNER_DIR
    with _quiet_single_process():
        dcp.save({"model": model, "optim": optim}, checkpoint_id=folder)  # one process: no group needed
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(Path(path) / STATE_FILE, "w") as f:
            json.dump(state, f, indent=1)
        honour_umask([folder, *folder.iterdir(), Path(path) / STATE_FILE])


def load_learner(path: str | os.PathLike, policy: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Read this rank's shards (any saved world size) into `policy` and `optimizer`; returns learner_state.json."""
    model, optim = get_state_dict(policy, optimizer, options=OPTIONS)
    state = {"model": model, "optim": optim}
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=Path(path) / LEARNER_DIR)
    set_state_dict(policy, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=OPTIONS)
    return read_learner_state(path)


def read_learner_state(path: str | os.PathLike) -> dict[str, Any]:
    with open(Path(path) / STATE_FILE) as f:
        return json.load(f)


def trained_shapes(path: str | os.PathLike) -> dict[str, torch.Size]:
    """name -> full shape of every trained tensor in a checkpoint (from DCP's metadata; no tensor is read)."""
    metadata = dcp.FileSystemReader(str(Path(path) / LEARNER_DIR)).read_metadata()
    return {key[len(MODEL_PREFIX):]: torch.Size(entry.size) for key, entry in metadata.state_dict_metadata.items()
            if key.startswith(MODEL_PREFIX) and hasattr(entry, "size")}


class CheckpointWeights:
    """A training checkpoint over the base it was trained from, as a `PolicyWeights` source: a trained tensor is
    read from the checkpoint (DCP loads just that tensor, whatever world size wrote it), an adapted layer's weight
    is the base's plus its LoRA update, anything else is the base's."""

    def __init__(self, checkpoint: str | os.PathLike, base: PolicyWeights):
        self.checkpoint, self.base, self.config = Path(checkpoint), base, base.config
        self.trained = trained_shapes(checkpoint)
        lora = read_learner_state(checkpoint).get("trained", {}).get("lora")
        self.lora = LoraSettings(**lora) if lora else None

    def shapes(self) -> dict[str, torch.Size]:
        return self.base.shapes()

    def problems(self) -> list[str]:
        """Trained tensors that the base does not have, or has in another shape."""
        base = self.base.shapes()
        problems = []
        for name, shape in sorted(self.trained.items()):
            if name.endswith((LORA_A, LORA_B)):
                target, expected = name[: -len(LORA_A)] + ".weight", base.get(name[: -len(LORA_A)] + ".weight")
                dim = 1 if name.endswith(LORA_A) else 0
                if expected is None or shape[dim] != expected[dim]:
                    problems.append(f"{name}: {list(shape)} does not adapt {target} {_shape(expected)}")
            elif base.get(name) != shape:
                problems.append(f"{name}: checkpoint {list(shape)}, base {_shape(base.get(name))}")
        return problems

    def changes(self, name: str) -> bool:
        """Whether the tensor differs from the base's: trained, or an adapted layer's weight."""
        return name in self.trained or (self.lora is not None and name.removesuffix(".weight") + LORA_A in self.trained)

    def read(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        if name in self.trained:
            return self._load(name)[rows]
        layer = name.removesuffix(".weight")
        if self.lora is not None and layer + LORA_A in self.trained:
            a, b = self._load(layer + LORA_A), self._load(layer + LORA_B)
            return self.base.read(name, rows).float() + lora_delta(a, b[rows], self.lora.scaling)
        return self.base.read(name, rows)

    def _load(self, name: str) -> torch.Tensor:
        tensor = torch.empty(self.trained[name], dtype=torch.float32)
        with _quiet_single_process():
            dcp.load({"model": {name: tensor}}, checkpoint_id=self.checkpoint / LEARNER_DIR)
        return tensor


def trained_policy(checkpoint: LocalPath, base: nn.Module) -> nn.Module:
    """`base` (the model.policy component the run started from, built first) with a training checkpoint's trained
    weights copied in and LoRA merged: what `python -m rl.generate --checkpoint` samples."""
    folder = resolve_local_path(str(checkpoint), "checkpoint")
    weights = CheckpointWeights(folder, StateDictWeights(base.config, base.state_dict()))
    problems = weights.problems()
    if problems:
        raise ValueError(f"the checkpoint {folder} was not trained from this model.policy: {'; '.join(problems[:3])}")
    fill(base, weights, lambda name: name if weights.changes(name) else None)
    return base


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """Without a process group DCP saves and loads in this process alone (a one-rank learner, an export), and
    warns that it does so on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled|unavailable)")
        yield


def _shape(shape: torch.Size | None) -> str:
    return "(absent)" if shape is None else str(list(shape))
