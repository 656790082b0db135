"""Small training configs for the tests: configs/tiny.yaml scaled down, rewards swapped in by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
from omegaconf import DictConfig, OmegaConf

from rl.config import load_config
from rl.train_config import TrainSpec, validate_train_config

REPO = Path(__file__).resolve().parents[1]
SMALL = ["logging.tensorboard=false", "logging.images_every=0", "rollout.prompts_per_step=2",
         "rollout.group_size=4", "rollout.batch_size=8", "trainer.micro_batch_size=8", "checkpoint.every=0"]


def tiny_config(run_dir: Path, rewards: dict | None = None, overrides: tuple[str, ...] = ()) -> DictConfig:
    """configs/tiny.yaml with 2 prompts x 4 samples per step; `rewards` (name -> component) replaces its
    OCR reward, each with weight 1 and applied to every prompt."""
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"run.dir={run_dir}", *SMALL, *overrides])
    cfg.prompts.paths = [str((REPO / "configs" / p).resolve()) for p in cfg.prompts.paths]  # saved elsewhere
    cfg.eval.prompts = [str((REPO / "configs" / p).resolve()) for p in cfg.eval.prompts]
    if rewards is not None:
        cfg.rewards = rewards
        cfg.ensemble.weights = dict.fromkeys(rewards, 1.0)
        cfg.gating = {"default": list(rewards)}
    return cfg


def tiny_spec(run_dir: Path, rewards: dict | None = None, overrides: tuple[str, ...] = ()) -> TrainSpec:
    return validate_train_config(tiny_config(run_dir, rewards, overrides))


def save_config(cfg: DictConfig, path: Path) -> Path:
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module. Workers import `tests.fault_components` from the repo root."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(address="local", num_cpus=8, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()
