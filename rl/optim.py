"""The optimizer and the learning-rate schedule as components (`trainer.optimizer`, `trainer.lr_scheduler`):
built over the trained parameters, checked before anything starts, and sized for the memory plan.

    optimizer = build_optimizer(spec.trainer.optimizer, params)     # {_component_: torch.optim.AdamW, lr: ...}
    scheduler = build_scheduler(spec.trainer.lr_scheduler, optimizer)  # null: a constant learning rate
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from core.components import instantiate, validate_component
from core.config import ConfigError


def build_optimizer(node: Mapping[str, Any], params: Iterable[torch.nn.Parameter],
                    key: str = "trainer.optimizer") -> torch.optim.Optimizer:
    """The optimizer component `node` over `params` (ConfigError naming `key` when its arguments are refused)."""
    return instantiate(node, key, params=list(params))


def build_scheduler(node: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer,
                    key: str = "trainer.lr_scheduler") -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule component `node` over `optimizer`, stepped once per GRPO step; None: a constant rate."""
    if node is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return instantiate(node, key, optimizer=optimizer)


def validate_optimization(optimizer: Any, scheduler: Any) -> list[str]:
    """The problems of `trainer.optimizer` and `trainer.lr_scheduler`: their signatures, then their own checks
    (torch's optimizers refuse a negative lr, betas outside [0, 1), ...) by building both on a dummy parameter."""
    problems = validate_component(optimizer, "trainer.optimizer", provided=("params",))
    if scheduler is not None:
        problems += validate_component(scheduler, "trainer.lr_scheduler", provided=("optimizer",))
    if problems:
        return problems
    try:
        built = build_optimizer(optimizer, [torch.nn.Parameter(torch.zeros(1))])
        if scheduler is not None:
            build_scheduler(scheduler, built)
    except ConfigError as e:
        return e.problems
    return []


def state_floats_per_parameter(optimizer: Mapping[str, Any]) -> float:
    """How many floats of state the optimizer keeps per trained parameter element (AdamW: 2, exp_avg and
    exp_avg_sq; SGD with momentum: 1), measured by one step on a small parameter: the memory plan's figure."""
    param = torch.nn.Parameter(torch.zeros(1024))
    built = build_optimizer(optimizer, [param])
    param.grad = torch.ones_like(param)
    built.step()
    state = built.state[param]
    floats = sum(v.numel() for v in state.values() if torch.is_tensor(v) and v.is_floating_point() and v.numel() > 1)
    return floats / param.numel()
