"""Driver-side handles on the Ray actors: starting Ray, placing the rollout and learner groups, calling
them, and turning a dead actor into a `RunAborted` that names it (so `resume=auto` can take over).

The driver's loop calls `RolloutGroup.generate`, `LearnerGroup.update` and `sync_weights` as if they were
local functions; everything Ray-specific lives here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from core.paths import CONFIG_DIRS_ENV, config_dirs
from rl.distributed.cluster import bundle
from rl.distributed.colocated import ColocatedWorker
from rl.distributed.learner import Learner, TrainBatch
from rl.distributed.reward_pool import RunAborted
from rl.distributed.rollout import RolloutResult, RolloutWorker
from rl.train_config import LearnerConfig, RayConfig, RolloutConfig, TrainerConfig

# Environment of every actor: tokenizers' thread pool warns after fork; Ray's usage stats stay off.
ACTOR_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}
# The driver's NCCL, CUDA and CUDA allocator settings, passed on: on a joined cluster the workers inherit the
# environment of `ray start`, not the driver's. CUDA_VISIBLE_DEVICES is Ray's to set for each actor.
FORWARDED_PREFIXES = ("NCCL_", "TORCH_NCCL_", "CUDA_", "PYTORCH_CUDA_ALLOC_CONF")
NOT_FORWARDED = {"CUDA_VISIBLE_DEVICES"}


def actor_env() -> dict[str, str]:
    """The environment variables every actor of the run gets (Ray's job-level runtime_env)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) and k not in NOT_FORWARDED}
    return {**env, **ACTOR_ENV}


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster at `cfg.address`, or start a local Ray when it is null (the embedded default).

    A local Ray puts the working directory on the workers' path and hands them the config's folders
    (`core.paths.config_dirs()`), so users' reward modules and relative paths resolve in the actors as they
    do in the driver: working directory first, then the config folders. On a cluster use
    `ray job submit --working-dir .` for the same effect.
    """
    if ray.is_initialized():
        return
    env = actor_env()
    if cfg.address is None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
        env[CONFIG_DIRS_ENV] = os.pathsep.join(config_dirs())
        # "local": a Ray of our own even when another one runs on this machine (ray.init() would join it).
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, namespace=cfg.namespace,
                 include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(address=cfg.address, namespace=cfg.namespace, runtime_env={"env_vars": env})


def call(refs: Any, what: str, timeout_s: float | None = None) -> Any:
    """`ray.get` that reports a dead or stuck actor as RunAborted naming `what`."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.RayActorError as e:
        raise RunAborted(f"{what} died: {str(e).rstrip('.')}.\n"
                         "Resume from the last checkpoint with resume=auto.") from e
    except ray.exceptions.GetTimeoutError as e:
        raise RunAborted(f"{what} did not answer within {timeout_s}s (ray.call_timeout_s)") from e


def placed(cls: type, count: int, num_cpus: float, num_gpus: float, group: PlacementGroup | None = None
            ) -> tuple[list, Any]:
    """Options for `count` actors of `cls`, actor i in bundle i of `group` (the driver's, pinned to the nodes
    the plan chose; by default a PACK group of `count` bundles, so GPU actors land together), and the group
    (to remove at shutdown)."""
    if group is None:
        group = placement_group([bundle(num_cpus, num_gpus)] * count, strategy="PACK")
        ray.get(group.ready())
    remote = ray.remote(cls)
    return [remote.options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0,
                           scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i))
            for i in range(count)], group


