"""What the CPU demo's policy writes, before and after training: a table per prompt and a JSON summary.

    python scripts/demo_table.py CONFIG RUN_DIR [--samples K] [--seed S] [key=value ...]

For every prompt of CONFIG's prompt source (file order), K fresh samples are drawn from the initial policy
(`model.policy`, step 0) and from the newest complete checkpoint in RUN_DIR, with seeds
`sample_seed(S, 0, prompt, k, ...)` that training never uses (its steps start at 1), and rollout.sampling.
CONFIG's decoder draws them and CONFIG's `ocr` reward reads them back; a sample spells its word exactly
when the reading is the target with nothing else (metric edit_distance == 1: case, spaces and punctuation
aside). The table shows what OCR read from each prompt's first sample and how many of the K were exact;
the last line is JSON: {"samples", "exact_step0", "exact_final", "final_step", "seed"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import torch

from core.cli import command
from core.components import instantiate
from core.config import load_config, to_container
from rl.decoder import to_uint8_images
from rl.model.policy import XOmniPolicy
from rl.model.sampler import sample_image_tokens
from rl.model.tokenizer import PromptFormat
from rl.seeding import sample_seed
from rl.state.checkpoint import list_checkpoints
from rl.state.learner_checkpoint import trained_policy
from rl.train_config import validate_train_config


def read_samples(policy: XOmniPolicy, spec, prompts: list[str], targets: list[list[str]], samples: int,
                 seed: int) -> list[tuple[list[str], list[bool]]]:
    """Per prompt: the OCR readings of its `samples` fresh samples and whether each is exact."""
    cfg, grid = spec.cfg, tuple(spec.rollout.grid)
    tokenizer = instantiate(cfg.model.tokenizer, "model.tokenizer")
    decoder = instantiate(cfg.model.decoder, "model.decoder")
    ocr = instantiate(cfg.rewards.ocr, "rewards.ocr", metric="edit_distance")
    rows = [(i, k) for i in range(len(prompts)) for k in range(samples)]
    texts = [prompts[i] for i, _ in rows]
    seeds = {s: [sample_seed(seed, 0, i, k, s) for i, k in rows] for s in ("policy", "decoder")}
    drawn = sample_image_tokens(policy.eval(), PromptFormat(tokenizer, policy.config.vocab_size).encode(texts, grid),
                                spec.rollout.sampling, seeds["policy"])
    images = to_uint8_images(decoder(drawn.tokens, grid, texts, seeds["decoder"]).images)
    label = next(iter(ocr.backends))
    out = ocr(images, texts, [{"text": targets[i]} for i, _ in rows])
    read = [text.replace("\n", " ") for text in out.details[f"ocr_text/{label}"]]
    exact = (out.scores == 1).tolist()
    return [(read[i * samples:(i + 1) * samples], exact[i * samples:(i + 1) * samples]) for i in range(len(prompts))]


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("--samples", type=int, default=16, help="fresh samples per prompt (16)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the fresh samples (12345)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    spec = validate_train_config(load_config(args.config, args.overrides))
    checkpoints = list_checkpoints(args.run_dir)
    if not checkpoints:
        print(f"error: no complete checkpoint in {args.run_dir}", file=sys.stderr)
        return 2
    step, path = checkpoints[-1]
    source = instantiate(spec.cfg.prompts, "prompts", shuffle=False)
    records = source.read(np.arange(len(source)))
    prompts, targets = [r.prompt for r in records], [list(r.metadata["text"]) for r in records]
    torch.set_num_threads(2)
    initial = [instantiate(to_container(spec.cfg.model.policy), "model.policy") for _ in range(2)]
    before = read_samples(initial[0], spec, prompts, targets, args.samples, args.seed)
    # as `rl.generate --checkpoint`: the checkpoint's trained weights over the policy the run started from
    after = read_samples(trained_policy(path, initial[1]), spec, prompts, targets, args.samples, args.seed)
    print(f"| prompt | step 0 writes | step {step} writes | exact, step 0 | exact, step {step} |")
    print("|---|---|---|---|---|")
    for prompt, (read0, exact0), (read1, exact1) in zip(prompts, before, after, strict=True):
        print(f"| {prompt} | `{read0[0]}` | `{read1[0]}` | {sum(exact0)}/{len(exact0)} | {sum(exact1)}/{len(exact1)} |")
    total = len(prompts) * args.samples
    summary = {"samples": total, "exact_step0": sum(sum(e) for _, e in before) / total,
               "exact_final": sum(sum(e) for _, e in after) / total, "final_step": step, "seed": args.seed}
    print(f"fresh samples spelling their word exactly (read back by OCR): {summary['exact_step0']:.0%} at step 0, "
          f"{summary['exact_final']:.0%} at step {step}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
