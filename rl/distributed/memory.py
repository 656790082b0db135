"""Memory formulas of the plan: the bytes each part of a learner rank, a rollout replica and a reward model
holds at its peak, counted from the tensors our code keeps alive.

Notation: P policy parameters, h hidden size, i MLP width, q = heads x head_dim, n_l decoder layers,
K image codes, B sequences per micro-batch, L = prompt + T image tokens per sequence, cb / pb bytes per
element of the compute / parameter dtype, W learner ranks (FSDP world size).

Learner rank (rl/distributed/learner.py), per phase of one update:
  static       params P*pb/W, gradients P_t*pb/W, optimizer state S*P_t*pb/W (S floats of state per parameter,
               measured from trainer.optimizer: 2 for AdamW). P_t = trained parameters: all but the
               text head (never trained) and, with trainer.freeze_text_embedding, the text embedding; with LoRA
               the adapters (fp32), the base then held in rb_ref. Reference P*rb_ref/W: a frozen copy in
               learner.reference_dtype (none with LoRA: the base with adapters off is the reference).
  gradients    with learner.grad_sync "last_micro_batch" and several micro-batches per optimizer step, FSDP2
  (W > 1)      accumulates unsharded gradients in fp32 until the last backward: P_t*4 per GPU during
               forward/backward (instead of the sharded P_t*pb/W).
  FSDP (W > 1) units: each layer, each embedding, each head, the norms at the root (kept gathered). The current
               and the prefetched layer are gathered, and at the ends of the pass the embeddings or the image
               head; the unsharded gradients of one layer and the image head wait for their reduce-scatter in
               fp32 (unless they accumulate, above): (norms + 2 * layer + max(embeddings, image head)) * cb
               + (layer_t + image_head_t) * 4. The text head's unit never runs, so it is never gathered.
  activations  per token of every layer (saved for backward):
                 2 RMSNorms x (4 + 2*cb) * h   fp32 input, normalised value and output in the compute dtype
                 + cb * 4 * q                  rotated q, k and v repeated to all heads (the learner's batches
                                               carry a padding mask, so attention runs without native GQA),
                                               attention output
                 + cb * 4 * i                  MLP gate, SiLU(gate), up projection, their product
               + the [B, L, L] attention mask in the compute dtype per layer; the final norms (both the text and
               the image norm run over all positions) and the slice of image positions; the log-prob head,
               which forms [R, K] fp32 logits for R = min(1024, B*T) rows at a time and holds HEAD_COPIES of
               them at the peak of a chunk's backward. With gradient checkpointing only each layer's input
               (h * cb per token) is saved, and one layer is rebuilt at a time (its activations plus as much
               again for their gradients).
  optimizer    AdamW's foreach step adds one temporary of the trained shard (sqrt of exp_avg_sq).
  weight sync  gradients are freed; the trained weights travel in the rollout dtype, in buckets of BUCKET_BYTES
               (a larger tensor alone): a bucket's shards all-gathered into full tensors while the next
               bucket's all-gather is in flight, 2 * bucket * (1 + 1/W) (2 * bucket of cast copies unsharded),
               plus 2 flat copies in flight for a collective broadcast.
Rollout replica (rl/distributed/rollout.py): full weights P*rb; the KV cache
  2 * n_l * kv_heads * head_dim * (prompt + T) * rows * rb (rows doubled by CFG) plus one layer's copy while
  DynamicCache grows it; the prefill (one layer's MLP and residual tensors for every prompt token); the
  decoder's weights and its widest stage (a FLUX block over image + text tokens, one VAE slice's full-resolution
  stage, or T5 over the distinct prompts of a batch).

A step's rows on the hosts (N = rollout.prompts_per_step x rollout.group_size samples of T image tokens): the
driver holds every sample's token ids (int64) and sampler log-probs (float32) twice (the chunks' results and the
merged rollout), its thumbnail, scores and the prompt texts, for each step in flight; each learner rank every
sample's ids and log-probs (its rows buffer spans the batch) plus the reference and old log-probs of its own
rows; each rollout replica's decoded uint8 images wait in Ray's object store on its node until they are scored;
each reward actor holds one call's images (ensemble.batch_size), uint8 and a float32 copy.

The learner formulas were checked against the CPU allocator's peak (tests/test_memory_plan.py); the GPU
figures (FSDP buffers, decoder, rewards, margins) are estimates that have never been run on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rl.decoder.cost import default_vae_batch_size
from rl.distributed.weight_sync import BUCKET_BYTES
from rl.model.policy import LOGPROB_CHUNK_ROWS

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HEAD_COPIES = 5
"""[R, K] fp32 tensors alive at the peak of one log-prob chunk's backward: the recomputed logits and softmax and
the gradients flowing back through log-softmax and gather (measured 5.0 on the CPU, with and without entropy)."""
FLUX_WIDTHS = 12
"""Live tensors of a FLUX block, in units of its inner width per token: the MLP branch (4 before and 4 after
GELU), q, k, v and the attention output, the image and text streams."""
VAE_COPIES = 6
"""Full-resolution tensors of the VAE decoder's last stage alive at once (resnet input, norms, convolution
outputs, residual), each [n, C0, 16h, 16w]."""
VIT_WIDTHS = 12
"""Live tensors of a reward's ViT block per token, in units of its width (the 4x MLP, q, k, v, residual)."""
PROCESS_BYTES = GIB
"""Per process on a GPU: the CUDA context, cuBLAS and NCCL workspaces."""
FRAGMENTATION = 0.05
"""Share of a GPU's other parts the caching allocator cannot reuse (fragmentation)."""
WORKER_HOST_BYTES = int(0.4 * GIB)
"""Host memory of one Ray worker process with torch imported (ENVIRONMENT.md: 160-400 MiB measured)."""
DRIVER_HOST_BYTES = GIB
"""Host memory of the driver process (configs, prompts, metrics, Ray's client), a step's rows aside."""
TOKEN_HOST_BYTES = 8 + 4
"""Per sampled image token on a host: its id (int64) and the sampler's log-prob (float32)."""
DRIVER_ROW_COPIES = 2
"""Copies of a step's tokens and log-probs on the driver: the rollout chunks' results and the merged rollout."""
PROMPT_CHAR_BYTES = 4
"""Bytes of prompt text per prompt token (about 4 characters of one byte each)."""
REWARD_IMAGE_COPIES = 5
"""Bytes a reward call holds per byte of its uint8 images: the image and a float32 copy for preprocessing."""


