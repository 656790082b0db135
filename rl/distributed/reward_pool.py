"""Reward actors: each configured reward in its own Ray actor, supervised by the driver.

Faults stay local to one reward: an exception or a malformed output (caught inside the actor by
`rewards.faults.score_safely`), a call that outlives `ensemble.timeout_s` (the driver kills and restarts
the actor), or a dead actor (restarted) all give NaN in that reward's column for the rows it was
scoring, counted as failures; the other rewards still score. Two things stop the run, each with a
message naming the reward: more than `reward_workers.max_restarts` restarts, or more than
`max_failure_frac` of its rows failing over the last `failure_window` steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from rl.distributed.reward_worker import RewardWorker
from rl.train_config import RewardWorkersConfig


class RunAborted(RuntimeError):
    """The run cannot go on (a dead actor, a reward failing too often, ...); the message says which."""


@dataclass
class RewardScores:
    """One reward over the N rows of a step: scores float32 [N] (NaN where it does not apply or failed),
    applies / failed bool [N], error (None or what went wrong), details (lists of N, None where not run)."""

    scores: torch.Tensor
    applies: torch.Tensor
    failed: torch.Tensor
    error: str | None
    details: dict[str, list]


class RewardPool:
    """The reward actors of a run, with restarts, timeouts and failure accounting."""

    def __init__(self, rewards: Mapping[str, Mapping[str, Any]], workers: RewardWorkersConfig,
                 timeout_s: float | None):
        self.nodes, self.config, self.timeout_s = dict(rewards), workers, timeout_s
        self.restarts = {name: 0 for name in self.nodes}
        self.history = {name: deque(maxlen=workers.failure_window) for name in self.nodes}
        self.actors = {name: self._spawn(name) for name in self.nodes}

    def ready(self) -> None:
        """Wait until every reward has loaded its model (a failing constructor raises here)."""
        self._wait_ready(self.actors)

    def _wait_ready(self, actors: Mapping[str, Any]) -> None:
        for name, actor in actors.items():
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=self.config.start_timeout_s)
            except ray.exceptions.RayActorError as e:
                raise RunAborted(f"reward {name!r} failed to start: {e}") from e
            except ray.exceptions.GetTimeoutError as e:
                raise RunAborted(f"reward {name!r} did not start within reward_workers.start_timeout_s="
                                 f"{self.config.start_timeout_s}") from e

    def _spawn(self, name: str):
        amounts = {"num_cpus": self.config.num_cpus, "num_gpus": self.config.num_gpus,
                   **self.config.resources.get(name, {})}
        return ray.remote(RewardWorker).options(max_restarts=0, **amounts).remote(name, self.nodes[name])

    def _restart(self, name: str, why: str) -> None:
        self.restarts[name] += 1
        if self.restarts[name] > self.config.max_restarts:
            raise RunAborted(f"reward {name!r}: {why}; it was restarted {self.config.max_restarts} times already "
                             f"(reward_workers.max_restarts)")
        ray.kill(self.actors[name], no_restart=True)
        self.actors[name] = self._spawn(name)
        # Wait for the new actor to load its model, so its start-up never counts against a call's timeout.
        self._wait_ready({name: self.actors[name]})

    def score(self, image_refs: Sequence[Any], rows: Sequence[tuple[int, int]], prompts: Sequence[str],
              metadata: Sequence[Mapping[str, Any]], applies: Mapping[str, torch.Tensor]) -> dict[str, RewardScores]:
        """Every reward on the rows it applies to (all rewards run concurrently).

        image_refs: object refs of the rollout actors' image lists; rows: N (chunk, index) pairs locating
        each row's image; applies: name -> bool [N] from the gates.
        """
        n = len(rows)
        pending, results = {}, {}
        for name, actor in self.actors.items():
            index = applies[name].nonzero().flatten().tolist()
            if not index:
                results[name] = _scores(n, applies[name], index, None, None, {})
                continue
            ref = actor.score.remote([rows[i] for i in index], [prompts[i] for i in index],
                                     [metadata[i] for i in index], *image_refs)
            pending[ref] = (name, index)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while pending:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not done:  # every call still pending has outlived its timeout
                for name, index in pending.values():
                    self._restart(name, f"no answer within ensemble.timeout_s={self.timeout_s}")
                    results[name] = _scores(n, applies[name], index, None, f"timed out after {self.timeout_s}s", {})
                break
            name, index = pending.pop(done[0])
            try:
                values, error, details = ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                self._restart(name, f"its actor died ({type(e).__name__})")
                values, error, details = None, f"actor died: {e}", {}
            results[name] = _scores(n, applies[name], index, values, error, details)
        self._check_failures(results)
        return {name: results[name] for name in self.nodes}

    def _check_failures(self, results: Mapping[str, RewardScores]) -> None:
        for name, result in results.items():
            self.history[name].append((int(result.failed.sum()), int(result.applies.sum())))
            failed = sum(f for f, _ in self.history[name])
            total = sum(a for _, a in self.history[name])
            window_full = len(self.history[name]) == self.history[name].maxlen
            if window_full and total and failed / total > self.config.max_failure_frac:
                raise RunAborted(
                    f"reward {name!r} failed on {failed} of {total} samples over the last "
                    f"{len(self.history[name])} steps (> reward_workers.max_failure_frac="
                    f"{self.config.max_failure_frac}); last error: {result.error}")

    def shutdown(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)

    def state_dict(self) -> dict[str, Any]:
        return {"restarts": dict(self.restarts), "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.restarts.update(state["restarts"])
        for name, items in state["history"].items():
            if name in self.history:
                self.history[name].extend(tuple(x) for x in items)


def _scores(n: int, applies: torch.Tensor, index: list[int], values: np.ndarray | None, error: str | None,
            details: Mapping[str, list]) -> RewardScores:
    scores = torch.full((n,), float("nan"))
    failed = torch.zeros(n, dtype=torch.bool)
    if values is not None and error is None:
        scores[index] = torch.tensor(values, dtype=torch.float32)
    elif index:
        failed[index] = True
    full_details = {}
    for key, column in details.items():
        full_details[key] = [None] * n
        for i, value in zip(index, column, strict=False):
            full_details[key][i] = value
    return RewardScores(scores, applies.clone(), failed, error, full_details)
