"""Faults during training (DESIGN.md reliability promises 3-6), injected on a real local Ray with tiny models.

Faulty rewards, a decoder that returns NaN images and a policy whose loss turns NaN are ordinary
components from tests/fault_components.py; actors are killed with `ray.kill`.
"""

import itertools
import json
import math
from contextlib import ExitStack

import pytest
import ray
import torch
from train_helpers import tiny_spec

from rl.distributed.reward_pool import RunAborted
from rl.driver.trainer import Trainer

GOOD = {"_component_": "tests.fault_rewards.MeanPixel"}


@pytest.fixture
def trainer_for(tmp_path, local_ray):
    runs = itertools.count()
    with ExitStack() as made:  # every trainer a test made is closed after it

        def make(rewards=None, overrides=()):
            return made.enter_context(Trainer(tiny_spec(tmp_path / f"run{next(runs)}", rewards, overrides)))

        yield make


def test_reward_faults_stay_in_their_column_and_invalid_images_are_masked(trainer_for):
    rewards = {"good": GOOD, "raises": {"_component_": "tests.fault_rewards.Raises"},
               "slow": {"_component_": "tests.fault_rewards.Sleeps", "seconds": 60},
               "nan": {"_component_": "tests.fault_rewards.ReturnsNaN"},
               "short": {"_component_": "tests.fault_rewards.WrongLength"}}
    trainer = trainer_for(rewards, ("ensemble.timeout_s=3", "ensemble.nan_policy=renormalize",
                                    "model.decoder._component_=tests.fault_components.NaNImages"))
    metrics = trainer.train_step(1)
    n = 8
    invalid = round(metrics["rollout/invalid_frac"] * n)
    assert 0 < invalid < n  # NaN images are flagged and counted
    assert metrics["reward/good/count"] == n - invalid  # ...and never reach a reward
    assert math.isfinite(metrics["reward/good/mean"]) and metrics["reward/good/failures"] == 0
    for name in ("raises", "slow", "short"):  # exception, timeout, wrong length: NaN, counted
        assert metrics[f"reward/{name}/failures"] == n - invalid
        assert metrics[f"reward/{name}/nan_frac"] == 1.0
    assert metrics["reward/nan/failures"] == 0 and metrics["reward/nan/nan_frac"] == 1.0
    assert trainer.rewards.restarts == {"good": [0], "raises": [0], "slow": [1], "nan": [0], "short": [0]}
    # Invalid rows get NaN totals, hence zero advantage; valid rows are scored by "good" alone.
    assert metrics["advantage/zero_frac"] >= invalid / n

    ray.kill(trainer.rewards.actors["good"][0], no_restart=True)  # a dead reward actor is restarted
    metrics = trainer.train_step(2)
    assert trainer.rewards.restarts["good"] == [1]
    assert metrics["reward/good/failures"] == metrics["reward/good/count"]  # that step's rows are lost
    metrics = trainer.train_step(3)
    assert metrics["reward/good/failures"] == 0 and math.isfinite(metrics["reward/good/mean"])


def test_the_trainer_scores_in_chunks_of_ensemble_batch_size_over_the_reward_replicas(trainer_for, tmp_path):
    log = tmp_path / "calls.jsonl"
    trainer = trainer_for({"rec": {"_component_": "tests.fault_rewards.Recorder", "log": str(log)}},
                          ("ensemble.batch_size=3", "reward_workers.resources.rec.replicas=2"))
    metrics = trainer.train_step(1)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(c["n"] for c in calls) == [2, 3, 3]  # the step's 8 rows as chunks of at most 3
    assert len({c["pid"] for c in calls}) == 2  # ...spread over both replicas
    assert metrics["reward/rec/count"] == 8 and metrics["reward/rec/failures"] == 0


def test_non_finite_loss_skips_the_step_then_stops_the_run(trainer_for):
    policy = ("model.policy._component_=tests.fault_components.nan_loss_policy", "model.policy.nan_calls=[2,3]",
              "trainer.faults.max_nonfinite_steps=2")
    trainer = trainer_for({"good": GOOD}, policy)
    first = trainer.train_step(1)
    assert first["actor/skipped_steps"] == 0
    before = trainer.learner.run("trained_weights")
    second = trainer.train_step(2)  # NaN loss: optimizer step skipped, weights untouched, counted
    assert second["actor/skipped_steps"] == 1 and second["actor/nonfinite_in_row"] == 1
    after = trainer.learner.run("trained_weights")
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(RunAborted, match=r"2 optimizer steps in a row .*\(trainer.faults.max_nonfinite_steps=2\)"):
        trainer.train_step(3)


def test_the_run_stops_with_a_message_naming_what_failed(trainer_for):
    rewards = {"good": GOOD, "broken": {"_component_": "tests.fault_rewards.Raises"}}
    trainer = trainer_for(rewards, ("reward_workers.failure_window=1", "reward_workers.max_failure_frac=0.5"))
    with pytest.raises(RunAborted, match=r"reward 'broken' failed on 8 of 8 samples .*injected reward failure"):
        trainer.train_step(1)

    ray.kill(trainer.rollout.actors[0], no_restart=True)
    with pytest.raises(RunAborted, match=r"(?s)a rollout actor \(generate\) died.*resume=auto"):
        trainer.train_step(2)

    ray.kill(trainer.learner.ranks[0], no_restart=True)
    with pytest.raises(RunAborted, match=r"a learner actor \(update\) died"):
        trainer.learner.update(None)
