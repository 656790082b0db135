"""Small deterministic rewards for the offline-scoring tests, named by import path (`tests.score_rewards.X`).

Each appends one line per image it scores to the file `log` ("<reward> <prompt>"), so a test, and a
subprocess run of the CLI, can tell exactly which rows a run computed. Environment variables steer the
faults (a kwarg or a marker file would change the reward's fingerprint between runs).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from core.paths import LocalPath
from rewards.base import RewardOutput

CRASH_AFTER = "XOMNI_TEST_CRASH_AFTER"  # kill the process at a call once the log has this many lines
FAIL_ON = "XOMNI_TEST_FAIL_ON"  # raise on a batch that holds a prompt containing this text


def _log(path: str, name: str, prompts) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{name} {p}\n" for p in prompts)


def _maybe_crash(log: str) -> None:
    crash_after = os.environ.get(CRASH_AFTER)
    if crash_after is not None and len(logged(log)) >= int(crash_after):
        os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no flush


def logged(path: str | Path, name: str | None = None) -> list[str]:
    """The prompts `name` scored (every logged line when name is None), in order."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [line.split(" ", 1)[1] for line in lines if name is None or line.split(" ", 1)[0] == name]


class Brightness:
    """Mean pixel value / 255 times `scale`."""

    score_range = (0.0, 1.0)

    def __init__(self, log: str, scale: float = 1.0):
        self.log, self.scale = log, scale

    def __call__(self, images, prompts, metadata):
        _maybe_crash(self.log)
        fail_on = os.environ.get(FAIL_ON)
        if fail_on and any(fail_on in p for p in prompts):
            raise RuntimeError(f"injected failure on {fail_on!r}")
        _log(self.log, "brightness", prompts)
        return RewardOutput(torch.tensor([float(np.asarray(im).mean()) / 255 * self.scale for im in images]))


class TextCount:
    """Number of target strings / 4, with the targets in `details` (as OCR reports what it read)."""

    score_range = (0.0, 1.0)

    def __init__(self, log: str):
        self.log = log

    def __call__(self, images, prompts, metadata):
        _maybe_crash(self.log)
        _log(self.log, "textcount", prompts)
        texts = [m["text"] for m in metadata]
        return RewardOutput(torch.tensor([len(t) / 4 for t in texts]), {"read": [" | ".join(t) for t in texts]})


class FileByte:
    """The first byte of a weights file / 255, for every image."""

    score_range = (0.0, 1.0)

    def __init__(self, log: str, weights: LocalPath):
        self.log, self.value = log, Path(weights).read_bytes()[0] / 255

    def __call__(self, images, prompts, metadata):
        _log(self.log, "filebyte", prompts)
        return RewardOutput(torch.full((len(images),), self.value))


class Rendezvous:
    """Waits at a barrier shared by every Rendezvous reward before scoring: two of them finish only when
    their calls run at the same time (a call waiting alone gives up after 20 s and fails)."""

    score_range = (0.0, 1.0)
    barrier = threading.Barrier(2, timeout=20)

    def __init__(self, log: str, device: str = "cpu", raises: bool = False):
        self.log, self.device, self.raises = log, device, raises

    def __call__(self, images, prompts, metadata):
        if self.raises:
            raise RuntimeError(f"injected failure on {self.device}")
        Rendezvous.barrier.wait()
        _log(self.log, f"rendezvous-{self.device}", prompts)
        return RewardOutput(torch.tensor([float(np.asarray(im).mean()) / 255 for im in images]))
