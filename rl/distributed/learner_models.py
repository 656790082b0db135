"""The learner's models: the trained policy and its frozen reference, built on the meta device, sharded with
FSDP2 when there are several ranks, then filled from model.policy's weights, each rank reading only the rows it
keeps (rl/model/weights.py), so a node's host holds about one copy of the model whatever the rank count.

Image RL never trains the text head (nor, by default, the text embedding): they stay out of the optimizer, the
checkpoints and the weight sync. With LoRA only peft adapters train and the reference is the same model with its
adapters switched off; otherwise the reference is a frozen copy in `learner.reference_dtype`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from core.devices import resolve_dtype
from rl.model import lora
from rl.model.loading import load_source
from rl.model.policy import XOmniPolicy
from rl.model.weights import check_matches, fill
from rl.schema.learner import LearnerConfig
from rl.schema.trainer import TrainerConfig


def build_learner_policy(model: Mapping[str, Any], trainer: TrainerConfig, learner: LearnerConfig,
                         device: torch.device, trainable: bool, seed: int) -> XOmniPolicy:
    """The trained policy (`trainable`) or the frozen reference: built on the meta device, sharded (FSDP2) when
    learner.world_size > 1, then allocated on `device` and filled from model.policy's weights in its dtypes."""
    skeleton, weights = load_source(model["policy"], "model.policy")
    adapters = trainer.lora if trainable else None
    if adapters is not None:
        lora.add_adapters(skeleton, adapters)
    frozen_dtype = learner.dtype if trainable and adapters is None else learner.reference_dtype
    skeleton.to(resolve_dtype(frozen_dtype))
    skeleton.train(trainable).requires_grad_(False)
    for name, param in skeleton.named_parameters():
        if trainable and is_trained(name, trainer):
            param.data = param.data.to(resolve_dtype(learner.dtype))
            param.requires_grad_(True)
    skeleton.model.gradient_checkpointing = trainable and trainer.gradient_checkpointing
    check_matches(skeleton, weights, "model.policy", lora.base_name)
    if learner.world_size > 1:
        shard(skeleton, learner.mixed_precision)
    policy = skeleton.to_empty(device=device)
    fill(policy, weights, lora.base_name)
    if adapters is not None:
        lora.init_adapters(policy, seed)
    return policy


def is_trained(name: str, trainer: TrainerConfig) -> bool:
    """Image RL never uses the text head; the text embedding only sees prompts (frozen unless configured)."""
    if trainer.lora is not None:
        return lora.base_name(name) is None
    frozen = ("lm_head.", "model.lm_embed_tokens.") if trainer.freeze_text_embedding else ("lm_head.",)
    return not name.startswith(frozen)


def shard(policy: XOmniPolicy, mixed_precision: bool) -> None:
    """FSDP2 units: each decoder layer, each embedding, each head, and the rest (norms) at the root. A unit
    is gathered only when it runs, so the frozen text head never is."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # bf16 compute on sharded fp32 master weights; gradients are reduced in fp32.
    mp = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if mixed_precision else MixedPrecisionPolicy()
    units = [*policy.model.layers, policy.model.lm_embed_tokens, policy.model.mm_embed_tokens, policy.lm_head,
             policy.mm_head]
    for unit in [*units, policy]:
        fully_shard(unit, mp_policy=mp)
