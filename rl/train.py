"""`python -m rl.train CONFIG [key=value ...]`: X-Omni's GRPO stage, one Ray driver calling named stages.

    prompts -> gates -> rollout (G samples per prompt) -> rewards -> advantages -> learner update
            -> weight sync -> metrics -> checkpoint

`ray.address: null` starts a local Ray (the embedded default); "auto" joins a cluster, e.g. under
`ray job submit --working-dir . -- python -m rl.train configs/xomni.yaml`. The whole config is validated
before Ray starts or any model loads. `resume=auto` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import torch

from rewards.ensemble import Combiner
from rl.config import ConfigError, instantiate, load_config, to_container
from rl.distributed.actors import LearnerGroup, RolloutGroup, WeightSync, check_resources, init_ray
from rl.distributed.learner import TrainBatch
from rl.distributed.reward_pool import RewardPool, RunAborted
from rl.evaluation.metrics import MetricsWriter
from rl.evaluation.sample_grid import sample_grid
from rl.grpo import group_advantages
from rl.seeding import sample_seed
from rl.state.run_state import find_resume_checkpoint, read_trainer_state, write_checkpoint
from rl.train_config import TrainSpec, resource_needs, validate_train_config


class Trainer:
    """Owns the actors and the driver-side state (prompt position, reward normaliser, step)."""

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        self.run_dir = Path(spec.run.dir).resolve()
        self.resume_from = find_resume_checkpoint(spec, self.run_dir)  # refuses an incompatible checkpoint
        self.learner = self.rollout = self.rewards = self.metrics = None
        init_ray(spec.ray)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        spec, cfg = self.spec, self.spec.cfg
        model = to_container(cfg.model)
        timeout = spec.ray.call_timeout_s
        self.prompts = instantiate(cfg.prompts, "prompts")
        self.combiner = Combiner.from_config(cfg)
        check_resources(resource_needs(spec, self.combiner.names), joined_cluster=spec.ray.address is not None)
        # All actors start loading at once; only then do we wait for them.
        self.learner = LearnerGroup(model, spec.trainer, spec.learner, spec.rollout.grid,
                                    spec.rollout.sampling.temperature, timeout)
        self.rollout = RolloutGroup(model, spec.rollout, timeout)
        self.rewards = RewardPool({n: to_container(cfg.rewards[n]) for n in self.combiner.names},
                                  spec.reward_workers, self.combiner.config.timeout_s)
        for group in (self.learner, self.rollout, self.rewards):
            group.ready()
        self.sync_weights = WeightSync(self.learner, self.rollout, spec.learner.weight_sync,
                                       use_gpu=spec.learner.num_gpus > 0 and spec.rollout.num_gpus > 0)
        self.step = self.unscored_in_row = 0
        if self.resume_from is not None:
            self.restore(self.resume_from)
        self.metrics = MetricsWriter(self.run_dir, spec.trainer.steps, self.step, spec.logging.tensorboard,
                                     spec.logging.wandb, to_container(cfg))

    def fit(self) -> None:
        every = self.spec.checkpoint.every
        while self.step < self.spec.trainer.steps:
            self.step += 1
            self.metrics.log(self.step, self.train_step(self.step))
            if (every and self.step % every == 0) or self.step == self.spec.trainer.steps:
                self.save()

    def train_step(self, step: int) -> dict[str, float]:
        """One GRPO step; returns its metrics."""
        r, timer = self.spec.rollout, StageTimer()
        with timer("prompts"):
            records = self.prompts.next_batch(r.prompts_per_step)
            prompts = [rec.prompt for rec in records for _ in range(r.group_size)]  # N = P * G rows, prompt-major
            metadata = [dict(rec.metadata) for rec in records for _ in range(r.group_size)]
        with timer("gate"):
            gates, reward_meta, applies = self.combiner.gate(prompts, metadata)
        with timer("rollout"):
            rollout, image_refs, locations = self.rollout.generate(
                prompts, self._seeds(step, "policy"), self._seeds(step, "decoder"))
            applies = {name: mask & rollout.valid for name, mask in applies.items()}  # invalid images: no reward
        self._check_unscored(step, self.combiner.unscored_cause(gates, applies))
        with timer("rewards"):
            scored = self.rewards.score(image_refs, locations, prompts, reward_meta, applies)
            scores = {n: s.scores for n, s in scored.items()}
            total, reward_stats = self.combiner.combine(scores, applies, {n: s.failed for n, s in scored.items()},
                                                        gates)
        if self.spec.logging.images_every and step % self.spec.logging.images_every == 0:
            with timer("log_images"):
                self._log_samples(step, prompts, image_refs, locations, {"total": total, **scores})
        with timer("advantages"):
            advantages = group_advantages(total.view(r.prompts_per_step, r.group_size),
                                          scale=self.spec.trainer.advantage_scale).view(-1)  # [P, G] -> [N]
        with timer("learner"):
            actor_stats = self.learner.update(TrainBatch(prompts, rollout.tokens, rollout.logprobs, advantages))
        self._check_nonfinite(actor_stats)
        with timer("weight_sync"):
            self.sync_weights()
        num_tokens = rollout.tokens.numel()
        return {**reward_stats, **actor_stats, **timer.seconds,
                "advantage/mean": advantages.mean().item(), "advantage/abs_mean": advantages.abs().mean().item(),
                "advantage/zero_frac": (advantages == 0).float().mean().item(),
                "rollout/invalid_frac": 1 - rollout.valid.float().mean().item(),
                "rollout/tokens_per_s": num_tokens / max(rollout.sample_s, 1e-9),
                "rollout/images_per_s": len(prompts) / max(timer.seconds["time/rollout_s"], 1e-9)}

    def _log_samples(self, step: int, prompts: list[str], image_refs: list, locations: list[tuple[int, int]],
                     scores: dict[str, torch.Tensor]) -> None:
        """A grid of the first `logging.images_prompts` prompts' samples, rewards under each image."""
        group = self.spec.rollout.group_size
        count = min(self.spec.logging.images_prompts, self.spec.rollout.prompts_per_step) * group
        chunks = {c: ray.get(image_refs[c]) for c in {locations[i][0] for i in range(count)}}
        rows = []
        for start in range(0, count, group):
            index = range(start, start + group)
            rows.append((prompts[start], [chunks[locations[i][0]][locations[i][1]] for i in index],
                         [{name: float(values[i]) for name, values in scores.items()} for i in index]))
        self.metrics.log_image(step, "samples", sample_grid(rows))

    def _seeds(self, step: int, stream: str) -> list[int]:
        r = self.spec.rollout
        return [sample_seed(self.spec.run.seed, step, p, g, stream)
                for p in range(r.prompts_per_step) for g in range(r.group_size)]

    def _check_nonfinite(self, stats: dict[str, float]) -> None:
        limit = self.spec.trainer.max_nonfinite_steps
        if stats["actor/nonfinite_in_row"] >= limit:
            raise RunAborted(f"{int(stats['actor/nonfinite_in_row'])} optimizer steps in a row had a non-finite "
                             f"loss or gradient norm (trainer.max_nonfinite_steps={limit}); weights were not "
                             f"updated by them")

    def _check_unscored(self, step: int, cause: str | None) -> None:
        """Warn when no reward applies to any sample of the step (its advantages are all 0, so only the KL
        term trains); `trainer.max_unscored_steps` such steps in a row stop the run."""
        self.unscored_in_row = 0 if cause is None else self.unscored_in_row + 1
        if cause is None:
            return
        limit = self.spec.trainer.max_unscored_steps
        if self.unscored_in_row >= limit:
            raise RunAborted(f"{self.unscored_in_row} steps in a row had no reward for any sample "
                             f"(trainer.max_unscored_steps={limit}): {cause}")
        print(f"warning: step {step}: no reward applies to any sample: {cause}", file=sys.stderr, flush=True)

    def save(self) -> Path:
        return write_checkpoint(self.run_dir, self.step, self.spec, self.learner, self.prompts, self.combiner,
                                self.rewards)

    def restore(self, path: Path) -> None:
        """Learner weights/optimizer/schedule, prompt position, normaliser, reward-fault history and step;
        then the restored weights go to the rollout actors before the first rollout."""
        state = read_trainer_state(path)
        self.learner.run("load", str(path), stage="loading a checkpoint")
        self.prompts.load_state_dict(state["prompts"])
        self.combiner.load_state_dict(state["ensemble"])
        self.rewards.load_state_dict(state["reward_pool"])
        self.step = state["step"]
        self.sync_weights()
        print(f"resumed from {path} at step {self.step}", flush=True)

    def close(self) -> None:
        """Flush the loggers and release the actors and their placement groups."""
        if self.metrics is not None:
            self.metrics.close()
        for actors in (self.rewards, self.rollout, self.learner):
            if actors is not None:
                actors.shutdown()


class StageTimer:
    """Wall-clock seconds per named stage, reported as `time/<stage>_s` plus `time/step_s`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.seconds[f"time/{stage}_s"] = time.perf_counter() - began
        self.seconds["time/step_s"] = time.perf_counter() - self._start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training YAML (configs/xomni.yaml, configs/tiny.yaml, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.steps=10 resume=auto")
    args = parser.parse_args(argv)
    try:
        spec = validate_train_config(load_config(args.config, args.overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer = None
    try:
        trainer = Trainer(spec)
        trainer.fit()
    except ConfigError as e:  # found before training started (e.g. an incompatible checkpoint)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunAborted as e:
        print(f"run stopped: {e}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        if ray.is_initialized():
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
