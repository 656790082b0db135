"""The step pipeline: the streaming rollout stage, and the rollout a step trains on, handed to an update that
runs without blocking the driver (so one step off-policy can sample the next rollout meanwhile).

The streaming rollout stage: each rollout chunk goes on as soon as it is decoded.

    rollout actors --chunk--> reward actors (CPU OCR overlaps the GPU decoding of the next chunks)
                   --chunk--> learner ranks (reference and recomputed log-probs of every micro-batch it completes)

The driver waits on the rollout chunks and the reward calls together (`ray.wait`), so a free reward replica gets
the next rows without waiting for the whole rollout. The samples are the sequential step's: the same actor
calls (one per `rollout.batch_size` rows of an actor), the same rows per reward call when they are all there,
and the learner's passes on the same micro-batches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from rl.distributed.actors import LearnerGroup, RolloutGroup, call, chunk_locations, merge_chunks
from rl.distributed.learner import TrainBatch
from rl.distributed.reward_pool import RewardPool, RewardScores, RunAborted
from rl.distributed.rollout import RolloutResult


@dataclass
class Streamed:
    """What the streaming stage produced: the merged rollout, the chunks' image refs with each row's (chunk,
    index), every reward's scores, the learner calls still in flight (wait on them before `train`), and the
    seconds until the last chunk was decoded (`rollout_s`) and after it until the last score (`rewards_s`)."""

    rollout: RolloutResult
    image_refs: list
    locations: list[tuple[int, int]]
    scored: dict[str, RewardScores]
    learner_calls: list
    rollout_s: float
    rewards_s: float


def stream_rollout(rollout: RolloutGroup, rewards: RewardPool, learner: LearnerGroup | None, prompts: list[str],
                   policy_seeds: Sequence[int], decoder_seeds: Sequence[int], metadata: Sequence[Mapping[str, Any]],
                   applies: Mapping[str, torch.Tensor]) -> Streamed:
    """Sample, decode and score every row (N = len(prompts)), handing each chunk on as it lands.

    applies: reward name -> bool [N] from the gates (invalid images are dropped here, as in the sequential
    step). learner: None hands nothing to the learner (its rows then go in with `update`)."""
    began = time.perf_counter()
    chunks = rollout.submit(prompts, policy_seeds, decoder_seeds)
    scoring = rewards.start([c.images for c in chunks], chunk_locations(chunks), prompts, metadata)
    learner_calls = learner.begin(prompts) if learner is not None else []
    waiting = {chunk.result: c for c, chunk in enumerate(chunks)}
    results: list[RolloutResult | None] = [None] * len(chunks)
    deadline = None if rollout.timeout_s is None else time.monotonic() + rollout.timeout_s
    while waiting:
        left = None if deadline is None else max(deadline - time.monotonic(), 0)
        ready, _ = ray.wait([*waiting, *scoring.pending], num_returns=1, timeout=left)
        if not ready:
            raise RunAborted(f"a rollout actor (generate) did not answer within {rollout.timeout_s}s "
                             "(ray.call_timeout_s)")
        for ref in [r for r in ready if r in waiting]:
            c = waiting.pop(ref)
            chunk, result = chunks[c], call(ref, "a rollout actor (generate)")
            results[c] = result
            index = chunk.rows
            valid = torch.zeros(len(prompts), dtype=torch.bool)
            valid[index.start:index.stop] = result.valid
            scoring.add(index, {name: mask & valid for name, mask in applies.items()})
            if learner is not None:
                learner_calls += learner.add_rows(index.start, result.tokens, result.logprobs)
        scoring.poll(0)
    decoded = time.perf_counter()
    scored = scoring.finish()
    return Streamed(merge_chunks(chunks, results), [c.images for c in chunks], chunk_locations(chunks), scored,
                    learner_calls, decoded - began, time.perf_counter() - decoded)


@dataclass
class StepRollout:
    """The rollout a step trains on, scored and with its advantages: everything its update and its metrics row
    need, so a checkpoint can hold it (one step off-policy saves the next step's rollout with each step).

    step: the step it is for. prompts: N strings. tokens: long [N, T]. logprobs: float32 [N, T], the sampler's.
    advantages: float32 [N]. metrics: the row's entries known before the update (rewards, monitors, rollout and
    scoring times). grid: uint8 [H, W, 3] samples to log with the row, or None. sampled_with: how many updates
    the weights that sampled it had had. handed: the learner calls that took its rows chunk by chunk (streaming),
    or None when its rows still have to go to the learner (the sequential step, a restored rollout)."""

    step: int
    prompts: list[str]
    tokens: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor
    metrics: dict[str, float]
    grid: np.ndarray | None
    sampled_with: int
    handed: list | None = None


class UpdateInFlight:
    """The learner's update on a StepRollout, started without waiting; `result` waits for its stats."""

    def __init__(self, learner: LearnerGroup, batch: StepRollout):
        self.learner, self.handed = learner, batch.handed or []
        if batch.handed is None:
            rows = TrainBatch(batch.prompts, batch.tokens, batch.logprobs, batch.advantages)
            self.refs = learner.submit("update", ray.put(rows))
        else:  # the rows went to the learner chunk by chunk; the actors run calls in order, so train comes after
            self.refs = learner.submit("train", batch.advantages)

    def result(self) -> dict[str, float]:
        """Rank 0's stats (the handed calls are waited on first, so their errors surface as theirs)."""
        if self.handed:
            self.learner.result(self.handed, "taking rollout rows")
        return self.learner.result(self.refs, "update")
