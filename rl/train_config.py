"""The training config: plain sections as dataclasses (each field documented here), components by
import path, and `validate_train_config`, which reports every problem before Ray starts or a model loads.

Top-level layout (see configs/xomni.yaml and configs/tiny.yaml):
  run, ray, model.{policy,tokenizer,decoder} (components), prompts (component), rollout, rewards
  (name -> component), ensemble, gating, reward_workers, trainer, learner, checkpoint, logging, eval,
  monitor, resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval
from omegaconf import DictConfig, ListConfig

from rl.config import ConfigError, build_section, resolve_local_path, validate_component, validate_section
from rl.evaluation.alerts import watchable_metrics
from rl.model.lora import LINEAR_LAYERS, LoraSettings
from rl.model.sampler import SamplingParams
from rl.model.weights import is_pretrained

DTYPES = ("float32", "bfloat16", "float16")


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
    num_cpus / num_gpus: resources of the local Ray (ignored when joining); num_gpus declares GPUs even on a
    machine without them (actors then run on the CPU), which is how the tests exercise GPU placements.
    namespace: Ray namespace. call_timeout_s: the longest a rollout or learner call may take before the run
    stops as stuck. placement_timeout_s: the longest the run waits for a joined cluster to offer the GPUs and
    CPUs it asks for, and for each placement group to be placed, before it stops with the numbers.
    start_timeout_s: the longest the rollout and learner actors may take to start (processes up, rollout
    models loaded) before the run stops saying how many started."""

    address: str | None = None
    num_cpus: Annotated[int, Ge(1)] | None = None
    num_gpus: Annotated[int, Ge(0)] | None = None
    namespace: str = "xomni-rl"
    call_timeout_s: Annotated[float, Gt(0)] | None = 3600.0
    placement_timeout_s: Annotated[float, Gt(0)] = 60.0
    start_timeout_s: Annotated[float, Gt(0)] = 600.0


@dataclass
class PlacementConfig:
    """Where the actors go and the memory plan checked before any of them starts (`python -m rl.plan`).

    mode: "split" (learner ranks and rollout replicas on GPUs of their own) or "colocated" (one worker per GPU
    holds a learner rank and a rollout replica, time-shared: rl/distributed/colocated.py).
    separate_nodes: split mode only: learner ranks and rollout replicas on disjoint nodes (learner first).
    offload_decoder: colocated mode only: move the decoder and text encoders to host memory while the learner
    works (and back for the rollout); null lets the memory plan decide (offloaded when a GPU's learning phases
    would not fit with them; never when the GPUs' memory is unknown).
    check: "error" refuses to start a run the plan says does not fit (exit 2); "warn" prints the plan and starts.
    gpu_memory_gib: memory of one GPU to plan against; null reads it on each node with nvidia-smi (declared
    GPUs without devices then go unchecked). prompt_tokens: prompt length in tokens (with the image prefix)
    that the plan assumes for KV cache and activations; longer prompts need more."""

    mode: Literal["colocated", "split"] = "split"
    separate_nodes: bool = False
    offload_decoder: bool | None = None
    check: Literal["error", "warn"] = "error"
    gpu_memory_gib: Annotated[float, Gt(0)] | None = None
    prompt_tokens: Annotated[int, Ge(1)] = 256


@dataclass
class RolloutConfig:
    """num_actors: rollout actors (each a policy + decoder replica). num_gpus / num_cpus: per actor (num_gpus at
    most 1: an actor uses one device; a share below 1 leaves the rest of that GPU to reward actors).
    prompts_per_step: prompts drawn per GRPO step; group_size: samples per prompt (G).
    grid: image token grid [h, w] (16 px per token: 24x24 -> 384 px). batch_size: sequences sampled at once
    by one actor. dtype: rollout precision ("bfloat16" on GPU). sampling: temperature, top_k, top_p, min_p,
    cfg_scale (see rl.model.sampler.SamplingParams; X-Omni samples with temperature 1.0, min_p 0.03, top_p 1.0,
    top_k 50 and no CFG). compile: torch.compile the sampler's per-token step (on a static KV cache) and the
    decoder's FLUX transformer; the first batch of each shape pays the compile time (minutes on a CPU), and
    the result equals eager up to float rounding (tested on the CPU; never run on a GPU)."""

    num_actors: Annotated[int, Ge(1)] = 1
    num_gpus: Annotated[float, Ge(0)] = 0.0
    num_cpus: Annotated[float, Ge(0)] = 1.0
    prompts_per_step: Annotated[int, Ge(1)] = 32
    group_size: Annotated[int, Ge(2)] = 16
    grid: list = field(default_factory=lambda: [24, 24])
    batch_size: Annotated[int, Ge(1)] = 64
    dtype: str = "float32"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    compile: bool = False


