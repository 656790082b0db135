"""What a training checkpoint holds besides the learner's files, and which checkpoint a run resumes from.

A checkpoint directory (see rl/state/checkpoint.py for how it is written atomically):
  learner/              torch.distributed.checkpoint files: each learner rank's shards of the trained
                        parameters and their AdamW state (rl/state/learner_checkpoint.py); frozen weights are
                        the starting policy's and are not stored. `python -m rl.export` makes an X-Omni folder.
  learner_state.json    LR schedule, the learner's counters, what was trained (LoRA settings)
  trainer_state.json    step, run seed, group size, what was trained, prompt-source position, reward
                        normaliser state, reward-actor restart counts and failure history
  pending_rollout.pt    one step off-policy only: the next step's rollout, sampled during this step with the
                        weights one update old (tokens, sampler log-probs, advantages, the metrics and sample grid
                        of its row), so a resumed run trains on it without those older weights
  config.yaml           the resolved config of the run that wrote it
  versions.json         package versions
  COMPLETE              written last
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from core.config import ConfigError
from rl.distributed.pipeline import StepRollout
from rl.evaluation.metrics import METRICS_FILE
from rl.state.checkpoint import (
    CorruptCheckpoint,
    checkpoint_root,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from rl.train_config import TrainSpec

TRAINER_STATE = "trainer_state.json"
PENDING_ROLLOUT = "pending_rollout.pt"
PACKAGES = ("xomni-rl", "torch", "transformers", "diffusers", "ray", "open_clip_torch", "trl", "rapidocr")


def find_resume_checkpoint(spec: TrainSpec, run_dir: Path) -> Path | None:
    """The checkpoint named by `resume` (null: none; "auto": the newest complete one in run_dir that verifies,
    or none yet; a path: that one, if it verifies). A checkpoint written with another seed or group size is
    refused (the run could not reproduce its own samples), and one that trained other weights (LoRA or not, a
    frozen or trained text embedding) too. Another learner.world_size is fine: the learner's files reshard."""
    if spec.resume is None:
        earlier = latest_checkpoint(run_dir) is not None or (run_dir / METRICS_FILE).exists()
        if earlier and not spec.run.overwrite:
            raise ConfigError([f"run.dir: {run_dir} holds an earlier run; continue it with resume=auto, or "
                               f"start over with run.overwrite=true (its checkpoints and metrics are replaced)"])
        if earlier:
            shutil.rmtree(checkpoint_root(run_dir), ignore_errors=True)
        return None
    if spec.resume == "auto":
        path = newest_that_verifies(run_dir)
        if path is None:
            print(f"resume=auto: no complete checkpoint in {run_dir}; starting from step 0", flush=True)
            return None
    else:
        path = Path(spec.resume)
        if not is_complete(path):
            raise ConfigError([f"resume: {path} is not a complete checkpoint (no COMPLETE marker)"])
        try:
            verify_checkpoint(path)
        except CorruptCheckpoint as e:
            raise CorruptCheckpoint(f"resume={path}: {e}") from None
    state = read_trainer_state(path)
    problems = []
    checks = [("run.seed", state["seed"], spec.run.seed),
              ("rollout.group_size", state["group_size"], spec.rollout.group_size)]
    if "trained" in state:
        now = trained_settings(spec)
        checks += [(f"trainer.{key}", state["trained"][key], now[key]) for key in now]
    for key, was, now in checks:
        if was != now:
            problems.append(f"{key}: the checkpoint {path} was written with {was}, this run sets {now}; "
                            f"resuming would not reproduce the run (set it back, or start a new run.dir)")
    if problems:
        raise ConfigError(problems)
    return path


def newest_that_verifies(run_dir: Path) -> Path | None:
    """resume=auto's checkpoint: the newest complete one that verifies, each newer one skipped with a warning
    naming its bad file; None when there is none yet. Checkpoints that all fail verification are an error:
    starting over would bury them under a new run."""
    found = list_checkpoints(run_dir)
    for _, path in reversed(found):
        try:
            verify_checkpoint(path)
            read_trainer_state(path)
        except CorruptCheckpoint as e:
            print(f"warning: resume=auto: {e}; trying the checkpoint before it", file=sys.stderr, flush=True)
            continue
        return path
    if found:
        raise CorruptCheckpoint(f"resume=auto: none of the {len(found)} checkpoints in {checkpoint_root(run_dir)} "
                                "verifies (see the warnings above); resume=PATH one of them after repairing it, or "
                                "start over with run.overwrite=true")
    return None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json; CorruptCheckpoint when it does not parse (a checkpoint written before
    checksums, edited or damaged since)."""
    file = Path(path) / TRAINER_STATE
    try:
        with open(file) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"checkpoint file {file} is missing or not valid JSON ({e})") from e


def write_checkpoint(run_dir: Path, step: int, spec: TrainSpec, learner: Any, prompts: Any, combiner: Any,
                     rewards: Any, pending: StepRollout | None = None) -> Path:
    """Everything needed to resume exactly at `step` (learner files are written by the learner actors), with
    the next step's rollout when one step off-policy already sampled it."""

    def write(directory: Path) -> None:
        learner.run("save", str(directory), stage="saving a checkpoint")
        state = {"step": step, "seed": spec.run.seed, "group_size": spec.rollout.group_size,
                 "trained": trained_settings(spec), "prompts": prompts.state_dict(), "ensemble": combiner.state_dict(),
                 "reward_pool": rewards.state_dict()}
        with open(directory / TRAINER_STATE, "w") as f:
            json.dump(state, f, indent=1)
        if pending is not None:
            write_pending_rollout(directory / PENDING_ROLLOUT, pending)
        OmegaConf.save(spec.cfg, directory / "config.yaml", resolve=True)
        with open(directory / "versions.json", "w") as f:
            json.dump(package_versions(), f, indent=1)

    return save_checkpoint(run_dir, step, write, spec.checkpoint.keep)


def write_pending_rollout(path: Path, rollout: StepRollout) -> None:
    """Tensors, strings and numbers only, so `read_pending_rollout` loads it with weights_only=True."""
    grid = None if rollout.grid is None else torch.from_numpy(rollout.grid)
    torch.save({"step": rollout.step, "prompts": rollout.prompts, "tokens": rollout.tokens,
                "logprobs": rollout.logprobs, "advantages": rollout.advantages, "metrics": rollout.metrics,
                "grid": grid, "sampled_with": rollout.sampled_with}, path)


def read_pending_rollout(checkpoint: Path, step: int) -> StepRollout | None:
    """The rollout of step + 1 saved with checkpoint `step`, or None when it holds none (an on-policy run, or
    the last step of an off-policy one: the next rollout is then sampled with the checkpoint's weights)."""
    path = Path(checkpoint) / PENDING_ROLLOUT
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=True)
    if saved["step"] != step + 1:
        raise ConfigError([f"resume: {path} holds the rollout of step {saved['step']}, not of step {step + 1}"])
    grid = None if saved["grid"] is None else saved["grid"].numpy()
    return StepRollout(saved["step"], saved["prompts"], saved["tokens"], saved["logprobs"], saved["advantages"],
                       saved["metrics"], grid, saved["sampled_with"])


def trained_settings(spec: TrainSpec) -> dict[str, Any]:
    """Which weights the run trains: a checkpoint only holds those, so a resume must train the same."""
    lora = spec.trainer.lora
    return {"lora": dataclasses.asdict(lora) if lora else None,
            "freeze_text_embedding": spec.trainer.freeze_text_embedding}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
