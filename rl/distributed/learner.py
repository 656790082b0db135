"""The learner: the trainable policy, its frozen reference (the starting policy), the optimizer, one GRPO update
per call. Runs as one Ray actor, or as `learner.world_size` actors that shard the models with FSDP2
(torch.distributed inside the actors: NCCL on GPU, gloo on CPU) and split every mini-batch between them. How the
models are built and sharded is rl/distributed/learner_models.py; how a batch is cut, micro_batches.py.

The update for a batch of N = prompts x G rows, each T image tokens. Rows may arrive in chunks
(`begin`, then `add_rows` per chunk, then `train`): each micro-batch's no-grad passes run as soon as all its
rows are there, so they overlap the rest of the rollout; `update` is the three calls at once.

    for each micro-batch (on every rank at once), once its rows exist:     # before any optimizer step
        ref_logp = reference.token_logprobs(micro)          # [n, T], no grad (KL anchor)
        old_logp = policy.token_logprobs(micro)             # [n, T], no grad; only under old_logprobs=recompute
    for each of `mini_batches` slices of the rows:               # optimizer steps per batch
        for each micro-batch of this rank's share:               # gradient accumulation
            logp = policy.token_logprobs(micro)                  # [n, T]
            loss = grpo_loss(logp, old_logp, ref_logp, adv, mask, tis) * n / rows_per_rank
            loss.backward()                                      # reduce-scattered after the last micro-batch
        clip grads; step unless the loss or the grad norm is non-finite (then skip, count)

old_logp is the sampler's log-probs (`trainer.loss.old_logprobs: sampler`) or the learner's own, recomputed with
the same function and micro-batch shapes as the training pass under the weights that sampled
(`recompute`): the first ratio is then exactly 1 whatever the rollout's dtype, kernels or batch shapes.
`mismatch/kl` (k3 of the learner against the sampler on the sampler's tokens) and `mismatch/abs_max` measure
that train-inference gap; `trainer.loss.tis_cap` weighs each token's policy-gradient term by
min(learner/sampler, cap) (truncated importance sampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from core.components import instantiate
from core.devices import actor_device, resolve_dtype
from rl.distributed import collectives
from rl.distributed.learner_models import build_learner_policy
from rl.distributed.micro_batches import Rows, accumulate, complete_prefix, micro_plan, reduce_stats
from rl.distributed.weight_sync import (
    Bucket,
    CollectiveGroup,
    SyncItem,
    SyncSpec,
    free_port,
    gathered_buckets,
    node_ip,
    plan_buckets,
    spec_of,
)
from rl.grpo import grpo_loss
from rl.model import lora
from rl.model.policy import XOmniPolicy
from rl.model.tokenizer import PromptFormat
from rl.model.weights import local_rows
from rl.optim import build_optimizer, build_scheduler
from rl.schema.learner import LearnerConfig
from rl.schema.trainer import TrainerConfig
from rl.seeding import sample_seed
from rl.state.learner_checkpoint import load_learner, save_learner


@dataclass
class TrainBatch:
    """The rows of one GRPO step. prompts: N strings; tokens: long [N, T] image codes;
    old_logprobs: float32 [N, T], the sampler's (behaviour policy's) log-probs; advantages: float32 [N]."""

    prompts: list[str]
    tokens: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor


class Learner:
    """One rank of the learner. Construct, then call `setup` on every rank (it joins the process group).

    seed: the run seed (LoRA adapters' initialisation and dropout masks derive from it)."""

    def __init__(self, model: Mapping[str, Any], trainer: TrainerConfig, learner: LearnerConfig,
                 grid: tuple[int, int], temperature: float, rank: int = 0, seed: int = 0):
        self.model_cfg, self.trainer, self.learner = model, trainer, learner
        self.grid, self.temperature, self.rank, self.seed = tuple(grid), temperature, rank, seed
        self.world_size = learner.world_size
        self.device = actor_device(learner.num_gpus)
        self.nonfinite_in_row = 0
        # "auto" is resolved by validate_train_config; a learner built without a spec takes the sampler's.
        self.recompute = trainer.loss.old_logprobs == "recompute"
        self._rows: Rows | None = None
        self._sync_group: CollectiveGroup | None = None

    # -- set-up ------------------------------------------------------------------------------------

    def address(self) -> tuple[str, int]:
        """(ip, free port) on this actor's node, for rank 0 to host the process group's store."""
        return node_ip(), free_port()

    def setup(self, master_addr: str | None = None, master_port: int | None = None) -> None:
        if self.world_size > 1:
            collectives.join_default_group(self.device, f"tcp://{master_addr}:{master_port}", self.rank,
                                           self.world_size, self.learner.collective_timeout_s)
        tokenizer = instantiate(self.model_cfg["tokenizer"], "model.tokenizer")
        self.policy = self._build_policy(trainable=True)
        # With LoRA the reference is the frozen base itself (adapters off); otherwise a frozen copy.
        needs_copy = self.trainer.loss.kl_coef > 0 and self.trainer.lora is None
        self.reference = self._build_policy(trainable=False) if needs_copy else None
        self.format = PromptFormat(tokenizer, self.policy.config.vocab_size)
        self.trained = [(name, p) for name, p in self.policy.named_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.trainer.optimizer, [p for _, p in self.trained])
        self.scheduler = build_scheduler(self.trainer.lr_scheduler, self.optimizer)

    def _build_policy(self, trainable: bool) -> XOmniPolicy:
        return build_learner_policy(self.model_cfg, self.trainer, self.learner, self.device, trainable, self.seed)

    # -- the update --------------------------------------------------------------------------------

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One GRPO step on a whole batch: `begin`, `add_rows` and `train` at once."""
        self.begin(batch.prompts)
        self.add_rows(0, batch.tokens, batch.old_logprobs)
        return self.train(batch.advantages)

    def begin(self, prompts: list[str]) -> None:
        """Start a batch of len(prompts) rows (every rank gets the same calls)."""
        self._rows = Rows.empty(prompts, self.grid[0] * self.grid[1])

    def add_rows(self, start: int, tokens: torch.Tensor, sampler_logprobs: torch.Tensor) -> None:
        """Rows start .. start + n of the batch: tokens long [n, T], sampler log-probs float32 [n, T]. Runs the
        no-grad passes of every micro-batch now complete on all ranks (in the same order on each, as FSDP's
        collectives need)."""
        rows = self._rows
        index = slice(start, start + len(tokens))
        rows.tokens[index], rows.sampler[index], rows.present[index] = tokens, sampler_logprobs.float(), True
        plans = [self._micro_plan(len(rows.prompts), rank) for rank in range(self.world_size)]
        ready = min(complete_prefix(plan, rows.present) for plan in plans)
        for k in range(rows.done, ready):
            self._no_grad_passes(k, plans[self.rank][k])
        rows.done = max(rows.done, ready)

    def _micro_plan(self, n: int, rank: int) -> list[range]:
        """Rank `rank`'s micro-batches of an n-row batch, in training order."""
        b = self.trainer.batching
        return micro_plan(n, rank, self.world_size, b.mini_batches, b.micro_batch_size)

    def _no_grad_passes(self, k: int, micro: range) -> None:
        """Micro-batch k's reference log-probs and, under recompute, the policy's own: the same function and
        shapes as its training pass, before any optimizer step, so the first ratio is exactly 1."""
        sequences = self._sequences(self._rows.prompts, self._rows.tokens, micro)
        if self.trainer.loss.kl_coef > 0:
            self._rows.ref[k] = self._reference_logprobs(sequences)
        if self.recompute:
            # LoRA dropout draws here too: seeded per micro-batch so a resumed run draws the same masks.
            torch.manual_seed(sample_seed(self.seed, self.scheduler.last_epoch, self.rank, k, "old_logprobs"))
            with torch.no_grad():
                self._rows.old[k] = self._token_logprobs(self.policy, sequences, with_entropy=True).logprobs

    def train(self, advantages: torch.Tensor) -> dict[str, float]:
        """The optimizer steps on the batch that `begin`/`add_rows` filled (every row must be there).
        advantages: float32 [N]. Returns averaged stats plus `actor/skipped_steps` (this step),
        `actor/nonfinite_in_row` (consecutive skipped optimizer steps), `actor/grad_norm` (before clipping),
        `actor/lr` and `mismatch/kl`, `mismatch/abs_max` (see the module docstring)."""
        mini_batches, rows = self.trainer.batching.mini_batches, self._rows
        if not bool(rows.present.all()):
            raise ValueError(f"train: {int((~rows.present).sum())} of {len(rows.prompts)} rows were never added")
        # LoRA's dropout draws from the global RNG: seeded per update (and rank), a resumed run draws the same.
        torch.manual_seed(sample_seed(self.seed, self.scheduler.last_epoch, self.rank, 0, "learner"))
        plan = self._micro_plan(len(rows.prompts), self.rank)
        per_mini = len(plan) // mini_batches
        means: dict[str, float] = {}
        skipped, norms, first_pass = 0, [], {}
        for m in range(mini_batches):
            micros = list(range(m * per_mini, (m + 1) * per_mini))
            # Before the first optimizer step the training pass runs under the sampling weights: it measures
            # the mismatch when nothing was recomputed.
            stats, grad_norm = self._mini_batch(advantages, plan, micros, first_pass if m == 0 else None)
            norms.append(grad_norm)
            if math.isfinite(grad_norm) and math.isfinite(stats["loss/total"]):
                self.optimizer.step()
                self.nonfinite_in_row = 0
            else:  # weights stay as they were; the driver stops the run after too many in a row
                skipped += 1
                self.nonfinite_in_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            for key, value in stats.items():
                means[key] = means.get(key, 0.0) + value / mini_batches
        self.scheduler.step()
        means.update(self._mismatch(plan, rows.old if self.recompute else first_pass))
        means.update({"actor/skipped_steps": float(skipped), "actor/nonfinite_in_row": float(self.nonfinite_in_row),
                      "actor/grad_norm": sum(norms) / len(norms), "actor/lr": self.scheduler.get_last_lr()[0]})
        self._rows = None
        return means

    def _mini_batch(self, advantages: torch.Tensor, plan: list[range], micros: list[int],
                    first_pass: dict[int, torch.Tensor] | None) -> tuple[dict[str, float], float]:
        """Forward/backward over micro-batches `micros` of this rank's `plan`; returns stats and the grad norm.
        first_pass: filled with each micro-batch's detached log-probs when given."""
        loss_cfg, rows = self.trainer.loss, self._rows
        totals: dict[str, torch.Tensor] = {}
        count = sum(len(plan[k]) for k in micros)
        for k in micros:
            micro = plan[k]
            self._gradient_sync(last=k == micros[-1])
            sequences = self._sequences(rows.prompts, rows.tokens, micro)
            out = self._token_logprobs(self.policy, sequences, with_entropy=True)
            sampler = rows.sampler[micro.start:micro.stop].to(self.device)
            old = rows.old[k] if self.recompute else sampler
            cap = loss_cfg.tis_cap
            weights = None if cap is None else torch.exp(old - sampler).clamp(max=cap)
            loss, stats = grpo_loss(
                out.logprobs, old, rows.ref.get(k), advantages[micro.start:micro.stop].to(self.device),
                torch.ones_like(out.logprobs), clip_eps=loss_cfg.clip_eps, kl_coef=loss_cfg.kl_coef,
                aggregation=loss_cfg.aggregation, entropy=out.entropy, clip_eps_high=loss_cfg.clip_eps_high,
                is_weights=weights)
            if first_pass is not None:
                first_pass[k] = out.logprobs.detach()
            weight = len(micro) / count  # images have T tokens each, so both aggregations weigh by rows
            (loss * weight).backward()
            stats["loss/total"] = loss.detach()
            accumulate(totals, stats, weight)
        grad_norm = self._clip_grad_norm()
        return reduce_stats(totals, self.world_size), grad_norm

    def _mismatch(self, plan: list[range], learner: Mapping[int, torch.Tensor]) -> dict[str, float]:
        """k3 estimate of KL(sampler || learner) on the sampler's tokens, and the largest |log-prob gap|, over
        the micro-batches in `learner` (micro-batch index -> the learner's log-probs [n, T]) on every rank."""
        # On the learner's device: the stats are all-reduced, and an NCCL group takes no CPU tensor.
        sampler = self._rows.sampler
        gaps = torch.cat([(learner[k].float() - sampler[plan[k].start:plan[k].stop].to(self.device)).flatten()
                          for k in sorted(learner)])
        k3 = torch.expm1(gaps) - gaps  # r - 1 - log r with r = learner / sampler
        return reduce_stats({"mismatch/kl": k3.mean(), "mismatch/abs_max": gaps.abs().max()}, self.world_size)

    def _gradient_sync(self, last: bool) -> None:
        """With grad_sync "last_micro_batch", FSDP2 keeps the gradients of earlier micro-batches unsharded and
        reduce-scatters once, after the last backward of the optimizer step."""
        if self.world_size > 1 and self.learner.grad_sync == "last_micro_batch":
            self.policy.set_requires_gradient_sync(last)
            self.policy.set_is_last_backward(last)

    def _reference_logprobs(self, sequences: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """float32 [n, T] under the frozen reference: the starting policy (with LoRA, the base, adapters off)."""
        with torch.no_grad():
            if self.reference is not None:
                return self._token_logprobs(self.reference, sequences, with_entropy=False).logprobs
            with lora.adapters_disabled(self.policy):
                return self._token_logprobs(self.policy, sequences, with_entropy=False).logprobs

    def _clip_grad_norm(self) -> float:
        max_norm = self.trainer.grad_clip if self.trainer.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.trained], max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _sequences(self, prompts: list[str], tokens: torch.Tensor, rows: range) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), long [n, P + T]: the rows' prompts left-padded, then their image tokens
        (tokens: long [N, T], the batch's)."""
        encoded = self.format.encode(prompts[rows.start:rows.stop], self.grid).to(self.device)
        return encoded.with_image_tokens(tokens[rows.start:rows.stop])

    def _token_logprobs(self, model: XOmniPolicy, sequences: tuple[torch.Tensor, torch.Tensor], with_entropy: bool):
        input_ids, attention_mask = sequences
        num_image_tokens = self.grid[0] * self.grid[1]
        # Unsharded mixed precision: autocast (FSDP applies its MixedPrecisionPolicy itself).
        with mixed_precision(self.device, self.learner.mixed_precision and self.world_size == 1):
            return model.token_logprobs(input_ids, attention_mask, num_image_tokens,
                                        temperature=self.temperature, with_entropy=with_entropy)

    # -- weights out ---------------------------------------------------------------------------------

    def sync_spec(self, dtype: str) -> SyncSpec:
        """Plan the weight sync (trained tensors in the rollout's `dtype`, bucketed); every rank must call it."""
        self._sync_dtype = resolve_dtype(dtype)
        self._sync_buckets = plan_buckets(self._sync_items(), self._sync_dtype)
        return spec_of(self._sync_buckets, self._sync_dtype)

    def _sync_items(self) -> list[SyncItem]:
        """What the rollout replicas need after an update: the trained parameters, or with LoRA the adapted
        layers' merged weights (the rollout policy has no adapters)."""
        if self.trainer.lora is not None:
            return [SyncItem(name, layer.base_layer.weight.shape, partial(lora.merged_rows, layer))
                    for name, layer in lora.lora_layers(self.policy)]
        return self._trained_items()

    def _trained_items(self) -> list[SyncItem]:
        return [SyncItem(name, p.shape, partial(_local_data, p)) for name, p in self.trained]

    def weight_buckets(self) -> Iterator[Bucket]:
        """The planned sync as buckets of (name, full tensor in the rollout dtype) on this rank's device; every
        rank must iterate (each bucket is an all-gather of the shards). A colocated rollout replica consumes them
        with `weight_sync.load_bucket` (an in-process copy); the transports below broadcast or store them."""
        return self._gathered(self._sync_buckets, self._sync_dtype)

    def _gathered(self, buckets: list[list[SyncItem]], dtype: torch.dtype) -> Iterator[Bucket]:
        return gathered_buckets(buckets, dtype, dist.group.WORLD if self.world_size > 1 else None)

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str, timeout_s: float) -> None:
        self._sync_group = CollectiveGroup(host, port, 0, world_size, backend, timeout_s)

    @torch.no_grad()
    def broadcast_weights(self) -> int:
        """Collective sync: every rank gathers bucket by bucket, rank 0 broadcasts them to the rollout actors.
        Returns the bytes broadcast (rank 0; 0 elsewhere)."""
        buckets = self.weight_buckets()
        if self.rank == 0:
            return self._sync_group.send_buckets(buckets)
        for _ in buckets:
            pass
        return 0

    @torch.no_grad()
    def publish_weights(self) -> tuple[list, int]:
        """Object-store sync: rank 0 puts each bucket (on the CPU) in Ray's object store. Returns (refs, bytes)."""
        import ray

        refs, sent = [], 0
        for bucket in self.weight_buckets():
            if self.rank == 0:
                refs.append(ray.put([(name, tensor.cpu()) for name, tensor in bucket]))
                sent += sum(tensor.numel() * tensor.element_size() for _, tensor in bucket)
        return refs, sent

    @torch.no_grad()
    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The full trained parameters (with LoRA: the adapters) in the learner's dtype on the CPU (rank 0; {}
        elsewhere), gathered like a sync: for inspection and tests, not on the training path."""
        dtype = resolve_dtype(self.learner.dtype)
        buckets = self._gathered(plan_buckets(self._trained_items(), dtype), dtype)
        out = {name: tensor.cpu() for bucket in buckets for name, tensor in bucket}
        return out if self.rank == 0 else {}

    # -- checkpoints -----------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """This rank's shards of the trained parameters and their optimizer state into `path`/learner (DCP),
        and the schedule (rank 0); see rl/state/learner_checkpoint.py."""
        trained = {"lora": asdict(self.trainer.lora) if self.trainer.lora else None,
                   "freeze_text_embedding": self.trainer.freeze_text_embedding}
        save_learner(path, self.policy, self.optimizer, {"scheduler": self.scheduler.state_dict(),
                                                         "nonfinite_in_row": self.nonfinite_in_row,
                                                         "trained": trained})

    def load(self, path: str) -> None:
        """Restore what `save` wrote, from any learner world size."""
        state = load_learner(path, self.policy, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.nonfinite_in_row = state["nonfinite_in_row"]

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def mixed_precision(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast without its weight-cast cache: the cache keeps a bf16 copy of every fp32 weight it cast until
    the forward ends, the whole model's worth even under gradient checkpointing, where the memory plan counts one
    layer's (rl/distributed/memory.py). Uncached, a layer's copies go when its checkpointed forward ends, and the
    recompute casts again (one more read of the fp32 weights)."""
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled, cache_enabled=False)


def _local_data(param: torch.Tensor) -> torch.Tensor:
    return local_rows(param)[0].detach()
