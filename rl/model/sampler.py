"""Sampling image tokens from the X-Omni policy: KV cache, left padding, optional CFG, per-sample seeds.

Log-prob convention: `ImageSamples.logprobs[i, t]` is log pi_theta(token | prefix) under the
distribution the learner recomputes (`XOmniPolicy.token_logprobs`): softmax over the image codes of
logits / temperature, WITHOUT top-k/top-p/min-p truncation and WITHOUT CFG. Truncation and CFG only
change which token is drawn. This is the choice of verl and TRL (the untruncated, temperature-scaled
policy); it makes the learner's first importance ratio exactly 1 (up to floating-point differences
between incremental and teacher-forced forwards).

Randomness: draw t of row i is the inverse CDF of the filtered distribution at the uniform
`counter_uniforms(seeds)[i, t]`, which depends only on (seeds[i], t). A sample is therefore the same
whichever worker, batch or row draws it, as far as the model's logits are batch-invariant (exactly on
CPU float32 in practice; on GPU, kernel choices that depend on the batch shape can flip rare draws).

The per-token step is `XOmniModel.decode` on a static KV cache written in place (its mask built once per call
from the prompts' left padding, GQA attention reading each key and value once), run eagerly or compiled
(`CompiledDecodeStep`, the option `rollout.compile`); both draw with the same code from the same logits up to
float rounding. No step reads device data on the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from functools import partial

import torch

from rl.compiled_shapes import graph_limit, pad_rows, padded_rows, row_buckets
from rl.model.policy import XOmniPolicy
from rl.model.tokenizer import PromptBatch
from rl.model.xomni_model import StaticKVCache
from rl.seeding import counter_uniforms


@dataclass(frozen=True)
class SamplingParams:
    """How image tokens are drawn. The defaults are what X-Omni's generation script samples with: it sets
    temperature 1.0, min_p 0.03, top_p 1.0 and no CFG, and leaves top_k at transformers' GenerationConfig
    default of 50. Filters apply in the order CFG, temperature, top-k, top-p, min-p, as in transformers'
    generate(). The log-probs kept for the update are those of the untruncated, temperature-scaled policy."""

    temperature: float = 1.0
    """Logits are divided by it before the filters below (> 0)."""
    top_k: int = 50
    """Keep the k most likely codes (0: off)."""
    top_p: float = 1.0
    """Keep the smallest set of most likely codes with total probability >= top_p (1.0: off)."""
    min_p: float = 0.03
    """Keep codes with probability >= min_p x the top code's probability (0.0: off)."""
    cfg_scale: float = 1.0
    """Classifier-free guidance: above 1 samples from uncond + cfg_scale x (cond - uncond) logits, the
    unconditional branch seeing `<SOM>{h} {w}<IMAGE>` alone (1.0: off, one forward per step)."""

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.cfg_scale < 1:
            raise ValueError(f"cfg_scale must be >= 1, got {self.cfg_scale}")


