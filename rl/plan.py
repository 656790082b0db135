"""`python -m rl.plan CONFIG [key=value ...] --nodes N --gpus-per-node G --gpu-memory-gib M
[--host-memory-gib H] [--json]`: will this run fit, before any weights are downloaded?

Places the run's actors on N nodes of G GPUs as rl.train would (rl/distributed/placement.py) and adds up what
each GPU holds at its peak, part by part (rl/distributed/memory.py has the formulas), and what each host holds
while the actors load. Exit 0 when everything fits, 2 when not, naming config keys that would make it fit.
Weights paths left `???` are planned from the shapes in configs/shapes/, so the paper config plans as shipped:

    python -m rl.plan configs/xomni.yaml --nodes 1 --gpus-per-node 8 --gpu-memory-gib 80

`--json` prints {"fits", "devices": [{"node", "gpu", "bytes", "parts", "pinned_host_bytes"}], "hosts": [{"node",
"peak_bytes"}], "policy_parameters", "problems", "suggestions": [{"overrides": ["key=value", ...], "fits": true,
"peak_gib"}, ...]}; pinned_host_bytes: the host memory a GPU's colocated worker pins for what it offloads (0 without
one), also in the host's peak; suggestions (best first, empty when it fits or nothing does): overrides that make the
run fit, each planned again from the config with them applied (rl/distributed/plan_advice.py). `rl.train` runs the
same plan on the nodes Ray reports before any actor starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.cli import CommandParser, add_overrides, command, prog
from core.config import ConfigError, load_config
from rl.distributed.memory import GIB, activation_bytes, margin_bytes, rollout_kv_bytes, sampler_rows
from rl.distributed.memory_plan import (
    PART_ORDER,
    Device,
    ModelSizes,
    Plan,
    learner_setup,
    make_plan,
    model_sizes,
    rollout_setup,
)
from rl.distributed.placement import NodeInfo, nccl_share_problems
from rl.distributed.plan_advice import Suggestion, searched_keys, suggest
from rl.train_config import TOP_LEVEL, TrainSpec, validate_train_config

KIND_NAMES = {"worker": "learner rank + rollout replica (colocated)", "learner": "learner rank",
              "rollout": "rollout replica"}


class DoesNotFit(ConfigError):
    """The plan says the run does not fit; `problems` name the GPUs or hosts and the keys that would help."""

    def __init__(self, problems: list[str]):
        super().__init__(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        self.args = (f"the run does not fit (python -m rl.plan prints the whole plan; placement.check=warn starts "
                     f"it anyway):\n{lines}",)


def plan_run(spec: TrainSpec, nodes: list[NodeInfo], sizes: ModelSizes | None = None) -> Plan:
    """The plan of `spec` on `nodes`, with what makes it fit when it does not (`sizes` defaults to reading the
    models)."""
    plan = make_plan(spec, nodes, sizes or model_sizes(spec))
    plan.advice = suggest(plan)
    if plan.advice:
        plan.problems.append(advice_line(plan.advice))
    elif not plan.fits:
        plan.problems.append(f"no change of {', '.join(searched_keys(plan))} makes it fit: {_needed(plan)}")
    # Not a memory problem (no advice above changes it): real GPUs mean NCCL, declared ones gloo on the CPU.
    if any(node.gpu_devices for node in nodes):
        plan.problems += nccl_share_problems(spec)
    return plan


def advice_line(advice: list[Suggestion]) -> str:
    """The suggestions as one problem line, best first, each with its planned peak."""
    options = [" ".join(s.overrides) + f" (peak {s.peak_bytes / GIB:.1f} GiB"
               + ("" if s.keeps_samples else ", fewer samples per step") + ")" for s in advice]
    return "fits with any one of (each planned again): " + "; ".join(options)


def _needed(plan: Plan) -> str:
    """What is short: GPUs (some GPU over its memory, or actors that cannot be placed), host memory, or both."""
    hosts = any(h.capacity is not None and h.peak_bytes > h.capacity for h in plan.hosts)
    gpus = bool(plan.placement.problems) or any(d.capacity is not None and d.bytes > d.capacity for d in plan.devices)
    needs = (["more or larger GPUs"] if gpus else []) + (["more host memory per node (or more nodes)"] if hosts else [])
    return " and ".join(needs or ["more resources"]) + " are needed"


def as_json(plan: Plan) -> dict:
    return {"fits": plan.fits,
            "devices": [{"node": d.node, "gpu": d.gpu, "bytes": d.bytes, "parts": d.parts,
                         "pinned_host_bytes": d.pinned_host_bytes} for d in plan.devices],
            "hosts": [{"node": h.node, "peak_bytes": h.peak_bytes} for h in plan.hosts],
            "policy_parameters": plan.sizes.policy.shape.parameters, "problems": plan.problems,
            "suggestions": [s.as_json() for s in plan.advice]}


def render(plan: Plan) -> str:
    """The plan as tables: the models, one table per group of identical GPUs, one line per host, the verdict."""
    lines = _summary(plan)
    for devices in _groups(plan.devices):
        lines += [""] + _device_table(devices)
    lines.append("")
    for h in plan.hosts:
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in h.parts.items())
        limit = (f"of {h.capacity / GIB:.1f} GiB" if h.capacity is not None
                 else "(host memory not checked: give --host-memory-gib or run where Ray reports it)")
        lines.append(f"host of node {h.node}: peak {h.peak_bytes / GIB:.1f} GiB {limit} ({parts})")
    if any(d.capacity is None for d in plan.devices):
        lines.append("GPU memory unknown on some nodes (declared GPUs without devices): set placement.gpu_memory_gib "
                     "to check them")
    lines.append("")
    lines.append("verdict: fits" if plan.fits else "verdict: DOES NOT FIT")
    lines += [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)


def _summary(plan: Plan) -> list[str]:
    spec, sizes = plan.spec, plan.sizes
    shape, learner = sizes.policy.shape, spec.learner
    gpu = {n.gpu_memory for n in plan.nodes}
    memory = f" x {next(iter(gpu)) / GIB:.1f} GiB" if len(gpu) == 1 and None not in gpu else ""
    compute = "bf16 compute" if learner.mixed_precision else f"{learner.dtype} compute"
    lora = f", LoRA adapters {sizes.lora.parameters / 1e6:.1f}M trained" if sizes.lora else ""
    decoder = ", ".join(f"{k} {_count(v)}" for k, v in sorted(sizes.decoder.parts.items(), key=lambda kv: -kv[1]))
    rewards = "; ".join(f"{name}: {about}" for name, (_, about) in sizes.rewards.items())
    setup, rollout = learner_setup(spec, sizes), rollout_setup(spec)
    length = setup.prompt_tokens + setup.image_tokens
    with_ckpt, without = (activation_bytes(shape, setup, c) / GIB for c in (True, False))
    configured = "on" if spec.trainer.gradient_checkpointing else "off"
    kv = rollout_kv_bytes(shape, rollout) / GIB  # the table's figure: the cache and the layer DynamicCache copies
    return [
        f"memory plan: placement.mode={spec.placement.mode} on {len(plan.nodes)} node(s) x "
        f"{max((n.gpus for n in plan.nodes), default=0)} GPUs{memory}",
        f"  policy       {_count(shape.parameters)} parameters from {sizes.policy.source}; learner {learner.dtype} "
        f"with {compute}, {learner.world_size} rank(s){' (FSDP)' if learner.world_size > 1 else ''}{lora}; "
        f"rollout {spec.rollout.dtype}",
        f"  decoder      {decoder or 'no parameters'}; {sizes.decoder_source}",
        f"  rewards      {rewards}",
        f"  activations  per micro-batch of {setup.micro_batch} x {length} tokens: {with_ckpt:.2f} GiB with gradient "
        f"checkpointing, {without:.2f} GiB without (trainer.gradient_checkpointing: {configured})",
        f"  KV cache     {sampler_rows(rollout)} sequences x {length} tokens per rollout replica: {kv:.2f} GiB "
        f"(assumes prompts of placement.prompt_tokens={setup.prompt_tokens})",
    ]


def _groups(devices: list[Device]) -> list[list[Device]]:
    """Consecutive GPUs of a node holding the same kinds of units with the same parts."""
    groups: list[list[Device]] = []
    for d in devices:
        last = groups[-1][-1] if groups else None
        if last is not None and last.node == d.node and last.parts == d.parts and \
                [_kind(u) for u in last.units] == [_kind(u) for u in d.units]:
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups


def _kind(unit) -> str:
    return KIND_NAMES.get(unit.kind, unit.name)


def _device_table(devices: list[Device]) -> list[str]:
    d = devices[0]
    where = f"node {d.node} GPU {d.gpu}" if len(devices) == 1 else \
        f"node {d.node} GPUs {d.gpu}-{devices[-1].gpu} (each)"
    holds = ", ".join(u.name for u in d.units) if len(devices) == 1 else ", ".join(_kind(u) for u in d.units)
    lines = [f"{where}: {holds}" + ("; decoder and text encoders offloaded to the host while learning"
                                    if d.offload_decoder else "")]
    names = list(d.phases)
    rows = sorted(dict.fromkeys(k for parts in d.phases.values() for k in parts), key=_row_rank)
    width = max(len(r) for r in rows + ["margin"]) + 2
    lines.append("  " + "GiB".ljust(width) + "".join(f"{n:>18}" for n in names))
    for row in rows:
        cells = "".join(f"{d.phases[n][row] / GIB:>18.2f}" if row in d.phases[n] else f"{'-':>18}" for n in names)
        lines.append("  " + row.ljust(width) + cells)
    margins = [margin_bytes(d.phases[n], len(d.units)) for n in names]
    lines.append("  " + "margin".ljust(width) + "".join(f"{m / GIB:>18.2f}" for m in margins))
    totals = [sum(d.phases[n].values()) + m for n, m in zip(names, margins, strict=True)]
    lines.append("  " + "total".ljust(width) + "".join(f"{t / GIB:>18.2f}" for t in totals))
    if d.capacity is None:
        verdict = "GPU memory unknown: not checked"
    else:
        verdict = f"{d.capacity / GIB:.1f} GiB per GPU: " + ("fits" if d.bytes <= d.capacity else "DOES NOT FIT")
    lines.append(f"  peak {d.bytes / GIB:.2f} GiB of {verdict}")
    if d.pinned_host_bytes:
        lines.append(f"  pinned host memory {d.pinned_host_bytes / GIB:.2f} GiB (the worker's offloaded state)")
    return lines


def _row_rank(name: str) -> int:
    return PART_ORDER.index(name) if name in PART_ORDER else len(PART_ORDER)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog("python -m rl.plan"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training YAML (configs/xomni.yaml, ...)")
    add_overrides(parser, sorted(TOP_LEVEL), "placement.mode=split")
    parser.add_argument("--nodes", type=int, required=True, help="nodes")
    parser.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node")
    parser.add_argument("--gpu-memory-gib", type=float, required=True, help="memory of one GPU, GiB")
    parser.add_argument("--host-memory-gib", type=float, default=None, help="host memory per node, GiB")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 0 or args.gpu_memory_gib <= 0:
        parser.error("--nodes must be >= 1, --gpus-per-node >= 0 and --gpu-memory-gib > 0")
    spec = validate_train_config(load_config(args.config, args.overrides), files=False)
    host = None if args.host_memory_gib is None else int(args.host_memory_gib * GIB)
    # A plan is for real GPUs (NCCL between them).
    nodes = [NodeInfo(i, args.gpus_per_node, None, int(args.gpu_memory_gib * GIB), host, gpu_devices=args.gpus_per_node)
             for i in range(args.nodes)]
    plan = plan_run(spec, nodes)
    print(json.dumps(as_json(plan), indent=1) if args.json else render(plan))
    return 0 if plan.fits else 2


if __name__ == "__main__":
    sys.exit(main())
