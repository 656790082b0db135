"""`python -m rl.train` end to end (its `main`, in the module's local Ray; the run killed with SIGKILL in a
subprocess with a Ray of its own): resume equivalence across a SIGKILL, and the errors a user sees before anything
loads."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import (
    REPO,
    assert_same_metrics,
    kill_after_checkpoint,
    save_config,
    tiny_config,
    train,
)

from rl.driver.run_state import TRAINER_STATE
from rl.evaluation.metrics import read_metrics
from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy
from rl.state.checkpoint import list_checkpoints, save_checkpoint


def exported(run_dir: Path) -> dict[str, torch.Tensor]:
    return XOmniPolicy.from_pretrained(run_dir / "export").state_dict()


@pytest.mark.usefixtures("local_ray")
def test_resume_after_sigkill_with_two_or_one_learner_ranks_reproduces_the_run(tmp_path):
    """Two FSDP learner ranks (gloo) stream the starting policy from an X-Omni folder; killed mid-run and resumed
    with two ranks and, from a copy, with one, the per-step metrics and the final exported policy match the
    uninterrupted run; so does the one-rank resume when its newest checkpoint has a truncated shard and it falls back
    to the one before."""
    base = tmp_path / "base"
    tiny_policy(seed=0, image_vocab_size=40, mm_vocab_size=128).save_pretrained(base)  # tiny.yaml's
    cfg = tiny_config(tmp_path, overrides=("trainer.steps=4", "checkpoint.every=1", "checkpoint.keep=2",
                                           "learner.world_size=2", "checkpoint.export_final=true",
                                           "trainer.loss.kl_coef=0.0"))  # KL near 0 differs by rounding across ranks
    cfg.model.policy = {"_component_": "rl.model.policy.XOmniPolicy.from_pretrained", "path": str(base)}
    config = save_config(cfg, tmp_path / "tiny.yaml")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = train(config, f"run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported the final policy to {straight / 'export'}" in done.stdout
    ending = done.stdout.splitlines()[-4:]  # where the outputs are, last (no TensorBoard in these tests)
    assert ending[0] == f"outputs in {straight}:"
    assert ending[1].startswith(f"  metrics      {straight / 'metrics.jsonl'}")
    assert ending[2].startswith(f"  checkpoint   {list_checkpoints(straight)[-1][1]}  (go on: python -m rl.train")
    assert ending[3] == f"  export       {straight / 'export'}"

    killed_at = kill_after_checkpoint(config, broken, 2)
    assert 2 <= killed_at < 4
    # The copy's newest checkpoint gets a truncated shard: resume=auto falls back to the one before, saying why.
    one_rank = tmp_path / "broken_one_rank"
    shutil.copytree(broken, one_rank)
    (fallback, _), (_, newest) = list_checkpoints(one_rank)[-2:]
    shard = newest / "learner" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    expected = read_metrics(straight / "metrics.jsonl")
    for run_dir, ranks, at in ((broken, 2, killed_at), (one_rank, 1, fallback)):
        resumed = train(config, f"run.dir={run_dir}", "resume=auto", f"learner.world_size={ranks}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"at step {at}" in resumed.stdout
        assert (f"warning: resume=auto: checkpoint file {shard} is 100 bytes" in resumed.stderr) == (ranks == 1)
        got = read_metrics(run_dir / "metrics.jsonl")
        assert [r["step"] for r in got] == [1, 2, 3, 4]
        # On one rank the log-probs round differently: mismatch/abs_max, itself a float32 rounding gap, moved by
        # one ulp (4.8e-7 -> 7.2e-7 measured); on two ranks the resumed run is bit-equal.
        assert_same_metrics(got, expected, abs_tol=1e-6 if ranks == 1 else 1e-7)
        assert [s for s, _ in list_checkpoints(run_dir)] == [3, 4]  # keep=2 rotated the older ones away
        final, want = exported(run_dir), exported(straight)
        gap = max((final[k] - want[k]).abs().max().item() for k in want)
        # On one rank the gradient sums round differently; AdamW's 1/sqrt(v) can turn that into ~1e-5 moves of
        # weights whose gradients are at rounding level (lr 1e-2). On two ranks the resumed run is the same one.
        assert gap <= (1e-4 if ranks == 1 else 1e-6), (ranks, gap)


@pytest.mark.usefixtures("local_ray")
def test_tiny_lora_learns_in_its_default_steps_and_resumes_exactly(tmp_path):
    """configs/tiny_lora.yaml as shipped (its own steps and batch): the mean reward of the last 5 steps exceeds that
    of the first 5 by at least two standard deviations of the first 5 steps' means; resumed from its last-but-one
    checkpoint, the run repeats the same per-step metrics."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    quiet = ("logging.tensorboard=false", "logging.images_every=0", "checkpoint.keep=10")
    done = train(REPO / "configs" / "tiny_lora.yaml", f"run.dir={straight}", *quiet)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(straight / "metrics.jsonl")
    means = [r["reward/mean"] for r in metrics]
    early, late = torch.tensor(means[:5]), torch.tensor(means[-5:])
    assert late.mean() - early.mean() >= 2 * early.std(), means

    steps = [s for s, _ in list_checkpoints(straight)]
    assert len(steps) > 2
    shutil.copytree(straight, resumed)
    for step, path in list_checkpoints(resumed):
        if step > steps[-2]:
            shutil.rmtree(path)
    again = train(REPO / "configs" / "tiny_lora.yaml", f"run.dir={resumed}", "resume=auto", *quiet)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {steps[-2]}" in again.stdout
    assert_same_metrics(read_metrics(resumed / "metrics.jsonl"), metrics)


