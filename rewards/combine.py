"""The pure arithmetic of the ensemble: per-reward normalisation, the NaN-aware weighted mean of the rewards that
apply to an image, and per-reward statistics. No models, no Ray; `rewards.ensemble` puts them together.

The total is the weighted MEAN over the rewards that apply to an image, so totals of prompts with different
gates (3 rewards vs 4) stay comparable; within a GRPO group (one prompt, one gate) a mean and a sum differ by a
constant factor, which the group std normalisation removes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Interval

NanPolicy = Literal["propagate", "renormalize"]
NormalizeMode = Literal["none", "range", "batch", "running"]
_EPS = 1e-6
# Weights are relative (the total is a weighted mean), so any bound works; this one keeps weight x gate scale x
# score far from float32's overflow (3.4e38) for scores of any sane size, and refuses 1e308, which a gate's
# scale of 2 turns into inf.
MAX_WEIGHT = 1e6


def weight_problem(value: Any, key: str) -> str | None:
    """Why `value` is not a weight (or a gate scale): a finite int or float in [0, MAX_WEIGHT]; None when it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_WEIGHT:
        return f"{key}: must be a finite number in [0, {MAX_WEIGHT:g}], got {value!r}"
    return None


@dataclass
class EnsembleConfig:
    """The `ensemble:` section: how the rewards that apply to an image make its total."""

    weights: dict = field(default_factory=dict)
    """Reward name -> weight in [0, 1e6] (every configured reward needs one; 0 switches it off). Gates may multiply it
    per task (the product must stay <= 1e6 too); the total is the weighted mean over the rewards that apply."""
    normalize: NormalizeMode = "none"
    """How raw scores are mapped before combining. "none": as they are; "range": by each reward's `score_range`
    (lo, hi; a class attribute, checked before loading) to [0, 1]; "batch": z-score over the batch (per reward,
    over the images it scored); "running": z-score with exponential moving statistics (saved in checkpoints)."""
    nan_policy: NanPolicy = "propagate"
    """"propagate": an applicable reward that is NaN makes the total NaN, so a fault never moves a GRPO group
    baseline; "renormalize": the weighted mean over the rewards that did score."""
    timeout_s: Annotated[float, Gt(0)] | None = 300.0
    """Seconds one reward call may take before it is abandoned and scored NaN (null: no limit)."""
    batch_size: Annotated[int, Ge(1)] = 32
    """At most this many images per reward call."""
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.99
    """Weight of the old statistics in the "running" normaliser's update."""


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
