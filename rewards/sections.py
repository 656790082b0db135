"""Checking the reward sections of a config (`rewards`, `ensemble`, `gating`) before any reward is built: every
problem at once, with its dotted key, cross-references between the sections included."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from core.components import resolve_component, validate_component
from core.config import ConfigError, to_container
from core.schema import build_section, validate_section
from rewards.combine import MAX_WEIGHT, EnsembleConfig, weight_problem
from rewards.gating import GatingConfig, build_gating, validate_gating

# Other columns of `python -m rewards.score`'s output: a reward may not take these names.
RESERVED_NAMES = frozenset({"image", "prompt", "task", "total", "gates", "error", "reward_errors", "details",
                            "meta", "text", "provenance"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def reward_sections(cfg: Any, only: Sequence[str] | None) -> tuple[list[str], EnsembleConfig, GatingConfig | None]:
    """The validated reward names, ensemble section and gating section (ConfigError on any problem)."""
    problems = validate_reward_sections(cfg, only)
    if problems:
        raise ConfigError(problems)
    gating = build_gating(cfg.get("gating")) if cfg.get("gating") is not None else None
    return selected_rewards(cfg, only), build_section(cfg.get("ensemble"), EnsembleConfig), gating


def selected_rewards(cfg: Any, only: Sequence[str] | None) -> list[str]:
    """The configured reward names, in config order, restricted to `only` when given."""
    names = list(cfg.get("rewards") or {})
    return names if only is None else [n for n in names if n in set(only)]


def validate_reward_sections(cfg: Any, only: Sequence[str] | None = None, files: bool = True) -> list[str]:
    """Every problem in the `rewards`, `ensemble` and `gating` sections of `cfg`, cross-references included.

    `only` keeps just those rewards: the others are not checked (their `???` weights paths are not asked
    for), and weights or gates naming them are ignored. Names that no reward has are still errors. files=False
    checks neither weights files nor `???` values (core.components.validate_component).
    """
    rewards = cfg.get("rewards")
    if not rewards or not hasattr(rewards, "items"):
        return ["rewards: expected a mapping of reward name -> component with at least one reward"]
    names = list(rewards)
    problems = [f"rewards.{n}: reward names must be identifiers and not one of {sorted(RESERVED_NAMES)}"
                for n in names if not _NAME.match(str(n)) or n in RESERVED_NAMES]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        problems.append(f"only: unknown reward(s) {unknown} (configured: {', '.join(names)})")
    selected = selected_rewards(cfg, only)
    if only is not None and not selected:
        problems.append("only: selects no reward")
    ranged = (cfg.get("ensemble") or {}).get("normalize") == "range"
    for name in selected:
        component = validate_component(rewards[name], f"rewards.{name}", files=files)
        if not component and ranged:
            component += _range_problems(rewards[name], f"rewards.{name}")
        problems += component
    ensemble = cfg.get("ensemble")
    section = validate_section(ensemble, EnsembleConfig, "ensemble")
    weights = (_check_ensemble(ensemble, names, selected) if hasattr(ensemble or {}, "items") else [])
    problems += section + weights
    gating = validate_gating(cfg.get("gating"), names)
    if gating or section or weights:  # the cross-checks below read numbers that the sections' checks vouch for
        return problems + gating
    return problems + _scaled_weights(cfg, selected) + _never_applied(cfg, selected)


def _range_problems(node: Any, key: str) -> list[str]:
    # Checked on the class, before any model loads: an instance attribute set in __init__ is not seen.
    target = node["_component_"]
    if class_attribute(resolve_component(str(target)), "score_range") is None:
        return [f"{key}: ensemble.normalize 'range' needs a class attribute score_range = (lo, hi) on {target}"]
    return []


def class_attribute(target: Any, name: str) -> Any:
    """A reward's class attribute (`score_range`, `needs_text`), read without building it: `target` is what a
    `_component_` resolves to, a class or a class's constructor method (`Class.from_pretrained`)."""
    owner = getattr(target, "__self__", None) if not isinstance(target, type) else target
    return getattr(owner if isinstance(owner, type) else target, name, None)


def _scaled_weights(cfg: Any, selected: list[str]) -> list[str]:
    """Weights that a gate's scale takes past MAX_WEIGHT (1e308 x 2 is inf in the total)."""
    weights = (to_container(cfg.get("ensemble")) or {}).get("weights") or {}
    rules = (to_container(cfg.get("gating")) or {}).get("rules") or []
    return [f"gating.rules.{i}.scale.{name}: ensemble.weights.{name} ({weights[name]:g}) x {factor:g} is "
            f"{weights[name] * factor:g}, above {MAX_WEIGHT:g}"
            for i, rule in enumerate(rules) for name, factor in (rule.get("scale") or {}).items()
            if name in selected and name in weights and weights[name] * factor > MAX_WEIGHT]


def _never_applied(cfg: Any, selected: list[str]) -> list[str]:
    """Rewards with a weight > 0 that no gate can apply: not in `gating.default` and added by no rule."""
    gating = to_container(cfg.get("gating")) or {}
    default = gating.get("default")
    weights = (to_container(cfg.get("ensemble")) or {}).get("weights") or {}
    added = {name for rule in gating.get("rules") or [] for name in rule.get("add") or []
             if (rule.get("scale") or {}).get(name, 1) > 0}
    return [f"gating: reward {name!r} can never apply: it is not in gating.default and no rule adds it "
            f"(to switch it off, set ensemble.weights.{name}: 0)"
            for name in selected if weights.get(name, 0) > 0 and default is not None and name not in default
            and name not in added]


def _check_ensemble(node: Any, names: list[str], selected: list[str]) -> list[str]:
    node = to_container(node) or {}
    weights = node.get("weights") or {}
    if not isinstance(weights, dict):
        return []  # validate_section reported its type
    problems = [f"ensemble.weights.{n}: {n!r} is not a configured reward (configured: {', '.join(names)})"
                for n in weights if n not in names]
    problems += [p for name, value in weights.items() if (p := weight_problem(value, f"ensemble.weights.{name}"))]
    problems += [f"ensemble.weights: no weight for reward {n!r}" for n in selected if n not in weights]
    return problems