def shutdown_actors(actors: Sequence[Any], group: Any = None) -> None:
    """Kill `actors` and release their placement group (so a later run in this Ray can be placed)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
    if group is not None:
        remove_placement_group(group)


class RolloutGroup:
    """`rollout.num_actors` RolloutWorkers; rows are split into contiguous chunks, one per actor."""

    def __init__(self, model: Mapping[str, Any], cfg: RolloutConfig, timeout_s: float | None,
                 group: PlacementGroup | None = None):
        options, group = placed(RolloutWorker, cfg.num_actors, cfg.num_cpus, cfg.num_gpus, group)
        # Models load in the background.
        self._drive([o.remote(model, cfg) for o in options], timeout_s, cfg.batch_size, group)

    @classmethod
    def of(cls, actors: Sequence[Any], timeout_s: float | None, batch_size: int,
           group: PlacementGroup | None = None) -> RolloutGroup:
        """A facade over actors started elsewhere that answer `generate` and `ping` (colocated workers)."""
        self = cls.__new__(cls)
        self._drive(list(actors), timeout_s, batch_size, group)
        return self

    def _drive(self, actors: list, timeout_s: float | None, batch_size: int, group: PlacementGroup | None) -> None:
        self.actors, self.timeout_s, self.batch_size, self.group = actors, timeout_s, batch_size, group

    def ready(self) -> None:
        """Wait until every actor has built its policy and decoder."""
        self._call([a.ping.remote() for a in self.actors], "starting")

    def _call(self, refs: Any, stage: str) -> Any:
        return call(refs, f"a rollout actor ({stage})", self.timeout_s)

    def shutdown(self) -> None:
        shutdown_actors(self.actors, self.group)

    def generate(self, prompts: Sequence[str], policy_seeds: Sequence[int], decoder_seeds: Sequence[int]
                 ) -> tuple[RolloutResult, list, list[tuple[int, int]]]:
        """Sample and decode every row. Returns the merged result, the chunks' image refs (left in the object
        store for the reward actors) and, per row, (chunk, index) locating its image among those refs."""
        chunks = self.submit(prompts, policy_seeds, decoder_seeds)
        results = self._call([chunk.result for chunk in chunks], "generate")
        return merge_chunks(chunks, results), [chunk.images for chunk in chunks], chunk_locations(chunks)

    def submit(self, prompts: Sequence[str], policy_seeds: Sequence[int], decoder_seeds: Sequence[int]
               ) -> list[RolloutChunk]:
        """Start sampling and decoding every row without waiting: each actor takes a contiguous share of the
        rows, one call per `rollout.batch_size` of them (its batches), so each chunk is ready on its own."""
        size = -(-len(prompts) // len(self.actors))
        chunks = []
        for actor_index, first in enumerate(range(0, len(prompts), size)):
            last = min(first + size, len(prompts))
            for start in range(first, last, self.batch_size):
                rows = range(start, min(start + self.batch_size, last))
                result, images = self.actors[actor_index].generate.options(num_returns=2).remote(
                    [prompts[i] for i in rows], [policy_seeds[i] for i in rows], [decoder_seeds[i] for i in rows])
                chunks.append(RolloutChunk(actor_index, rows, result, images))
        return chunks


@dataclass
class RolloutChunk:
    """One rollout call in flight: rows `rows` of the step on actor `actor`; refs to its RolloutResult and images."""

    actor: int
    rows: range
    result: Any
    images: Any


def merge_chunks(chunks: Sequence[RolloutChunk], results: Sequence[RolloutResult]) -> RolloutResult:
    """The chunks' results in row order, with each actor's seconds summed (its chunks ran one after another)."""
    merged = RolloutResult.merge(results)
    per_actor: dict[int, list[float]] = {}
    for chunk, result in zip(chunks, results, strict=True):
        sample_s, decode_s = per_actor.setdefault(chunk.actor, [0.0, 0.0])
        per_actor[chunk.actor] = [sample_s + result.sample_s, decode_s + result.decode_s]
    merged.sample_s = max(s for s, _ in per_actor.values())
    merged.decode_s = max(d for _, d in per_actor.values())
    return merged


def chunk_locations(chunks: Sequence[RolloutChunk]) -> list[tuple[int, int]]:
    """Per row of the step, (chunk, index within the chunk)."""
    return [(c, i) for c, chunk in enumerate(chunks) for i in range(len(chunk.rows))]


class LearnerGroup:
    """`learner.world_size` Learner ranks (FSDP when > 1). Calls go to every rank; rank 0 answers."""

    def __init__(self, model: Mapping[str, Any], trainer: TrainerConfig, cfg: LearnerConfig, grid: Sequence[int],
                 temperature: float, timeout_s: float | None, seed: int = 0,
                 group: PlacementGroup | None = None):
        options, group = placed(Learner, cfg.world_size, cfg.num_cpus, cfg.num_gpus, group)
        self._drive([o.remote(model, trainer, cfg, tuple(grid), temperature, rank, seed)
                     for rank, o in enumerate(options)], timeout_s, group)

    @classmethod
    def of(cls, ranks: Sequence[Any], timeout_s: float | None, group: PlacementGroup | None = None) -> LearnerGroup:
        """A facade over actors started elsewhere that answer every `Learner` method (colocated workers)."""
        self = cls.__new__(cls)
        self._drive(list(ranks), timeout_s, group)
        return self

    def _drive(self, ranks: list, timeout_s: float | None, group: PlacementGroup | None) -> None:
        self.ranks, self.timeout_s, self.group = ranks, timeout_s, group

    def ready(self) -> None:
        """Form the process group (rank 0 hosts it) and build the policy, reference and optimizer."""
        address, port = self._call(self.ranks[0].address.remote(), "starting")
        self._call([r.setup.remote(address, port) for r in self.ranks], "setting up")

    def _call(self, refs: Any, stage: str) -> Any:
        return call(refs, f"a learner actor ({stage})", self.timeout_s)

    def shutdown(self) -> None:
        shutdown_actors(self.ranks, self.group)

    def run(self, method: str, *args: Any, stage: str | None = None) -> Any:
        """Call `method` on every rank; rank 0's answer."""
        return self.result(self.submit(method, *args), stage or method)

    def submit(self, method: str, *args: Any) -> list:
        """Call `method` on every rank without waiting (one step off-policy samples meanwhile); the calls' refs."""
        return [getattr(r, method).remote(*args) for r in self.ranks]

    def result(self, refs: list, stage: str) -> Any:
        """Rank 0's answer to calls made by `submit` (a dead or stuck rank raises RunAborted naming `stage`)."""
        return self._call(refs, stage)[0]

    def update(self, batch: TrainBatch) -> dict[str, float]:
        return self.run("update", ray.put(batch), stage="update")

    def begin(self, prompts: list[str]) -> list:
        """Start a batch whose rows arrive by `add_rows` (see Learner.begin); returns the calls' refs."""
        return [r.begin.remote(prompts) for r in self.ranks]

    def add_rows(self, start: int, tokens: Any, logprobs: Any) -> list:
        """Hand rows start.. to every rank without waiting (each runs their no-grad passes); the calls' refs."""
        return [r.add_rows.remote(start, tokens, logprobs) for r in self.ranks]