@dataclass
class RewardWorkersConfig:
    """Each configured reward runs in its own Ray actor(s). num_cpus / num_gpus: per reward actor.
    replicas: actors per reward; each reward call scores one chunk of `ensemble.batch_size` rows, and a
    reward's chunks go to whichever of its actors is free, so 4 OCR replicas read 4 chunks at once (rows
    keep their order). resources: reward name -> {num_cpus, num_gpus, replicas} for the rewards that need
    other values than the defaults above (e.g. a GPU share, or more replicas of a CPU-bound reward).
    max_restarts: restarts of one dead or hung reward actor (each replica counts its own) before the run stops.
    max_failure_frac / failure_window: a reward actor failing (error, timeout, wrong output, dead actor) on
    more than this fraction of the rows it scored over the last `failure_window` steps stops the run with a
    message naming the reward (and the replica); a single bad step in a longer window does not.
    start_timeout_s: the longest a reward actor may take to load its model (at start and after a restart)."""

    num_cpus: Annotated[float, Ge(0)] = 1.0
    num_gpus: Annotated[float, Ge(0)] = 0.0
    replicas: Annotated[int, Ge(1)] = 1
    resources: dict = field(default_factory=dict)
    max_restarts: Annotated[int, Ge(0)] = 3
    max_failure_frac: Annotated[float, Interval(ge=0, le=1)] = 0.5
    failure_window: Annotated[int, Ge(1)] = 5
    start_timeout_s: Annotated[float, Gt(0)] = 600.0

    def actors(self, name: str) -> tuple[dict[str, float], int]:
        """Ray resources of one actor of reward `name` ({num_cpus, num_gpus}) and how many replicas it has."""
        own = dict(self.resources.get(name) or {})
        replicas = own.pop("replicas", self.replicas)
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **own}, replicas


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
    recompute activations.
    lora: null trains every weight but the frozen ones below (full fine-tuning); {r, alpha, dropout,
    target_modules} trains LoRA adapters only (rl.model.lora.LoraSettings), the base staying frozen in
    learner.reference_dtype and serving as the reference policy with the adapters off. freeze_text_embedding:
    keep the text embedding (`model.lm_embed_tokens`) at the starting policy's (image RL only reaches it through
    prompts); the text head (`lm_head`) is always frozen: image generation never uses it.
    old_logprobs: the log-probs the ratio divides by. "recompute": the learner's own, computed before its
    update under the weights that sampled, with the training pass's function and micro-batch shapes (the first
    ratio is exactly 1); "sampler": the rollout's. "auto" (default) resolves to "recompute" when the rollout's
    dtype or device differs from the learner's compute dtype or device, or tis_cap is set, else to "sampler". Both log
    `mismatch/kl` and `mismatch/abs_max` (learner against sampler). tis_cap: null, or truncated importance
    sampling: each token's policy-gradient term weighed by min(learner / sampler probability, tis_cap); needs
    "recompute". streaming: within a step, each rollout chunk (rollout.batch_size rows of one actor) goes to
    the reward actors and the learner's no-grad passes as soon as it is decoded (same samples as false, which
    runs the stages one after the other; colocated placement always does, its workers holding one phase at a
    time). async_steps: 0 samples each step's rollout with the weights its update
    starts from (on-policy); 1 (one-step off-policy, split placement only) samples the rollout of step k+1 while
    the learner updates on step k, with the weights of step k-1 (one update old; `rollout/staleness` logs 0 or
    1 per step). The ratio then divides by the behaviour policy's log-probs, the sampler's: "auto" resolves to
    "sampler", and "recompute" (which would need the older weights on the learner) and tis_cap are refused.
    Ranges: lr, eps, clip_eps > 0; weight_decay, grad_clip, kl_coef >= 0; counts >= 1."""

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
    lora: LoraSettings | None = None
    freeze_text_embedding: bool = True
    old_logprobs: Literal["auto", "recompute", "sampler"] = "auto"
    tis_cap: float | None = None
    streaming: bool = True
    async_steps: int = 0

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)


@dataclass
class LearnerConfig:
    """world_size: learner actors; >1 shards the policy with FSDP across them (torch.distributed inside Ray
    actors; gloo on CPU, NCCL on GPU). num_gpus / num_cpus: per learner actor (num_gpus at most 1; in
    colocated placement they are one worker's: learner.num_gpus and learner.num_cpus + rollout.num_cpus, and
    rollout.num_actors must equal world_size). dtype: dtype of the trained
    parameters (keep "float32": AdamW on bf16 weights loses small updates). reference_dtype: dtype of the frozen
    reference policy (with LoRA: of the whole frozen base, which is the reference). mixed_precision: bf16
    compute with fp32 master weights (FSDP's MixedPrecisionPolicy when sharded, autocast otherwise).
    grad_sync: when sharded, "last_micro_batch" reduce-scatters gradients once per optimizer step (earlier
    micro-batches accumulate unsharded gradients: one full gradient copy per GPU, in fp32), "every_micro_batch"
    after each micro-batch (sharded gradient memory, more communication). weight_sync: "auto" (NCCL broadcast
    when the learner and rollout actors have GPUs, else the object store), "object_store" or "collective"; in
    colocated placement always an in-process copy ("auto")."""

    world_size: Annotated[int, Ge(1)] = 1
    num_gpus: Annotated[float, Ge(0)] = 0.0
    num_cpus: Annotated[float, Ge(0)] = 1.0
    dtype: str = "float32"
    reference_dtype: str = "bfloat16"
    mixed_precision: bool = False
    grad_sync: Literal["last_micro_batch", "every_micro_batch"] = "last_micro_batch"
    weight_sync: Literal["auto", "object_store", "collective"] = "auto"


@dataclass
class CheckpointConfig:
    """every: save every N steps (and at the end); 0 disables periodic saves. keep: complete checkpoints kept.
    export_final: after the last step, also write the final policy as a complete X-Omni folder in
    <run.dir>/export (what `python -m rl.export` writes, with model.policy's folder as the base)."""

    every: Annotated[int, Ge(0)] = 50
    keep: Annotated[int, Ge(1)] = 2
    export_final: bool = False


@dataclass
class LoggingConfig:
    """tensorboard: event files in <run.dir>/tensorboard. wandb: null, or kwargs for wandb.init (used only
    when wandb is installed). images_every: every N steps log a grid of samples per prompt with their
    rewards (0 disables). images_prompts: prompts shown in that grid."""

    tensorboard: bool = True
    wandb: dict | None = None
    images_every: Annotated[int, Ge(0)] = 10
    images_prompts: Annotated[int, Ge(1)] = 4


@dataclass
class EvalConfig:
    """Evaluation on held-out prompts during training (rl/evaluation/evaluator.py). The rollout actors draw
    `samples_per_prompt` images per prompt with seeds fixed for the whole run (rl.seeding.eval_seed), the
    reward actors score them, and the row of that step gets `eval/reward/<name>/mean`, `eval/reward/mean`,
    `eval/gate/...`, `eval/task/<task>/reward/...`, `eval/monitor/...` and `time/eval_s`.

    every: evaluate before the first step (a `step: 0` row), every `every` steps and after the last step;
        0 switches evaluation off.
    prompts: held-out prompt file(s) (.txt / .jsonl / .parquet), read in file order; null: the shipped
        prompts/data/eval_prompts.jsonl (text-rendering, natural-scene and general prompts that are in no
        training file).
    num_prompts: evaluate the first N prompts only (null: all of them).
    samples_per_prompt: images per prompt.
    grid_prompts: prompts (with all their samples) in the grid logged at every evaluation: `eval/samples` in
        TensorBoard / W&B and <run.dir>/eval/step_NNNNNNNN.png (0: no grid).
    The eval total `eval/reward/mean` combines the trained rewards with the training weights and gates; an
    `ensemble.normalize` that depends on the batch or the run's history ("batch", "running") is replaced by
    the stateless "range" there ("none" when a reward has no score_range), so evaluations compare on one scale.
    """

    every: int = 0
    prompts: str | list | None = None
    num_prompts: int | None = None
    samples_per_prompt: int = 2
    grid_prompts: int = 4


@dataclass
class MonitorConfig:
    """Reward-hacking monitors (rl/evaluation/monitors.py). Every step logs `monitor/saturation`,
    `monitor/brightness`, `monitor/hf_energy`, `monitor/jpeg_bpp` (means over the batch's valid images),
    `monitor/diversity/tokens|images` (mean pairwise distance within a prompt's group; 0 = collapsed) and
    `monitor/advantage_corr/<reward>` (correlation of the reward's group-normalised scores with the advantages).

    gold: rewards (names under `rewards:`) scored on the eval prompts only, as `eval/reward/<name>/mean`. They
        never enter the training total, so their curve beside the trained rewards' shows a divergence (reward
        hacking). They are gated like the others (gating.default, rules, needs_text); they need no ensemble
        weight (one given is not used). Needs eval.every > 0. Their faults count as any reward's
        (reward_workers.max_failure_frac over failure_window calls), but training steps give them no rows,
        so a gold reward failing on most rows of one evaluation stops the run once its window has filled.
    alerts: metric -> relative threshold. When |value - step-0 value| > threshold * |step-0 value| (the
        absolute difference when the step-0 value is 0), a warning names the metric and `monitor/alerts`
        counts it in that row. The step-0 value is the first one the run logged: the step-0 evaluation's for
        `eval/...`, step 1's for per-step metrics. Accepted metrics are listed when a wrong one is given.
    stop_on_alert: stop the run (exit status 1) after logging a row that raised an alert.
    """

    gold: list = field(default_factory=list)
    alerts: dict = field(default_factory=dict)
    stop_on_alert: bool = False


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


def validate_train_config(cfg: DictConfig, components: bool = True) -> TrainSpec:
    """Every problem in a training config at once (ConfigError), or the parsed plain sections.

    Types, ranges and cross-field constraints are reported together, with the components' problems.
    components=False checks the plain sections only (the memory plan, which runs before any weights exist,
    sizes components itself and accepts weights paths left `???`)."""
    problems = [f"{k}: unknown top-level section (accepted: {', '.join(sorted(TOP_LEVEL))})"
                for k in cfg if k not in TOP_LEVEL]
    section_problems = [p for name, schema in PLAIN_SECTIONS.items()
                        for p in validate_section(cfg.get(name), schema, name)]
    if components:
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
            section_problems = _check_values(spec) + _check_old_logprobs(spec)
        except ValueError as e:  # a dataclass's own check, e.g. SamplingParams' ranges
            section_problems = [f"rollout.sampling: {e}"]
    if problems or section_problems:
        raise ConfigError(section_problems + problems)
    spec.trainer.old_logprobs = old_logprobs_mode(spec)
    return spec


def old_logprobs_mode(spec: TrainSpec) -> str:
    """`trainer.old_logprobs` resolved: "auto" recomputes when sampler and learner compute differently, except
    one step off-policy, where only the sampler's log-probs are the behaviour policy's."""
    t, learner, r = spec.trainer, spec.learner, spec.rollout
    if t.old_logprobs != "auto":
        return t.old_logprobs
    if t.async_steps:
        return "sampler"
    compute_dtype = "bfloat16" if learner.mixed_precision else learner.dtype
    # A colocated replica runs in its learner rank's process, on its device, whatever rollout.num_gpus says.
    rollout_on_gpu = learner.num_gpus > 0 if spec.placement.mode == "colocated" else r.num_gpus > 0
    differs = r.dtype != compute_dtype or rollout_on_gpu != (learner.num_gpus > 0)
    return "recompute" if differs or t.tis_cap is not None else "sampler"


def _check_old_logprobs(spec: TrainSpec) -> list[str]:
    t, problems = spec.trainer, []
    if t.async_steps:
        return _check_async(spec)
    if t.tis_cap is not None:
        if not t.tis_cap > 0:
            problems.append(f"trainer.tis_cap: must be > 0, got {t.tis_cap}")
        if old_logprobs_mode(spec) != "recompute":
            problems.append("trainer.tis_cap: weighs tokens by learner / sampler probability, so it needs "
                            "trainer.old_logprobs: recompute")
    return problems


def _check_async(spec: TrainSpec) -> list[str]:
    """One step off-policy: the rollout runs beside the learner's update, on the older weights."""
    t, problems = spec.trainer, []
    if t.async_steps != 1:
        return [f"trainer.async_steps: must be 0 (on-policy) or 1 (one step off-policy), got {t.async_steps}"]
    if spec.placement.mode == "colocated":
        problems.append("trainer.async_steps: 1 overlaps the rollout with the learner's update, so they need GPUs "
                        "of their own; placement.mode: colocated shares them (set placement.mode=split or "
                        "trainer.async_steps=0)")
    if t.old_logprobs == "recompute":
        problems.append("trainer.old_logprobs: recompute would need the weights one update old on the learner; under "
                        "trainer.async_steps=1 the ratio divides by the sampler's log-probs (set sampler or auto)")
    if t.tis_cap is not None:
        problems.append("trainer.tis_cap: needs trainer.old_logprobs: recompute, which trainer.async_steps=1 does "
                        "not allow (the ratio already divides by the behaviour policy's log-probs)")
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


def _validate_rewards(cfg: DictConfig) -> list[str]:
    """The reward sections, for the trained rewards; gold rewards need only a valid component."""
    from rewards.ensemble import validate_reward_sections

    rewards = cfg.get("rewards")
    if not rewards or not hasattr(rewards, "items"):
        return validate_reward_sections(cfg)
    trained = trained_rewards(cfg)
    if not trained:
        return ["monitor.gold: lists every configured reward; training needs at least one other"]
    gold = [name for name in rewards if name not in trained]
    return (validate_reward_sections(cfg, trained if gold else None)
            + [p for name in gold for p in validate_component(rewards[name], f"rewards.{name}")])


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
    for key, value in (("rollout.dtype", r.dtype), ("learner.dtype", spec.learner.dtype),
                       ("learner.reference_dtype", spec.learner.reference_dtype)):
        if value not in DTYPES:
            problems.append(f"{key}: must be one of {list(DTYPES)}, got {value!r}")
    if spec.checkpoint.export_final and not is_pretrained(spec.cfg.model.policy):
        problems.append("checkpoint.export_final: needs model.policy to be rl.model.policy.XOmniPolicy.from_pretrained "
                        "(its folder is the base the final policy is exported over)")
    return problems + _check_lora(t.lora) + _check_eval(spec.eval) + _check_monitor(spec) + _check_placement(spec)


def _check_lora(lora: LoraSettings | None) -> list[str]:
    if lora is None:
        return []
    problems = []
    if lora.r < 1:
        problems.append(f"trainer.lora.r: must be >= 1, got {lora.r}")
    if lora.alpha <= 0:
        problems.append(f"trainer.lora.alpha: must be > 0, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        problems.append(f"trainer.lora.dropout: must be in [0, 1), got {lora.dropout}")
    unknown = [m for m in lora.target_modules if m not in LINEAR_LAYERS]
    if unknown or not lora.target_modules:
        problems.append(f"trainer.lora.target_modules: expected a non-empty list of {', '.join(LINEAR_LAYERS)}; "
                        f"got {list(lora.target_modules)}")
    return problems


def _check_eval(e: EvalConfig) -> list[str]:
    problems = [f"eval.{key}: must be >= {low}, got {value}" for key, value, low in (
        ("every", e.every, 0), ("num_prompts", e.num_prompts, 1), ("samples_per_prompt", e.samples_per_prompt, 1),
        ("grid_prompts", e.grid_prompts, 0)) if value is not None and value < low]
    paths = [e.prompts] if isinstance(e.prompts, str) else e.prompts or []
    for i, path in enumerate(paths):
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