def test_a_changed_seed_or_group_size_is_refused_on_resume(tmp_path):
    """Refused before Ray starts, so a checkpoint written by rl.driver.run_state's layout is enough here."""
    config = save_config(tiny_config(tmp_path, overrides=("trainer.steps=2",)), tmp_path / "tiny.yaml")
    state = {"step": 1, "seed": 0, "group_size": 4}
    save_checkpoint(tmp_path, 1, lambda path: (path / TRAINER_STATE).write_text(json.dumps(state)), keep=1)
    refused = train(config, "resume=auto", "run.seed=1", "rollout.group_size=2")
    assert refused.returncode == 2
    assert "run.seed: the checkpoint" in refused.stderr and "rollout.group_size: the checkpoint" in refused.stderr
    again = train(config)  # neither resume nor overwrite: the earlier run is kept
    assert again.returncode == 2 and "holds an earlier run" in again.stderr


def test_the_paper_config_lists_every_missing_weights_path_before_loading_anything():
    result = train(REPO / "configs" / "xomni.yaml")
    assert result.returncode == 2
    # each unset path once, naming every key that interpolates it
    assert "4 problem(s) in the config" in result.stderr and result.stderr.count("paths.xomni") == 1
    assert ("paths.xomni: required value is missing (???); interpolated by model.policy.path, model.tokenizer.path, "
            "model.decoder.xomni_path") in result.stderr
    for key, source in (("model.decoder.flux_path", "paths.flux"), ("rewards.hpsv2.checkpoint", "paths.hpsv2"),
                        ("rewards.clip_align.weights", "paths.clip")):
        assert f"{source}: required value is missing (???); interpolated by {key}\n" in result.stderr
    paths = ["paths.xomni=/nonexistent/xomni", "paths.flux=/nonexistent/flux", "paths.hpsv2=/nonexistent/hps.pt",
             "paths.clip=/nonexistent/clip.bin"]
    result = train(REPO / "configs" / "xomni.yaml", *paths)
    assert result.returncode == 2 and "file or folder not found: /nonexistent/flux" in result.stderr
