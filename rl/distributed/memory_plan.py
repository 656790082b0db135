"""The memory plan of a run: what every GPU and every host holds at its peak, given the config, the model
sizes and the nodes. `python -m rl.plan` prints it; `rl.train` checks it before any actor starts.

Per GPU the parts of every actor placed on it add up (each actor is a process that keeps its memory). A learner
rank peaks in one of three phases (forward/backward, optimizer step, weight sync). A colocated worker
(rl/distributed/colocated.py) time-shares its GPU, so its peak is the largest of four:
  rolling out       learner parameters (resharded) and reference stay; gradients are freed and AdamW state is
                    on the host; the rollout replica samples and the decoder decodes.
  forward/backward  the learner's activations, gradients and FSDP buffers; the replica's synced weights, KV
  optimizer step    cache and decoder activations are released (its text head and embedding stay); the decoder
                    and text encoders move to the host (placement.offload_decoder, or the plan's choice when
                    they would not fit).
  weight sync       AdamW state back on the host; the replica's weights refilled bucket by bucket.
Per host: the driver, one Ray worker process per actor, what each actor holds there (while loading today's
loaders read a full copy of a model in its load dtype before moving it to the GPU; a CPU actor's parts; a
colocated worker's offloaded state), and a step's rows (tokens, images, scores: rl/distributed/memory.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rewards.combine import EnsembleConfig
from rl.distributed import memory
from rl.distributed.host_staging import packed_host_bytes
from rl.distributed.memory import DTYPE_BYTES, GIB, DecoderShape, LearnerSetup, RewardShape, RolloutSetup, StepRows
from rl.distributed.model_sizes import LoraSize, PolicySize, decoder_size, lora_size, policy_size, reward_shape
from rl.distributed.placement import (
    NodeInfo,
    Placement,
    Unit,
    assign,
    collective_sync,
    run_units,
)
from rl.evaluation.monitors import THUMBNAIL
from rl.optim import state_floats_per_parameter
from rl.train_config import TrainSpec

LEARNING = ("forward/backward", "optimizer step", "weight sync")  # phases a colocated worker's decoder may skip
PART_ORDER = ("policy parameters", "policy gradients", "optimizer state", "reference", "FSDP buffers",
              "autocast weight copies", "activations", "optimizer step", "weight-sync buckets", "rollout weights",
              "KV cache",
              "sampler activations", "VQ projector", "decoder transformer", "VAE", "CLIP text encoder",
              "T5 text encoder", "decoder activations")
PartsOf = Callable[[Unit], dict[str, dict[str, int]]]  # a unit's parts per phase
DECODER_PARTS = ("decoder transformer", "VAE", "CLIP text encoder", "T5 text encoder", "VQ projector")


@dataclass(frozen=True)
class ModelSizes:
    """Everything the plan needs to know of the models, read once (building on the meta device takes seconds)."""

    policy: PolicySize
    decoder: DecoderShape
    decoder_source: str
    rewards: Mapping[str, tuple[RewardShape, str]]
    lora: LoraSize | None


def model_sizes(spec: TrainSpec) -> ModelSizes:
    cfg = spec.cfg
    policy = policy_size(cfg.model.policy)
    decoder, source = decoder_size(cfg.model.decoder)
    lora = spec.trainer.lora
    return ModelSizes(policy, decoder, source, {name: reward_shape(cfg.rewards[name]) for name in cfg.rewards},
                      lora_size(policy.config, lora) if lora else None)


@dataclass
class Device:
    """One GPU: the units on it, per unit its parts at the unit's peak (colocated workers: per phase), the total
    and the GPU's memory (None: unknown); pinned_host_bytes: the host memory its colocated worker pins to stage
    what it offloads (`staged_sizes` packed as rl/distributed/host_staging.py allocates it)."""

    node: int
    gpu: int
    units: list[Unit]
    phases: dict[str, dict[str, int]]
    parts: dict[str, int]
    bytes: int
    capacity: int | None
    offload_decoder: bool = False
    pinned_host_bytes: int = 0


@dataclass
class Host:
    node: int
    parts: dict[str, int]
    peak_bytes: int
    capacity: int | None


@dataclass
class Plan:
    spec: TrainSpec
    sizes: ModelSizes
    nodes: list[NodeInfo]
    placement: Placement
    devices: list[Device] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # What makes it fit: plan_advice.Suggestion objects (that module plans with this one, so it is not imported).
    advice: list[Any] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def offload_decoder(self) -> bool:
        """Colocated workers move the decoder and text encoders to the host while learning."""
        return any(d.offload_decoder for d in self.devices)


def learner_setup(spec: TrainSpec, sizes: ModelSizes, checkpointing: bool | None = None) -> LearnerSetup:
    """One learner rank of `spec`, counted as rl/distributed/learner.py builds it."""
    t, learner, r = spec.trainer, spec.learner, spec.rollout
    shape = sizes.policy.shape
    world = learner.world_size
    rows_per_rank = r.prompts_per_step * r.group_size // t.batching.mini_batches // world
    common = {"world_size": world, "compute_bytes": 2 if learner.mixed_precision else DTYPE_BYTES[learner.dtype],
              "micro_batch": t.batching.micro_batch_size, "prompt_tokens": spec.placement.prompt_tokens,
              "image_tokens": r.grid[0] * r.grid[1],
              "checkpointing": t.gradient_checkpointing if checkpointing is None else checkpointing,
              "accumulates": world > 1 and learner.grad_sync == "last_micro_batch" and
              rows_per_rank > t.batching.micro_batch_size,
              "collective": spec.placement.mode == "split" and collective_sync(spec),
              "optimizer_states": _optimizer_states(t.optimizer)}
    rb = DTYPE_BYTES[r.dtype]
    if sizes.lora is not None:  # adapters in fp32 (peft's default), the base frozen in the reference dtype
        synced = sizes.lora.adapted * rb
        return LearnerSetup(param_bytes=DTYPE_BYTES[learner.reference_dtype], trained=sizes.lora.parameters,
                            trained_bytes=4, frozen_base=True, lora_inputs=sizes.lora.dropout_inputs,
                            sync_bytes=synced, bucket_bytes=memory.bucket_bytes(synced, shape.largest * rb),
                            **common)
    frozen = shape.text_head + (shape.text_embedding if t.freeze_text_embedding else 0)
    trained = shape.parameters - frozen
    largest = shape.largest if t.freeze_text_embedding else max(shape.largest, shape.text_embedding)
    return LearnerSetup(param_bytes=DTYPE_BYTES[learner.dtype], trained=trained,
                        trained_bytes=DTYPE_BYTES[learner.dtype],
                        reference_bytes=DTYPE_BYTES[learner.reference_dtype] if t.loss.kl_coef > 0 else 0,
                        sync_bytes=trained * rb, bucket_bytes=memory.bucket_bytes(trained * rb, largest * rb),
                        **common)


_OPTIMIZER_STATES: dict[str, float] = {}


def _optimizer_states(optimizer: Mapping[str, Any]) -> float:
    """state_floats_per_parameter, measured once per optimizer config (a plan asks per unit, advice per plan)."""
    key = repr(sorted(optimizer.items()))
    if key not in _OPTIMIZER_STATES:
        _OPTIMIZER_STATES[key] = state_floats_per_parameter(optimizer)
    return _OPTIMIZER_STATES[key]


def rollout_setup(spec: TrainSpec) -> RolloutSetup:
    r = spec.rollout
    rows = min(r.batch_size, math.ceil(r.prompts_per_step * r.group_size / r.num_actors))
    return RolloutSetup(rows, spec.placement.prompt_tokens, tuple(r.grid), DTYPE_BYTES[r.dtype],
                        r.sampling.cfg_scale > 1, math.ceil(rows / r.group_size) + 1)


def step_rows(spec: TrainSpec) -> StepRows:
    """A step's rows of `spec`, as rl/distributed/memory.py counts them on the hosts."""
    r = spec.rollout
    h, w = r.grid
    return StepRows(r.prompts_per_step * r.group_size, r.prompts_per_step, spec.placement.prompt_tokens, h * w,
                    (16 * h) * (16 * w) * 3, THUMBNAIL * THUMBNAIL * 3, len(spec.cfg.rewards),
                    1 + spec.trainer.pipeline.async_steps)


