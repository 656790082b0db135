"""The driver of a GRPO run: `Trainer` starts the actor groups (after checking the memory plan) and calls their
stages step by step, as single-process code would read:

    prompts -> gates -> rollout (G samples per prompt) -> rewards -> advantages -> learner update
            -> weight sync -> (evaluation) -> metrics -> checkpoint

With `trainer.pipeline.async_steps: 1` the next step's rollout (through its advantages) runs while the learner
updates, on weights one update old; a checkpoint then holds that rollout (docs: concepts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from core.components import instantiate
from core.config import to_container
from rewards.ensemble import Combiner
from rl.distributed.actors import ColocatedSync, LearnerGroup, RolloutGroup, WeightSync, colocated_groups, init_ray
from rl.distributed.cluster import cluster_nodes, placement_groups, wait_started
from rl.distributed.memory import GIB
from rl.distributed.memory_plan import Plan
from rl.distributed.pipeline import StepRollout, UpdateInFlight, stream_rollout
from rl.distributed.placement import run_units
from rl.distributed.reward_pool import RewardPool, RunAborted
from rl.driver.evaluator import Evaluator
from rl.driver.run_state import find_resume_checkpoint, read_pending_rollout, read_trainer_state, write_checkpoint
from rl.evaluation.alerts import DriftAlerts
from rl.evaluation.metrics import MetricsWriter, read_metrics
from rl.evaluation.monitors import advantage_correlations, batch_monitors
from rl.evaluation.sample_grid import rollout_grid
from rl.export import export
from rl.grpo import group_advantages
from rl.model.loading import pretrained_arguments
from rl.plan import DoesNotFit, plan_run, render
from rl.seeding import sample_seed
from rl.state.checkpoint import latest_checkpoint
from rl.timing import StageTimer
from rl.train_config import TrainSpec, trained_rewards


class Trainer:
    """Owns the actors and the driver-side state (prompt position, reward normaliser, step).

    A context manager: `with Trainer(spec) as trainer: trainer.fit()` releases the actors, their placement
    groups and the loggers however the block ends (a Trainer that fails to start releases what it started)."""

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        self.run_dir = Path(spec.run.dir).resolve()
        self.resume_from = find_resume_checkpoint(spec, self.run_dir)  # refuses an incompatible checkpoint
        self.learner = self.rollout = self.rewards = self.metrics = self.evaluator = None
        # One step off-policy: the next step's rollout, sampled while the learner updates (see train_step), and
        # how many updates the rollout actors' weights have had.
        self.pending: StepRollout | None = None
        self.weights_version = 0
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
        self.combiner = Combiner.from_config(cfg, trained_rewards(cfg))  # gold rewards never enter the total
        scoring = [*self.combiner.names, *spec.monitor.gold]
        self.plan = self._check_plan(scoring)
        groups = placement_groups(self.plan.placement, self.plan.nodes, spec.ray.placement_timeout_s)
        # All actors start loading at once; only then do we wait for them.
        colocated = spec.placement.mode == "colocated"
        if colocated:  # the same actors serve as learner ranks and rollout replicas
            self.learner, self.rollout = colocated_groups(model, spec.trainer, spec.learner, spec.rollout, timeout,
                                                          spec.run.seed, self.plan.offload_decoder, groups["worker"])
            starting = {"colocated worker": [w.__ray_ready__.remote() for w in self.learner.ranks]}
        else:
            self.learner = LearnerGroup(model, spec.trainer, spec.learner, spec.rollout.grid,
                                        spec.rollout.sampling.temperature, timeout, spec.run.seed,
                                        groups["learner"])
            self.rollout = RolloutGroup(model, spec.rollout, timeout, groups["rollout"])
            starting = {"rollout": [a.__ray_ready__.remote() for a in self.rollout.actors],
                        "learner": [r.__ray_ready__.remote() for r in self.learner.ranks]}
        self.rewards = RewardPool({n: to_container(cfg.rewards[n]) for n in scoring},
                                  spec.reward_workers, self.combiner.config.timeout_s, self.combiner.config.batch_size)
        wait_started(starting, spec.ray.start_timeout_s, local=spec.ray.address is None)
        for group in (self.learner, self.rollout, self.rewards):
            group.ready()
        # Declared GPUs (ray.num_gpus on a machine without them) run on the CPU: no NCCL there.
        on_gpus = any(node.gpu_devices for node in self.plan.nodes)
        self.sync_weights = ColocatedSync(self.learner, spec.rollout.dtype) if colocated else \
            WeightSync(self.learner, self.rollout, spec.learner.weight_sync,
                       use_gpu=on_gpus and spec.learner.num_gpus > 0 and spec.rollout.num_gpus > 0,
                       dtype=spec.rollout.dtype, timeout_s=spec.learner.collective_timeout_s)
        if spec.eval.every:
            self.evaluator = Evaluator(spec, self.rollout, self.rewards, self.run_dir)
        self.step = self.unscored_in_row = 0
        if self.resume_from is not None:
            self.restore(self.resume_from)
        # A fresh run keeps no row of an earlier one in run.dir, not even its step-0 evaluation.
        self.metrics = MetricsWriter(self.run_dir, spec.trainer.steps, self.step if self.resume_from else -1,
                                     spec.logging.tensorboard, spec.logging.wandb_options(spec.run.name),
                                     to_container(cfg))
        history = read_metrics(self.metrics.path) if self.metrics.path.exists() else []
        self.alerts = DriftAlerts(spec.monitor.alerts, spec.monitor.stop_on_alert, history)

    def _check_plan(self, rewards: list[str]) -> Plan:
        """The memory plan on the nodes Ray reports (waiting a bounded time for a joined cluster to offer what
        the run asks for); a run that does not fit stops here unless placement.check is "warn"."""
        spec = self.spec
        units = run_units(spec, rewards)
        gib = spec.placement.gpu_memory_gib
        nodes = cluster_nodes(sum(u.gpus for u in units), sum(u.cpus for u in units), spec.ray.address is not None,
                              spec.ray.placement_timeout_s, None if gib is None else int(gib * GIB))
        plan = plan_run(spec, nodes)
        print(render(plan), flush=True)
        if not plan.fits:
            if spec.placement.check == "error":
                raise DoesNotFit(plan.problems)
            print("warning: starting although the plan does not fit (placement.check: warn)", flush=True)
        return plan

    def fit(self) -> None:
        every = self.spec.checkpoint.every
        if self.step == 0 and self.evaluator is not None:  # the initial policy: a `step: 0` row
            self._log(0, self._evaluate(0))
        while self.step < self.spec.trainer.steps:
            self.step += 1
            metrics = self.train_step(self.step)
            if self.evaluator is not None and self.evaluator.due(self.step):
                metrics |= self._evaluate(self.step)
            self._log(self.step, metrics)  # before the checkpoint: a saved step always has its row
            if (every and self.step % every == 0) or self.step == self.spec.trainer.steps:
                self.save()
        if self.spec.checkpoint.export_final:  # the last step always saves
            self.export_final(latest_checkpoint(self.run_dir))
        if self.spec.logging.curves:  # drawn again by every run that ends, so it shows the resumed steps too
            from rl.evaluation.curves import plot  # matplotlib: only when drawn

            plot([self.metrics.path], self.run_dir / "curves.png")

    def _evaluate(self, step: int) -> dict[str, float]:
        metrics, grid = self.evaluator(step)
        if grid is not None:
            self.metrics.log_image(step, "eval/samples", grid)
        return metrics

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        """Write a row, then act on `monitor.alerts`: a warning per alert, and a stop when configured."""
        alerts = self.alerts.check(step, metrics)
        if self.alerts.thresholds:
            metrics["monitor/alerts"] = float(len(alerts))
        self.metrics.log(step, metrics)
        stop = self.alerts.report(alerts)
        if stop:
            raise RunAborted(stop)

    def train_step(self, step: int) -> dict[str, float]:
        """One GRPO step; returns its metrics. On-policy its rollout is sampled now, with the weights its update
        starts from. With trainer.pipeline.async_steps=1 it was sampled during the previous step (weights one update
        older), and the rollout of step + 1 is sampled and scored while the learner updates."""
        timer = StageTimer()
        batch = self.pending or self.collect(step)
        self.pending = None
        update = UpdateInFlight(self.learner, batch)
        if self.spec.trainer.pipeline.async_steps and step < self.spec.trainer.steps:
            # Sampled with the weights this update starts from: one update older than step + 1's update will.
            self.pending = self.collect(step + 1)
        with timer("learner"):  # under async: only the part of the update the next rollout did not hide
            actor_stats = update.result()
        self._check_nonfinite(actor_stats)
        with timer("weight_sync"):
            sync_bytes = self.sync_weights()
        self.weights_version = step
        if batch.grid is not None:
            self.metrics.log_image(step, "samples", batch.grid)
        # The rollout's own stage times come first: this step's time/step_s replaces the one measured with them.
        return {**batch.metrics, **actor_stats, **timer.seconds, "weight_sync/bytes": sync_bytes,
                "rollout/staleness": float(step - 1 - batch.sampled_with)}

    def collect(self, step: int) -> StepRollout:
        """Step `step`'s rollout with the weights the rollout actors hold now: prompts, gates, samples, rewards,
        advantages and the metrics that need no update."""
        r, timer = self.spec.rollout, StageTimer()
        with timer("prompts"):
            records = self.prompts.next_batch(r.prompts_per_step)
            prompts = [rec.prompt for rec in records for _ in range(r.group_size)]  # N = P * G rows, prompt-major
            metadata = [dict(rec.metadata) for rec in records for _ in range(r.group_size)]
        with timer("gate"):
            gates, reward_meta, applies = self.combiner.gate(prompts, metadata)
        # Gold rewards (monitor.gold) score the eval prompts only: here they apply to no row.
        idle = {name: torch.zeros(len(prompts), dtype=torch.bool) for name in self.spec.monitor.gold}
        handed = None
        # A colocated worker rolls out or learns, one at a time: its stages cannot overlap within a step.
        if self.spec.trainer.pipeline.streaming and self.spec.placement.mode == "split":
            streamed = stream_rollout(self.rollout, self.rewards, self.learner, prompts, self._seeds(step, "policy"),
                                      self._seeds(step, "decoder"), reward_meta, applies | idle)
            rollout, image_refs, locations, scored = (streamed.rollout, streamed.image_refs, streamed.locations,
                                                      streamed.scored)
            timer.seconds |= {"time/rollout_s": streamed.rollout_s, "time/rewards_s": streamed.rewards_s}
            handed = streamed.learner_calls
            applies = {name: mask & rollout.valid for name, mask in applies.items()}
        else:
            with timer("rollout"):
                rollout, image_refs, locations = self.rollout.generate(
                    prompts, self._seeds(step, "policy"), self._seeds(step, "decoder"))
                applies = {name: mask & rollout.valid for name, mask in applies.items()}  # invalid images: no reward
            with timer("rewards"):
                scored = self.rewards.score(image_refs, locations, prompts, reward_meta, applies | idle)
        self._check_unscored(step, self.combiner.unscored_cause(gates, applies))
        with timer("combine"):
            scores = {n: scored[n].scores for n in self.combiner.names}
            total, reward_stats = self.combiner.combine(scores, applies, {n: scored[n].failed for n in scores}, gates)
        grid = None
        if self.spec.logging.images_every and step % self.spec.logging.images_every == 0:
            with timer("log_images"):  # logged with the step's row (metrics loggers want steps in order)
                grid = rollout_grid(prompts, image_refs, locations, {"total": total, **scores}, r.group_size,
                                    self.spec.logging.images_prompts)
        with timer("advantages"):
            advantages = group_advantages(total.view(r.prompts_per_step, r.group_size),
                                          scale=self.spec.trainer.loss.advantage_scale).view(-1)  # [P, G] -> [N]
        with timer("monitors"):
            monitors = batch_monitors(rollout.image_stats, rollout.thumbnails, rollout.tokens, rollout.valid,
                                      r.group_size) | advantage_correlations(scores, advantages, r.group_size)
        metrics = {**reward_stats, **monitors, **timer.seconds,
                   "advantage/mean": advantages.mean().item(), "advantage/abs_mean": advantages.abs().mean().item(),
                   "advantage/zero_frac": (advantages == 0).float().mean().item(),
                   "rollout/invalid_frac": 1 - rollout.valid.float().mean().item(),
                   "rollout/tokens_per_s": rollout.tokens.numel() / max(rollout.sample_s, 1e-9),
                   "rollout/compiled_graphs": float(rollout.compiled_graphs),
                   "rollout/decoder_calls": float(rollout.decoder_calls),
                   "rollout/decoder_calls_skipped": float(rollout.decoder_calls_skipped),
                   "rollout/images_per_s": len(prompts) / max(timer.seconds["time/rollout_s"], 1e-9)}
        return StepRollout(step, prompts, rollout.tokens, rollout.logprobs, advantages, metrics, grid,
                           self.weights_version, handed)

    def _seeds(self, step: int, stream: str) -> list[int]:
        r = self.spec.rollout
        return [sample_seed(self.spec.run.seed, step, p, g, stream)
                for p in range(r.prompts_per_step) for g in range(r.group_size)]

    def _check_nonfinite(self, stats: dict[str, float]) -> None:
        limit = self.spec.trainer.faults.max_nonfinite_steps
        if stats["actor/nonfinite_in_row"] >= limit:
            raise RunAborted(f"{int(stats['actor/nonfinite_in_row'])} optimizer steps in a row had a non-finite "
                             f"loss or gradient norm (trainer.faults.max_nonfinite_steps={limit}); weights were not "
                             f"updated by them")

    def _check_unscored(self, step: int, cause: str | None) -> None:
        """Warn when no reward applies to any sample of the step (its advantages are all 0, so only the KL
        term trains); `trainer.faults.max_unscored_steps` such steps in a row stop the run."""
        self.unscored_in_row = 0 if cause is None else self.unscored_in_row + 1
        if cause is None:
            return
        limit = self.spec.trainer.faults.max_unscored_steps
        if self.unscored_in_row >= limit:
            raise RunAborted(f"{self.unscored_in_row} steps in a row had no reward for any sample "
                             f"(trainer.faults.max_unscored_steps={limit}): {cause}")
        print(f"warning: step {step}: no reward applies to any sample: {cause}", file=sys.stderr, flush=True)

    def save(self) -> Path:
        return write_checkpoint(self.run_dir, self.step, self.spec, self.learner, self.prompts, self.combiner,
                                self.rewards, self.pending)

    def export_final(self, checkpoint: Path) -> Path:
        """The final checkpoint as a complete X-Omni folder in <run.dir>/export (model.policy's folder as base)."""
        base = pretrained_arguments(to_container(self.spec.cfg.model.policy))["path"]
        out = export(checkpoint, base, self.run_dir / "export", overwrite=True)
        print(f"exported the final policy to {out}", flush=True)
        return out

    def restore(self, path: Path) -> None:
        """Learner weights/optimizer/schedule, prompt position, normaliser, reward-fault history, step and (one
        step off-policy) the next step's rollout; then the restored weights go to the rollout actors before the
        first rollout."""
        state = read_trainer_state(path)
        self.learner.run("load", str(path), stage="loading a checkpoint")
        self.prompts.load_state_dict(state["prompts"])
        self.combiner.load_state_dict(state["ensemble"])
        self.rewards.load_state_dict(state["reward_pool"])
        self.step = state["step"]
        self.pending = read_pending_rollout(path, self.step)
        self.sync_weights()
        self.weights_version = self.step
        print(f"resumed from {path} at step {self.step}", flush=True)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush the loggers and release the actors and their placement groups."""
        if self.metrics is not None:
            self.metrics.close()
        for actors in (self.rewards, self.rollout, self.learner):
            if actors is not None:
                actors.shutdown()
