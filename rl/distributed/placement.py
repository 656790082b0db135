"""Where every actor of a run goes: which node and which GPU, decided once from the config and the nodes, used
by the memory plan (`python -m rl.plan`) and realised by the driver as Ray placement groups pinned to nodes.

Modes (`placement.mode`):
  split      learner ranks and rollout replicas on GPUs of their own; `placement.separate_nodes` puts them on
             disjoint nodes (learner first), e.g. rollout replicas on one node and learner ranks on another.
  colocated  one worker per GPU holding a learner rank and a rollout replica, time-shared
             (rl/distributed/colocated.py).
Reward actors ask for their own CPUs and a GPU share (`reward_workers`); the plan puts each on the first GPU
with that share free (Ray's fractional GPUs: a share fits only where a GPU has it left), or on the first node
with the CPUs when it needs no GPU. Units are placed first-fit over the nodes in order, GPU by GPU.

This module only decides (no Ray here); rl/distributed/cluster.py reads the nodes from Ray and realises the
placement as placement groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rl.train_config import TrainSpec

EPS = 1e-6


@dataclass(frozen=True)
class NodeInfo:
    """One node as the plan sees it. cpus: None when not known (rl.plan is not told); gpu_memory / host_memory:
    bytes per GPU and of the host, None when not known (then not checked); node_id: Ray's id of the node;
    gpu_devices: GPUs nvidia-smi found (0 where Ray's GPUs are only declared)."""

    index: int
    gpus: int
    cpus: float | None = None
    gpu_memory: int | None = None
    host_memory: int | None = None
    node_id: str | None = None
    gpu_devices: int = 0


@dataclass(frozen=True)
class Unit:
    """One actor to place. kind: "worker" (colocated learner rank + rollout replica), "learner", "rollout" or
    "reward"; index: its rank (or the reward actor's position, replicas included); name: for messages
    ("rollout replica 3"); reward: the reward's name under `rewards:` (reward actors only)."""

    kind: str
    index: int
    name: str
    cpus: float
    gpus: float
    reward: str | None = None


@dataclass(frozen=True)
class Slot:
    """Where a unit goes: a node index and a GPU index on it (None for a CPU-only unit)."""

    node: int
    gpu: int | None


@dataclass
class Placement:
    """The units of a run and where each goes; `problems` names what could not be placed, with the numbers."""

    units: list[Unit]
    slots: dict[Unit, Slot] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def on_gpu(self, node: int, gpu: int) -> list[Unit]:
        return [u for u in self.units if self.slots.get(u) == Slot(node, gpu)]

    def on_node(self, node: int) -> list[Unit]:
        return [u for u in self.units if u in self.slots and self.slots[u].node == node]


def run_units(spec: TrainSpec, rewards: Sequence[str]) -> list[Unit]:
    """The actors `spec` starts, in placement order: learner side, rollout side, then rewards."""
    r, learner, mode = spec.rollout, spec.learner, spec.placement.mode
    if mode == "colocated":
        units = [Unit("worker", i, f"worker {i} (learner rank {i} + rollout replica {i})",
                      learner.num_cpus + r.num_cpus, learner.num_gpus) for i in range(learner.world_size)]
    else:
        units = [Unit("learner", i, f"learner rank {i}", learner.num_cpus, learner.num_gpus)
                 for i in range(learner.world_size)]
        units += [Unit("rollout", i, f"rollout replica {i}", r.num_cpus, r.num_gpus) for i in range(r.num_actors)]
    w, index = spec.reward_workers, 0
    for name in rewards:
        amounts, replicas = w.actors(name)
        for replica in range(replicas):
            label = f"reward {name}" + (f" replica {replica}" if replicas > 1 else "")
            units.append(Unit("reward", index, label, amounts["num_cpus"], amounts["num_gpus"], name))
            index += 1
    return units


def collective_sync(spec: TrainSpec) -> bool:
    """Whether a split run broadcasts the weights (NCCL on GPUs) rather than using the object store: "collective",
    or "auto" with GPUs on both sides."""
    mode = spec.learner.weight_sync
    return mode == "collective" or (mode == "auto" and spec.learner.num_gpus > 0 and spec.rollout.num_gpus > 0)


def nccl_share_problems(spec: TrainSpec) -> list[str]:
    """On real GPUs no two actors of one NCCL group may share a GPU: NCCL refuses it ("Duplicate GPU detected").
    Two actors can land on one GPU when their shares add up to at most 1 (Ray packs fractional GPUs). The groups:
    the learner's ranks (FSDP, world size > 1; the workers in colocated mode) and, in split mode with a collective
    weight sync, learner rank 0 with the rollout replicas. One problem per key (or pair of keys) to change."""
    learner, rollout = spec.learner.num_gpus, spec.rollout.num_gpus
    pairs = []  # (keys, what shares a GPU, the shares that fit on one GPU)
    if spec.learner.world_size > 1:
        who = "two learner ranks" if spec.placement.mode == "split" else "two colocated workers"
        pairs.append(("learner.num_gpus", f"{who} (FSDP's group)", (learner, learner)))
    if spec.placement.mode == "split" and collective_sync(spec):
        if spec.rollout.num_actors > 1:
            pairs.append(("rollout.num_gpus", "two rollout replicas (the weight-sync group)", (rollout, rollout)))
        pairs.append(("learner.num_gpus + rollout.num_gpus", "learner rank 0 and a rollout replica (the weight-sync "
                      "group)", (learner, rollout)))
    return [f"{keys}: {' + '.join(f'{x:g}' for x in shares)} GPU lets {who} share a GPU, which NCCL refuses "
            f"(\"Duplicate GPU detected\"); on real GPUs the actors of an NCCL group need shares that add up to "
            f"more than 1 (e.g. {keys.split(' + ')[0]}=1)"
            for keys, who, shares in pairs if sum(shares) <= 1 + EPS]


def assign(units: Sequence[Unit], nodes: Sequence[NodeInfo], separate_nodes: bool = False) -> Placement:
    """First-fit placement of `units` on `nodes` (see the module docstring)."""
    placement = Placement(list(units))
    free_cpus = [math.inf if n.cpus is None else n.cpus for n in nodes]
    free_gpus = [[1.0] * n.gpus for n in nodes]
    learner_nodes: set[int] = set()
    for unit in units:
        for node in nodes:
            if separate_nodes and unit.kind == "rollout" and node.index in learner_nodes:
                continue
            slot = _fit(unit, node.index, free_cpus, free_gpus)
            if slot is not None:
                placement.slots[unit] = slot
                if unit.kind == "learner":
                    learner_nodes.add(node.index)
                break
    missing = [u for u in units if u not in placement.slots]
    if missing:
        placement.problems.append(_shortage(units, missing, nodes, separate_nodes))
    return placement


def _fit(unit: Unit, node: int, free_cpus: list[float], free_gpus: list[list[float]]) -> Slot | None:
    if free_cpus[node] + EPS < unit.cpus:
        return None
    gpu = None
    if unit.gpus > 0:
        gpu = next((g for g, free in enumerate(free_gpus[node]) if free + EPS >= unit.gpus), None)
        if gpu is None:
            return None
        free_gpus[node][gpu] -= unit.gpus
    free_cpus[node] -= unit.cpus
    return Slot(node, gpu)


def _shortage(units: Sequence[Unit], missing: Sequence[Unit], nodes: Sequence[NodeInfo], separate: bool) -> str:
    """'the run asks for ...; the cluster has ...; not placed: ...' with every number a user needs."""
    asked: dict[tuple[str, float, float], int] = {}
    for u in units:
        asked[(u.kind, u.cpus, u.gpus)] = asked.get((u.kind, u.cpus, u.gpus), 0) + 1
    wants = ", ".join(f"{k} {n} x ({c:g} CPU, {g:g} GPU)" for (k, c, g), n in asked.items())
    total_cpus = sum(u.cpus for u in units)
    total_gpus = sum(u.gpus for u in units)
    have = "; ".join(f"node {n.index}: {n.gpus} GPUs" + ("" if n.cpus is None else f", {n.cpus:g} CPUs")
                     for n in nodes) or "no nodes"
    names = ", ".join(u.name for u in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    hint = " (placement.separate_nodes keeps rollout replicas off the learner's nodes)" if separate else ""
    return (f"placement: the run asks for {total_gpus:g} GPUs and {total_cpus:g} CPUs ({wants}); the cluster has "
            f"{sum(n.gpus for n in nodes)} GPUs on {len(nodes)} node(s) ({have}); {len(missing)} of {len(units)} "
            f"actors cannot be placed: {names}{hint}. Lower learner.world_size, rollout.num_actors or the per-actor "
            f"num_gpus / num_cpus (learner, rollout, reward_workers), or add nodes")
