"""The training config put together: the plain sections (dataclasses in rl/schema/, each field documented there),
the components by import path, and `validate_train_config`, which reports every problem before Ray starts or a
model loads: types, `Literal` choices and ranges of every key, the components' arguments, and the constraints that
span several keys (here).

Top-level layout (see configs/xomni.yaml and configs/tiny.yaml):
  run, ray, model.{policy,tokenizer,decoder} (components), prompts (component), rollout, rewards
  (name -> component), ensemble, gating, reward_workers, trainer, learner, placement, checkpoint, logging, eval,
  monitor, resume, paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

from core.components import validate_component
from core.config import ConfigError
from core.paths import resolve_local_path
from core.schema import build_section, validate_section
from rewards.sections import validate_reward_sections
from rl.evaluation.alerts import watchable_metrics
from rl.model.loading import is_pretrained
from rl.optim import validate_optimization
from rl.schema.evaluation import EvalConfig, MonitorConfig
from rl.schema.learner import LearnerConfig, PlacementConfig
from rl.schema.rollout import RewardWorkersConfig, RolloutConfig
from rl.schema.run import CheckpointConfig, LoggingConfig, RayConfig, RunConfig
from rl.schema.trainer import TrainerConfig

PLAIN_SECTIONS: dict[str, type] = {
    "run": RunConfig, "ray": RayConfig, "placement": PlacementConfig, "rollout": RolloutConfig,
    "reward_workers": RewardWorkersConfig,
    "trainer": TrainerConfig, "learner": LearnerConfig, "checkpoint": CheckpointConfig, "logging": LoggingConfig,
    "eval": EvalConfig, "monitor": MonitorConfig,
}
MODEL_COMPONENTS = ("policy", "tokenizer", "decoder")
TOP_LEVEL = set(PLAIN_SECTIONS) | {"model", "prompts", "rewards", "ensemble", "gating", "resume", "paths"}
"""`paths` is free-form: weights locations set once and interpolated by components (`${paths.xomni}`)."""


@dataclass
class TrainSpec:
    """The validated plain sections; components stay as config nodes until the actor that owns them builds them."""

    run: RunConfig
    ray: RayConfig
    placement: PlacementConfig
    rollout: RolloutConfig
    reward_workers: RewardWorkersConfig
    trainer: TrainerConfig
    learner: LearnerConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    eval: EvalConfig
    monitor: MonitorConfig
    resume: str | None
    cfg: Any  # the whole DictConfig (components, rewards, ensemble, gating)


def validate_train_config(cfg: DictConfig, files: bool = True) -> TrainSpec:
    """Every problem in a training config at once (ConfigError), or the parsed plain sections.

    Types, ranges and cross-field constraints are reported together, with the components' problems.
    files=False checks neither weights files nor `???` values (the memory plan, which runs before any weights
    exist and sizes models from `configs/shapes/`); everything else is checked the same."""
    problems = [f"{k}: unknown top-level section (accepted: {', '.join(sorted(TOP_LEVEL))})"
                for k in cfg if k not in TOP_LEVEL]
    section_problems = [p for name, schema in PLAIN_SECTIONS.items()
                        for p in validate_section(cfg.get(name), schema, name)]
    model = cfg.get("model") or {}
    for name in MODEL_COMPONENTS:
        problems += validate_component(model.get(name), f"model.{name}", files=files)
    problems += validate_component(cfg.get("prompts"), "prompts", files=files)
    problems += _validate_rewards(cfg, files) + _check_resources(cfg)
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        problems.append(f"resume: expected null, 'auto' or a checkpoint path, got {resume!r}")
    spec, cross = _build_spec(cfg, resume, section_problems)
    if spec is not None:
        cross = _check_values(spec, files) + _check_old_logprobs(spec)
    # A key already reported keeps its default for these checks: a problem naming it would be about the default.
    reported = {p.split(":")[0] for p in section_problems}
    cross = [p for p in cross if not any(key in p for key in reported)]
    if problems or section_problems or cross:
        raise ConfigError(section_problems + cross + problems)
    spec.trainer.loss.old_logprobs = old_logprobs_mode(spec)
    return spec


def _build_spec(cfg: DictConfig, resume: str | None, section_problems: list[str]
                ) -> tuple[TrainSpec | None, list[str]]:
    """The plain sections built, every key with a problem at its default; (None, problems) when a section cannot
    be built at all (a required key missing, a section that is not a mapping, a dataclass's own check)."""
    reported = [p.split(":")[0] for p in section_problems]
    try:
        sections = {name: build_section(cfg.get(name), schema, name, reported) if name not in reported else schema()
                    for name, schema in PLAIN_SECTIONS.items()}
        return TrainSpec(**sections, resume=resume, cfg=cfg), []
    except TypeError:  # a required field (run.dir) without a value: already reported
        return None, []
    except ValueError as e:  # a dataclass's own check, e.g. SamplingParams' ranges
        return None, [f"rollout.sampling: {e}"]


def old_logprobs_mode(spec: TrainSpec) -> str:
    """`trainer.loss.old_logprobs` resolved: "auto" recomputes when sampler and learner compute differently, except
    one step off-policy, where only the sampler's log-probs are the behaviour policy's."""
    loss, learner, r = spec.trainer.loss, spec.learner, spec.rollout
    if loss.old_logprobs != "auto":
        return loss.old_logprobs
    if spec.trainer.pipeline.async_steps:
        return "sampler"
    compute_dtype = "bfloat16" if learner.mixed_precision else learner.dtype
    # A colocated replica runs in its learner rank's process, on its device, whatever rollout.num_gpus says.
    rollout_on_gpu = learner.num_gpus > 0 if spec.placement.mode == "colocated" else r.num_gpus > 0
    differs = r.dtype != compute_dtype or rollout_on_gpu != (learner.num_gpus > 0)
    return "recompute" if differs or loss.tis_cap is not None else "sampler"


def _check_old_logprobs(spec: TrainSpec) -> list[str]:
    if spec.trainer.pipeline.async_steps:
        return _check_async(spec)
    if spec.trainer.loss.tis_cap is not None and old_logprobs_mode(spec) != "recompute":
        return ["trainer.loss.tis_cap: weighs tokens by learner / sampler probability, so it needs "
                "trainer.loss.old_logprobs: recompute"]
    return []


def _check_async(spec: TrainSpec) -> list[str]:
    """One step off-policy: the rollout runs beside the learner's update, on the older weights."""
    loss, problems = spec.trainer.loss, []
    if spec.trainer.pipeline.async_steps != 1:
        return [f"trainer.pipeline.async_steps: must be 0 (on-policy) or 1 (one step off-policy), got "
                f"{spec.trainer.pipeline.async_steps}"]
    if spec.placement.mode == "colocated":
        problems.append("trainer.pipeline.async_steps: 1 overlaps the rollout with the learner's update, so they need "
                        "GPUs of their own; placement.mode: colocated shares them (set placement.mode=split or "
                        "trainer.pipeline.async_steps=0)")
    if loss.old_logprobs == "recompute":
        problems.append("trainer.loss.old_logprobs: recompute would need the weights one update old on the learner; "
                        "under trainer.pipeline.async_steps=1 the ratio divides by the sampler's log-probs (set "
                        "sampler or auto)")
    if loss.tis_cap is not None:
        problems.append("trainer.loss.tis_cap: needs trainer.loss.old_logprobs: recompute, which "
                        "trainer.pipeline.async_steps=1 does not allow (the ratio already divides by the behaviour "
                        "policy's log-probs)")
    return problems


def trained_rewards(cfg: DictConfig) -> list[str]:
    """The rewards that make the training total: every configured reward except `monitor.gold`."""
    gold = (cfg.get("monitor") or {}).get("gold") or []
    gold = set(gold) if isinstance(gold, (list, ListConfig)) else set()  # a malformed list is reported elsewhere
    return [name for name in cfg.get("rewards") or {} if name not in gold]


def _check_resources(cfg: DictConfig) -> list[str]:
    resources = (cfg.get("reward_workers") or {}).get("resources") or {}
    names = set(cfg.get("rewards") or {})
    problems = []
    for name, amounts in resources.items():
        if name not in names:
            problems.append(f"reward_workers.resources.{name}: {name!r} is not a configured reward")
        for key, value in (amounts or {}).items():
            if key not in ("num_cpus", "num_gpus", "replicas"):
                problems.append(f"reward_workers.resources.{name}.{key}: unknown key "
                                "(accepted: num_cpus, num_gpus, replicas)")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                problems.append(f"reward_workers.resources.{name}.{key}: must be a number >= 0, got {value!r}")
            elif key == "num_gpus" and value > 1:
                problems.append(f"reward_workers.resources.{name}.num_gpus: must be in [0, 1] (a GPU share), "
                                f"got {value}")
            elif key == "replicas" and (not isinstance(value, int) or value < 1):
                problems.append(f"reward_workers.resources.{name}.replicas: must be an integer >= 1, got {value!r}")
    return problems


def _validate_rewards(cfg: DictConfig, files: bool) -> list[str]:
    """The reward sections, for the trained rewards; gold rewards need only a valid component."""
    rewards = cfg.get("rewards")
    if not rewards or not hasattr(rewards, "items"):
        return validate_reward_sections(cfg, files=files)
    trained = trained_rewards(cfg)
    if not trained:
        return ["monitor.gold: lists every configured reward; training needs at least one other"]
    gold = [name for name in rewards if name not in trained]
    return (validate_reward_sections(cfg, trained if gold else None, files=files)
            + [p for name in gold for p in validate_component(rewards[name], f"rewards.{name}", files=files)])


def _check_values(spec: TrainSpec, files: bool) -> list[str]:
    """Constraints that one field's type and range do not express (the ranges are on the dataclasses)."""
    problems = []
    r, t = spec.rollout, spec.trainer
    if len(r.grid) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in r.grid):
        problems.append(f"rollout.grid: expected [h, w] positive ints, got {r.grid}")
    total = r.prompts_per_step * r.group_size
    if total % t.batching.mini_batches:
        problems.append(f"trainer.batching.mini_batches: {t.batching.mini_batches} does not divide the {total} "
                        "samples of a step")
    elif (total // t.batching.mini_batches) % spec.learner.world_size:
        problems.append(f"learner.world_size: {spec.learner.world_size} does not divide a mini-batch of "
                        f"{total // t.batching.mini_batches} samples")
    if t.lora is not None and not t.lora.target_modules:
        problems.append("trainer.lora.target_modules: name at least one layer")
    if spec.checkpoint.export_final and not is_pretrained(spec.cfg.model.policy):
        problems.append("checkpoint.export_final: needs model.policy to be rl.model.policy.XOmniPolicy.from_pretrained "
                        "(its folder is the base the final policy is exported over)")
    return (problems + validate_optimization(t.optimizer, t.lr_scheduler) + _check_eval(spec.eval, files)
            + _check_monitor(spec) + _check_placement(spec) + spec.logging.problems())


def _check_eval(e: EvalConfig, files: bool) -> list[str]:
    paths = [e.prompts] if isinstance(e.prompts, str) else e.prompts or []
    problems = []
    for i, path in enumerate(paths if files else []):
        try:
            resolve_local_path(str(path), f"eval.prompts[{i}]")
        except FileNotFoundError as error:
            problems.append(str(error))
    return problems


def _check_monitor(spec: TrainSpec) -> list[str]:
    m, names = spec.monitor, list(spec.cfg.get("rewards") or {})
    problems = [f"monitor.gold: {name!r} is not a configured reward (configured: {', '.join(names)})"
                for name in m.gold if name not in names]
    if m.gold and not spec.eval.every:
        problems.append("monitor.gold: gold rewards are scored on the eval prompts; set eval.every > 0")
    known = watchable_metrics(trained_rewards(spec.cfg), list(m.gold), evaluating=spec.eval.every > 0)
    for metric, threshold in m.alerts.items():
        if metric not in known:
            problems.append(f"monitor.alerts.{metric}: not a metric this run logs (accepted: {', '.join(known)})")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            problems.append(f"monitor.alerts.{metric}: the threshold must be a number > 0, got {threshold!r}")
    return problems


def _check_placement(spec: TrainSpec) -> list[str]:
    """Resource amounts an actor can use, and what colocated placement needs."""
    p, learner, r = spec.placement, spec.learner, spec.rollout
    problems = [f"{key}: must be in [0, 1] (an actor uses one device; a share below 1 leaves the rest of the GPU "
                f"to reward actors), got {value}"
                for key, value in (("rollout.num_gpus", r.num_gpus), ("learner.num_gpus", learner.num_gpus),
                                   ("reward_workers.num_gpus", spec.reward_workers.num_gpus)) if not 0 <= value <= 1]
    if p.mode == "colocated":
        if r.num_actors != learner.world_size:
            problems.append(f"rollout.num_actors: colocated placement holds one rollout replica per learner rank, "
                            f"so it must equal learner.world_size ({learner.world_size}), got {r.num_actors}")
        if learner.num_gpus <= 0.5:
            problems.append(f"learner.num_gpus: colocated workers take one GPU each, so their share must be above "
                            f"0.5, got {learner.num_gpus}")
        if p.separate_nodes:
            problems.append("placement.separate_nodes: applies to split placement only (placement.mode: split)")
        if learner.weight_sync != "auto":
            problems.append(f"learner.weight_sync: colocated workers copy the weights within their process; leave it "
                            f"at auto, got {learner.weight_sync!r}")
    elif p.offload_decoder:
        problems.append("placement.offload_decoder: applies to colocated placement only (placement.mode: colocated)")
    return problems
