"""Running the rewards a batch of images needs: each reward on its own rows, devices concurrently.

Rewards are grouped by the device their config names (the `device` kwarg, else the class's default for
it, else the CPU; null or "auto" is CUDA when available). Groups run in parallel threads and the rewards
of a group one after another in config order, so a GPU reward scores while OCR reads on the CPU, and two
rewards never compete for one device. Each call goes through `score_safely` (a fault is NaN for that
reward only, with the reason) in chunks of `ensemble.batch_size`; results are placed by row index, so the
per-row order does not depend on which group finishes first.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from core.components import COMPONENT_KEY, resolve_component
from core.config import to_container
from core.devices import resolve_device
from rewards.base import ImageLike, Reward
from rewards.faults import score_safely


@dataclass
class Scored:
    """One reward on a batch of N rows. scores: float [N], NaN where it did not run, failed or answered
    NaN. failed: bool [N], the call faulted. error: the distinct errors of its failed calls, or None.
    details: key -> N values (None where it did not run)."""

    scores: torch.Tensor
    failed: torch.Tensor
    error: str | None
    details: dict[str, list[Any]]


def reward_device(node: Any) -> str:
    """"cpu", "cuda:0", ... for a reward config node (see the module docstring)."""
    spec = to_container(node)
    device = spec.get("device")
    if "device" not in spec:
        try:
            parameter = inspect.signature(resolve_component(str(spec[COMPONENT_KEY]))).parameters.get("device")
        except (TypeError, ValueError):  # no signature to read: a builtin
            parameter = None
        device = parameter.default if parameter is not None and parameter.default is not parameter.empty else "cpu"
    resolved = resolve_device(device)
    return f"{resolved.type}:{resolved.index or 0}" if resolved.type != "cpu" else "cpu"


def score_rows(rewards: Mapping[str, Reward], devices: Mapping[str, str], images: Sequence[ImageLike],
               prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]], rows: Mapping[str, Sequence[int]],
               batch_size: int, timeout_s: float | None) -> dict[str, Scored]:
    """Score reward `name` on the images at indices `rows[name]` (of N), for every name in `rows`."""
    groups: dict[str, list[str]] = {}
    for name in rewards:
        if rows.get(name):
            groups.setdefault(devices[name], []).append(name)

    def run_group(names: list[str]) -> dict[str, Scored]:
        return {name: score_in_chunks(rewards[name], images, prompts, metadata, rows[name], batch_size, timeout_s)
                for name in names}

    if len(groups) <= 1:
        results = [run_group(names) for names in groups.values()]
    else:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="reward-device") as pool:
            results = list(pool.map(run_group, groups.values()))
    merged = {name: scored for result in results for name, scored in result.items()}
    return {name: merged[name] for name in rewards if name in merged}


def score_in_chunks(reward: Reward, images: Sequence[ImageLike], prompts: Sequence[str],
                    metadata: Sequence[Mapping[str, Any]], index: Sequence[int], batch_size: int,
                    timeout_s: float | None) -> Scored:
    """`reward` on rows `index` of the N given, `batch_size` rows per call, each call through `score_safely`."""
    n = len(images)
    scores, failed = torch.full((n,), float("nan")), torch.zeros(n, dtype=torch.bool)
    errors: list[str] = []
    details: dict[str, list[Any]] = {}
    for start in range(0, len(index), batch_size):
        chunk = list(index[start:start + batch_size])
        output, error = score_safely(reward, [images[i] for i in chunk], [prompts[i] for i in chunk],
                                     [metadata[i] for i in chunk], timeout_s)
        scores[chunk] = output.scores
        if error is not None:
            failed[chunk] = True
            errors.append(error)
        for key, values in output.details.items():
            column = details.setdefault(key, [None] * n)
            for i, value in zip(chunk, values, strict=True):
                column[i] = value
    return Scored(scores, failed, "; ".join(dict.fromkeys(errors)) or None, details)
