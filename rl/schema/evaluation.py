"""Watching a run: held-out evaluation during training (`eval`) and the reward-hacking monitors (`monitor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge


@dataclass
class EvalConfig:
    """Evaluation on held-out prompts during training (rl/driver/evaluator.py). The rollout actors draw
    `samples_per_prompt` images per prompt with seeds fixed for the whole run (rl.seeding.eval_seed), the reward
    actors score them, and that step's row gets `eval/reward/<name>/mean`, `eval/reward/mean`, `eval/gate/...`,
    `eval/task/<task>/reward/...`, `eval/monitor/...` and `time/eval_s`. The eval total combines the trained
    rewards with the training weights and gates; an `ensemble.normalize` that depends on the batch or the run's
    history ("batch", "running") is replaced there by the stateless "range" ("none" when a reward has no
    score_range), so evaluations compare on one scale."""

    every: Annotated[int, Ge(0)] = 0
    """Evaluate before the first step (a `step: 0` row), every `every` steps and after the last step; 0: off."""
    prompts: str | list | None = None
    """Held-out prompt file(s) (.txt / .jsonl / .parquet), read in file order; null: the shipped
    prompts/data/eval_prompts.jsonl (text-rendering, natural-scene and general prompts in no training file)."""
    num_prompts: Annotated[int, Ge(1)] | None = None
    """Evaluate the first N prompts only (null: all of them)."""
    samples_per_prompt: Annotated[int, Ge(1)] = 2
    """Images per prompt."""
    grid_prompts: Annotated[int, Ge(0)] = 4
    """Prompts (with all their samples) in the grid logged at every evaluation: `eval/samples` in TensorBoard /
    W&B and <run.dir>/eval/step_NNNNNNNN.png (0: no grid)."""


@dataclass
class MonitorConfig:
    """Reward-hacking monitors (rl/evaluation/monitors.py). Every step logs `monitor/saturation`,
    `monitor/brightness`, `monitor/hf_energy`, `monitor/jpeg_bpp` (means over the batch's valid images),
    `monitor/diversity/tokens|images` (mean pairwise distance within a prompt's group; 0 = collapsed) and
    `monitor/advantage_corr/<reward>` (correlation of the reward's group-normalised scores with the advantages)."""

    gold: list = field(default_factory=list)
    """Rewards (names under `rewards:`) scored on the eval prompts only, as `eval/reward/<name>/mean`; they never
    enter the training total, so their curve beside the trained rewards' shows a divergence (reward hacking).
    Gated like the others; they need no ensemble weight. Needs eval.every > 0. Their faults count as any
    reward's (reward_workers.max_failure_frac over failure_window calls)."""
    alerts: dict = field(default_factory=dict)
    """Metric -> relative threshold. When |value - step-0 value| > threshold * |step-0 value| (the absolute
    difference when the step-0 value is 0), a warning names the metric and `monitor/alerts` counts it in that
    row. The step-0 value is the first the run logged: the step-0 evaluation's for `eval/...`, step 1's for
    per-step metrics. Accepted metrics are listed when a wrong one is given."""
    stop_on_alert: bool = False
    """Stop the run (exit status 1) after logging a row that raised an alert."""
