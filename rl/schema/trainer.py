"""The `trainer` section: how the policy is optimised (optimizer, schedule, clipping, what trains), and, by
concept, the GRPO loss (`trainer.loss`), the batching of an update (`trainer.batching`), how a step's stages
overlap (`trainer.pipeline`) and when a run that cannot learn stops (`trainer.faults`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt

from rl.model.lora import LoraSettings

ADAMW = {"_component_": "torch.optim.AdamW", "lr": 1.0e-6, "betas": [0.9, 0.999], "eps": 1.0e-8, "weight_decay": 0.0}
"""The default optimizer (X-Omni's lr; its optimizer is not published)."""


@dataclass
class LossConfig:
    """The GRPO objective (rl/grpo.py)."""

    clip_eps: Annotated[float, Gt(0)] = 0.2
    """PPO ratio clip: the ratio is clipped to [1 - clip_eps, 1 + clip_eps_high]."""
    clip_eps_high: Annotated[float, Gt(0)] | None = None
    """Upper clip (DAPO's clip-higher); null: clip_eps."""
    kl_coef: Annotated[float, Ge(0)] = 0.01
    """Beta of the k3 KL estimate to the frozen reference, the starting policy (X-Omni: 0.01). 0 builds no
    reference copy."""
    aggregation: Literal["sequence", "token"] = "sequence"
    """"sequence": mean over each image's tokens, then over images (GRPO, X-Omni); "token": mean over all tokens."""
    advantage_scale: Literal["group", "batch", "none"] = "group"
    """What the group-centred reward is divided by: the group's std (X-Omni), the batch's, or nothing."""
    old_logprobs: Literal["auto", "recompute", "sampler"] = "auto"
    """The log-probs the ratio divides by. "recompute": the learner's own, computed before its update under the
    weights that sampled, with the training pass's function and micro-batch shapes (the first ratio is exactly 1);
    "sampler": the rollout's. "auto" recomputes when the rollout's dtype or device differs from the learner's
    compute dtype or device, or tis_cap is set; one step off-policy it is "sampler". Both log `mismatch/kl` and
    `mismatch/abs_max`."""
    tis_cap: Annotated[float, Gt(0)] | None = None
    """Truncated importance sampling: each token's policy-gradient term weighed by min(learner / sampler
    probability, tis_cap) (TRL's vllm_importance_sampling_cap). Needs old_logprobs "recompute"; null: off."""


@dataclass
class BatchingConfig:
    """How a step's rollout is cut for the update."""

    mini_batches: Annotated[int, Ge(1)] = 1
    """Optimizer steps per rollout batch (1: strictly on-policy); it must divide prompts_per_step x group_size."""
    micro_batch_size: Annotated[int, Ge(1)] = 8
    """Sequences per forward/backward on one learner rank (gradients accumulate over a mini-batch's share)."""


@dataclass
class PipelineConfig:
    """How the stages of a step overlap."""

    streaming: bool = True
    """Within a step, each rollout chunk (rollout.batch_size rows of one actor) goes to the reward actors and the
    learner's no-grad passes as soon as it is decoded; false runs the stages one after the other. Both give the
    same samples and update. Colocated placement never streams (a worker holds one phase at a time)."""
    async_steps: Annotated[int, Ge(0)] = 0
    """0: each step's rollout is sampled with the weights its update starts from (on-policy). 1 (one step
    off-policy, split placement only): the rollout of step k+1 is sampled while the learner updates on step k,
    with the weights of step k-1 (`rollout/staleness` logs 0 or 1); the ratio then divides by the sampler's
    log-probs."""


@dataclass
class FaultsConfig:
    """When a run that cannot learn stops, instead of training on nothing."""

    max_nonfinite_steps: Annotated[int, Ge(1)] = 3
    """This many skipped optimizer steps in a row (non-finite loss or gradient norm) stop the run."""
    max_unscored_steps: Annotated[int, Ge(1)] = 3
    """This many steps in a row where no reward applies to any sample (each warned about with its cause) stop
    the run."""


@dataclass
class TrainerConfig:
    """The update: what trains, how it is optimised, and (by concept) the loss, batching, pipeline and faults."""

    steps: Annotated[int, Ge(1)] = 200
    """Total GRPO steps (X-Omni: 200)."""
    optimizer: dict = field(default_factory=lambda: dict(ADAMW))
    """The optimizer, a component built over the trained parameters (`params` is passed at build time):
    {_component_: torch.optim.AdamW, lr: 1.0e-6, betas: [0.9, 0.999], eps: 1.0e-8, weight_decay: 0.0} by default.
    Its arguments are checked by building it on a dummy parameter before anything starts."""
    lr_scheduler: dict | None = None
    """null: a constant learning rate; or a component built over the optimizer (`optimizer` is passed) and
    stepped once per GRPO step, e.g. {_component_: torch.optim.lr_scheduler.LinearLR, start_factor: 0.1,
    total_iters: 10} for a linear warm-up over 10 steps."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Largest global gradient norm (0: no clipping)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""
    lora: LoraSettings | None = None
    """null trains every weight but the frozen ones (full fine-tuning); {r, alpha, dropout, target_modules} trains
    peft LoRA adapters only, the frozen base (in learner.reference_dtype) serving as the reference policy with the
    adapters off."""
    freeze_text_embedding: bool = True
    """Keep the text embedding (`model.lm_embed_tokens`) at the starting policy's: image RL only reaches it through
    prompts. The text head (`lm_head`) is always frozen: image generation never uses it."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The GRPO objective."""
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    """Mini- and micro-batches of an update."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Streaming within a step, and one step off-policy."""
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    """Limits on steps that cannot learn."""
