"""Evaluation during training: the policy on held-out prompts with fixed seeds, scored by the run's own
reward actors, before the first step and every `eval.every` steps (see `EvalConfig` in rl/train_config.py).

The driver calls it between a step's weight sync and that step's metrics row, on the training actors (the
rollout group draws, the reward pool scores): the row of step N holds the evaluation of the policy after N
updates, and the checkpoint of step N is written after that row. A resumed run cuts metrics.jsonl back to
its checkpoint's step, so an evaluation is never lost and never logged twice. Evaluations count in the
reward pool's failure window like training steps do.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.components import resolve_component
from prompts.sources import PromptSource
from rewards.ensemble import Combiner
from rl.distributed.actors import RolloutGroup
from rl.distributed.reward_pool import RewardPool
from rl.evaluation.monitors import batch_monitors
from rl.evaluation.sample_grid import rollout_grid
from rl.seeding import eval_seed
from rl.train_config import TrainSpec, trained_rewards

SHIPPED_PROMPTS = Path(__file__).resolve().parents[2] / "prompts" / "data" / "eval_prompts.jsonl"
STATELESS = ("none", "range")


class Evaluator:
    """The eval prompts (first `eval.num_prompts`), `samples_per_prompt` fixed seeds each, and the combiners
    that score them: the trained rewards as training combines them (with a stateless normaliser) and the
    gold rewards (`monitor.gold`) alone."""

    def __init__(self, spec: TrainSpec, rollout: RolloutGroup, rewards: RewardPool, run_dir: Path):
        e = spec.eval
        source = PromptSource(e.prompts or str(SHIPPED_PROMPTS), shuffle=False)
        n, k = min(e.num_prompts or len(source), len(source)), e.samples_per_prompt
        records = source.read(np.arange(n))
        self.prompts = [r.prompt for r in records for _ in range(k)]  # N = n * k rows, prompt-major
        self.metadata = [dict(r.metadata) for r in records for _ in range(k)]
        self.seeds = {stream: [eval_seed(spec.run.seed, p, s, stream) for p in range(n) for s in range(k)]
                      for stream in ("policy", "decoder")}
        cfg = stateless_sections(spec.cfg, trained_rewards(spec.cfg))
        self.objective = Combiner.from_config(cfg, trained_rewards(spec.cfg))
        gold = list(spec.monitor.gold)
        cfg.ensemble.normalize = "none"  # the gold combiner's total is never used: only its gates and stats
        for name in gold:  # a gold reward needs a weight to pass its gate
            cfg.ensemble.weights[name] = 1.0
        self.gold = Combiner.from_config(cfg, gold) if gold else None
        self.spec, self.rollout, self.rewards = spec, rollout, rewards
        self.grid_dir = run_dir / "eval"

    def due(self, step: int) -> bool:
        """Evaluate after this step: every `eval.every` steps and after the last one."""
        return step % self.spec.eval.every == 0 or step == self.spec.trainer.steps

    def __call__(self, step: int) -> tuple[dict[str, float], np.ndarray | None]:
        """The `eval/...` metrics and `time/eval_s` of the current policy, and the grid of its first
        `eval.grid_prompts` prompts (also saved as <run.dir>/eval/step_NNNNNNNN.png), or None."""
        began = time.perf_counter()
        gates, reward_meta, applies = self.objective.gate(self.prompts, self.metadata)
        if self.gold is not None:
            gold_gates, _, gold_applies = self.gold.gate(self.prompts, self.metadata)
            applies |= gold_applies
        rollout, image_refs, locations = self.rollout.generate(self.prompts, self.seeds["policy"],
                                                               self.seeds["decoder"])
        applies = {name: mask & rollout.valid for name, mask in applies.items()}  # invalid images: no reward
        scored = self.rewards.score(image_refs, locations, self.prompts, reward_meta, applies)
        scores = {name: s.scores for name, s in scored.items()}
        failed = {name: s.failed for name, s in scored.items()}
        total, stats = self.objective.combine(scores, applies, failed, gates)
        stats |= per_task_means(gates, total, {n: scores[n] for n in self.objective.names}, applies)
        if self.gold is not None:
            _, gold_stats = self.gold.combine(scores, applies, failed, gold_gates)
            own = tuple(f"{kind}/{name}/" for name in self.gold.names for kind in ("reward", "gate"))
            stats |= {key: value for key, value in gold_stats.items() if key.startswith(own)}
        group = self.spec.eval.samples_per_prompt
        stats |= batch_monitors(rollout.image_stats, rollout.thumbnails, rollout.tokens, rollout.valid, group)
        grid = None
        if self.spec.eval.grid_prompts:
            grid = rollout_grid(self.prompts, image_refs, locations, {"total": total, **scores}, group,
                                self.spec.eval.grid_prompts)
            self.grid_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(self.grid_dir / f"step_{step:08d}.png")
        metrics = {f"eval/{key}": value for key, value in stats.items()}
        metrics["time/eval_s"] = time.perf_counter() - began
        return metrics, grid


def per_task_means(gates: list[Any], total: torch.Tensor, scores: dict[str, torch.Tensor],
                   applies: dict[str, torch.Tensor]) -> dict[str, float]:
    """`task/<task>/reward/mean` (the total) and `task/<task>/reward/<name>/mean` over the rows of each task
    (left out where nothing scored). total: float [N]; scores, applies: name -> [N]."""
    tasks = [gate.task for gate in gates]
    out = {}
    for task in sorted(set(tasks)):
        rows = torch.tensor([t == task for t in tasks])                       # [N]
        columns = {"reward/mean": total[rows]}
        columns |= {f"reward/{name}/mean": values[rows & applies[name]] for name, values in scores.items()}
        for key, values in columns.items():
            finite = values[torch.isfinite(values)]
            if finite.numel():
                out[f"task/{task}/{key}"] = finite.mean().item()
    return out


def stateless_sections(cfg: Any, names: list[str]) -> Any:
    """A copy of the config whose `ensemble.normalize` does not depend on the batch or the run's history:
    "batch" and "running" become "range" when every reward in `names` declares a score_range, else "none"."""
    cfg = copy.deepcopy(cfg)
    if cfg.ensemble.get("normalize", "none") not in STATELESS:
        ranged = all(getattr(resolve_component(str(cfg.rewards[name]["_component_"])), "score_range", None)
                     for name in names)
        cfg.ensemble.normalize = "range" if ranged else "none"
    return cfg
