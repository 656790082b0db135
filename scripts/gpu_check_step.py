"""Stage `train_step` of scripts/gpu_check.py: the colocated worker's real phases in this process, no Ray.

One `ColocatedWorker` (rl/distributed/colocated.py) on one device: fp32 master weights, bf16 compute (autocast: at
world size 1 the learner does not shard), bf16 rollout and reference, gradient checkpointing, old log-probs
recomputed; a policy with X-Omni-7B's layer widths and 4 layers (~1.05B parameters; --smoke: the tiny one); the
demo's PatchDecoder (the FLUX decoder is the `decoder` stage's). Phases, as the driver runs them: weight sync ->
sample -> score (a synthetic reward: mean brightness) -> update -> weight sync -> sample -> DCP save -> load.

Reported per phase: max_memory_allocated / max_memory_reserved next to `rl.plan`'s figure for the same spec
(ratio: measured / planned), the pinned host bytes next to the plan's, the first update's ratio mean/min/max
(exactly 1 under recompute) and, on CUDA, the host syncs per sampled token (torch.cuda.set_sync_debug_mode).
Not yet here: NCCL at world size 1 with FSDP2 forced on (the learner shards only above world size 1).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
# X-Omni-7B's widths (Qwen2.5-7B), 2 + 1 + 1 layers and its 16,384 image codes: ~1.05B parameters.
WIDE = ["model.policy.hidden_size=3584", "model.policy.intermediate_size=18944", "model.policy.num_hidden_layers=4",
        "model.policy.num_mm_adap_layers=1", "model.policy.num_mm_head_layers=1",
        "model.policy.num_attention_heads=28", "model.policy.num_key_value_heads=4",
        "model.policy.image_vocab_size=16384", "model.policy.mm_vocab_size=16384", "model.decoder.codebook_size=16384"]
RUN = ["placement.mode=colocated", "learner.num_gpus=1", "learner.mixed_precision=true", "learner.dtype=float32",
       "learner.reference_dtype=bfloat16", "rollout.dtype=bfloat16", "trainer.gradient_checkpointing=true",
       "trainer.loss.old_logprobs=recompute", "trainer.batching.mini_batches=1", "trainer.freeze_text_embedding=true",
       "logging.tensorboard=false"]
SHAPES = {False: ["rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.batch_size=32", "rollout.grid=[24,24]",
                  "trainer.batching.micro_batch_size=4"],
          True: ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.batch_size=4", "rollout.grid=[2,2]",
                 "trainer.batching.micro_batch_size=2"]}


def spec_for(smoke: bool):
    """configs/tiny.yaml (its tokenizer, prompts and PatchDecoder) with the check's policy, precision and shapes."""
    from core.config import load_config
    from rl.train_config import validate_train_config

    overrides = [*([] if smoke else WIDE), *RUN, *SHAPES[smoke]]
    return validate_train_config(load_config(REPO / "configs" / "tiny.yaml", overrides), files=False)


@contextlib.contextmanager
def measured(phases: dict, name: str, device: torch.device) -> Iterator[None]:
    """phases[name] = wall seconds and, on CUDA, the peak allocated / reserved GiB of the block."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    yield
    record = {"s": round(time.perf_counter() - began, 3)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        record |= {"allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
                   "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3)}
    phases[name] = record


@contextlib.contextmanager
def counted_syncs(device: torch.device) -> Iterator[list]:
    """The host syncs CUDA reports inside the block (warnings of set_sync_debug_mode), in the list it yields."""
    caught: list = []
    if device.type != "cuda":
        yield caught
        return
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")
    caught += [w for w in seen if "synchroniz" in str(w.message)]


def planned_phases(spec, device: torch.device) -> tuple[dict[str, float], float]:
    """rl.plan's GiB per phase of the one colocated worker's GPU, and its pinned host GiB."""
    from rl.distributed.memory_plan import make_plan, model_sizes
    from rl.distributed.placement import NodeInfo

    memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 80 * GIB
    plan = make_plan(spec, [NodeInfo(0, 1, None, memory, None, gpu_devices=int(device.type == "cuda"))],
                     model_sizes(spec))
    gpu = plan.devices[0]
    return {name: sum(parts.values()) / GIB for name, parts in gpu.phases.items()}, gpu.pinned_host_bytes / GIB


def run(smoke: bool) -> dict:
    from omegaconf import OmegaConf

    from rl.distributed.colocated import ColocatedWorker
    from rl.distributed.learner import TrainBatch
    from rl.grpo import group_advantages

    spec = spec_for(smoke)
    device = torch.device("cpu" if smoke else "cuda")
    planned, planned_pinned = planned_phases(spec, device)
    r = spec.rollout
    worker = ColocatedWorker(OmegaConf.to_container(spec.cfg.model, resolve=True), spec.trainer, spec.learner, r,
                             r.sampling.temperature, rank=0, seed=0, offload_decoder=False)
    worker.setup()
    worker.sync_spec(r.dtype)
    prompts = [f'Write "{w}".' for w in ("KEY", "FAY", "SUN", "MOP")[:r.prompts_per_step] for _ in range(r.group_size)]
    seeds = list(range(len(prompts)))
    phases: dict[str, dict] = {}
    with measured(phases, "weight sync", device):
        worker.sync_replica()
    with measured(phases, "rolling out", device), counted_syncs(device) as syncs:
        result, images = worker.generate(prompts, seeds, seeds)
    scores = torch.tensor([float(image.mean()) / 255 for image in images]).view(r.prompts_per_step, r.group_size)
    batch = TrainBatch(prompts, result.tokens, result.logprobs, group_advantages(scores).flatten())
    with measured(phases, "update", device):
        stats = worker.update(batch)
    with measured(phases, "weight sync again", device):
        worker.sync_replica()
    with measured(phases, "rolling out again", device):
        worker.generate(prompts, seeds, seeds)
    with tempfile.TemporaryDirectory() as folder:
        with measured(phases, "save", device):
            worker.save(folder)
        with measured(phases, "load", device):
            worker.load(folder)
    # The plan's phases for each measured one: the update spans forward/backward and the optimizer step.
    against = {"weight sync": "weight sync", "rolling out": "rolling out", "update": "optimizer step",
               "weight sync again": "weight sync", "rolling out again": "rolling out", "save": "optimizer step",
               "load": "optimizer step"}
    for name, record in phases.items():
        record["planned_gib"] = round(planned[against[name]], 3)
        if "allocated_gib" in record:
            record["ratio_to_plan"] = round(record["allocated_gib"] / record["planned_gib"], 3)
    tokens = result.tokens.numel()
    return {"policy_parameters": sum(p.numel() for p in worker.policy.parameters()), "rows": len(prompts),
            "image_tokens_per_row": result.tokens.shape[1], "phases": phases,
            "pinned_host_gib": round(worker.host_bytes / GIB, 3), "planned_pinned_host_gib": round(planned_pinned, 3),
            "first_update_ratio": {k: stats[f"ratio/{k}"] for k in ("mean", "min", "max")},
            "host_syncs_per_token": round(len(syncs) / tokens, 4) if device.type == "cuda" else None}
