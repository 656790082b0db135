"""Rewards that misbehave on purpose, named by import path (`tests.fault_rewards.X`) in the training tests.

Kept free of model code so a reward actor (and each restart of one) imports only this and rewards.base.
"""

from __future__ import annotations

import time

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
