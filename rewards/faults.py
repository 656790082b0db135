"""Running one reward call so that nothing it does can stop the caller.

A reward that raises, hangs, or returns the wrong thing scores NaN for that call and reports why; the
ensemble counts it and the GRPO group baseline ignores it. A hung call runs in a daemon thread that is
abandoned, not joined (Python cannot kill a thread); until it ends, further calls on the same reward
object fail fast instead of piling up more stuck threads on a model that is not thread-safe.
With a timeout the reward runs in that worker thread, so the caller's thread-local torch state
(`no_grad`, `inference_mode`, autocast) does not reach it: a reward sets its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rewards.base import ImageLike, Reward, RewardOutput

log = logging.getLogger(__name__)

# id(reward) -> the thread of a timed-out call still running (the thread keeps the reward alive,
# so the id cannot be reused while the entry matters).
_abandoned: dict[int, threading.Thread] = {}
_abandoned_lock = threading.Lock()


def score_safely(
    reward: Reward,
    images: Sequence[ImageLike],
    prompts: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    timeout_s: float | None,
) -> tuple[RewardOutput, str | None]:
    """Call `reward` on a batch of N images; never raises.

    Returns (output, error): `output.scores` is float32 [N] with NaN for every image when the call
    failed (exception, timeout, not a RewardOutput, scores or details of the wrong length) and where the
    reward itself returned NaN or inf; `error` is None on success, else one line saying what went wrong.
    `timeout_s` None runs the call in this thread with no limit.
    """
    n = len(images)
    if n == 0:
        return RewardOutput(torch.empty(0)), None
    name = type(reward).__name__
    with _abandoned_lock:
        stuck = _abandoned.get(id(reward))
        if stuck is not None and not stuck.is_alive():
            del _abandoned[id(reward)]
            stuck = None
    if stuck is not None:
        return _failed(n), f"{name}: an earlier call timed out and is still running"
    try:
        output = _run(lambda: reward(images, prompts, metadata), timeout_s, reward)
    except TimeoutError:
        log.warning("reward %s timed out after %ss on %d images", name, timeout_s, n)
        return _failed(n), f"{name}: timed out after {timeout_s}s"
    except Exception as e:
        log.warning("reward %s raised on %d images", name, n, exc_info=True)
        return _failed(n), f"{name}: {type(e).__name__}: {e}"
    problem = _check(output, n)
    if problem is not None:
        return _failed(n), f"{name}: {problem}"
    scores = output.scores.float().clone()
    scores[~torch.isfinite(scores)] = float("nan")
    return RewardOutput(scores, dict(output.details)), None


def _run(call: Callable[[], RewardOutput], timeout_s: float | None, reward: Reward) -> Any:
    if timeout_s is None:
        return call()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name=f"reward-{type(reward).__name__}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with _abandoned_lock:
            _abandoned[id(reward)] = thread
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _check(output: Any, n: int) -> str | None:
    if not isinstance(output, RewardOutput):
        return f"returned {type(output).__name__}, expected RewardOutput"
    if output.scores.numel() != n:
        return f"returned {output.scores.numel()} scores for {n} images"
    bad = [k for k, v in output.details.items() if not isinstance(v, (list, tuple)) or len(v) != n]
    if bad:
        return f"details {bad} are not lists of length {n}"
    return None


def _failed(n: int) -> RewardOutput:
    return RewardOutput(torch.full((n,), float("nan")))
