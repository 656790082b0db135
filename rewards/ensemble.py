"""The reward ensemble: per-prompt gates, NaN-aware combination, normalisation and per-reward stats.

The pieces are pure and separable so the training driver can run each reward in its own Ray actor and
still combine exactly like `RewardEnsemble`, which does everything in one process (offline scoring,
single-process training):

    gates   = [gater(prompt, metadata) ...]                  # which rewards apply, with which weight
    scores  = {name: score_safely(reward, ...)[0].scores}     # [N] each, NaN = not applicable / failed
    total   = combine(normalizer(scores), gate_weights, nan_policy)          # [N] (rewards/combine.py)

The sections are checked by rewards/sections.py before anything is built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.components import instantiate, resolve_component
from core.config import ConfigError
from rewards.base import ImageLike, Reward, check_batch
from rewards.combine import EnsembleConfig, Normalizer, combine, reward_stats
from rewards.gating import Gate, Gater, GatingConfig, gate_rates
from rewards.runner import score_in_chunks
from rewards.sections import class_attribute, reward_sections


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
        names, config, gating = reward_sections(cfg, only)
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
        names, config, gating = reward_sections(cfg, only)
        rewards = {name: instantiate(cfg.rewards[name], f"rewards.{name}") for name in names}
        try:
            return cls(rewards, config, gating)
        except ValueError as e:
            raise ConfigError([f"ensemble: {e}"]) from e

    def __call__(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> EnsembleResult:
        metadata = check_batch(images, prompts, metadata)
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
