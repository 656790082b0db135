"""The rollout side: `rollout` (replicas of the policy and the decoder, and what a step samples) and
`reward_workers` (the reward actors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge, Gt, Interval

from core.devices import DtypeName
from rl.model.sampler import SamplingParams


@dataclass
class RolloutConfig:
    """What a step samples and the actors that sample it (each a policy replica and a decoder)."""

    num_actors: Annotated[int, Ge(1)] = 1
    """Rollout actors; in colocated placement one per learner rank (= learner.world_size)."""
    num_gpus: Annotated[float, Ge(0)] = 0.0
    """GPU share of one actor, in [0, 1] (an actor uses one device; below 1 leaves the rest of that GPU to reward
    actors)."""
    num_cpus: Annotated[float, Ge(0)] = 1.0
    """CPUs of one actor."""
    prompts_per_step: Annotated[int, Ge(1)] = 32
    """Prompts drawn per GRPO step."""
    group_size: Annotated[int, Ge(2)] = 16
    """Samples per prompt (GRPO's G); the group is the baseline of each sample's advantage."""
    grid: list = field(default_factory=lambda: [24, 24])
    """Image token grid [h, w]; 16 pixels per token, so [24, 24] is 384 x 384 px."""
    batch_size: Annotated[int, Ge(1)] = 64
    """Sequences one actor samples and decodes at once (with trainer.pipeline.streaming, one chunk handed on)."""
    dtype: DtypeName = "float32"
    """Precision of the rollout policy ("bfloat16" on GPUs)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """How image tokens are drawn (X-Omni: temperature 1.0, min_p 0.03, top_p 1.0, top_k 50, no CFG)."""
    compile: bool = False
    """torch.compile the sampler's per-token step (on a static KV cache) and the decoder's transformer. Shapes are
    bucketed: a batch's rows are padded (the padding dropped) up to a power of two below batch_size or batch_size
    itself, a decoder pass's images likewise up to the decoder's max_batch_size, so the sampler compiles
    ceil(log2(batch_size)) + 1 graphs per KV-cache length (7 at 64; the length, prompt width + h*w - 1 rounded up
    to 64 slots, is one for prompts within a 64-token band) and the decoder ceil(log2(max_batch_size)) + 1 (4 at
    8). dynamo's recompile limit is raised to the shapes seen, and hitting it is an error, never a silent fall
    back to eager; `rollout/compiled_graphs` logs the graphs compiled so far (the most of any actor; 0 when off).
    Each graph pays its compile time once (minutes on a CPU); the result equals eager up to float rounding (tested
    on the CPU; never run on a GPU)."""


@dataclass
class RewardWorkersConfig:
    """The reward actors: each configured reward runs in its own Ray actor(s)."""

    num_cpus: Annotated[float, Ge(0)] = 1.0
    """CPUs of one reward actor."""
    num_gpus: Annotated[float, Ge(0)] = 0.0
    """GPU share of one reward actor, in [0, 1]."""
    replicas: Annotated[int, Ge(1)] = 1
    """Actors per reward. Each reward call scores one chunk of `ensemble.batch_size` rows, and a reward's chunks go
    to whichever of its actors is free (rows keep their order), so 4 OCR replicas read 4 chunks at once."""
    resources: dict = field(default_factory=dict)
    """Reward name -> {num_cpus, num_gpus, replicas} for rewards that need other values than the defaults above
    (a GPU share, or more replicas of a CPU-bound reward)."""
    max_restarts: Annotated[int, Ge(0)] = 3
    """Restarts of one dead or hung reward actor (each replica counts its own) before the run stops."""
    max_failure_frac: Annotated[float, Interval(ge=0, le=1)] = 0.5
    """A reward actor failing (error, timeout, wrong output, dead actor) on more than this fraction of the rows it
    scored over the last `failure_window` steps stops the run with a message naming the reward and replica."""
    failure_window: Annotated[int, Ge(1)] = 5
    """Steps over which `max_failure_frac` is measured; a single bad step in a longer window does not stop a run."""
    start_timeout_s: Annotated[float, Gt(0)] = 600.0
    """The longest a reward actor may take to load its model (at start and after a restart)."""

    def actors(self, name: str) -> tuple[dict[str, float], int]:
        """Ray resources of one actor of reward `name` ({num_cpus, num_gpus}) and how many replicas it has."""
        own = dict(self.resources.get(name) or {})
        replicas = own.pop("replicas", self.replicas)
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **own}, replicas
