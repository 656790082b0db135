"""From a `model.policy` component to a policy: `load_source(node)` gives a meta-device skeleton of the policy and
the source of its weights without reading a weight (rl.model.weights reads them later, rank by rank);
`build_policy` fills an unsharded replica (a rollout actor, `rl.generate`) from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from core.components import COMPONENT_KEY, instantiate, resolve_component
from core.paths import resolve_local_path
from rl.model.policy import XOmniPolicy
from rl.model.weights import PolicyWeights, SafetensorsWeights, StateDictWeights, check_matches, fill


def load_source(node: Mapping[str, Any], key: str = "model.policy") -> tuple[nn.Module, PolicyWeights]:
    """A meta-device skeleton of the policy the component `node` builds, and the source of its weights.

    `XOmniPolicy.from_pretrained` is not called: its folder is read later, tensor by tensor. Any other component
    (a random tiny policy, a test's subclass) is built once on the CPU; its tensors become the source and the
    module itself, moved to the meta device, the skeleton (so its class and attributes are kept).
    """
    arguments = pretrained_arguments(node)
    if arguments is not None:
        weights = SafetensorsWeights(resolve_local_path(str(arguments["path"]), f"{key}.path"))
        with torch.device("meta"):
            return XOmniPolicy(weights.config, arguments["attn_implementation"]), weights
    policy = instantiate(dict(node), key)
    weights = StateDictWeights(policy.config, {k: v.detach() for k, v in policy.state_dict().items()})
    return policy.to("meta"), weights


def is_pretrained(node: Mapping[str, Any]) -> bool:
    """Whether component `node` is `XOmniPolicy.from_pretrained` (its other values are not read or resolved)."""
    return resolve_component(str(node[COMPONENT_KEY])) == XOmniPolicy.from_pretrained


def pretrained_arguments(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arguments (defaults filled in) of an `XOmniPolicy.from_pretrained` component; None for any other."""
    if not is_pretrained(node):
        return None
    bound = inspect.signature(XOmniPolicy.from_pretrained).bind(**{k: v for k, v in node.items()
                                                                   if k != COMPONENT_KEY})
    bound.apply_defaults()
    return bound.arguments


def build_policy(node: Mapping[str, Any], key: str, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    """The policy of component `node`, unsharded, read straight into `dtype` on `device` (one tensor at a time
    passes through the host)."""
    skeleton, weights = load_source(node, key)
    policy = skeleton.to(dtype).to_empty(device=device)
    check_matches(policy, weights, where=key)
    fill(policy, weights)
    return policy
