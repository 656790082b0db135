"""Reward actors: each configured reward in `replicas` Ray actors, supervised by the driver.

A reward's rows go out in chunks of `ensemble.batch_size`, one call per chunk, each to whichever of the
reward's actors is free (all rewards and all replicas run at once); scores land back at their rows' places.
Faults stay local to one call: an exception or a malformed output (caught inside the actor by
`rewards.faults.score_safely`), a call that outlives `ensemble.timeout_s` (the driver kills and restarts
that actor), or a dead actor (restarted) all give NaN in that reward's column for the rows of that chunk,
counted as failures; the other chunks and rewards still score. Two things stop the run, each with a
message naming the reward (and the replica): one actor restarted more than `reward_workers.max_restarts`
times, or one actor failing on more than `max_failure_frac` of its rows over the last `failure_window` steps.
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
    applies / failed bool [N], error (None, or what went wrong in its failed calls), details (lists of N,
    None where not run)."""

    scores: torch.Tensor
    applies: torch.Tensor
    failed: torch.Tensor
    error: str | None
    details: dict[str, list]


@dataclass
class _Call:
    """A chunk in flight: rows `index` (positions among the step's N rows) on replica `replica` of `name`."""

    name: str
    replica: int
    index: list[int]
    deadline: float | None


class RewardPool:
    """The reward actors of a run, with chunking, replicas, restarts, timeouts and failure accounting."""

    def __init__(self, rewards: Mapping[str, Mapping[str, Any]], workers: RewardWorkersConfig,
                 timeout_s: float | None, batch_size: int):
        self.nodes, self.config, self.timeout_s, self.batch_size = dict(rewards), workers, timeout_s, batch_size
        self.replicas = {name: workers.actors(name)[1] for name in self.nodes}
        self.restarts = {name: [0] * count for name, count in self.replicas.items()}
        self.history = {name: [deque(maxlen=workers.failure_window) for _ in range(count)]
                        for name, count in self.replicas.items()}
        self.actors = {name: [self._spawn(name) for _ in range(count)] for name, count in self.replicas.items()}

    def ready(self) -> None:
        """Wait until every reward actor has loaded its model (a failing constructor raises here)."""
        for name, actors in self.actors.items():
            for actor in actors:
                self._wait_ready(name, actor)

    def _wait_ready(self, name: str, actor: Any) -> None:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=self.config.start_timeout_s)
        except ray.exceptions.RayActorError as e:
            raise RunAborted(f"reward {name!r} failed to start: {e}") from e
        except ray.exceptions.GetTimeoutError as e:
            raise RunAborted(f"reward {name!r} did not start within reward_workers.start_timeout_s="
                             f"{self.config.start_timeout_s}") from e

    def _spawn(self, name: str):
        amounts, _ = self.config.actors(name)
        return ray.remote(RewardWorker).options(max_restarts=0, **amounts).remote(name, self.nodes[name])

    def _label(self, name: str, replica: int) -> str:
        count = self.replicas[name]
        return f"reward {name!r}" + (f" (replica {replica} of {count})" if count > 1 else "")

    def _restart(self, name: str, replica: int, why: str) -> None:
        self.restarts[name][replica] += 1
        if self.restarts[name][replica] > self.config.max_restarts:
            raise RunAborted(f"{self._label(name, replica)}: {why}; it was restarted {self.config.max_restarts} "
                             f"times already (reward_workers.max_restarts)")
        ray.kill(self.actors[name][replica], no_restart=True)
        self.actors[name][replica] = self._spawn(name)
        # Wait for the new actor to load its model, so its start-up never counts against a call's timeout.
        self._wait_ready(name, self.actors[name][replica])

    def score(self, image_refs: Sequence[Any], rows: Sequence[tuple[int, int]], prompts: Sequence[str],
              metadata: Sequence[Mapping[str, Any]], applies: Mapping[str, torch.Tensor]) -> dict[str, RewardScores]:
        """Every reward on the rows it applies to, in chunks of `batch_size` spread over its replicas.

        image_refs: object refs of the rollout actors' image lists; rows: N (chunk, index) pairs locating
        each row's image; applies: name -> bool [N] from the gates.
        """
        scoring = self.start(image_refs, rows, prompts, metadata)
        scoring.add(range(len(rows)), applies)
        return scoring.finish()

    def start(self, image_refs: list[Any], rows: list[tuple[int, int]], prompts: Sequence[str],
              metadata: Sequence[Mapping[str, Any]]) -> Scoring:
        """A step's scoring whose rows arrive later (`Scoring.add`): the streaming step hands over each rollout
        chunk as soon as it is decoded. image_refs and rows may grow until those rows are added."""
        return Scoring(self, image_refs, rows, prompts, metadata)

    def _dispatch(self, queues: Mapping[str, deque], pending: dict[Any, _Call], image_refs: Sequence[Any],
                  rows: Sequence[tuple[int, int]], prompts: Sequence[str],
                  metadata: Sequence[Mapping[str, Any]]) -> None:
        """Give the next chunk of each reward (up to `batch_size` of its queued rows) to each of its replicas
        that has no call in flight."""
        busy = {(call.name, call.replica) for call in pending.values()}
        for name, queue in queues.items():
            for replica in range(self.replicas[name]):
                if not queue or (name, replica) in busy:
                    continue
                index = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                # Pass only the rollout image lists this chunk reads, so an actor fetches no other images.
                used = sorted({rows[i][0] for i in index})
                where = [(used.index(rows[i][0]), rows[i][1]) for i in index]
                ref = self.actors[name][replica].score.remote(
                    where, [prompts[i] for i in index], [metadata[i] for i in index], *[image_refs[c] for c in used])
                deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
                pending[ref] = _Call(name, replica, index, deadline)

    def _collect(self, pending: dict[Any, _Call], wait_s: float | None = None
                 ) -> list[tuple[_Call, np.ndarray | None, str | None, dict]]:
        """Wait up to `wait_s` (None: as long as needed) for a call to finish or time out; the outcomes (restarting
        an actor that hung or died). Nothing when no call finished in `wait_s`."""
        deadlines = [call.deadline for call in pending.values() if call.deadline is not None]
        timeout = max(min(deadlines) - time.monotonic(), 0) if deadlines else None
        if wait_s is not None:
            timeout = wait_s if timeout is None else min(timeout, wait_s)
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not done:  # end every call past its own deadline
            now = time.monotonic()
            expired = [ref for ref, call in pending.items() if call.deadline is not None and call.deadline <= now]
            outcomes = []
            for ref in expired:
                call = pending.pop(ref)
                self._restart(call.name, call.replica, f"no answer within ensemble.timeout_s={self.timeout_s}")
                outcomes.append((call, None, f"timed out after {self.timeout_s}s", {}))
            return outcomes
        call = pending.pop(done[0])
        try:
            values, error, details = ray.get(done[0])
        except ray.exceptions.RayActorError as e:
            self._restart(call.name, call.replica, f"its actor died ({type(e).__name__})")
            values, error, details = None, f"actor died: {e}", {}
        return [(call, values, error, details)]

    def _check_failures(self, scored: Mapping[str, list[list[int]]], columns: Mapping[str, _Column]) -> None:
        """Record each actor's [failed, rows] of this step, then stop the run if one fails too often."""
        for name, replicas in scored.items():
            for replica, counts in enumerate(replicas):
                self.history[name][replica].append(tuple(counts))
        for name, histories in self.history.items():
            for replica, history in enumerate(histories):
                failed, total = sum(f for f, _ in history), sum(a for _, a in history)
                if len(history) == history.maxlen and total and failed / total > self.config.max_failure_frac:
                    raise RunAborted(
                        f"{self._label(name, replica)} failed on {failed} of {total} samples over the last "
                        f"{len(history)} steps (> reward_workers.max_failure_frac={self.config.max_failure_frac}); "
                        f"last error: {columns[name].result().error}")

    def shutdown(self) -> None:
        for actors in self.actors.values():
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def state_dict(self) -> dict[str, Any]:
        """Restarts and failure history per reward, one entry per replica."""
        return {"restarts": {k: list(v) for k, v in self.restarts.items()},
                "history": {k: [list(h) for h in v] for k, v in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` saved; replicas added since keep a clean record, removed ones are dropped."""
        for name, counts in state["restarts"].items():
            if name in self.restarts:
                for replica, count in enumerate(counts[:self.replicas[name]]):
                    self.restarts[name][replica] = count
        for name, histories in state["history"].items():
            if name in self.history:
                for history, items in zip(self.history[name], histories, strict=False):
                    history.extend(tuple(x) for x in items)


class Scoring:
    """One step's reward calls, fed row by row: `add` queues rows (their images must be in the pool's
    image_refs), `poll` dispatches and collects without blocking longer than asked, `finish` drains and
    returns every reward's scores. `pending` lists the calls in flight (to wait on beside other refs)."""

    def __init__(self, pool: RewardPool, image_refs: list[Any], rows: list[tuple[int, int]], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]]):
        self.pool, self.image_refs, self.rows, self.prompts, self.metadata = pool, image_refs, rows, prompts, metadata
        n = len(prompts)
        self.columns = {name: _Column(n, torch.zeros(n, dtype=torch.bool)) for name in pool.nodes}
        self.queues: dict[str, deque] = {name: deque() for name in pool.nodes}
        self.scored = {name: [[0, 0] for _ in range(count)] for name, count in pool.replicas.items()}  # [failed, rows]
        self.pending: dict[Any, _Call] = {}

    def add(self, index: Sequence[int], applies: Mapping[str, torch.Tensor]) -> None:
        """Rows `index` are ready; each reward scores those where applies[name] (bool [N]) is True."""
        for name, queue in self.queues.items():
            mask = applies[name]
            chosen = [i for i in index if bool(mask[i])]
            self.columns[name].applies[chosen] = True
            queue.extend(chosen)
        self.poll(0)

    def poll(self, wait_s: float | None) -> None:
        """Dispatch queued rows to free replicas, then take the outcome of calls that end within `wait_s`."""
        pool = self.pool
        pool._dispatch(self.queues, self.pending, self.image_refs, self.rows, self.prompts, self.metadata)
        while self.pending:
            outcomes = pool._collect(self.pending, wait_s)
            if not outcomes:
                return
            for call, values, error, details in outcomes:
                self.columns[call.name].fill(call.index, values, error, details)
                self.scored[call.name][call.replica][0] += len(call.index) if error is not None else 0
                self.scored[call.name][call.replica][1] += len(call.index)
            pool._dispatch(self.queues, self.pending, self.image_refs, self.rows, self.prompts, self.metadata)
            wait_s = 0 if wait_s is not None else None

    def finish(self) -> dict[str, RewardScores]:
        """Score every queued row, record failures (stopping the run if a reward fails too often), the scores."""
        while self.pending or any(self.queues.values()):
            self.poll(None)
        self.pool._check_failures(self.scored, self.columns)
        return {name: self.columns[name].result() for name in self.pool.nodes}


class _Column:
    """One reward's scores over the N rows of a step, filled chunk by chunk."""

    def __init__(self, n: int, applies: torch.Tensor):
        self.scores = torch.full((n,), float("nan"))
        self.failed = torch.zeros(n, dtype=torch.bool)
        self.applies = applies.clone()
        self.errors: list[str] = []
        self.details: dict[str, list] = {}

    def fill(self, index: list[int], values: np.ndarray | None, error: str | None, details: Mapping[str, list]) -> None:
        """The outcome of one call on rows `index`: scores [len(index)] (None when the actor died), error, details."""
        if values is not None:
            self.scores[index] = torch.tensor(values, dtype=torch.float32)  # copied: Ray's arrays are read-only
        if error is not None:
            self.failed[index] = True
            self.errors.append(error)
        for key, column in details.items():
            full = self.details.setdefault(key, [None] * len(self.scores))
            for i, value in zip(index, column, strict=False):
                full[i] = value

    def result(self) -> RewardScores:
        error = "; ".join(dict.fromkeys(self.errors)) or None
        return RewardScores(self.scores, self.applies, self.failed, error, self.details)
