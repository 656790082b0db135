"""How a learner rank cuts a batch of N rows: its micro-batches in training order, the rows that have arrived,
and the statistics averaged over micro-batches and ranks.

With `mini_batches` optimizer steps per batch and W ranks, mini-batch m holds rows [m * N/M, (m+1) * N/M); rank r
takes its W-th share of it, cut into micro-batches of `micro_batch_size` rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rl.distributed import collectives


@dataclass
class Rows:
    """A batch being filled chunk by chunk: its prompts (N, known up front), tokens long [N, T] and sampler
    log-probs float32 [N, T] as they arrive, and the no-grad log-probs of the micro-batches done so far."""

    prompts: list[str]
    tokens: torch.Tensor
    sampler: torch.Tensor
    present: torch.Tensor
    ref: dict[int, torch.Tensor]
    old: dict[int, torch.Tensor]
    done: int = 0

    @classmethod
    def empty(cls, prompts: list[str], tokens_per_row: int) -> Rows:
        n = len(prompts)
        return cls(list(prompts), torch.zeros(n, tokens_per_row, dtype=torch.long), torch.zeros(n, tokens_per_row),
                   torch.zeros(n, dtype=torch.bool), {}, {})


def micro_plan(n: int, rank: int, world_size: int, mini_batches: int, micro_batch_size: int) -> list[range]:
    """Rank `rank`'s micro-batches of an n-row batch, in training order: its share of each mini-batch."""
    per_mini = n // mini_batches
    share = per_mini // world_size
    plan = []
    for m in range(mini_batches):
        first = m * per_mini + rank * share
        plan += [range(s, min(s + micro_batch_size, first + share)) for s in range(first, first + share,
                                                                                    micro_batch_size)]
    return plan


def complete_prefix(plan: list[range], present: torch.Tensor) -> int:
    """How many of `plan`'s first micro-batches have all their rows present (present: bool [N])."""
    for k, micro in enumerate(plan):
        if not bool(present[micro.start:micro.stop].all()):
            return k
    return len(plan)


def accumulate(totals: dict[str, torch.Tensor], stats: Mapping[str, torch.Tensor], weight: float) -> None:
    """Row-weighted means over micro-batches, except `*/min` and `*/max`, which stay extremes."""
    for key, value in stats.items():
        value = value.detach().float()
        if key not in totals:
            totals[key] = value if key.endswith(("/min", "/max")) else value * weight
        elif key.endswith("/min"):
            totals[key] = torch.minimum(totals[key], value)
        elif key.endswith("/max"):
            totals[key] = torch.maximum(totals[key], value)
        else:
            totals[key] = totals[key] + value * weight


def reduce_stats(totals: Mapping[str, torch.Tensor], world_size: int) -> dict[str, float]:
    """Means across ranks (equal shares); min/max stats by min/max. A NaN on any rank stays NaN."""
    if world_size > 1:
        for key, value in totals.items():
            op = _reduce_op(key)
            collectives.all_reduce(value, op, f"the learner's stat {key}")
            if op == dist.ReduceOp.SUM:
                value /= world_size
    return {key: float(value) for key, value in totals.items()}


def _reduce_op(key: str) -> dist.ReduceOp:
    if key.endswith("/min"):
        return dist.ReduceOp.MIN
    return dist.ReduceOp.MAX if key.endswith("/max") else dist.ReduceOp.SUM
