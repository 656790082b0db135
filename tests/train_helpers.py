"""Small training configs for the tests (configs/tiny.yaml scaled down, rewards swapped in by name), and
`python -m rl.train` run in this process or, to be killed with SIGKILL mid-run, in a subprocess; per-step metrics
compared."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from core.config import load_config
from rl.schema.trainer import TrainerConfig
from rl.state.checkpoint import list_checkpoints
from rl.train_config import TrainSpec, validate_train_config

REPO = Path(__file__).resolve().parents[1]
# Small and fast; a KL term, one optimizer step per update and the frozen text embedding of the paper config, as
# the tests expect, whatever the demo is tuned to.
SMALL = ["logging.tensorboard=false", "logging.images_every=0", "logging.curves=false",
         "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.batch_size=8",
         "trainer.batching.micro_batch_size=8", "checkpoint.every=0", "trainer.loss.kl_coef=0.01",
         "trainer.batching.mini_batches=1", "trainer.freeze_text_embedding=true"]


def tiny_config(run_dir: Path, rewards: dict | None = None, overrides: tuple[str, ...] = ()) -> DictConfig:
    """configs/tiny.yaml with 2 prompts x 4 samples per step; `rewards` (name -> component) replaces its
    OCR reward, each with weight 1 and applied to every prompt."""
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"run.dir={run_dir}", *SMALL, *overrides])
    portable(cfg)
    if rewards is not None:
        cfg.rewards = rewards
        cfg.ensemble.weights = dict.fromkeys(rewards, 1.0)
        cfg.gating = {"default": list(rewards)}
    return cfg


def portable(cfg: DictConfig) -> DictConfig:
    """A config loaded from configs/ with its prompt files made absolute: relative paths resolve from the config's
    folder, and these configs are saved elsewhere."""
    cfg.prompts.paths = [str((REPO / "configs" / p).resolve()) for p in cfg.prompts.paths]
    cfg.eval.prompts = [str((REPO / "configs" / p).resolve()) for p in cfg.eval.prompts]
    return cfg


def trainer_with(trainer: TrainerConfig, **changes) -> TrainerConfig:
    """`trainer` with `changes` (field name -> value) made wherever the field lives: trainer itself or its
    loss / batching / pipeline / faults section."""
    sections = {name: getattr(trainer, name) for name in ("loss", "batching", "pipeline", "faults")}
    top = {k: v for k, v in changes.items() if not any(hasattr(s, k) for s in sections.values())}
    for name, section in sections.items():
        own = {k: v for k, v in changes.items() if hasattr(section, k)}
        if own:
            top[name] = dataclasses.replace(section, **own)
    return dataclasses.replace(trainer, **top)


def tiny_spec(run_dir: Path, rewards: dict | None = None, overrides: tuple[str, ...] = ()) -> TrainSpec:
    return validate_train_config(tiny_config(run_dir, rewards, overrides))


def save_config(cfg: DictConfig, path: Path) -> Path:
    OmegaConf.save(cfg, path)
    return path


# Wall-clock figures differ between runs; everything else must not.
TIMING = ("time/", "rollout/tokens_per_s", "rollout/images_per_s")


def train(config, *overrides) -> subprocess.CompletedProcess:
    """`python -m rl.train config overrides...` in this process (`rl.train.main`), its stdout and stderr captured:
    what a subprocess would print and return, without a fresh interpreter importing the driver. It joins the Ray
    this process runs (the `local_ray` fixture's) or starts and stops one of its own, as the command does."""
    from rl.train import main

    argv = [str(config), *overrides]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def train_process(config, *overrides) -> subprocess.Popen:
    """`python -m rl.train` in a session of its own, so that killing its group takes the local Ray it starts."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # wandb hands a process's children its service's address: a run killed with its session must take its own
    # W&B service with it, as a user's would, not leave its W&B run open in this process's.
    env.pop("WANDB_SERVICE", None)
    return subprocess.Popen([sys.executable, "-m", "rl.train", str(config), *overrides], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def assert_same_metrics(got, expected, abs_tol: float = 1e-7):
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        for key in keys:  # CPU float32 with the same seeds: equal up to rounding (bit-equal on the same ranks)
            assert a[key] == (b[key] if b[key] is None else pytest.approx(b[key], rel=1e-5, abs=abs_tol)), key


def kill_after_checkpoint(config, run_dir: Path, step: int) -> int:
    """Start a run, SIGKILL it (driver, actors and its local Ray) once checkpoint `step` is complete; the newest
    complete checkpoint's step."""
    process = train_process(config, f"run.dir={run_dir}")
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= step for s, _ in list_checkpoints(run_dir)):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return list_checkpoints(run_dir)[-1][0]
