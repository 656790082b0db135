"""Rollout actors: policy + decoder replicas that turn prompts into image tokens, log-probs and pictures.

A `RolloutWorker` holds no random state. The driver hands it, for every row, the prompt and two seeds
derived from (run seed, step, prompt index, sample index): one for the sampler and one for the
decoder's noise. A restarted worker, or another worker, therefore redraws exactly the same samples.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.components import instantiate
from core.devices import actor_device
from rl.decoder import to_uint8_images
from rl.distributed.weight_sync import Bucket, CollectiveGroup, SyncSpec, load_bucket
from rl.evaluation.monitors import image_statistics, thumbnails
from rl.model.loading import build_policy
from rl.model.sampler import CompiledDecodeStep, SamplingParams, sample_image_tokens
from rl.model.tokenizer import PromptFormat
from rl.train_config import RolloutConfig


@dataclass
class RolloutResult:
    """N rows in the order requested, T = h*w image tokens each (CPU tensors).

    tokens: long [N, T] image codes. logprobs: float32 [N, T], the sampler's log-probs (see rl/model/sampler.py).
    valid: bool [N], False for NaN/inf/constant images (they get NaN rewards and zero advantage).
    sample_s / decode_s: seconds spent sampling tokens and decoding images.
    image_stats: name -> float [N], the monitors' per-image statistics (rl/evaluation/monitors.py), computed
    here so the driver never fetches the images for them. thumbnails: uint8 [N, s, s, 3] for image diversity.
    compiled_graphs: with `rollout.compile`, the graphs (distinct shapes) the actor's sampler and decoder have
    compiled so far, all calls counted (0 without compile); merged, the most of any actor.
    decoder_calls / decoder_calls_skipped: rows (an image in one CFG branch at one denoising step) whose decoder
    block stack ran / was replaced by TeaCache in this call (0 for decoders without a transformer); merged, summed.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    valid: torch.Tensor
    sample_s: float
    decode_s: float
    image_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    thumbnails: torch.Tensor | None = None
    compiled_graphs: int = 0
    decoder_calls: int = 0
    decoder_calls_skipped: int = 0

    @classmethod
    def merge(cls, results: Sequence[RolloutResult]) -> RolloutResult:
        """The rows of several actors' results, in order; the slowest actor's timings."""
        stats = {name: torch.cat([r.image_stats[name] for r in results]) for name in results[0].image_stats}
        small = [r.thumbnails for r in results if r.thumbnails is not None]
        return cls(torch.cat([r.tokens for r in results]), torch.cat([r.logprobs for r in results]),
                   torch.cat([r.valid for r in results]), max(r.sample_s for r in results),
                   max(r.decode_s for r in results), stats, torch.cat(small) if small else None,
                   max(r.compiled_graphs for r in results), sum(r.decoder_calls for r in results),
                   sum(r.decoder_calls_skipped for r in results))


class RolloutWorker:
    """One replica of the policy (inference only) and the frozen decoder.

    model: the `model` config section (plain dict): `policy`, `tokenizer`, `decoder` components.
    rollout: the `rollout` section. Built inside a Ray actor with `rollout.num_gpus` GPUs.
    """

    def __init__(self, model: Mapping[str, Any], rollout: RolloutConfig):
        self.device = actor_device(rollout.num_gpus)
        self.dtype = getattr(torch, rollout.dtype)
        tokenizer = instantiate(model["tokenizer"], "model.tokenizer")
        # Read tensor by tensor straight into the rollout dtype on this actor's device.
        self.policy = build_policy(model["policy"], "model.policy", self.dtype, self.device)
        self.policy.eval().requires_grad_(False)
        self.decoder = instantiate(model["decoder"], "model.decoder")
        if hasattr(self.decoder, "to"):
            self.decoder = self.decoder.to(self.device)
        self.format = PromptFormat(tokenizer, self.policy.config.vocab_size)
        self.grid = (int(rollout.grid[0]), int(rollout.grid[1]))
        self.batch_size = rollout.batch_size
        self.sampling = SamplingParams(**vars(rollout.sampling))
        self.compiled = CompiledDecodeStep(self.policy, rollout.batch_size) if rollout.compile else None
        if rollout.compile and hasattr(self.decoder, "compile"):  # the demo's PatchDecoder has nothing to compile
            self.decoder.compile()
        self._group: CollectiveGroup | None = None

    def generate(self, prompts: Sequence[str], policy_seeds: Sequence[int],
                 decoder_seeds: Sequence[int]) -> tuple[RolloutResult, list[np.ndarray]]:
        """Sample and decode one image per row. Returns the result and the images as uint8 [H, W, 3]."""
        tokens, logprobs, valid, images = [], [], [], []
        sample_s = decode_s = 0.0
        calls_before = self.decoder_calls()
        for start in range(0, len(prompts), self.batch_size):
            rows = slice(start, start + self.batch_size)
            began = time.perf_counter()
            samples = sample_image_tokens(self.policy, self.format.encode(list(prompts[rows]), self.grid),
                                          self.sampling, list(policy_seeds[rows]), self.compiled)
            middle = time.perf_counter()
            decoded = self.decoder(samples.tokens, self.grid, list(prompts[rows]), list(decoder_seeds[rows]))
            sample_s, decode_s = sample_s + middle - began, decode_s + time.perf_counter() - middle
            tokens.append(samples.tokens.cpu())
            logprobs.append(samples.logprobs.float().cpu())
            valid.append(decoded.valid.cpu())
            images += to_uint8_images(decoded.images)
        result = RolloutResult(torch.cat(tokens), torch.cat(logprobs), torch.cat(valid), sample_s, decode_s,
                               image_statistics(images), thumbnails(images), self.compiled_graphs(),
                               *(now - before for now, before in zip(self.decoder_calls(), calls_before, strict=True)))
        return result, images

    def decoder_calls(self) -> tuple[int, int]:
        """The decoder's transformer rows run and skipped so far (XOmniDecoder counts them; the demo's
        PatchDecoder has no transformer: 0, 0)."""
        return (getattr(self.decoder, "transformer_calls", 0), getattr(self.decoder, "transformer_calls_skipped", 0))

    def compiled_graphs(self) -> int:
        """Graphs compiled so far by the sampler's decode step and the decoder's transformer (0 without compile)."""
        sampler = len(self.compiled.shapes) if self.compiled is not None else 0
        return sampler + getattr(self.decoder, "compiled_graphs", 0)  # the demo's PatchDecoder compiles nothing

    def load_weights(self, *buckets: Bucket) -> None:
        """Trained weights from the object store: buckets of (name, full tensor in the rollout dtype)."""
        params = self.policy.state_dict()
        for bucket in buckets:
            load_bucket(params, bucket)

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                          timeout_s: float) -> None:
        self._group = CollectiveGroup(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self, spec: SyncSpec) -> None:
        """Trained weights broadcast by the learner, bucket by bucket as `spec` lists them."""
        self._group.receive_buckets(self.policy, spec, self.device)

    def ping(self) -> bool:
        return True
