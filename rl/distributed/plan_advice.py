"""What to change when a run does not fit: config overrides, each re-planned through the real config before it is
offered, best first.

The search tries every key that changes the footprint. Two kinds of change:
  layouts   where the actors go: learner.world_size (with rollout.num_actors, as colocated placement needs), split
            placement's rollout.num_actors, placement.mode. They are not monotone (more ranks hold less per GPU
            but need more GPUs), so each layout that Ray could place is tried in turn, the unchanged one first.
  reducers  keys that only lower memory, each a list of values from mildest to strongest: gradient checkpointing,
            learner.grad_sync, trainer.batching.micro_batch_size, model.decoder.max_batch_size,
            placement.offload_decoder, rollout.batch_size, LoRA; last, and only when nothing that keeps the
            step's samples (prompts_per_step x group_size) fits, rollout.prompts_per_step.
For a layout, all reducers at their strongest either fit or nothing with that layout does (one plan). When they
fit, the most disruptive reducers are dropped while it still fits, then each kept one is relaxed to its mildest
fitting value; the alternatives come from the same search without one of the kept reducers. Candidates are
ranked (samples kept, fewest keys, cheapest keys, lowest peak), and the first MAX_SUGGESTIONS that fit when their
overrides are merged into the config, validated and planned again are returned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from core.config import ConfigError
from rl.distributed.memory import GIB, PolicyShape
from rl.distributed.memory_plan import ModelSizes, Plan, make_plan
from rl.distributed.model_sizes import LoraSize, lora_size
from rl.distributed.placement import assign, run_units
from rl.model.lora import LoraSettings
from rl.train_config import TrainSpec, validate_train_config

MAX_SUGGESTIONS = 3
LORA_ADVICE = {"trainer.lora.r": 64, "trainer.lora.alpha": 128}  # alpha / r = 2, as the schema's defaults
DECODER_PASSES = "model.decoder.max_batch_size"
Change = tuple[tuple[str, Any], ...]  # (dotted config key, value) pairs applied together


@dataclass(frozen=True)
class Suggestion:
    """Overrides that make the run fit: `overrides` as key=value strings, the peak of its busiest GPU, and whether
    it keeps the step's samples (prompts_per_step x group_size)."""

    overrides: tuple[str, ...]
    peak_bytes: int
    keeps_samples: bool

    def as_json(self) -> dict:
        return {"overrides": list(self.overrides), "fits": True, "peak_gib": round(self.peak_bytes / GIB, 2)}


@dataclass(frozen=True)
class Reducer:
    """One key's values that lower memory, mildest first (each value a Change), and its rank: lower is less
    disruptive (kept first, dropped last)."""

    key: str
    values: tuple[Change, ...]
    rank: int


def suggest(plan: Plan) -> list[Suggestion]:
    """The best changes that make `plan` fit (none when it fits or nothing does), each re-planned and fitting.

    Tiers, each tried only when the one before found nothing: the changes that keep what trains and the step's
    samples; then LoRA too (it trains adapters only); then fewer prompts per step."""
    if plan.fits:
        return []
    found: dict[Change, int] = {}
    for tier in ({"lora": False, "prompts": False}, {"lora": True, "prompts": False}, {"lora": True, "prompts": True}):
        reducers = _reducers(plan, **tier)
        layouts = _layouts(plan)
        for i, layout in enumerate(layouts):
            _search(plan, layout, reducers, found)
            shorter = [change for change in found if i + 1 < len(layouts) and len(change) < len(layouts[i + 1])]
            if len(shorter) >= MAX_SUGGESTIONS:  # a later layout's changes are longer than these
                break
        if found:
            break
    ranked = sorted(found, key=lambda change: (len(change), _price(change), found[change]))
    suggestions = []
    for change in ranked:
        verified = replan(plan, change)
        if verified is not None:
            suggestions.append(verified)
        if len(suggestions) == MAX_SUGGESTIONS:
            break
    return suggestions


def searched_keys(plan: Plan) -> list[str]:
    """The config keys the search tries (for the message when none fits)."""
    keys = [key for layout in _layouts(plan) for key, _ in layout]
    keys += [r.key for r in _reducers(plan, lora=True, prompts=True)]
    return list(dict.fromkeys(keys))


def replan(plan: Plan, change: Change) -> Suggestion | None:
    """`change` merged into the plan's config as overrides, validated and planned on the same nodes: the
    suggestion when it fits, None when the config refuses it or it does not fit."""
    overrides = tuple(f"{key}={_yaml(value)}" for key, value in change)
    try:
        spec = validate_train_config(OmegaConf.merge(plan.spec.cfg, OmegaConf.from_dotlist(list(overrides))),
                                     files=False)
    except ConfigError:
        return None
    replanned = make_plan(spec, plan.nodes, sizes_for(spec, plan))
    if not replanned.fits:
        return None
    r, base = spec.rollout, plan.spec.rollout
    keeps = r.prompts_per_step * r.group_size == base.prompts_per_step * base.group_size
    return Suggestion(overrides, _peak(replanned), keeps)


