"""The reward ensemble: per-prompt gates, NaN-aware combination, normalisation and per-reward stats.

The pieces are pure and separable so the training driver can run each reward in its own Ray actor and
still combine exactly like `RewardEnsemble`, which does everything in one process (offline scoring,
single-process training):

    gates   = [gater(prompt, metadata) ...]                  # which rewards apply, with which weight
    scores  = {name: score_safely(reward, ...)[0].scores}     # [N] each, NaN = not applicable / failed
    total   = combine(normalizer(scores), gate_weights, nan_policy)          # [N]

The total is the weighted MEAN over the rewards that apply to an image, so totals of prompts with
different gates (3 rewards vs 4) stay comparable; within a GRPO group (one prompt, one gate) a mean and
a sum differ by a constant factor, which the group std normalisation removes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Interval

from rewards.base import ImageLike, Reward
from rewards.gating import Gate, Gater, GatingConfig, build_gating, gate_rates, validate_gating
from rewards.runner import score_in_chunks
from rl.config import (
    ConfigError,
    build_section,
    instantiate,
    resolve_component,
    to_container,
    validate_component,
    validate_section,
)

NanPolicy = Literal["propagate", "renormalize"]
NormalizeMode = Literal["none", "range", "batch", "running"]
# Other columns of `python -m rewards.score`'s output: a reward may not take these names.
RESERVED_NAMES = frozenset({"image", "prompt", "task", "total", "gates", "error", "reward_errors", "details",
                            "meta", "text", "provenance"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EPS = 1e-6


@dataclass
class EnsembleConfig:
    """The `ensemble:` section.

    weights: reward name -> weight >= 0 (every configured reward needs one; 0 switches it off). Gates
        may multiply it per task; the total is the weighted mean over the rewards that apply.
    normalize: how raw scores are mapped before combining. "none": as they are; "range": by each
        reward's `score_range` (lo, hi; a class attribute, checked before loading) to [0, 1]; "batch":
        z-score over the batch (per reward, over the images it scored); "running": z-score with
        exponential moving statistics (saved in checkpoints).
    nan_policy: "propagate": an applicable reward that is NaN makes the total NaN, so a fault never moves
        a GRPO group baseline; "renormalize": weighted mean over the rewards that did score.
    timeout_s: seconds one reward call may take before it is abandoned and scored NaN (null: no limit).
    batch_size: at most this many images per reward call.
    momentum: weight of the old statistics in the "running" normaliser's update.
    """

    weights: dict = field(default_factory=dict)
    normalize: NormalizeMode = "none"
    nan_policy: NanPolicy = "propagate"
    timeout_s: Annotated[float, Gt(0)] | None = 300.0
    batch_size: Annotated[int, Ge(1)] = 32
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.99


def combine(scores: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
            nan_policy: NanPolicy = "propagate") -> torch.Tensor:
    """Weighted mean of per-reward scores per image.

    scores: name -> float [N]; NaN where the reward did not apply or failed. weights: name -> float [N],
    0 where the reward does not apply (a NaN score there is ignored, never imputed as 0). Rewards in
    `scores` but not in `weights` are ignored. Returns float [N]: NaN where no reward applies, where
    every applicable reward is NaN, and ("propagate") where any applicable reward is NaN.
    """
    if not weights:
        raise ValueError("combine needs at least one reward")
    names = list(weights)
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"weights name rewards without scores: {missing}")
    s = torch.stack([scores[n].float() for n in names])                          # [R, N]
    w = torch.stack([torch.as_tensor(weights[n]).float() for n in names])        # [R, N]
    if s.shape != w.shape:
        raise ValueError(f"scores {tuple(s.shape)} and weights {tuple(w.shape)} differ in shape")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    applies, finite = w > 0, torch.isfinite(s)                                   # [R, N]
    usable = applies & finite
    num = torch.where(usable, w * s, 0).sum(0)                                   # [N]
    den = torch.where(usable, w, 0).sum(0)                                       # [N]
    total = torch.where(den > 0, num / den.clamp_min(_EPS), float("nan"))
    if nan_policy == "propagate":
        total[(applies & ~finite).any(0)] = float("nan")
    elif nan_policy != "renormalize":
        raise ValueError(f"nan_policy must be 'propagate' or 'renormalize', got {nan_policy!r}")
    return total


class Normalizer:
    """Maps each reward's raw scores [N] to a common scale before `combine`; NaN stays NaN.

    score_ranges: name -> (lo, hi), needed by "range". "running" keeps per-reward moving mean and
    variance, updated with each batch before normalising it; `state_dict` / `load_state_dict` carry them
    through checkpoints (plain floats).
    """

    def __init__(self, mode: NormalizeMode = "none", score_ranges: Mapping[str, tuple[float, float]] | None = None,
                 momentum: float = 0.99):
        if mode not in ("none", "range", "batch", "running"):
            raise ValueError(f"unknown normalize mode {mode!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.mode, self.momentum = mode, momentum
        self.score_ranges = dict(score_ranges or {})
        self.stats: dict[str, dict[str, float]] = {}

    def __call__(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self._one(name, s.float()) for name, s in scores.items()}

    def _one(self, name: str, s: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return s
        if self.mode == "range":
            if name not in self.score_ranges:
                raise ValueError(f"normalize 'range' needs a score_range for reward {name!r}")
            lo, hi = self.score_ranges[name]
            return (s - lo) / (hi - lo)
        finite = s[torch.isfinite(s)]
        if finite.numel() == 0:
            return s
        mean, var = finite.mean().item(), finite.var(correction=0).item()
        if self.mode == "running":
            mean, var = self._update(name, mean, var, finite.numel())
        return (s - mean) / max(math.sqrt(var), _EPS)

    def _update(self, name: str, mean: float, var: float, count: int) -> tuple[float, float]:
        # The new statistics describe a mixture: the old distribution with weight m, the batch with 1 - m.
        old = self.stats.get(name)
        if old is not None:
            m, delta = self.momentum, mean - old["mean"]
            mean = old["mean"] + (1 - m) * delta
            var = m * old["var"] + (1 - m) * var + m * (1 - m) * delta ** 2
            count += int(old["count"])
        self.stats[name] = {"mean": mean, "var": var, "count": count}
        return mean, var

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "stats": {k: dict(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"normalizer state is for mode {state.get('mode')!r}, this one is {self.mode!r}")
        self.stats = {k: {"mean": float(v["mean"]), "var": float(v["var"]), "count": int(v["count"])}
                      for k, v in state["stats"].items()}


def reward_stats(scores: Mapping[str, torch.Tensor], applies: Mapping[str, torch.Tensor],
                 failed: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per reward, over the images it applies to: `reward/<name>/mean|std|nan_frac|count|failures`.

    scores: name -> float [N]; applies, failed: name -> bool [N] (failed: the call faulted).
    """
    stats: dict[str, float] = {}
    for name, s in scores.items():
        values = s[applies[name]]
        finite = values[torch.isfinite(values)]
        count = values.numel()
        stats[f"reward/{name}/mean"] = finite.mean().item() if finite.numel() else float("nan")
        stats[f"reward/{name}/std"] = finite.std(correction=0).item() if finite.numel() else float("nan")
        stats[f"reward/{name}/nan_frac"] = (count - finite.numel()) / count if count else 0.0
        stats[f"reward/{name}/count"] = float(count)
        stats[f"reward/{name}/failures"] = float(failed[name].sum())
    return stats


