"""One step off-policy (`trainer.pipeline.async_steps: 1`): its config checks, and `python -m rl.train` end to end
on configs/tiny.yaml with the real OCR reward (its `main` in the module's local Ray; the run killed with SIGKILL in a
subprocess with a Ray of its own): the reward rises, and a run killed with SIGKILL mid-run and resumed repeats the
uninterrupted run's per-step metrics."""

import numpy as np
import pytest
import torch
from train_helpers import (
    REPO,
    assert_same_metrics,
    kill_after_checkpoint,
    portable,
    save_config,
    train,
)

from core.config import ConfigError, load_config
from rl.distributed.pipeline import StepRollout
from rl.driver.run_state import PENDING_ROLLOUT, read_pending_rollout, write_pending_rollout
from rl.evaluation.metrics import read_metrics
from rl.state.checkpoint import list_checkpoints
from rl.train_config import validate_train_config

# Shorter than tiny.yaml's run, which still shows the rise; a checkpoint every 3 steps to kill after. The batch
# and update are pinned (8 prompts x 8 samples, four optimizer steps, frozen text embedding), whatever the demo
# is tuned to.
STEPS = 15
ASYNC = ("trainer.pipeline.async_steps=1", f"trainer.steps={STEPS}", "checkpoint.every=3", "checkpoint.keep=10",
         "logging.tensorboard=false", "rollout.prompts_per_step=8", "rollout.group_size=8",
         "trainer.batching.mini_batches=4", "trainer.freeze_text_embedding=true")


def spec(*overrides):
    return validate_train_config(load_config(REPO / "configs" / "tiny.yaml",
                                             ["trainer.pipeline.async_steps=1", *overrides]))


def test_async_resolves_old_logprobs_to_the_sampler_and_refuses_what_it_cannot_do():
    # auto would recompute here (the rollout samples in bf16, the learner computes in fp32) but not under async.
    assert spec("rollout.dtype=bfloat16").trainer.loss.old_logprobs == "sampler"
    with pytest.raises(ConfigError) as refused:
        spec("placement.mode=colocated", "trainer.loss.old_logprobs=recompute", "trainer.loss.tis_cap=2.0")
    problems = refused.value.problems
    assert any(p.startswith("trainer.pipeline.async_steps: 1 overlaps the rollout") and "colocated" in p
               for p in problems)
    assert any(p.startswith("trainer.loss.old_logprobs: recompute would need") for p in problems)
    assert any(p.startswith("trainer.loss.tis_cap: needs trainer.loss.old_logprobs: recompute") for p in problems)
    with pytest.raises(ConfigError, match="trainer.pipeline.async_steps: must be 0 .* or 1"):
        spec("trainer.pipeline.async_steps=2")


def test_a_pending_rollout_round_trips_and_must_be_the_next_steps(tmp_path):
    grid = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    saved = StepRollout(5, ["a", "b"], torch.tensor([[1, 2], [3, 4]]), torch.randn(2, 2), torch.tensor([0.5, -0.5]),
                        {"reward/mean": 0.25, "reward/ocr/mean": float("nan")}, grid, 3, handed=["in memory only"])
    write_pending_rollout(tmp_path / PENDING_ROLLOUT, saved)
    loaded = read_pending_rollout(tmp_path, 4)
    assert (loaded.step, loaded.prompts, loaded.sampled_with, loaded.handed) == (5, ["a", "b"], 3, None)
    for name in ("tokens", "logprobs", "advantages"):
        assert torch.equal(getattr(loaded, name), getattr(saved, name))
    assert np.array_equal(loaded.grid, grid) and loaded.metrics["reward/mean"] == 0.25
    with pytest.raises(ConfigError, match="holds the rollout of step 5, not of step 4"):
        read_pending_rollout(tmp_path, 3)
    assert read_pending_rollout(tmp_path / "elsewhere", 4) is None


@pytest.mark.usefixtures("local_ray")
def test_async_tiny_learns_and_resumes_exactly_after_sigkill(tmp_path):
    """configs/tiny.yaml (8 prompts x 8 samples per step) one step off-policy for 15 steps: the mean reward of the
    last 5 steps exceeds that of the first 5 by at least two standard deviations of the first 5 steps' means;
    every rollout but the first was sampled one update old; a checkpoint holds the next step's rollout; killed
    with SIGKILL after a checkpoint and resumed, the run repeats the same per-step metrics."""
    cfg = portable(load_config(REPO / "configs" / "tiny.yaml", list(ASYNC)))
    config = save_config(cfg, tmp_path / "tiny_async.yaml")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = train(config, f"run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(straight / "metrics.jsonl")
    assert [r["rollout/staleness"] for r in metrics] == [0.0] + [1.0] * (STEPS - 1)
    means = [r["reward/mean"] for r in metrics]
    early, late = torch.tensor(means[:5]), torch.tensor(means[-5:])
    assert late.mean() - early.mean() >= 2 * early.std(), means

    checkpoints = dict(list_checkpoints(straight))
    pending = read_pending_rollout(checkpoints[9], 9)  # step 10's rollout, sampled with the weights of step 8
    assert (pending.step, pending.sampled_with, pending.tokens.shape) == (10, 8, (64, 3))
    assert pending.grid is not None  # logging.images_every=10: logged with step 10's row
    assert pending.metrics["reward/mean"] == pytest.approx(means[9])
    assert read_pending_rollout(checkpoints[STEPS], STEPS) is None  # nothing left to sample after the last step

    # Killed after a checkpoint, resumed to step 6: the rows of steps 1-6 are the uninterrupted run's (a step's row
    # does not depend on the rollout sampled beside its update, which the shorter run does not sample at step 6).
    killed_at = kill_after_checkpoint(config, broken, 3)
    assert 3 <= killed_at < 6
    resumed = train(config, f"run.dir={broken}", "resume=auto", "trainer.steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {killed_at}" in resumed.stdout
    assert_same_metrics(read_metrics(broken / "metrics.jsonl"), metrics[:6])