@dataclass(frozen=True)
class ImageSamples:
    """tokens: long [N, h*w] image codes (raster order); logprobs: float32 [N, h*w] (see module docstring);
    prompts: the PromptBatch they were drawn for (`prompts.with_image_tokens(tokens)` gives the
    sequences the learner scores)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    prompts: PromptBatch


class CompiledDecodeStep:
    """The sampler's per-token step (one new token per row -> image logits) under
    `torch.compile(fullgraph=True)`: the option `rollout.compile`. Pass it to `sample_image_tokens(..., compiled=...)`.

    The step is `XOmniModel.decode` on a static KV cache: fixed shapes and no host read of data, so one graph, with
    no graph break (a break is a compile error), serves all h*w steps. The cache's length is the prompt width +
    h*w - 1 rounded up to `cache_bucket` slots, so batches whose prompts pad to different widths reuse the graph.
    A batch's rows are padded up to one of `row_buckets(max_rows)` (rl/compiled_shapes.py; the padding rows
    repeat the last row and are dropped), so a run compiles one graph per (rows, slots) pair of `shapes_for`: 7 per
    cache length at max_rows 64. Calls run with dynamo's recompile limit raised to the shapes seen, and hitting it
    is an error: the step never falls back to eager silently. The prefill (one pass over the prompts) stays
    eager. Tested equal to eager on the CPU; never run on a GPU.
    """

    def __init__(self, policy: XOmniPolicy, max_rows: int, cache_bucket: int = 64):
        if max_rows < 1 or cache_bucket < 1:
            raise ValueError(f"max_rows and cache_bucket must be >= 1, got {max_rows} and {cache_bucket}")
        self.policy, self.max_rows, self.cache_bucket = policy, max_rows, cache_bucket
        self._compiled = torch.compile(self._logits, fullgraph=True, dynamic=False)
        self.shapes: set[tuple[int, int]] = set()  # the (rows, slots) it has run: one graph each

    @staticmethod
    def shapes_for(max_rows: int, num_image_tokens: int, prompt_widths: Iterable[int], cfg: bool = False,
                   cache_bucket: int = 64) -> set[tuple[int, int]]:
        """Every (rows, slots) shape a run can compile: batches of 1..max_rows prompts padding to
        `prompt_widths` tokens, h*w = `num_image_tokens`, with CFG's unconditional rows when `cfg`."""
        slots = {-(-(width + num_image_tokens - 1) // cache_bucket) * cache_bucket for width in prompt_widths}
        return {((2 if cfg else 1) * rows, length) for rows in row_buckets(max_rows) for length in slots}

    def padded_rows(self, num_rows: int) -> int:
        """The rows a batch of `num_rows` prompts (1..max_rows) is padded to (before CFG doubles them)."""
        return padded_rows(num_rows, self.max_rows)

    def graph_limit(self) -> AbstractContextManager:
        """dynamo's settings for one sampling call (use as `with`): room for the shapes seen and this call's."""
        return graph_limit(len(self.shapes) + 1)

    def slots(self, length: int) -> int:
        """The cache slots for sequences of `length` tokens: rounded up to the bucket."""
        return -(-length // self.cache_bucket) * self.cache_bucket

    def __call__(self, step_ids: torch.Tensor, start: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """step_ids long [R, 1] into slot `start` (long 0-dim) -> image logits [R, K] (model dtype)."""
        self.shapes.add((step_ids.shape[0], cache.keys.shape[3]))
        return self._compiled(step_ids, start, cache)

    def _logits(self, step_ids: torch.Tensor, start: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        return _step_logits(self.policy, step_ids, start, cache)


def sample_image_tokens(policy: XOmniPolicy, prompts: PromptBatch, params: SamplingParams,
                        seeds: Sequence[int], compiled: CompiledDecodeStep | None = None) -> ImageSamples:
    """Draw exactly h*w image tokens for every row of `prompts` (N rows; repeat a prompt G times for G
    samples), row i driven by `seeds[i]` alone. Returns tensors on the policy's device.

    compiled: run the per-token step compiled (built for this `policy`), the N rows (at most `compiled.max_rows`)
    padded to a row bucket and the cache to a slot bucket; None = the same step eagerly.
    """
    if len(seeds) != prompts.input_ids.shape[0]:
        raise ValueError(f"need one seed per prompt row: {prompts.input_ids.shape[0]} rows, {len(seeds)} seeds")
    if prompts.vocab_size != policy.config.vocab_size:
        raise ValueError(f"prompts were encoded for vocab_size {prompts.vocab_size}, the policy has "
                         f"{policy.config.vocab_size}")
    if compiled is not None and compiled.policy is not policy:
        raise ValueError("compiled was built for another policy")
    prompts = prompts.to(policy.mm_head.weight.device)
    uniforms = counter_uniforms(seeds, prompts.num_image_tokens).to(prompts.input_ids.device)  # [N, T] float64
    if compiled is None:
        with torch.inference_mode():
            tokens, logprobs = _decode(policy, prompts, params, uniforms, None)
    else:  # Padded with copies of the last row (one graph per bucket), dropped after: every row draws from its
        # own uniforms, so the copies shift no real row's draws.
        rows = compiled.padded_rows(len(seeds))
        padded = replace(prompts, input_ids=pad_rows(prompts.input_ids, rows),
                         attention_mask=pad_rows(prompts.attention_mask, rows))
        with torch.inference_mode(), compiled.graph_limit():
            tokens, logprobs = _decode(policy, padded, params, pad_rows(uniforms, rows), compiled)
    # Cloned outside inference mode: inference tensors could not be saved for backward by the learner.
    return ImageSamples(tokens[:len(seeds)].clone(), logprobs[:len(seeds)].clone(), prompts)


def _decode(policy: XOmniPolicy, prompts: PromptBatch, params: SamplingParams, uniforms: torch.Tensor,
            compiled: CompiledDecodeStep | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoding loop: codes long [N, T] and their log-probs float32 [N, T]. Nothing in it reads device data
    on the host, so on a GPU the steps queue up without waiting for each other."""
    (num_rows, num_tokens), device = uniforms.shape, uniforms.device
    cfg = params.cfg_scale > 1
    input_ids, prompt_mask = _with_uncond_rows(prompts) if cfg else (prompts.input_ids, prompts.attention_mask)
    width = input_ids.shape[1]  # rows R = N, or 2N with CFG
    needed = width + num_tokens - 1  # key slots: the last token is never fed back
    slots = needed if compiled is None else compiled.slots(needed)
    cache = policy.model.new_static_cache(_left_padding(prompt_mask), slots)  # all the call's memory, at once
    step = compiled if compiled is not None else partial(_step_logits, policy)
    tokens = torch.empty(num_rows, num_tokens, dtype=torch.long, device=device)
    logprobs = torch.empty(num_rows, num_tokens, dtype=torch.float32, device=device)
    start = torch.zeros((), dtype=torch.long, device=device)
    logits = _step_logits(policy, input_ids, start, cache)  # the prefill, eager: [R, K]
    start = start + width
    for t in range(num_tokens):
        scaled = logits.float() / params.temperature
        cond = scaled[:num_rows]
        guided = scaled[num_rows:] + params.cfg_scale * (cond - scaled[num_rows:]) if cfg else cond
        tokens[:, t] = _draw(guided, params, uniforms[:, t])
        # The learner's formula (gather - logsumexp), on the untruncated conditional distribution.
        logprobs[:, t] = cond.gather(-1, tokens[:, t, None])[:, 0] - cond.logsumexp(dim=-1)
        if t + 1 < num_tokens:  # the last token is never fed back
            step_ids = (tokens[:, t] + prompts.vocab_size).repeat(2 if cfg else 1)[:, None]  # [R, 1]
            logits = step(step_ids, start, cache)
            start = start + 1
    return tokens, logprobs


def _step_logits(policy: XOmniPolicy, input_ids: torch.Tensor, start: torch.Tensor,
                 cache: StaticKVCache) -> torch.Tensor:
    """Image logits [R, K] after ids [R, L] written to slots [start, start + L) of `cache`."""
    return policy.image_head(policy.model.decode(input_ids, start, cache))


def _left_padding(mask: torch.Tensor) -> torch.Tensor:
    """Padding per row, long [R], of a left-padded prompt mask [R, P] (checked once per call: the static cache's
    mask is built from these counts alone)."""
    pad = mask.shape[1] - mask.sum(dim=1)
    if not torch.equal(mask.bool(), torch.arange(mask.shape[1], device=mask.device) >= pad[:, None]):
        raise ValueError("prompts.attention_mask must pad on the left only (zeros, then ones in every row)")
    return pad


def _with_uncond_rows(prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional rows then as many unconditional rows (the image prefix alone), left-padded to one
    width: ids and mask [2N, P']."""
    num_rows, width = prompts.input_ids.shape
    uncond = prompts.uncond_ids
    width_all = max(width, len(uncond))
    ids = torch.full((2 * num_rows, width_all), prompts.pad_id, dtype=torch.long, device=uncond.device)
    mask = torch.zeros_like(ids)
    ids[:num_rows, width_all - width:] = prompts.input_ids
    mask[:num_rows, width_all - width:] = prompts.attention_mask
    ids[num_rows:, width_all - len(uncond):] = uncond
    mask[num_rows:, width_all - len(uncond):] = 1
    return ids, mask


def _draw(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor) -> torch.Tensor:
    """One code per row from temperature-scaled logits [R, K] after top-k, top-p and min-p, by inverse CDF
    at `uniforms` (float64 [R] in (0, 1]) -> codes long [R].

    The filters run on the candidates only: the top-k codes (sorted), else all codes (sorted when top-p
    needs it), so the per-step cost stays one pass over the K logits. The CDF is float64: a draw then moves
    only if its uniform lies within ~1e-16 of a bucket edge. The most likely code always survives.
    """
    if params.top_k > 0:
        values, codes = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1)  # [R, k], descending
    elif params.top_p < 1:
        values, codes = logits.sort(dim=-1, descending=True)
    else:
        values, codes = logits, None
    probs = values.double().softmax(dim=-1)  # renormalised over the candidates, as after HF's top-k warper
    if params.top_p < 1:  # values are sorted: a code goes when the more likely ones already reach top_p
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= params.top_p, 0.0)
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.amax(dim=-1, keepdim=True), 0.0)
    cdf = probs.cumsum(dim=-1)
    index = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:]).clamp(max=cdf.shape[-1] - 1)  # [R, 1]
    return (index if codes is None else codes.gather(-1, index)).squeeze(-1)
