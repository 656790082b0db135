"""Rewards that misbehave on purpose, named by import path (`tests.fault_rewards.X`) in the training tests.

Kept free of model code so a reward actor (and each restart of one) imports only this and rewards.base.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from rewards.base import RewardOutput


class MeanPixel:
    """A cheap deterministic reward: mean pixel value / 255."""

    score_range = (0.0, 1.0)

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.tensor([float(np.asarray(im).mean()) / 255 for im in images]))


class Raises:
    """Always raises."""

    def __call__(self, images, prompts, metadata):
        raise RuntimeError("injected reward failure")


class Sleeps:
    """Sleeps `seconds` before answering: past the ensemble timeout, it is abandoned."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, images, prompts, metadata):
        time.sleep(self.seconds)
        return RewardOutput(torch.zeros(len(images)))


class ReturnsNaN:
    """Answers NaN for every image ("cannot score"): not a fault, just no score."""

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.full((len(images),), float("nan")))


class WrongLength:
    """Returns one score too many."""

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.zeros(len(images) + 1))


class Recorder:
    """Mean pixel value / 255, reporting per row the actor's pid, the size of the call and the prompt it got;
    with `log`, each call also appends {"pid", "n"} as a JSON line to that file (for calls inside `rl.train`)."""

    def __init__(self, log: str | None = None):
        self.log = log

    def __call__(self, images, prompts, metadata):
        n, pid = len(images), os.getpid()
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(json.dumps({"pid": pid, "n": n}) + "\n")
        scores = torch.tensor([float(np.asarray(im).mean()) / 255 for im in images])
        return RewardOutput(scores, {"pid": [pid] * n, "batch": [n] * n, "prompt": list(prompts)})


class SlowOn:
    """Mean pixel value / 255, but a call with `marker` in one of its prompts first sleeps `seconds`."""

    def __init__(self, marker: str, seconds: float):
        self.marker, self.seconds = marker, seconds

    def __call__(self, images, prompts, metadata):
        if any(self.marker in p for p in prompts):
            time.sleep(self.seconds)
        return MeanPixel()(images, prompts, metadata)


class FailsWhereMarked:
    """Mean pixel value / 255 with the actor's pid in the details; raises after `delay_s` in an actor whose pid
    has a file in `marker_dir` (so a test can break one replica of several)."""

    def __init__(self, marker_dir: str, delay_s: float):
        self.marker_dir, self.delay_s = Path(marker_dir), delay_s

    def __call__(self, images, prompts, metadata):
        if (self.marker_dir / str(os.getpid())).exists():
            time.sleep(self.delay_s)
            raise RuntimeError("injected replica failure")
        output = MeanPixel()(images, prompts, metadata)
        return RewardOutput(output.scores, {"pid": [os.getpid()] * len(images)})
