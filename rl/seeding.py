"""Randomness as a pure function of (run seed, step, prompt index, sample index).

Rollout actors hold no RNG state: every sample's seed is derived from where it sits in the run, so a
restarted actor redraws exactly the same images and a sample does not depend on which worker or batch
row drew it. The sampler turns a sample seed into one uniform per image position with a counter-based
hash (`counter_uniforms`); the decoder seeds its noise generator with `stream="decoder"`. Evaluation
during training draws from its own streams (`eval_seed`), the same at every evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

SEED_BITS = 63
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_seed(seed: int, step: int, prompt_index: int, sample_index: int, stream: str) -> int:
    """A 63-bit seed for one sample of one prompt at one training step, for one random `stream`.

    BLAKE2b of the decimal fields, so the value is identical in every process, machine and Python
    version (unlike `hash()`, which is salted per process). Different streams ("policy", "decoder")
    give unrelated seeds for the same sample.
    """
    for name, value in (("seed", seed), ("step", step), ("prompt_index", prompt_index),
                        ("sample_index", sample_index)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not stream or ":" in stream:
        raise ValueError(f"stream must be a non-empty name without ':', got {stream!r}")
    message = f"{seed}:{step}:{prompt_index}:{sample_index}:{stream}".encode()
    digest = hashlib.blake2b(message, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


EVAL_STREAM_PREFIX = "eval-"


def eval_seed(seed: int, prompt_index: int, sample_index: int, stream: str) -> int:
    """The seed of sample `sample_index` of held-out prompt `prompt_index`, for one random `stream`, at every
    evaluation of a run with run seed `seed`.

    It does not depend on the step, so each evaluation draws the same prompts with the same seeds and any
    difference between two evaluations comes from the policy. The `eval-` prefix keeps these seeds apart
    from the training samples' (and `rl.generate`'s, which use step 0 of the plain streams).
    """
    return sample_seed(seed, 0, prompt_index, sample_index, EVAL_STREAM_PREFIX + stream)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (numpy wraps unsigned overflow, which the hash relies on)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counter_uniforms(seeds: Sequence[int], count: int) -> torch.Tensor:
    """Uniforms in (0, 1], float64 [len(seeds), count]: entry [i, t] depends only on (seeds[i], t).

    A counter-based generator: the t-th draw of a seed is a hash of (seed, t), so a row's numbers do not
    depend on the other rows, the batch size or the device, and need no generator state.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if any(not 0 <= int(s) < 2**64 for s in seeds):
        raise ValueError("seeds must be integers in [0, 2**64)")
    keys = _mix64(np.asarray([int(s) for s in seeds], dtype=np.uint64))[:, None]  # [N, 1]
    counters = np.arange(1, count + 1, dtype=np.uint64)[None, :]  # [1, count]
    bits = _mix64(keys + counters * _GOLDEN)  # [N, count], wrapping uint64 arithmetic
    # The top 53 bits as an integer in [1, 2**53], scaled: exactly representable, never 0.
    return torch.from_numpy(((bits >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53)