@dataclass(frozen=True)
class PolicyShape:
    """What the formulas need of an X-Omni policy. parameters: all of them; layer: the largest decoder layer's;
    root: the parameters outside the decoder layers (embeddings, heads, final norms), of which text_head,
    text_embedding, image_embedding and image_head are the four FSDP units; largest: the largest tensor other
    than the text head and embedding (it bounds a weight-sync bucket)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    image_vocab: int
    parameters: int
    layer: int
    root: int
    text_head: int = 0
    text_embedding: int = 0
    image_embedding: int = 0
    image_head: int = 0
    largest: int = 0


@dataclass(frozen=True)
class LearnerSetup:
    """One learner rank. param_bytes: of the policy's (LoRA: the frozen base's) weights; trained: parameters that
    get gradients and optimizer state (P_t above); trained_bytes: their dtype's bytes; optimizer_states: floats of
    optimizer state per trained parameter (AdamW: 2; measured from trainer.optimizer by rl.optim);
    reference_bytes: of the frozen reference copy (0: none); frozen_base: LoRA (adapters on a frozen base);
    lora_inputs: per token, the elements LoRA's dropout copies; accumulates: unsharded fp32 gradients accumulate
    over micro-batches (grad_sync last_micro_batch, W > 1, several micro-batches per optimizer step); sync_bytes:
    what one weight sync moves (trained weights, with LoRA the adapted layers' merged weights, in the rollout
    dtype); bucket_bytes: the largest sync bucket; collective: the sync broadcasts (NCCL) rather than using the
    object store or a copy."""

    world_size: int
    param_bytes: int
    compute_bytes: int
    micro_batch: int
    prompt_tokens: int
    image_tokens: int
    checkpointing: bool
    trained: int
    trained_bytes: int
    reference_bytes: int = 0
    frozen_base: bool = False
    lora_inputs: int = 0
    accumulates: bool = False
    sync_bytes: int = 0
    bucket_bytes: int = 0
    collective: bool = False
    optimizer_states: float = 2.0


def norm_bytes(shape: PolicyShape, cb: int) -> int:
    """Saved per token by one RMSNorm: its fp32 input (the input itself in fp32), normalised value, output."""
    return (4 + 2 * cb) * shape.hidden


def layer_activation_bytes(shape: PolicyShape, batch: int, length: int, cb: int) -> int:
    """What one decoder layer saves for backward over `batch` sequences of `length` tokens."""
    q = shape.heads * shape.head_dim
    per_token = 2 * norm_bytes(shape, cb) + cb * 4 * q + cb * 4 * shape.intermediate
    return batch * length * per_token + batch * length * length * cb  # + the attention mask


def head_bytes(shape: PolicyShape, rows: int, cb: int) -> int:
    """The log-prob head's peak: HEAD_COPIES fp32 [R, K] chunks (+ the linear's output before the fp32 cast)."""
    chunk = min(LOGPROB_CHUNK_ROWS, rows) * shape.image_vocab
    return HEAD_COPIES * chunk * 4 + (chunk * cb if cb != 4 else 0)


def activation_bytes(shape: PolicyShape, s: LearnerSetup, checkpointing: bool) -> int:
    """Peak activation bytes of one micro-batch's forward and backward (the policy's forward sees L - 1 tokens)."""
    cb, batch = s.compute_bytes, s.micro_batch
    length = s.prompt_tokens + s.image_tokens - 1
    tokens = batch * length
    final = tokens * (2 * (4 + cb) + cb) * shape.hidden + batch * s.image_tokens * shape.hidden * cb
    head = head_bytes(shape, batch * s.image_tokens, cb)
    layer = layer_activation_bytes(shape, batch, length, cb) + tokens * s.lora_inputs * cb
    if not checkpointing:
        return shape.layers * layer + final + head
    inputs = shape.layers * tokens * shape.hidden * cb
    return inputs + final + max(head, 2 * layer)


def learner_phases(shape: PolicyShape, s: LearnerSetup) -> dict[str, dict[str, int]]:
    """Parts of one learner rank during forward/backward, the optimizer step and the weight sync."""
    w, pb, cb = s.world_size, s.param_bytes, s.compute_bytes
    static = {"policy parameters": shape.parameters * pb // w,
              "policy gradients": s.trained * s.trained_bytes // w,
              "optimizer state": int(s.optimizer_states * s.trained * s.trained_bytes) // w}
    if s.frozen_base:  # the adapters, beside the base
        static["policy parameters"] += s.trained * s.trained_bytes // w
    if s.reference_bytes:
        static["reference"] = shape.parameters * s.reference_bytes // w
    step = dict(static)
    step["optimizer step"] = s.trained * s.trained_bytes // w
    forward = dict(static)
    if s.accumulates:
        forward["policy gradients"] = s.trained * 4
    if w > 1:
        norms = shape.root - shape.text_head - shape.text_embedding - shape.image_embedding - shape.image_head
        ends = max(shape.text_embedding + shape.image_embedding, shape.image_head)
        waiting = 0 if s.frozen_base or s.accumulates else (shape.layer + shape.image_head) * 4
        forward["FSDP buffers"] = (norms + 2 * shape.layer + ends) * cb + waiting
    elif cb != pb:  # autocast keeps bf16 casts of the weights it used until backward frees them
        forward["autocast weight copies"] = (shape.layer if s.checkpointing else shape.parameters) * cb
    forward["activations"] = activation_bytes(shape, s, s.checkpointing)
    sync = {k: v for k, v in static.items() if k != "policy gradients"}  # freed by zero_grad(set_to_none)
    sync["weight-sync buckets"] = sync_buffer_bytes(s)
    return {"forward/backward": forward, "optimizer step": step, "weight sync": sync}


def sync_buffer_bytes(s: LearnerSetup) -> int:
    """A learner rank's weight-sync buffers: two buckets in flight (see the module docstring)."""
    bucket = s.bucket_bytes
    gathered = 2 * bucket * (s.world_size + 1) // s.world_size if s.world_size > 1 else 2 * bucket
    return gathered + (2 * bucket if s.collective else 0)


