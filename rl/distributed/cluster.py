"""The cluster as Ray reports it, and the placement realised on it: the nodes with their GPUs, CPUs and memory
(`cluster_nodes`), one placement group per side with every bundle pinned to the node rl/distributed/placement.py
chose, and a bounded wait for the actors to start.

Nothing here waits without a bound: the cluster's resources are awaited for `ray.placement_timeout_s`, each
placement group as long, and the run then stops with the numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence

import psutil
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from rl.distributed.placement import EPS, NodeInfo, Placement
from rl.distributed.reward_pool import RunAborted

PROGRESS_S = 30.0  # how often a slow start-up says how far it got
NODE_LABEL = "ray.io/node-id"  # Ray labels every node with its id; a bundle selector pins a bundle to a node




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


def placement_groups(placement: Placement, nodes: Sequence[NodeInfo], timeout_s: float) -> dict[str, PlacementGroup]:
    """A placement group per kind of actor ("learner" and "rollout" in split placement, "worker", one bundle per
    GPU, in colocated placement), bundle i pinned to the node `placement` chose for actor i (anywhere when the plan
    could not place it). A group that cannot be placed within `timeout_s` stops the run (see `create_group`)
    after removing the groups already made. Reward actors are started by the reward pool, outside any group."""
    groups: dict[str, PlacementGroup] = {}
    kinds = dict.fromkeys(u.kind for u in placement.units if u.kind != "reward")
    try:
        for kind in kinds:
            units = [u for u in placement.units if u.kind == kind]
            slots = [placement.slots.get(u) for u in units]
            node_ids = [nodes[slot.node].node_id if slot else None for slot in slots]
            groups[kind] = create_group(GROUP_NAMES[kind], [bundle(u.cpus, u.gpus) for u in units], node_ids,
                                        timeout_s)
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