def make_plan(spec: TrainSpec, nodes: list[NodeInfo], sizes: ModelSizes) -> Plan:
    """Place the run's actors on `nodes` and add up every GPU's and host's memory; problems say what does not
    fit, with the numbers."""
    placement = assign(run_units(spec, list(spec.cfg.rewards)), nodes, spec.placement.separate_nodes)
    plan = Plan(spec, sizes, nodes, placement, problems=list(placement.problems))
    memo: dict[tuple[str, str | None], dict[str, dict[str, int]]] = {}

    def parts_of(unit: Unit) -> dict[str, dict[str, int]]:
        """_unit_parts, once per kind of unit (every learner rank of a plan holds the same)."""
        key = (unit.kind, unit.reward)
        if key not in memo:
            memo[key] = _unit_parts(spec, sizes, unit)
        return memo[key]

    for node in nodes:
        for gpu in range(node.gpus):
            units = placement.on_gpu(node.index, gpu)
            if units:
                plan.devices.append(_device(spec, sizes, node, gpu, units, parts_of))
        plan.hosts.append(_host(spec, sizes, node, placement, plan.devices, parts_of))
    plan.problems += _over(plan)
    return plan


def _unit_parts(spec: TrainSpec, sizes: ModelSizes, unit: Unit) -> dict[str, dict[str, int]]:
    """A unit's parts per phase (one phase, "running", for anything but learner ranks and colocated workers)."""
    shape = sizes.policy.shape
    if unit.kind == "reward":
        reward, _ = sizes.rewards[unit.reward]
        return {"running": {unit.name: memory.reward_bytes(reward)} if reward.parameters else {}}
    if unit.kind == "rollout":
        return {"running": memory.rollout_parts(shape, sizes.decoder, rollout_setup(spec))}
    setup = learner_setup(spec, sizes)
    learning = memory.learner_phases(shape, setup)
    if unit.kind == "learner":
        return learning
    # A colocated worker (rl/distributed/colocated.py): see the module docstring.
    rollout = memory.rollout_parts(shape, sizes.decoder, rollout_setup(spec))
    decoder = {k: v for k, v in rollout.items() if k in DECODER_PARTS}
    kept = {"rollout weights": rollout["rollout weights"] - setup.sync_bytes}  # not synced, so never released
    parked = {k: v for k, v in learning["forward/backward"].items() if k in ("policy parameters", "reference")}
    sync = parked | {"weight-sync buckets": learning["weight sync"]["weight-sync buckets"],
                     "rollout weights": rollout["rollout weights"]}
    return {"rolling out": parked | rollout, "forward/backward": learning["forward/backward"] | kept | decoder,
            "optimizer step": learning["optimizer step"] | kept | decoder, "weight sync": sync | decoder}


