"""Wall-clock timing: `StageTimer` for the stages of a training step (`time/<stage>_s`), and the benchmark scripts'
medians, for which GPU work is synchronised before the clock is read."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median seconds of `fn` over `repeats` runs (after one untimed run when `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def interleaved_median_seconds(fns: dict[str, Callable[[], object]], device: torch.device,
                               repeats: int) -> dict[str, float]:
    """Median seconds of each of `fns`, timed in turns (a, b, a, b, ...) after one untimed run of each.

    Turns keep a comparison fair on a shared machine: load that comes and goes hits every variant alike,
    where timing one variant fully before the next would charge it to whichever ran at the busy moment.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, device, 1, warmup=False))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


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