class WeightSync:
    """Learner -> rollout actors after every update: the trained weights in the rollout `dtype`, by the object
    store or a collective broadcast (see rl/distributed/weight_sync.py). Calling it returns the bytes sent."""

    def __init__(self, learner: LearnerGroup, rollout: RolloutGroup, mode: str, use_gpu: bool, dtype: str,
                 timeout_s: float):
        self.learner, self.rollout, self.timeout_s = learner, rollout, timeout_s
        self.mode = ("collective" if use_gpu else "object_store") if mode == "auto" else mode
        self.spec = self.learner.run("sync_spec", dtype, stage="weight-sync plan")
        if self.mode == "collective":
            self._join("nccl" if use_gpu else "gloo")

    def _join(self, backend: str) -> None:
        # Learner rank 0 is rank 0 of the group and hosts its store, so the address is taken on its node.
        host, port = self.learner.run("address", stage="weight-sync set-up")
        world = 1 + len(self.rollout.actors)
        refs = [self.learner.ranks[0].join_weight_group.remote(host, port, world, backend, self.timeout_s)]
        refs += [a.join_weight_group.remote(host, port, i + 1, world, backend, self.timeout_s)
                 for i, a in enumerate(self.rollout.actors)]
        call(refs, "an actor joining the weight-sync group")

    def __call__(self) -> int:
        if self.mode == "object_store":
            refs, sent = self.learner.run("publish_weights", stage="publishing weights")
            call([a.load_weights.remote(*refs) for a in self.rollout.actors], "a rollout actor during weight sync",
                 self.learner.timeout_s)
            return sent
        calls = [r.broadcast_weights.remote() for r in self.learner.ranks]
        calls += [a.receive_weights.remote(self.spec) for a in self.rollout.actors]
        return call(calls, "an actor during weight sync", self.learner.timeout_s)[0]  # learner rank 0's bytes


def colocated_groups(model: Mapping[str, Any], trainer: TrainerConfig, learner: LearnerConfig,
                     rollout: RolloutConfig, timeout_s: float | None, seed: int, offload_decoder: bool,
                     group: Any = None) -> tuple[LearnerGroup, RolloutGroup]:
    """`learner.world_size` ColocatedWorkers, bundle i of `group` each, seen by the driver as a learner group
    and as a rollout group (the same actors; the learner group owns the placement group)."""
    options, group = placed(ColocatedWorker, learner.world_size, learner.num_cpus + rollout.num_cpus,
                             learner.num_gpus, group)
    workers = [o.remote(model, trainer, learner, rollout, rollout.sampling.temperature, rank, seed, offload_decoder)
               for rank, o in enumerate(options)]
    return LearnerGroup.of(workers, timeout_s, group), RolloutGroup.of(workers, timeout_s, rollout.batch_size)


class ColocatedSync:
    """The driver's `sync_weights` in colocated placement: every worker copies the gathered buckets into its own
    replica. Calling it returns the bytes one replica received (what a split run's sync sends)."""

    def __init__(self, learner: LearnerGroup, dtype: str):
        self.learner = learner
        self.spec = learner.run("sync_spec", dtype, stage="weight-sync plan")

    def __call__(self) -> int:
        return call([w.sync_replica.remote() for w in self.learner.ranks], "a colocated worker during weight sync",
                    self.learner.timeout_s)[0]
