"""How the CPU demo's config learns across seeds: GRPO in one process, without Ray or OCR, in seconds per run.

    python scripts/demo_sweep.py [--config configs/tiny.yaml] [--seeds 8] [--samples 16] [key=value ...]

For each seed s (run.seed, model.policy.seed and prompts.seed all set to s) this trains CONFIG's policy with the
real Learner, sampler and group advantages on CONFIG's prompts, batch and steps; the reward is the demo's metric
(1 - normalised edit distance) of what the glyph decoder draws, read exactly from the codes instead of by OCR
(the demo's OCR reads every glyph row exactly: see README). After the last step it draws `--samples` fresh
samples per prompt (seeds training never uses, as scripts/demo_table.py) and prints one JSON line per seed,
{"seed", "exact_final", "reward_last5", "seconds"}, then a summary line {"seeds", "mean", "min", "max"}.
It is a sweep tool for tuning the demo (key=value overrides); the demo itself is `bash scripts/demo.sh`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.components import instantiate
from core.config import load_config, to_container
from rewards.text_accuracy import edit_similarity
from rl.decoder.patch import GLYPHS
from rl.distributed.learner import Learner, TrainBatch
from rl.grpo import group_advantages
from rl.model.sampler import sample_image_tokens
from rl.seeding import sample_seed
from rl.train_config import TrainSpec, validate_train_config

REPO = Path(__file__).resolve().parents[1]


def glyph_rewards(code_to_tile: torch.Tensor, tokens: torch.Tensor, words: list[str]) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """tokens: long [N, T] -> (edit similarity [N], exact 0/1 [N]) of each drawn row against its word."""
    scores, exact = [], []
    for row, word in zip(tokens.tolist(), words, strict=True):
        text = "".join(GLYPHS[code_to_tile[code]] for code in row).replace(" ", "")
        matched, total = edit_similarity([word], text)
        scores.append(matched / total)
        exact.append(float(text == word))
    return torch.tensor(scores), torch.tensor(exact)


def train_one(spec: TrainSpec, seed: int, samples: int) -> dict[str, float]:
    """Train spec's policy for spec.trainer.steps; the fresh-sample exact fraction and the last rewards."""
    cfg, grid = spec.cfg, tuple(spec.rollout.grid)
    learner = Learner(to_container(cfg.model), spec.trainer, spec.learner, grid, spec.rollout.sampling.temperature,
                      seed=seed)
    learner.setup()
    code_to_tile = instantiate(cfg.model.decoder, "model.decoder").code_to_tile
    source = instantiate(cfg.prompts, "prompts")
    p, g = spec.rollout.prompts_per_step, spec.rollout.group_size
    means = []
    for step in range(1, spec.trainer.steps + 1):
        records = source.next_batch(p)
        rows = [r.prompt for r in records for _ in range(g)]
        words = [r.metadata["text"][0] for r in records for _ in range(g)]
        seeds = [sample_seed(seed, step, i, k, "policy") for i in range(p) for k in range(g)]
        drawn = sample_image_tokens(learner.policy, learner.format.encode(rows, grid), spec.rollout.sampling, seeds)
        rewards, _ = glyph_rewards(code_to_tile, drawn.tokens, words)
        advantages = group_advantages(rewards.view(p, g), scale=spec.trainer.loss.advantage_scale).view(-1)
        learner.update(TrainBatch(rows, drawn.tokens, drawn.logprobs, advantages))
        means.append(rewards.mean().item())
    every = instantiate(cfg.prompts, "prompts", shuffle=False)
    records = every.read(np.arange(len(every)))
    rows = [(i, k) for i in range(len(records)) for k in range(samples)]
    encoded = learner.format.encode([records[i].prompt for i, _ in rows], grid)
    seeds = [sample_seed(12345, 0, i, k, "policy") for i, k in rows]
    fresh = sample_image_tokens(learner.policy.eval(), encoded, spec.rollout.sampling, seeds)
    _, exact = glyph_rewards(code_to_tile, fresh.tokens, [records[i].metadata["text"][0] for i, _ in rows])
    return {"exact_final": round(exact.mean().item(), 4), "reward_last5": round(sum(means[-5:]) / 5, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"), help="(configs/tiny.yaml)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (8)")
    parser.add_argument("--samples", type=int, default=16, help="fresh samples per prompt (16)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    finals = []
    for seed in range(args.seeds):
        seeded = [f"run.seed={seed}", f"model.policy.seed={seed}", f"prompts.seed={seed}", *args.overrides]
        spec = validate_train_config(load_config(args.config, seeded))
        torch.manual_seed(seed)
        start = time.perf_counter()
        result = train_one(spec, seed, args.samples)
        print(json.dumps({"seed": seed, **result, "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        finals.append(result["exact_final"])
    print(json.dumps({"seeds": args.seeds, "mean": round(statistics.mean(finals), 4), "min": min(finals),
                      "max": max(finals)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
