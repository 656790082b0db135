"""LoRA on the policy with peft: adapters injected in place (X-Omni's parameter names stay; a targeted linear
layer's weight becomes `<layer>.base_layer.weight` next to `<layer>.lora_A.default.weight` [r, in] and
`<layer>.lora_B.default.weight` [out, r]), the frozen base doubling as the reference policy with the adapters
switched off, and merged weights W + (alpha / r) * B @ A for the rollout actors and for export.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

import torch
from annotated_types import Ge, Gt, Interval
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.distributed.tensor import DTensor

from rl.model.weights import local_rows

ADAPTER = "default"  # peft's adapter name; it appears in the adapters' parameter names
BASE_LAYER, LORA_A, LORA_B = ".base_layer", f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"
# The linear layers of a decoder block (transformers' Qwen2): what `target_modules` may name.
LinearLayer = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LINEAR_LAYERS: tuple[str, ...] = get_args(LinearLayer)


@dataclass
class LoraSettings:
    """LoRA adapters (`trainer.lora`): every weight outside them stays frozen at the starting policy's."""

    r: Annotated[int, Ge(1)] = 16
    """Adapter rank."""
    alpha: Annotated[float, Gt(0)] = 32.0
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    """Dropout on the adapters' input while learning (a resume is then exact at the same learner.world_size)."""
    target_modules: list[LinearLayer] = field(default_factory=lambda: list(LINEAR_LAYERS))
    """The decoder-block linear layers that get adapters."""

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def add_adapters(policy: nn.Module, settings: LoraSettings) -> None:
    """Inject LoRA adapters into `policy` in place (on the meta device when the policy is: they are filled by
    `init_adapters` or a checkpoint later)."""
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    inject_adapter_in_model(config, policy, adapter_name=ADAPTER, low_cpu_mem_usage=True)


def base_name(key: str) -> str | None:
    """X-Omni's name for a key of an adapted policy; None for an adapter tensor (not in X-Omni's files)."""
    if key.endswith((LORA_A, LORA_B)):
        return None
    return key.replace(BASE_LAYER + ".", ".")


def lora_layers(policy: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(X-Omni name of the adapted weight, layer) for every adapted linear layer, in module order."""
    for name, module in policy.named_modules():
        if isinstance(module, LoraLayer):
            yield f"{name}.weight", module


@contextmanager
def adapters_disabled(policy: nn.Module) -> Iterator[None]:
    """The base policy (the reference) while inside: peft's adapter switch on every adapted layer."""
    layers = [layer for _, layer in lora_layers(policy)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def init_adapters(policy: nn.Module, seed: int) -> None:
    """peft's default initialisation (A kaiming-uniform with a = sqrt(5), B zero, so the adapted policy starts
    equal to the base), drawn whole on the CPU from `seed` in module order, so every learner world size starts
    from the same adapters; each rank keeps its rows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(policy):
            a = layer.lora_A[ADAPTER].weight
            full = torch.empty(a.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=generator)
            local, rows = local_rows(a)
            local.copy_(full[rows])
            local_rows(layer.lora_B[ADAPTER].weight)[0].zero_()


def merged_rows(layer: LoraLayer) -> torch.Tensor:
    """float32 rows [out_r, in] of W + scaling * B @ A that this rank holds (all of them when unsharded).

    W and B are sharded alike (rows of `out`), so each rank merges its own rows; A [r, in] is gathered whole
    (a collective: every rank must call this for the same layers in the same order)."""
    weight = local_rows(layer.base_layer.weight)[0]
    b = local_rows(layer.lora_B[ADAPTER].weight)[0]
    a = layer.lora_A[ADAPTER].weight
    a = a.full_tensor() if isinstance(a, DTensor) else a
    return weight.float() + lora_delta(a, b, layer.scaling[ADAPTER])


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """scaling * B @ A in float32: A [r, in], B [out, r] -> [out, in]."""
    return (b.float() @ a.float()) * scaling