def bucket_bytes(sync_bytes: int, largest_bytes: int) -> int:
    """The largest bucket `weight_sync.plan_buckets` makes: BUCKET_BYTES, or one tensor larger than that."""
    return min(sync_bytes, max(BUCKET_BYTES, largest_bytes))


def kv_cache_bytes(shape: PolicyShape, rows: int, length: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for `rows` sequences of `length` tokens."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * length * rows * dtype_bytes


@dataclass(frozen=True)
class DecoderShape:
    """The frozen decoder. parts: name -> parameters; bytes: per element of its dtype. inner: FLUX's inner
    width (0 when it has no transformer); text_tokens / text_ff: T5's padded length and 2 x d_ff (gated);
    vae_config: the VAE's config (block_out_channels, ...; empty when it has no VAE); cfg: true CFG (doubles the
    transformer's batch); max_batch_size: images per transformer pass; vae_batch_size: images per VAE decode call
    (None: `default_vae_batch_size` for the image size)."""

    parts: Mapping[str, int]
    bytes: int
    inner: int = 0
    text_tokens: int = 0
    text_ff: int = 0
    vae_config: Mapping[str, Any] = field(default_factory=dict)
    cfg: bool = False
    max_batch_size: int = 1
    vae_batch_size: int | None = None


def decoder_activation_bytes(d: DecoderShape, rows: int, distinct_prompts: int, grid: tuple[int, int]) -> int:
    """The decoder's widest stage for a batch of `rows` images (stages run one after another)."""
    h, w = grid
    images = min(d.max_batch_size, rows)
    flux = images * (2 if d.cfg else 1) * (h * w + d.text_tokens) * d.inner * FLUX_WIDTHS * d.bytes
    vae = 0
    if d.vae_config:  # the VAE decodes a pass's images one slice at a time
        height, width = 16 * h, 16 * w
        sliced = min(images, d.vae_batch_size or default_vae_batch_size(d.vae_config, height, width))
        vae = VAE_COPIES * sliced * height * width * d.vae_config["block_out_channels"][0] * d.bytes
    text = distinct_prompts * d.text_tokens * d.text_ff * d.bytes
    return max(flux, vae, text)


@dataclass(frozen=True)
class RolloutSetup:
    """One rollout replica: rows sampled at once, prompt length, image grid, weights dtype bytes, CFG in the
    sampler, distinct prompts in a batch (text encodings are shared by a prompt's samples)."""

    rows: int
    prompt_tokens: int
    grid: tuple[int, int]
    dtype_bytes: int
    cfg: bool
    distinct_prompts: int


def sampler_rows(s: RolloutSetup) -> int:
    """Sequences the sampler runs at once: a replica's rows, doubled by CFG (the unconditional branch)."""
    return s.rows * (2 if s.cfg else 1)


def rollout_kv_bytes(shape: PolicyShape, s: RolloutSetup) -> int:
    """A replica's KV cache at its peak: the full cache plus one layer's copy while DynamicCache grows it."""
    kv = kv_cache_bytes(shape, sampler_rows(s), s.prompt_tokens + s.grid[0] * s.grid[1], s.dtype_bytes)
    return kv + kv // shape.layers


def rollout_parts(shape: PolicyShape, decoder: DecoderShape, s: RolloutSetup) -> dict[str, int]:
    """Parts of one rollout replica while it samples and decodes."""
    rb = s.dtype_bytes
    rows = sampler_rows(s)
    prefill = rows * s.prompt_tokens * (2 * shape.intermediate + 4 * shape.hidden) * rb
    sampling = 4 * rows * shape.image_vocab * 4  # fp32 logits, their scaled copy, top-k and the filters' probs
    parts = {"rollout weights": shape.parameters * rb, "KV cache": rollout_kv_bytes(shape, s),
             "sampler activations": prefill + rows * s.prompt_tokens ** 2 + sampling}
    parts.update({name: count * decoder.bytes for name, count in decoder.parts.items() if count})
    if decoder.parts:
        parts["decoder activations"] = decoder_activation_bytes(decoder, s.rows, s.distinct_prompts, s.grid)
    return parts


@dataclass(frozen=True)
class RewardShape:
    """A reward's model: parameters, bytes per element, images per forward, and its image tower's tokens per
    image and width (0 when the reward has no model the plan knows)."""

    parameters: int = 0
    bytes: int = 4
    batch_size: int = 0
    tokens: int = 0
    width: int = 0


def reward_bytes(r: RewardShape) -> int:
    """Weights plus one image batch through the image tower."""
    return r.parameters * r.bytes + r.batch_size * r.tokens * r.width * VIT_WIDTHS * r.bytes


def margin_bytes(parts: Mapping[str, int], processes: int) -> int:
    """CUDA contexts of the processes on a GPU plus the allocator's fragmentation of everything else."""
    return processes * PROCESS_BYTES + int(FRAGMENTATION * sum(parts.values()))


@dataclass(frozen=True)
class StepRows:
    """One step's rows as the hosts keep them (see the module docstring). samples: N; prompts: distinct prompts;
    image_tokens: T; image_bytes: one decoded uint8 image; thumbnail_bytes: one uint8 thumbnail; rewards: scores
    per sample; in_flight: steps whose rows the driver holds at once (1 + trainer.pipeline.async_steps)."""

    samples: int
    prompts: int
    prompt_tokens: int
    image_tokens: int
    image_bytes: int
    thumbnail_bytes: int
    rewards: int
    in_flight: int = 1


def driver_step_bytes(s: StepRows) -> int:
    """The driver's copy of the steps in flight: tokens and log-probs, thumbnails, float64 scores (every reward,
    the total and the advantage) and the prompt texts (one per prompt, a reference per sample)."""
    per_sample = DRIVER_ROW_COPIES * s.image_tokens * TOKEN_HOST_BYTES + s.thumbnail_bytes + 8 * (s.rewards + 3)
    texts = s.prompts * s.prompt_tokens * PROMPT_CHAR_BYTES
    return s.in_flight * (s.samples * per_sample + texts)


def learner_step_bytes(s: StepRows, own_rows: int) -> int:
    """One learner rank's rows buffer (every sample's ids and sampler log-probs) and its own rows' reference and
    old log-probs (float32)."""
    return s.samples * s.image_tokens * TOKEN_HOST_BYTES + own_rows * s.image_tokens * 2 * 4


def rollout_step_bytes(s: StepRows, own_rows: int) -> int:
    """A rollout replica's decoded images of the step, in the object store on its node until they are scored."""
    return own_rows * s.image_bytes


def reward_step_bytes(s: StepRows, call_rows: int) -> int:
    """One reward call's images: uint8 and a float32 copy (REWARD_IMAGE_COPIES bytes per image byte)."""
    return min(call_rows, s.samples) * s.image_bytes * REWARD_IMAGE_COPIES