def sizes_for(spec: TrainSpec, plan: Plan) -> ModelSizes:
    """The plan's sizes (read once for its config) with what the searched keys change in `spec`'s config: the LoRA
    adapters and the decoder's images per pass (model.decoder.max_batch_size)."""
    passes = spec.cfg.model.decoder.get("max_batch_size")
    return _resized(plan, spec.trainer.lora, passes if isinstance(passes, int) else None)


def _resized(plan: Plan, lora: LoraSettings | None, passes: int | None, exact: bool = True) -> ModelSizes:
    """The plan's sizes with other adapters (exact: counted by lora_size; else lora_estimate) and images per
    decoder pass."""
    sizes = plan.sizes
    if passes is not None and passes != sizes.decoder.max_batch_size:
        sizes = dataclasses.replace(sizes, decoder=dataclasses.replace(sizes.decoder, max_batch_size=passes))
    if lora != plan.spec.trainer.lora:
        adapters = None if lora is None else _lora_size(sizes, lora) if exact else \
            lora_estimate(sizes.policy.shape, lora)
        sizes = dataclasses.replace(sizes, lora=adapters)
    return sizes


_LORA_SIZES: dict[tuple[int, str], LoraSize] = {}


def _lora_size(sizes: ModelSizes, lora: LoraSettings) -> LoraSize:
    """lora_size, once per policy and settings (it builds the policy on the meta device)."""
    key = (id(sizes.policy), repr(lora))
    if key not in _LORA_SIZES:
        _LORA_SIZES[key] = lora_size(sizes.policy.config, lora)
    return _LORA_SIZES[key]


def lora_estimate(shape: PolicyShape, lora: LoraSettings) -> LoraSize:
    """The adapters of `lora` counted from the policy's widths, every decoder layer a Qwen2 layer (q, k, v, o,
    gate, up, down projections): what lora_size counts by building the policy with peft, which takes seconds,
    too long for each plan of the search (the suggestions themselves are planned with lora_size)."""
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    widths = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
              "up_proj": (h, i), "down_proj": (i, h)}
    layers = [widths[name] for name in lora.target_modules]
    return LoraSize(parameters=shape.layers * lora.r * sum(a + b for a, b in layers),
                    dropout_inputs=sum(a for a, _ in layers) if lora.dropout else 0,
                    adapted=shape.layers * sum(a * b for a, b in layers))


def _search(plan: Plan, layout: Change, reducers: Sequence[Reducer], found: dict[Change, int]) -> None:
    """Add to `found` (change -> peak) the changes built on `layout` that fit: the greedy one, then one without
    each reducer it kept."""
    fits = _fitter(plan)
    best = _greedy(fits, layout, reducers)
    if best is None:
        return
    change, peak = best
    found.setdefault(change, peak)
    kept = {key for key, _ in change}
    for reducer in reducers:
        if reducer.values[0][0][0] in kept:
            alternative = _greedy(fits, layout, [r for r in reducers if r is not reducer])
            if alternative is not None:
                found.setdefault(*alternative)


def _greedy(fits: Callable[[Change], int | None], layout: Change, reducers: Sequence[Reducer]
            ) -> tuple[Change, int] | None:
    """All reducers at their strongest; then drop the most disruptive ones while it fits, and relax each kept one
    to its mildest fitting value. None when even all at their strongest do not fit."""
    level = {r.key: len(r.values) - 1 for r in reducers}

    def change() -> Change:
        pairs = list(layout)
        for r in reducers:
            if level[r.key] >= 0:
                pairs += r.values[level[r.key]]
        return tuple(pairs)

    if fits(change()) is None:
        return None
    for r in sorted(reducers, key=lambda r: -r.rank):
        strongest, level[r.key] = level[r.key], -1
        if fits(change()) is None:
            level[r.key] = strongest
    for r in sorted(reducers, key=lambda r: -r.rank):
        if level[r.key] > 0:  # the mildest fitting value: values lower memory monotonically
            low, high = 0, level[r.key]
            while low < high:
                level[r.key] = (low + high) // 2
                if fits(change()) is None:
                    low = level[r.key] + 1
                else:
                    high = level[r.key]
            level[r.key] = high
    return change(), fits(change())


def _fitter(plan: Plan) -> Callable[[Change], int | None]:
    """A change's peak GPU bytes when it fits (None when not), planned on the spec changed directly (the config
    route costs a validation per plan), each change planned once."""
    seen: dict[Change, int | None] = {}

    def fits(change: Change) -> int | None:
        if change not in seen:
            spec = _applied(plan.spec, change)
            passes = dict(change).get(DECODER_PASSES)
            planned = make_plan(spec, plan.nodes, _resized(plan, spec.trainer.lora, passes, exact=False))
            seen[change] = _peak(planned) if planned.fits else None
        return seen[change]

    return fits


def _peak(plan: Plan) -> int:
    return max((d.bytes for d in plan.devices), default=0)


