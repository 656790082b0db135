"""The body of a reward actor: one reward model, built once, scoring rows of the rollout's images.

Kept apart from the driver-side pool so a reward actor imports only the reward code it runs (not the
policy, transformers or the training config).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.components import instantiate
from rewards.faults import score_safely


class RewardWorker:
    """One reward model, built once in its actor."""

    def __init__(self, name: str, node: Mapping[str, Any]):
        self.name = name
        self.reward = instantiate(node, f"rewards.{name}")

    def score(self, rows: Sequence[tuple[int, int]], prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]],
              *image_chunks: list[np.ndarray]) -> tuple[np.ndarray, str | None, dict[str, list]]:
        """Score the images at `rows` ((chunk, index) pairs into `image_chunks`, which Ray resolves from
        the rollout actors' object refs). Returns scores float32 [n] (NaN on failure), error, details."""
        images = [image_chunks[c][i] for c, i in rows]
        # No timeout here: a hung call is the driver's to end, by restarting this actor.
        output, error = score_safely(self.reward, images, prompts, metadata, timeout_s=None)
        return output.scores.numpy(), error, output.details
