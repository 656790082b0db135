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

Nothing here waits without a bound: the cluster's resources are awaited for `ray.placement_timeout_s`, each
placement group as long, and the run then stops with the numbers.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from rl.distributed.reward_pool import RunAborted
from rl.train_config import TrainSpec

if TYPE_CHECKING:
    from rl.distributed.memory_plan import Plan

EPS = 1e-6
PROGRESS_S = 30.0  # how often a slow start-up says how far it got
NODE_LABEL = "ray.io/node-id"  # Ray labels every node with its id; a bundle selector pins a bundle to a node


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


# ---------------------------------------------------------------------------------------------------------
# The cluster, as Ray reports it


def node_memory() -> tuple[int, list[int]]:
    """(host bytes, bytes of each GPU nvidia-smi lists) of the machine this runs on; no GPUs without nvidia-smi."""
    host = psutil.virtual_memory().total
    if shutil.which("nvidia-smi") is None:
        return host, []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return host, []
    return host, [int(float(line)) * 1024**2 for line in out.split() if line.strip()]


def cluster_nodes(asked_gpus: float, asked_cpus: float, joined: bool, timeout_s: float,
                  gpu_memory: int | None) -> list[NodeInfo]:
    """The alive nodes, head first. On a joined cluster, first wait up to `timeout_s` for the cluster to report
    the GPUs and CPUs asked for (an autoscaler may be adding nodes). Memory is read on each node
    (`node_memory`); `gpu_memory` (bytes) replaces the GPUs' where given."""
    deadline = time.monotonic() + timeout_s
    while joined and time.monotonic() < deadline:
        total = ray.cluster_resources()
        if total.get("GPU", 0) + EPS >= asked_gpus and total.get("CPU", 0) + EPS >= asked_cpus:
            break
        time.sleep(1.0)
    alive = [n for n in ray.nodes() if n["Alive"]]
    alive.sort(key=lambda n: ("node:__internal_head__" not in n["Resources"], n["NodeID"]))
    memories = _probe(alive, joined, max(deadline - time.monotonic(), 10.0))
    nodes = []
    for index, (node, (host, gpus)) in enumerate(zip(alive, memories, strict=True)):
        resources = node["Resources"]
        per_gpu = gpu_memory if gpu_memory is not None else (min(gpus) if gpus else None)
        nodes.append(NodeInfo(index, int(resources.get("GPU", 0)), resources.get("CPU", 0.0), per_gpu, host,
                              node["NodeID"], len(gpus)))
    return nodes


def _probe(nodes: list[dict], joined: bool, timeout_s: float) -> list[tuple[int | None, list[int]]]:
    """`node_memory` of every node: here for a local Ray (this machine is its only node), else one task per
    node pinned to it (no CPU asked, so it runs even on a full node)."""
    if not joined:
        return [node_memory()] * len(nodes)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(node_memory)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    return [ray.get(ref) if ref in done else (None, []) for ref in refs]


def bundle(cpus: float, gpus: float) -> dict[str, float]:
    """A placement-group bundle for one actor."""
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def create_group(what: str, bundles: Sequence[dict[str, float]], node_ids: Sequence[str | None],
                 timeout_s: float) -> PlacementGroup:
    """A placement group of `bundles`, bundle i pinned to node `node_ids[i]` (None: anywhere), placed within
    `timeout_s` or RunAborted with what was asked and what the cluster has free."""
    selectors = [{NODE_LABEL: node} if node else {} for node in node_ids]
    group = placement_group(list(bundles), strategy="PACK",
                            bundle_label_selector=selectors if any(selectors) else None)
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as e:
        remove_placement_group(group)
        free = ray.available_resources()
        raise RunAborted(f"the {what} could not be placed within {timeout_s:g}s (ray.placement_timeout_s): it asks "
                         f"for {len(bundles)} x {dict(bundles[0])}; the cluster has {free.get('GPU', 0):g} GPUs and "
                         f"{free.get('CPU', 0):g} CPUs free of {ray.cluster_resources().get('GPU', 0):g} GPUs and "
                         f"{ray.cluster_resources().get('CPU', 0):g} CPUs") from e
    return group


GROUP_NAMES = {"learner": "learner ranks", "rollout": "rollout replicas", "worker": "colocated workers"}


def placement_groups(plan: Plan, timeout_s: float) -> dict[str, PlacementGroup]:
    """A placement group per kind of actor ("learner" and "rollout" in split placement, "worker", one bundle per
    GPU, in colocated placement), bundle i pinned to the node the plan chose for actor i (anywhere when the plan
    could not place it). A group that cannot be placed within `timeout_s` stops the run (see `create_group`)
    after removing the groups already made. Reward actors are started by the reward pool, outside any group."""
    groups: dict[str, PlacementGroup] = {}
    kinds = dict.fromkeys(u.kind for u in plan.placement.units if u.kind != "reward")
    try:
        for kind in kinds:
            units = [u for u in plan.placement.units if u.kind == kind]
            slots = [plan.placement.slots.get(u) for u in units]
            nodes = [plan.nodes[slot.node].node_id if slot else None for slot in slots]
            groups[kind] = create_group(GROUP_NAMES[kind], [bundle(u.cpus, u.gpus) for u in units], nodes, timeout_s)
    except BaseException:
        for group in groups.values():
            remove_placement_group(group)
        raise
    return groups


def wait_started(groups: dict[str, list], timeout_s: float, local: bool) -> None:
    """Wait until every actor of `groups` (name -> ready refs) has started, at most `timeout_s`; then
    RunAborted saying how many of each started and what the machine offers (an oversubscribed local Ray
    would otherwise leave the rest starting for ever)."""
    refs = [ref for group in groups.values() for ref in group]
    began, done = time.monotonic(), set()
    while len(done) < len(refs) and time.monotonic() - began < timeout_s:
        wait = min(PROGRESS_S, timeout_s - (time.monotonic() - began))
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(wait, 0.0))
        done = set(ready)
        if len(done) < len(refs):
            print(f"waiting for actors to start: {_started(groups, done)} "
                  f"({time.monotonic() - began:.0f}s of ray.start_timeout_s={timeout_s:g})", flush=True)
    if len(done) == len(refs):
        return
    counts = _started(groups, done)
    total = ray.cluster_resources()
    where = (f"this machine has {os.cpu_count()} CPU cores and {psutil.virtual_memory().total / 1024**3:.1f} GiB of "
             f"memory; the local Ray declares {total.get('CPU', 0):g} CPUs (ray.num_cpus) and "
             f"{total.get('GPU', 0):g} GPUs (ray.num_gpus)" if local else
             f"the cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs")
    raise RunAborted(f"after {timeout_s:g}s (ray.start_timeout_s) only {counts} had started; {where}. Every "
                     f"actor is a process that loads its models: lower rollout.num_actors or learner.world_size "
                     f"(or ray.num_cpus on a small machine), or raise ray.start_timeout_s if loading is just slow")


def _started(groups: dict[str, list], done: set) -> str:
    return ", ".join(f"{sum(r in done for r in group)} of {len(group)} {name} actors" for name, group in groups.items())