def _layouts(plan: Plan) -> list[Change]:
    """Where the actors could go, the unchanged layout first, then by how little they change: world sizes and
    rollout replicas halved or doubled within the GPUs, and the other placement mode. Only layouts whose actors
    the nodes can take."""
    spec = plan.spec
    r, learner, t = spec.rollout, spec.learner, spec.trainer
    gpus = sum(n.gpus for n in plan.nodes)
    per_mini = r.prompts_per_step * r.group_size // t.batching.mini_batches
    worlds = [w for w in _near(learner.world_size, gpus) if per_mini % w == 0]
    layouts: list[Change] = []
    for mode in (spec.placement.mode, "split" if spec.placement.mode == "colocated" else "colocated"):
        moved: Change = () if mode == spec.placement.mode else (("placement.mode", mode),)
        if mode == "colocated" and spec.placement.separate_nodes:
            moved += (("placement.separate_nodes", False),)
        for w in worlds:
            actors = [w] if mode == "colocated" else _near(r.num_actors, gpus)
            for a in actors:
                layout = moved + tuple((k, v) for k, v, old in (("learner.world_size", w, learner.world_size),
                                                                ("rollout.num_actors", a, r.num_actors)) if v != old)
                if _placeable(spec, plan, layout):
                    layouts.append(layout)
    return sorted(dict.fromkeys(layouts), key=len)


def _near(value: int, most: int) -> list[int]:
    """value, its halvings and its doublings (twice, up to `most`), nearest first, the larger of a tie first."""
    values = {value >> i for i in range(value.bit_length())} | {value << i for i in (1, 2) if value << i <= most}
    return sorted(values, key=lambda v: (abs(math.log2(v / value)), -v))


def _placeable(spec: TrainSpec, plan: Plan, layout: Change) -> bool:
    changed = _applied(spec, layout)
    if changed.placement.mode == "colocated" and changed.rollout.num_actors != changed.learner.world_size:
        return False
    units = run_units(changed, list(spec.cfg.rewards))
    return not assign(units, plan.nodes, changed.placement.separate_nodes).problems


def _reducers(plan: Plan, lora: bool, prompts: bool) -> list[Reducer]:
    """The keys that only lower memory, least disruptive first; LoRA and prompts_per_step when asked for."""
    spec = plan.spec
    t, r, p = spec.trainer, spec.rollout, spec.placement
    reducers = []
    if not t.gradient_checkpointing:
        reducers.append(_one("trainer.gradient_checkpointing", True))
    if spec.learner.grad_sync == "last_micro_batch":  # no unsharded fp32 gradient copy across ranks
        reducers.append(_one("learner.grad_sync", "every_micro_batch"))
    reducers.append(_halving("trainer.batching.micro_batch_size", t.batching.micro_batch_size))
    if plan.sizes.decoder.inner and isinstance(spec.cfg.model.decoder.get("max_batch_size"), int):
        reducers.append(_halving(DECODER_PASSES, plan.sizes.decoder.max_batch_size))
    if p.mode == "colocated" and not p.offload_decoder:
        reducers.append(_one("placement.offload_decoder", True))
    reducers.append(_halving("rollout.batch_size", r.batch_size))
    if lora and t.lora is None:
        reducers.append(Reducer("trainer.lora", (tuple(LORA_ADVICE.items()),), 0))
    if prompts:
        reducers.append(Reducer("rollout.prompts_per_step", tuple((("rollout.prompts_per_step", n),)
                                                                  for n in _fewer_prompts(spec)), 0))
    return [dataclasses.replace(red, rank=i) for i, red in enumerate(reducers) if red.values]


def _one(key: str, value: Any) -> Reducer:
    return Reducer(key, (((key, value),),), 0)


def _halving(key: str, value: int) -> Reducer:
    values = []
    while value > 1:
        value //= 2
        values.append(((key, value),))
    return Reducer(key, tuple(values), 0)


def _fewer_prompts(spec: TrainSpec) -> list[int]:
    """prompts_per_step halved down to 1, keeping the values whose samples the mini-batches and ranks divide."""
    r, t = spec.rollout, spec.trainer
    step = t.batching.mini_batches * spec.learner.world_size
    values, n = [], r.prompts_per_step
    while n > 1:
        n //= 2
        if n * r.group_size % step == 0:
            values.append(n)
    return values


def _price(change: Change) -> int:
    """How disruptive a change is: layouts and LoRA more than batch sizes (for ranking equal-sized changes)."""
    costly = {"placement.mode": 4, "trainer.lora.r": 3, "learner.world_size": 2, "rollout.num_actors": 2,
              "rollout.prompts_per_step": 8}
    return sum(costly.get(key, 1) for key, _ in change)


def _applied(spec: TrainSpec, change: Iterable[tuple[str, Any]]) -> TrainSpec:
    """`spec` with each dotted key of its dataclasses set (DECODER_PASSES lives in the sizes, see _resized; LoRA
    keys start from the schema's defaults when the config has none)."""
    for key, value in change:
        if key != DECODER_PASSES:
            spec = _set(spec, key.split("."), value)
    return spec


def _set(obj: Any, path: list[str], value: Any) -> Any:
    name = path[0]
    if len(path) == 1:
        return dataclasses.replace(obj, **{name: value})
    child = getattr(obj, name)
    if child is None and name == "lora":
        child = LoraSettings()
    return dataclasses.replace(obj, **{name: _set(child, path[1:], value)})


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
