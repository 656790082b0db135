"""The training config: plain sections as dataclasses (each field documented here), components by
import path, and `validate_train_config`, which reports every problem before Ray starts or a model loads.

Top-level layout (see configs/xomni.yaml and configs/tiny.yaml):
  run, ray, model.{policy,tokenizer,decoder} (components), prompts (component), rollout, rewards
  (name -> component), ensemble, gating, reward_workers, trainer, learner, checkpoint, logging, resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval
from omegaconf import DictConfig

from rl.config import ConfigError, build_section, validate_component, validate_section
from rl.model.sampler import SamplingParams


@dataclass
class RunConfig:
    """dir: run directory (metrics.jsonl, tensorboard/, checkpoints/); on a cluster it must be on storage
    that every node sees. seed: the run seed; all sampling randomness derives from (seed, step, prompt
    index, sample index). name: a label for loggers. overwrite: start from step 0 in a dir that holds an
    earlier run (its checkpoints and metrics are replaced); without it such a start is refused, so a
    forgotten `resume=auto` loses nothing."""

    dir: str
    seed: Annotated[int, Ge(0)] = 0
    name: str = "xomni-rl"
    overwrite: bool = False


@dataclass
class RayConfig:
    """address: null starts a local Ray (the embedded default); "auto" or "ray://host:10001" joins a cluster.
    num_cpus / num_gpus: resources of the local Ray (ignored when joining). namespace: Ray namespace.
    call_timeout_s: the longest a rollout or learner call may take before the run stops as stuck."""

    address: str | None = None
    num_cpus: Annotated[int, Ge(1)] | None = None
    num_gpus: Annotated[int, Ge(0)] | None = None
    namespace: str = "xomni-rl"
    call_timeout_s: Annotated[float, Gt(0)] | None = 3600.0


@dataclass
class RolloutConfig:
    """num_actors: rollout actors (each a policy + decoder replica). num_gpus / num_cpus: per actor.
    prompts_per_step: prompts drawn per GRPO step; group_size: samples per prompt (G).
    grid: image token grid [h, w] (16 px per token: 24x24 -> 384 px). batch_size: sequences sampled at once
    by one actor. dtype: rollout precision ("bfloat16" on GPU). sampling: temperature, top_k, top_p, min_p,
    cfg_scale (see rl.model.sampler.SamplingParams; X-Omni samples with temperature 1.0, min_p 0.03, top_p 1.0,
    top_k 50 and no CFG)."""

    num_actors: Annotated[int, Ge(1)] = 1
    num_gpus: Annotated[float, Ge(0)] = 0.0
    num_cpus: Annotated[float, Ge(0)] = 1.0
    prompts_per_step: Annotated[int, Ge(1)] = 32
    group_size: Annotated[int, Ge(2)] = 16
    grid: list = field(default_factory=lambda: [24, 24])
    batch_size: Annotated[int, Ge(1)] = 64
    dtype: str = "float32"
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class RewardWorkersConfig:
    """Each configured reward runs in its own Ray actor. num_cpus / num_gpus: per reward actor; resources:
    reward name -> {num_cpus, num_gpus} for the rewards that need other amounts (e.g. a GPU share).
    max_restarts: restarts of a dead or hung reward actor before the run stops.
    max_failure_frac / failure_window: a reward failing (error, timeout, wrong output, dead actor) on more
    than this fraction of its samples over the last `failure_window` steps stops the run with a message
    naming it (a single bad step in a longer window does not). start_timeout_s: the longest a reward actor
    may take to load its model (at start and after a restart)."""

    num_cpus: Annotated[float, Ge(0)] = 1.0
    num_gpus: Annotated[float, Ge(0)] = 0.0
    resources: dict = field(default_factory=dict)
    max_restarts: Annotated[int, Ge(0)] = 3
    max_failure_frac: Annotated[float, Interval(ge=0, le=1)] = 0.5
    failure_window: Annotated[int, Ge(1)] = 5
    start_timeout_s: Annotated[float, Gt(0)] = 600.0


@dataclass
class TrainerConfig:
    """steps: total GRPO steps. lr, weight_decay, betas, eps: AdamW. warmup_steps: linear LR warm-up, then
    constant. grad_clip: max global grad norm (0 disables). clip_eps / clip_eps_high: PPO ratio clip (high
    defaults to clip_eps). kl_coef: beta of the k3 KL to the frozen initial policy. aggregation: "sequence"
    (mean per sequence, then over sequences; GRPO / X-Omni) or "token". advantage_scale: "group" std,
    "batch" std, or "none". mini_batches: optimizer steps per rollout batch (1 = strictly on-policy).
    micro_batch_size: sequences per forward/backward (gradient accumulation). max_nonfinite_steps: this many
    skipped (non-finite) steps in a row stop the run. max_unscored_steps: this many steps in a row where no
    reward applies to any sample (each warned about with its cause) stop the run. gradient_checkpointing:
    recompute activations. Ranges: lr, eps, clip_eps > 0; weight_decay, grad_clip, kl_coef >= 0; counts >= 1."""

    steps: Annotated[int, Ge(1)] = 200
    lr: Annotated[float, Gt(0)] = 1e-6
    weight_decay: Annotated[float, Ge(0)] = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: Annotated[float, Gt(0)] = 1e-8
    warmup_steps: Annotated[int, Ge(0)] = 0
    grad_clip: Annotated[float, Ge(0)] = 1.0
    clip_eps: Annotated[float, Gt(0)] = 0.2
    clip_eps_high: Annotated[float, Gt(0)] | None = None
    kl_coef: Annotated[float, Ge(0)] = 0.01
    aggregation: Literal["sequence", "token"] = "sequence"
    advantage_scale: Literal["group", "batch", "none"] = "group"
    mini_batches: Annotated[int, Ge(1)] = 1
    micro_batch_size: Annotated[int, Ge(1)] = 8
    max_nonfinite_steps: Annotated[int, Ge(1)] = 3
    max_unscored_steps: Annotated[int, Ge(1)] = 3
    gradient_checkpointing: bool = False


@dataclass
class LearnerConfig:
    """world_size: learner actors; >1 shards the policy with FSDP across them (torch.distributed inside Ray
    actors; gloo on CPU, NCCL on GPU). num_gpus / num_cpus: per learner actor. dtype: parameter dtype
    (keep "float32": AdamW on bf16 weights loses small updates). mixed_precision: bf16 compute with fp32
    master weights (FSDP's MixedPrecisionPolicy when sharded, autocast otherwise). weight_sync: "auto"
    (NCCL broadcast when the learner and rollout actors have GPUs, else the object store), "object_store" or
    "collective"."""

    world_size: Annotated[int, Ge(1)] = 1
    num_gpus: Annotated[float, Ge(0)] = 0.0
    num_cpus: Annotated[float, Ge(0)] = 1.0
    dtype: str = "float32"
    mixed_precision: bool = False
    weight_sync: Literal["auto", "object_store", "collective"] = "auto"


@dataclass
class CheckpointConfig:
    """every: save every N steps (and at the end); 0 disables periodic saves. keep: complete checkpoints kept."""

    every: Annotated[int, Ge(0)] = 50
    keep: Annotated[int, Ge(1)] = 2


@dataclass
class LoggingConfig:
    """tensorboard: event files in <run.dir>/tensorboard. wandb: null, or kwargs for wandb.init (used only
    when wandb is installed). images_every: every N steps log a grid of samples per prompt with their
    rewards (0 disables). images_prompts: prompts shown in that grid."""

    tensorboard: bool = True
    wandb: dict | None = None
    images_every: Annotated[int, Ge(0)] = 10
    images_prompts: Annotated[int, Ge(1)] = 4


PLAIN_SECTIONS: dict[str, type] = {
    "run": RunConfig, "ray": RayConfig, "rollout": RolloutConfig, "reward_workers": RewardWorkersConfig,
    "trainer": TrainerConfig, "learner": LearnerConfig, "checkpoint": CheckpointConfig, "logging": LoggingConfig,
}
MODEL_COMPONENTS = ("policy", "tokenizer", "decoder")
TOP_LEVEL = set(PLAIN_SECTIONS) | {"model", "prompts", "rewards", "ensemble", "gating", "resume", "paths"}
"""`paths` is free-form: weights locations set once and interpolated by components (`${paths.xomni}`)."""


@dataclass
class TrainSpec:
    """The validated plain sections; components stay as config nodes until the actor that owns them builds them."""

    run: RunConfig
    ray: RayConfig
    rollout: RolloutConfig
    reward_workers: RewardWorkersConfig
    trainer: TrainerConfig
    learner: LearnerConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    resume: str | None
    cfg: Any  # the whole DictConfig (components, rewards, ensemble, gating)


def validate_train_config(cfg: DictConfig) -> TrainSpec:
    """Every problem in a training config at once (ConfigError), or the parsed plain sections.

    Types, ranges and cross-field constraints are reported together, with the components' problems."""
    problems = [f"{k}: unknown top-level section (accepted: {', '.join(sorted(TOP_LEVEL))})"
                for k in cfg if k not in TOP_LEVEL]
    section_problems = [p for name, schema in PLAIN_SECTIONS.items()
                        for p in validate_section(cfg.get(name), schema, name)]
    model = cfg.get("model") or {}
    for name in MODEL_COMPONENTS:
        problems += validate_component(model.get(name), f"model.{name}")
    problems += validate_component(cfg.get("prompts"), "prompts")
    problems += _validate_rewards(cfg)
    problems += _check_resources(cfg)
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        problems.append(f"resume: expected null, 'auto' or a checkpoint path, got {resume!r}")
    spec = None
    if not section_problems:
        try:
            sections = {name: build_section(cfg.get(name), schema) for name, schema in PLAIN_SECTIONS.items()}
            spec = TrainSpec(**sections, resume=resume, cfg=cfg)
            section_problems = _check_values(spec)
        except ValueError as e:  # a dataclass's own check, e.g. SamplingParams' ranges
            section_problems = [f"rollout.sampling: {e}"]
    if problems or section_problems:
        raise ConfigError(section_problems + problems)
    return spec


def resource_needs(spec: TrainSpec, rewards: list[str]) -> dict[str, tuple[float, float]]:
    """(CPUs, GPUs) each part of the run asks Ray for."""
    r, learner, w = spec.rollout, spec.learner, spec.reward_workers
    needs = {"rollout": (r.num_actors * r.num_cpus, r.num_actors * r.num_gpus),
             "learner": (learner.world_size * learner.num_cpus, learner.world_size * learner.num_gpus)}
    for name in rewards:
        amounts = {"num_cpus": w.num_cpus, "num_gpus": w.num_gpus, **w.resources.get(name, {})}
        needs[f"reward {name}"] = (amounts["num_cpus"], amounts["num_gpus"])
    return needs


def _check_resources(cfg: DictConfig) -> list[str]:
    resources = (cfg.get("reward_workers") or {}).get("resources") or {}
    names = set(cfg.get("rewards") or {})
    problems = []
    for name, amounts in resources.items():
        if name not in names:
            problems.append(f"reward_workers.resources.{name}: {name!r} is not a configured reward")
        for key, value in (amounts or {}).items():
            if key not in ("num_cpus", "num_gpus"):
                problems.append(f"reward_workers.resources.{name}.{key}: unknown key "
                                "(accepted: num_cpus, num_gpus)")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                problems.append(f"reward_workers.resources.{name}.{key}: must be a number >= 0, got {value!r}")
    return problems


def _validate_rewards(cfg: DictConfig) -> list[str]:
    from rewards.ensemble import validate_reward_sections

    return validate_reward_sections(cfg)


def _check_values(spec: TrainSpec) -> list[str]:
    """Constraints that one field's type and range do not express (the ranges are on the dataclasses)."""
    problems = []
    r, t = spec.rollout, spec.trainer
    if len(r.grid) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in r.grid):
        problems.append(f"rollout.grid: expected [h, w] positive ints, got {r.grid}")
    if len(t.betas) != 2 or any(not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 <= b < 1
                                for b in t.betas):
        problems.append(f"trainer.betas: expected [beta1, beta2], each in [0, 1), got {t.betas}")
    total = r.prompts_per_step * r.group_size
    if total % t.mini_batches:
        problems.append(f"trainer.mini_batches: {t.mini_batches} does not divide the {total} samples of a step")
    elif (total // t.mini_batches) % spec.learner.world_size:
        problems.append(f"learner.world_size: {spec.learner.world_size} does not divide a mini-batch of "
                        f"{total // t.mini_batches} samples")
    return problems
