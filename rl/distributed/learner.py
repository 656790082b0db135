"""The learner: the trainable policy, its frozen reference (the initial policy), AdamW, one GRPO update
per call. Runs as one Ray actor, or as `learner.world_size` actors that shard both models with FSDP
(torch.distributed inside the actors: NCCL on GPU, gloo on CPU) and split every mini-batch between them.

The update for a batch of N = prompts x G rows, each T image tokens:

    ref_logp = reference.token_logprobs(rows)                    # [N, T], no grad (KL anchor)
    for each of `mini_batches` slices of the rows:               # optimizer steps per batch
        for each micro-batch of this rank's share:               # gradient accumulation
            logp = policy.token_logprobs(micro)                  # [n, T]
            loss = grpo_loss(logp, old_logp, ref_logp, adv, mask) * n / rows_per_rank
            loss.backward()
        clip grads; step unless the loss or the grad norm is non-finite (then skip, count)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rl.config import instantiate
from rl.distributed.rollout import pick_device
from rl.distributed.weight_sync import CollectiveGroup, free_port, node_ip
from rl.grpo import grpo_loss
from rl.model.policy import XOmniPolicy, save_policy_state
from rl.model.tokenizer import PromptFormat
from rl.train_config import LearnerConfig, TrainerConfig

POLICY_DIR, OPTIMIZER_FILE, STATE_FILE = "policy", "optimizer.pt", "learner_state.json"


@dataclass
class TrainBatch:
    """The rows of one GRPO step. prompts: N strings; tokens: long [N, T] image codes;
    old_logprobs: float32 [N, T] (the sampler's); advantages: float32 [N]."""

    prompts: list[str]
    tokens: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor


class Learner:
    """One rank of the learner. Construct, then call `setup` on every rank (it joins the process group)."""

    def __init__(self, model: Mapping[str, Any], trainer: TrainerConfig, learner: LearnerConfig,
                 grid: tuple[int, int], temperature: float, rank: int = 0):
        self.model_cfg, self.trainer, self.learner = model, trainer, learner
        self.grid, self.temperature, self.rank = tuple(grid), temperature, rank
        self.world_size = learner.world_size
        self.device = pick_device(learner.num_gpus)
        self.nonfinite_in_row = 0
        self._sync_group: CollectiveGroup | None = None

    # -- set-up ------------------------------------------------------------------------------------

    def address(self) -> tuple[str, int]:
        """(ip, free port) on this actor's node, for rank 0 to host the process group's store."""
        return node_ip(), free_port()

    def setup(self, master_addr: str | None = None, master_port: int | None = None) -> None:
        if self.world_size > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
        tokenizer = instantiate(self.model_cfg["tokenizer"], "model.tokenizer")
        self.policy = self._build_policy(trainable=True)
        self.reference = self._build_policy(trainable=False) if self.trainer.kl_coef > 0 else None
        self.format = PromptFormat(tokenizer, self.policy.config.vocab_size)
        t = self.trainer
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.eps,
                                           weight_decay=t.weight_decay)
        # Linear warm-up over `warmup_steps` GRPO steps, then constant (X-Omni reports a constant 1e-6).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / (t.warmup_steps + 1)))

    def _build_policy(self, trainable: bool) -> XOmniPolicy:
        # Both copies come from the same component, so the reference is the initial policy even on resume.
        policy = instantiate(self.model_cfg["policy"], "model.policy")
        policy = policy.to(self.device, getattr(torch, self.learner.dtype))
        policy.model.gradient_checkpointing = trainable and self.trainer.gradient_checkpointing
        policy.train(trainable).requires_grad_(trainable)
        if self.world_size > 1:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            # bf16 compute on sharded fp32 master weights; gradients are reduced in fp32.
            mp = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if self.learner.mixed_precision else None
            for layer in policy.model.layers:  # one all-gather per decoder layer
                fully_shard(layer, mp_policy=mp or MixedPrecisionPolicy())
            fully_shard(policy, mp_policy=mp or MixedPrecisionPolicy())
        return policy

    # -- the update --------------------------------------------------------------------------------

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One GRPO step on `batch` (every rank gets the whole batch and takes its share of each
        mini-batch). Returns averaged stats plus `actor/skipped_steps` (this step), `actor/nonfinite_in_row`
        (consecutive skipped optimizer steps), `actor/grad_norm` (before clipping) and `actor/lr`."""
        t = self.trainer
        per_mini = len(batch.prompts) // t.mini_batches
        share = per_mini // self.world_size
        means: dict[str, float] = {}
        skipped, norms = 0, []
        for m in range(t.mini_batches):
            start = m * per_mini + self.rank * share
            stats, grad_norm = self._mini_batch(batch, range(start, start + share))
            norms.append(grad_norm)
            if math.isfinite(grad_norm) and math.isfinite(stats["loss/total"]):
                self.optimizer.step()
                self.nonfinite_in_row = 0
            else:  # weights stay as they were; the driver stops the run after too many in a row
                skipped += 1
                self.nonfinite_in_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            for key, value in stats.items():
                means[key] = means.get(key, 0.0) + value / t.mini_batches
        self.scheduler.step()
        means.update({"actor/skipped_steps": float(skipped), "actor/nonfinite_in_row": float(self.nonfinite_in_row),
                      "actor/grad_norm": sum(norms) / len(norms), "actor/lr": self.scheduler.get_last_lr()[0]})
        return means

    def _mini_batch(self, batch: TrainBatch, rows: range) -> tuple[dict[str, float], float]:
        """Forward/backward over this rank's rows in micro-batches; returns stats and the grad norm."""
        t = self.trainer
        totals: dict[str, torch.Tensor] = {}
        for start in range(rows.start, rows.stop, t.micro_batch_size):
            micro = range(start, min(start + t.micro_batch_size, rows.stop))
            index = list(micro)
            sequences = self._sequences(batch, micro)  # tokenised once for the reference and the policy
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref = self._token_logprobs(self.reference, sequences, with_entropy=False).logprobs
            out = self._token_logprobs(self.policy, sequences, with_entropy=True)
            loss, stats = grpo_loss(
                out.logprobs, batch.old_logprobs[index].to(self.device), ref, batch.advantages[index].to(self.device),
                torch.ones_like(out.logprobs), clip_eps=t.clip_eps, kl_coef=t.kl_coef, aggregation=t.aggregation,
                entropy=out.entropy, clip_eps_high=t.clip_eps_high)
            weight = len(micro) / len(rows)  # images have T tokens each, so both aggregations weigh by rows
            (loss * weight).backward()
            stats["loss/total"] = loss.detach()
            _accumulate(totals, stats, weight)
        grad_norm = self._clip_grad_norm()
        return self._reduce_stats(totals), grad_norm

    def _clip_grad_norm(self) -> float:
        max_norm = self.trainer.grad_clip if self.trainer.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _reduce_stats(self, totals: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Means across ranks (equal shares); min/max stats by min/max. A NaN on any rank stays NaN."""
        if self.world_size > 1:
            for key, value in totals.items():
                op = _reduce_op(key)
                dist.all_reduce(value, op=op)
                if op == dist.ReduceOp.SUM:
                    value /= self.world_size
        return {key: float(value) for key, value in totals.items()}

    def _sequences(self, batch: TrainBatch, rows: range) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), long [n, P + T]: the rows' prompts left-padded, then their image tokens."""
        index = list(rows)
        prompts = self.format.encode([batch.prompts[i] for i in index], self.grid).to(self.device)
        return prompts.with_image_tokens(batch.tokens[index])

    def _token_logprobs(self, model: XOmniPolicy, sequences: tuple[torch.Tensor, torch.Tensor], with_entropy: bool):
        input_ids, attention_mask = sequences
        num_image_tokens = self.grid[0] * self.grid[1]
        # Unsharded mixed precision: autocast (FSDP applies its MixedPrecisionPolicy itself).
        autocast = self.learner.mixed_precision and self.world_size == 1
        with torch.autocast(self.device.type, torch.bfloat16, enabled=autocast):
            return model.token_logprobs(input_ids, attention_mask, num_image_tokens,
                                        temperature=self.temperature, with_entropy=with_entropy)

    # -- weights out ---------------------------------------------------------------------------------

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole policy on CPU (rank 0; other ranks take part in the gather and get {})."""
        if self.world_size == 1:
            return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def publish_weights(self) -> list:
        """Object-store sync: the full state dict put once in Ray's object store (rank 0 returns [ref])."""
        import ray

        state = self.full_state_dict()
        return [ray.put(state)] if self.rank == 0 else []

    def weight_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, dtype name) of what `broadcast_weights` sends (for the receivers' buffers)."""
        return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in self.full_state_dict().items()}

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str) -> None:
        self._sync_group = CollectiveGroup(host, port, 0, world_size, backend)

    def broadcast_weights(self) -> None:
        """Collective sync (rank 0 sends to the rollout actors; every rank gathers the full weights)."""
        state = self.full_state_dict()
        if self.rank == 0:
            self._sync_group.send_state(state, self.device)

    # -- checkpoints -----------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Policy (X-Omni format, safetensors), optimizer and schedule into `path` (rank 0 writes)."""
        state = self.full_state_dict()
        optimizer = self._optimizer_state()
        if self.rank != 0:
            return
        save_policy_state(self.policy.config, state, Path(path) / POLICY_DIR)
        torch.save(optimizer, Path(path) / OPTIMIZER_FILE)
        with open(Path(path) / STATE_FILE, "w") as f:
            json.dump({"scheduler": self.scheduler.state_dict(), "nonfinite_in_row": self.nonfinite_in_row}, f)

    def load(self, path: str) -> None:
        """Restore what `save` wrote. Pickles are read with weights_only=True (tensors and numbers only)."""
        policy = XOmniPolicy.from_pretrained(Path(path) / POLICY_DIR, torch_dtype=self.learner.dtype)
        optimizer = torch.load(Path(path) / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        if self.world_size == 1:
            self.policy.load_state_dict(policy.state_dict())
            self.optimizer.load_state_dict(optimizer)
        else:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            set_model_state_dict(self.policy, policy.state_dict(), options=StateDictOptions(full_state_dict=True))
            # Weights that image generation never reaches (the text head) have no AdamW state to restore.
            set_optimizer_state_dict(self.policy, self.optimizer, optimizer,
                                     options=StateDictOptions(full_state_dict=True, strict=False))
        with open(Path(path) / STATE_FILE) as f:
            state = json.load(f)
        self.scheduler.load_state_dict(state["scheduler"])
        self.nonfinite_in_row = state["nonfinite_in_row"]

    def _optimizer_state(self) -> dict:
        if self.world_size == 1:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.policy, self.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _accumulate(totals: dict[str, torch.Tensor], stats: Mapping[str, torch.Tensor], weight: float) -> None:
    """Row-weighted means over micro-batches, except `*/min` and `*/max`, which stay extremes."""
    for key, value in stats.items():
        value = value.detach().float()
        if key not in totals:
            totals[key] = value if key.endswith(("/min", "/max")) else value * weight
        elif key.endswith("/min"):
            totals[key] = torch.minimum(totals[key], value)
        elif key.endswith("/max"):
            totals[key] = torch.maximum(totals[key], value)
        else:
            totals[key] = totals[key] + value * weight


def _reduce_op(key: str) -> dist.ReduceOp:
    if key.endswith("/min"):
        return dist.ReduceOp.MIN
    return dist.ReduceOp.MAX if key.endswith("/max") else dist.ReduceOp.SUM
