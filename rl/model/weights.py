"""Policy weights read tensor by tensor into a model built empty, so that a process holds the model it keeps
and one tensor in flight, never a second copy.

A `PolicyWeights` source names an X-Omni policy's tensors and reads any rows of any of them on the CPU:
- `SafetensorsWeights`: an X-Omni folder (model.safetensors, or shards listed in model.safetensors.index.json).
- `StateDictWeights`: tensors already in memory (a component that draws its own random weights).
`fill(module, weights)` copies into every tensor of a module built empty the rows it holds (its local shard when
FSDP2 has sharded it, all of it otherwise), cast on the copy to the module's dtype and device. How a `model.policy`
component becomes a skeleton and a source is `rl.model.loading`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Protocol

import torch
from safetensors import safe_open
from torch import nn
from torch.distributed.tensor import DTensor

from core.weights import check_weight_names
from rl.model.xomni_model import XOmniConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# X-Omni's loader ignores these (the vision tokenizer is loaded separately, not from the LM weights).
IGNORED_PREFIXES = ("image_tokenizer.",)


class PolicyWeights(Protocol):
    """Where a policy's tensors come from. `shapes` names every tensor (X-Omni's parameter names) with its
    full shape; `read(name, rows)` returns rows of one tensor on the CPU in the source's dtype (a slice of the
    first dimension; `slice(None)` for all of it)."""

    config: XOmniConfig

    def shapes(self) -> dict[str, torch.Size]: ...

    def read(self, name: str, rows: slice = slice(None)) -> torch.Tensor: ...


class SafetensorsWeights:
    """The weights of an X-Omni folder, read slice by slice.

    Each read opens the file, takes a memory-mapped slice and lets the caller copy it: safetensors keeps every
    page it touched mapped (and counted in the process's resident memory) while a file handle or a slice lives,
    so reading a whole file through one handle would hold a second copy of the model in host memory.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = str(folder)
        self.config = read_config(self.folder)
        self._files: dict[str, str] = {}
        self._shapes: dict[str, torch.Size] = {}
        filenames = _weight_files(self.folder)
        # What an error names: the one weights file, or the index that lists the shards.
        index = os.path.join(self.folder, WEIGHTS_INDEX_NAME)
        self.source = index if os.path.isfile(index) else os.path.join(self.folder, filenames[0])
        for filename in filenames:
            path = os.path.join(self.folder, filename)
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    if not key.startswith(IGNORED_PREFIXES):
                        self._files[key] = path
                        self._shapes[key] = torch.Size(f.get_slice(key).get_shape())

    def shapes(self) -> dict[str, torch.Size]:
        return dict(self._shapes)

    def read(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        with safe_open(self._files[name], framework="pt") as f:
            return f.get_slice(name)[rows]


class StateDictWeights:
    """Tensors already in memory (e.g. a random tiny policy), served like a folder's."""

    def __init__(self, config: XOmniConfig, state: Mapping[str, torch.Tensor]):
        self.config = config
        self._state = dict(state)

    def shapes(self) -> dict[str, torch.Size]:
        return {name: tensor.shape for name, tensor in self._state.items()}

    def read(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        return self._state[name][rows]


def read_config(folder: str) -> XOmniConfig:
    """config.json of an X-Omni folder (model_type "x-omni"), or a clear error."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    with open(path) as f:
        raw = json.load(f)
    if raw.get("model_type") != XOmniConfig.model_type:
        raise ValueError(f"{path}: model_type must be {XOmniConfig.model_type!r}, got {raw.get('model_type')!r}")
    return XOmniConfig.from_dict(raw)


def _weight_files(folder: str) -> list[str]:
    index_path = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(folder, WEIGHTS_NAME)):
        files = [WEIGHTS_NAME]
    else:
        raise FileNotFoundError(f"no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {folder}")
    for name in files:
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(f"{WEIGHTS_INDEX_NAME} in {folder} names a missing shard: {name}")
    return files


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """(the tensor this rank holds, which rows of the full tensor they are). FSDP2 shards every parameter on
    dim 0 like `torch.chunk`: rank r holds rows [r * ceil(n / world), ...), possibly none."""
    if not isinstance(tensor, DTensor):
        return tensor, slice(None)
    placement, = tensor.placements
    if not placement.is_shard(0):
        raise ValueError(f"expected a DTensor sharded on dim 0, got placements {tensor.placements}")
    world, rank = tensor.device_mesh.size(), tensor.device_mesh.get_local_rank()
    rows = tensor.shape[0]
    chunk = -(-rows // world)
    start = min(rows, rank * chunk)
    stop = min(rows, start + chunk)
    local = tensor.to_local()
    if local.shape[0] != stop - start:
        raise RuntimeError(f"local shard has {local.shape[0]} rows, expected {stop - start} (torch.chunk layout)")
    return local, slice(start, stop)


def fill(module: nn.Module, weights: PolicyWeights, source_name: Callable[[str], str | None] = lambda n: n) -> None:
    """Copy from `weights` into every tensor of `module`'s state dict the rows this process holds.

    `source_name` maps a module key to its name in `weights` (None: not in the source, e.g. a LoRA adapter).
    """
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            source = source_name(name)
            if source is None:
                continue
            local, rows = local_rows(tensor)
            if local.numel():
                local.copy_(weights.read(source, rows))


def check_matches(module: nn.Module, weights: PolicyWeights, where: str,
                  source_name: Callable[[str], str | None] = lambda n: n) -> None:
    """ValueError unless the module's tensors and the source's have the same names and full shapes."""
    wanted = {source_name(k): v.shape for k, v in module.state_dict(keep_vars=True).items()}
    wanted.pop(None, None)
    have = weights.shapes()
    check_weight_names(wanted, have, where)
    for name, shape in wanted.items():
        if have[name] != shape:
            raise ValueError(f"{name} in {where} has shape {list(have[name])}, expected {list(shape)} from config.json")