@dataclass
class EnsembleResult:
    """Everything about scoring a batch of N images.

    total: float [N] (NaN = could not be scored). scores: name -> raw float [N] (NaN where the reward does
    not apply or failed). applies: name -> bool [N]. failed: name -> bool [N] (the call faulted).
    gates: N Gate decisions. errors: name -> None, or the errors of its failed calls.
    details: name -> detail key -> list of N values (None where the reward did not run).
    stats: `reward/<name>/...`, `reward/mean|std|nan_frac` (the total) and `gate/.../rate` metrics.
    """

    total: torch.Tensor
    scores: dict[str, torch.Tensor]
    applies: dict[str, torch.Tensor]
    failed: dict[str, torch.Tensor]
    gates: list[Gate]
    errors: dict[str, str | None]
    details: dict[str, dict[str, list[Any]]]
    stats: dict[str, float]


class Combiner:
    """Everything the ensemble does besides calling the rewards: gating, normalising, combining, stats.

    The training driver uses it on scores gathered from reward actors; `RewardEnsemble` uses it
    in-process. names: the rewards in use; score_ranges: name -> (lo, hi), needed by normalize "range";
    needs_text: the rewards whose class needs target text (`needs_text = True`), whatever the gating says.
    """

    def __init__(self, names: Sequence[str], config: EnsembleConfig, gating: GatingConfig | None = None,
                 score_ranges: Mapping[str, tuple[float, float]] | None = None, needs_text: Sequence[str] = ()):
        missing = [name for name in names if name not in config.weights]
        if missing:
            raise ValueError(f"no ensemble weight for reward(s) {missing}")
        ranges = dict(score_ranges or {})
        if config.normalize == "range" and any(n not in ranges for n in names):
            raise ValueError(f"normalize 'range' needs score_range on every reward; missing on "
                             f"{sorted(set(names) - set(ranges))}")
        self.names, self.config = list(names), config
        self.gater = Gater(gating or GatingConfig(), {n: float(config.weights[n]) for n in names}, needs_text)
        self.normalizer = Normalizer(config.normalize, ranges, config.momentum)

    @classmethod
    def from_config(cls, cfg: Any, only: Sequence[str] | None = None) -> Combiner:
        """Validate the `rewards`, `ensemble` and `gating` sections (ConfigError listing every problem) and
        build the combiner without building any reward (score ranges are read from the reward classes)."""
        names, config, gating = _sections(cfg, only)
        classes = {name: resolve_component(str(cfg.rewards[name]["_component_"])) for name in names}
        ranges = {n: tuple(c) for n, c in ((n, class_attribute(c, "score_range")) for n, c in classes.items()) if c}
        needs_text = [name for name, c in classes.items() if class_attribute(c, "needs_text")]
        try:
            return cls(names, config, gating, ranges, needs_text)
        except ValueError as e:
            raise ConfigError([f"ensemble: {e}"]) from e

    def gate(self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
             ) -> tuple[list[Gate], list[dict[str, Any]], dict[str, torch.Tensor]]:
        """Gates for N prompts, the metadata rewards receive (with the gate's target `text`), and per reward
        the bool [N] mask of the rows it applies to."""
        gates = [self.gater(p, m) for p, m in zip(prompts, metadata, strict=True)]
        # Text rewards read their targets from metadata["text"]: the gate's (quoted spans or metadata).
        reward_meta = [{**m, "text": g.text} for m, g in zip(metadata, gates, strict=True)]
        applies = {name: torch.tensor([name in g.weights for g in gates], dtype=torch.bool) for name in self.names}
        return gates, reward_meta, applies

    def unscored_cause(self, gates: Sequence[Gate], applies: Mapping[str, torch.Tensor]) -> str | None:
        """None when some reward applies to some row; else why none does, in words (for the driver's warning).

        applies: name -> bool [N], the gates' masks after any masking by the caller (e.g. invalid images)."""
        if any(bool(mask.any()) for mask in applies.values()):
            return None
        n = len(gates)
        if any(g.weights for g in gates):
            return f"the gates applied rewards, but every one of those {n} images was invalid (NaN, inf or constant)"
        reasons = Counter(reason for g in gates for reason in g.reasons[-1:] or [f"task {g.task!r}: no reward "
                                                                                  "in gating.default or its rule"])
        return "; ".join(f"{reason} ({count} of {n} samples)" for reason, count in reasons.most_common(3))

    def combine(self, scores: Mapping[str, torch.Tensor], applies: Mapping[str, torch.Tensor],
                failed: Mapping[str, torch.Tensor], gates: Sequence[Gate]) -> tuple[torch.Tensor, dict[str, float]]:
        """The total float [N] and the batch's stats (`reward/...`, `gate/...`) from raw scores name -> [N]."""
        weights = {name: torch.tensor([g.weights.get(name, 0.0) for g in gates]) for name in self.names}
        total = combine(self.normalizer({n: scores[n] for n in self.names}), weights, self.config.nan_policy)
        finite = total[torch.isfinite(total)]
        n = len(total)
        stats = reward_stats(scores, applies, failed) | gate_rates(gates, self.names)
        stats["reward/mean"] = finite.mean().item() if finite.numel() else float("nan")
        stats["reward/std"] = finite.std(correction=0).item() if finite.numel() else float("nan")
        stats["reward/nan_frac"] = 1 - finite.numel() / n if n else 0.0
        return total, stats

    def state_dict(self) -> dict[str, Any]:
        """The normaliser's running statistics (empty for stateless modes)."""
        return {"normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.normalizer.load_state_dict(state["normalizer"])


class RewardEnsemble:
    """Gates, scores, normalises and combines a batch in-process (offline scoring).

    Each reward is called only on the images whose gate includes it (OCR never sees a prompt without text
    to render), in chunks of `config.batch_size`, through `score_safely` with `config.timeout_s`.
    """

    def __init__(self, rewards: Mapping[str, Reward], config: EnsembleConfig,
                 gating: GatingConfig | None = None):
        ranges = {n: tuple(r.score_range) for n, r in rewards.items() if getattr(r, "score_range", None)}
        needs_text = [n for n, r in rewards.items() if getattr(r, "needs_text", False)]
        self.rewards = dict(rewards)
        self.config = config
        self.combiner = Combiner(list(rewards), config, gating, ranges, needs_text)

    @classmethod
    def from_config(cls, cfg: Any, only: Sequence[str] | None = None) -> RewardEnsemble:
        """Validate the `rewards`, `ensemble` and `gating` sections (ConfigError listing every problem),
        then build the rewards; `only` keeps just those rewards (the others are neither checked nor built)."""
        names, config, gating = _sections(cfg, only)
        rewards = {name: instantiate(cfg.rewards[name], f"rewards.{name}") for name in names}
        try:
            return cls(rewards, config, gating)
        except ValueError as e:
            raise ConfigError([f"ensemble: {e}"]) from e

    def __call__(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> EnsembleResult:
        n = len(images)
        metadata = list(metadata) if metadata is not None else [{} for _ in range(n)]
        if not len(prompts) == len(metadata) == n:
            raise ValueError(f"got {n} images, {len(prompts)} prompts and {len(metadata)} metadata entries")
        gates, reward_meta, applies = self.combiner.gate(prompts, metadata)
        scores, failed, errors, details = {}, {}, {}, {}
        for name, reward in self.rewards.items():
            index = applies[name].nonzero().flatten().tolist()
            scored = score_in_chunks(reward, images, prompts, reward_meta, index, self.config.batch_size,
                                     self.config.timeout_s)
            scores[name], failed[name], errors[name], details[name] = (scored.scores, scored.failed, scored.error,
                                                                       scored.details)
        total, stats = self.combiner.combine(scores, applies, failed, gates)
        return EnsembleResult(total, scores, applies, failed, gates, errors, details, stats)

    def state_dict(self) -> dict[str, Any]:
        """The normaliser's running statistics (empty for stateless modes)."""
        return self.combiner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.combiner.load_state_dict(state)


def _sections(cfg: Any, only: Sequence[str] | None) -> tuple[list[str], EnsembleConfig, GatingConfig | None]:
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


def validate_reward_sections(cfg: Any, only: Sequence[str] | None = None) -> list[str]:
    """Every problem in the `rewards`, `ensemble` and `gating` sections of `cfg`, cross-references included.

    `only` keeps just those rewards: the others are not checked (their `???` weights paths are not asked
    for), and weights or gates naming them are ignored. Names that no reward has are still errors.
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
        component = validate_component(rewards[name], f"rewards.{name}")
        if not component and ranged:
            component += _range_problems(rewards[name], f"rewards.{name}")
        problems += component
    ensemble = cfg.get("ensemble")
    section = validate_section(ensemble, EnsembleConfig, "ensemble")
    problems += section + (_check_ensemble(ensemble, names, selected) if hasattr(ensemble or {}, "items") else [])
    gating = validate_gating(cfg.get("gating"), names)
    return problems + (gating or ([] if section else _never_applied(cfg, selected)))


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
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            problems.append(f"ensemble.weights.{name}: must be a finite number >= 0, got {value!r}")
    problems += [f"ensemble.weights: no weight for reward {n!r}" for n in selected if n not in weights]
    return problems