def _device(spec: TrainSpec, sizes: ModelSizes, node: NodeInfo, gpu: int, units: list[Unit], parts_of: PartsOf
            ) -> Device:
    """Every phase of the GPU: the parts of all its units (a single-phase unit's parts count in every phase)."""
    per_unit = [parts_of(unit) for unit in units]
    names = list(dict.fromkeys(n for phases in per_unit if len(phases) > 1 for n in phases)) or ["running"]
    phases = {name: _ordered(_merge([p.get(name) or _peak(p) for p in per_unit])) for name in names}
    offload = any(u.kind == "worker" for u in units) and spec.placement.offload_decoder
    if offload is None:  # the plan decides: only when the learning phases would not fit with them
        offload = node.gpu_memory is not None and \
            max(_with_margin(phases[n], len(units)) for n in LEARNING) > node.gpu_memory
    if offload:  # the decoder and text encoders wait on the host while the learner works
        phases = {n: {k: v for k, v in parts.items() if n not in LEARNING or k not in DECODER_PARTS}
                  for n, parts in phases.items()}
    parts = dict(_peak(phases))
    parts["margin"] = memory.margin_bytes(parts, processes=len(units))
    pinned = sum(staged_host_bytes(spec, sizes, offload) for u in units if u.kind == "worker")
    return Device(node.index, gpu, units, phases, parts, sum(parts.values()), node.gpu_memory, offload, pinned)


def _merge(parts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for p in parts:
        for name, value in p.items():
            merged[name] = merged.get(name, 0) + value
    return merged


def _ordered(parts: dict[str, int]) -> dict[str, int]:
    """Parts in PART_ORDER (learner, rollout, decoder), then the rest (rewards) as they came."""
    rank = {name: i for i, name in enumerate(PART_ORDER)}
    return dict(sorted(parts.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _peak(phases: Mapping[str, dict[str, int]]) -> dict[str, int]:
    return max(phases.values(), key=lambda p: sum(p.values()))


def _with_margin(parts: dict[str, int], processes: int) -> int:
    return sum(parts.values()) + memory.margin_bytes(parts, processes)


def _host(spec: TrainSpec, sizes: ModelSizes, node: NodeInfo, placement: Placement, devices: list[Device],
          parts_of: PartsOf) -> Host:
    """The node's host memory at its peak: every actor loading (or, on the CPU, running) at once."""
    units = placement.on_node(node.index)
    parts = {"driver": memory.DRIVER_HOST_BYTES} if node.index == 0 else {}
    if units:
        parts["Ray worker processes"] = len(units) * memory.WORKER_HOST_BYTES
    offloaded = {(d.node, u) for d in devices if d.offload_decoder for u in d.units}
    for unit in units:
        held = _unit_host_bytes(spec, sizes, unit, placement.slots[unit].gpu is None, (node.index, unit) in offloaded,
                                parts_of)
        if held:
            key = f"{unit.kind} actors"
            parts[key] = parts.get(key, 0) + held
    rows = step_rows(spec)
    held_rows = sum(_unit_step_bytes(spec, rows, unit) for unit in units)
    if node.index == 0:
        held_rows += memory.driver_step_bytes(rows)
    if held_rows:
        parts["step rows"] = held_rows
    return Host(node.index, parts, sum(parts.values()), node.host_memory)


def _unit_step_bytes(spec: TrainSpec, rows: StepRows, unit: Unit) -> int:
    """What one actor holds of a step's rows on its host."""
    learner = memory.learner_step_bytes(rows, rows.samples // spec.learner.world_size)
    rollout = memory.rollout_step_bytes(rows, math.ceil(rows.samples / spec.rollout.num_actors))
    if unit.kind == "reward":
        return memory.reward_step_bytes(rows, spec.cfg.ensemble.get("batch_size", EnsembleConfig.batch_size))
    return {"learner": learner, "rollout": rollout, "worker": learner + rollout}[unit.kind]


def _unit_host_bytes(spec: TrainSpec, sizes: ModelSizes, unit: Unit, on_cpu: bool, offload_decoder: bool,
                     parts_of: PartsOf) -> int:
    """What one actor holds on the host at its peak: everything when it runs on the CPU, else the larger of the
    model copy it loads and (colocated) the state it offloads."""
    phases = parts_of(unit)
    if on_cpu:
        return max(sum(p.values()) for p in phases.values())
    policy = sizes.policy.shape.parameters * DTYPE_BYTES.get(sizes.policy.load_dtype, 4)
    decoder = sum(count for count in sizes.decoder.parts.values()) * sizes.decoder.bytes
    loading = {"learner": policy, "rollout": max(policy, decoder), "worker": max(policy, decoder)}.get(unit.kind)
    if loading is None:  # a reward: its weights file is read in fp32
        loading = sizes.rewards[unit.reward][0].parameters * 4
    steady = staged_host_bytes(spec, sizes, offload_decoder) if unit.kind == "worker" else 0
    return max(loading, steady)


def staged_sizes(spec: TrainSpec, sizes: ModelSizes, offload_decoder: bool) -> list[list[int]]:
    """What a colocated worker stages on the host, per Offload that keeps its contents (each packs its own chunks),
    one size per part (the plan knows no tensors): the AdamW state while rolling out (gradients are freed) and,
    with offload_decoder, each decoder part while learning."""
    optimizer = memory.learner_phases(sizes.policy.shape, learner_setup(spec, sizes))["optimizer step"]
    decoder = [count * sizes.decoder.bytes for count in sizes.decoder.parts.values() if count]
    return [[optimizer["optimizer state"]], decoder if offload_decoder else []]


def staged_host_bytes(spec: TrainSpec, sizes: ModelSizes, offload_decoder: bool) -> int:
    """The host memory a colocated worker pins for `staged_sizes`, packed as host_staging allocates it. Packed per
    tensor, the real chunks can hold ALIGN bytes more per tensor (under a MiB over X-Omni's 2,712), and FSDP's
    first rank holds a little more AdamW state than the average the plan counts."""
    return sum(packed_host_bytes(part) for part in staged_sizes(spec, sizes, offload_decoder))


def _over(plan: Plan) -> list[str]:
    """One problem per group of GPUs (and per host) whose plan exceeds its memory."""
    problems, seen = [], set()
    for d in plan.devices:
        if d.capacity is None or d.bytes <= d.capacity:
            continue
        gpus = [e.gpu for e in plan.devices if e.node == d.node and e.bytes == d.bytes]
        if (d.node, tuple(gpus)) in seen:
            continue
        seen.add((d.node, tuple(gpus)))
        largest = sorted(d.parts.items(), key=lambda kv: -kv[1])[:3]
        problems.append(f"node {d.node} {_gpus(gpus)}: {d.bytes / GIB:.1f} GiB planned, {d.capacity / GIB:.1f} GiB "
                        f"per GPU (largest: " + ", ".join(f"{k} {v / GIB:.1f}" for k, v in largest) + ")")
    for h in plan.hosts:
        if h.capacity is not None and h.peak_bytes > h.capacity:
            problems.append(_host_problem(plan.spec, h))
    return problems


def _host_problem(spec: TrainSpec, h: Host) -> str:
    """A host over its memory, with its largest parts; the step's size keys when its rows make the difference."""
    largest = sorted(h.parts.items(), key=lambda kv: -kv[1])[:3]
    problem = (f"node {h.node} host: {h.peak_bytes / GIB:.1f} GiB planned, {h.capacity / GIB:.1f} GiB of host memory "
               "(largest: " + ", ".join(f"{k} {v / GIB:.1f}" for k, v in largest) + ")")
    rows = h.parts.get("step rows", 0)
    if rows and (h.peak_bytes - rows <= h.capacity or rows == largest[0][1]):
        r = spec.rollout
        problem += (f"; the {r.prompts_per_step * r.group_size} samples of a step (rollout.prompts_per_step="
                    f"{r.prompts_per_step} x rollout.group_size={r.group_size}) hold {rows / GIB:.1f} GiB of tokens, "
                    "images and scores on this host: lower rollout.prompts_per_step or rollout.group_size")
    return problem


def _gpus(gpus: list[int]) -> str:
    if len(gpus) == 1:
        return f"GPU {gpus[0]}"
    if gpus == list(range(gpus[0], gpus[-1] + 1)):
        return f"GPUs {gpus[0]}-{gpus[-1]}"
    return "GPUs " + ",".join(map(str, gpus))
