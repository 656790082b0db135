"""The step pipeline on a real local Ray with the tiny config and the real OCR reward: streaming (each rollout
chunk handed to the reward actors and the learner as soon as it is decoded) against the sequential step."""

import pytest
from train_helpers import TIMING, tiny_spec

from rl.driver.trainer import Trainer
from rl.evaluation.metrics import read_metrics

# 2 actors x 2 chunks of 2 rows, reward calls of 3 rows over 2 OCR replicas, micro-batches of 3 rows.
PIPELINE = ("trainer.steps=2", "rollout.num_actors=2", "rollout.batch_size=2", "ensemble.batch_size=3",
            "reward_workers.replicas=2", "trainer.batching.micro_batch_size=3", "trainer.loss.old_logprobs=recompute")


def run(run_dir, *overrides):
    with Trainer(tiny_spec(run_dir, overrides=(*PIPELINE, *overrides))) as trainer:
        trainer.fit()
        return read_metrics(trainer.metrics.path), trainer.learner.run("trained_weights")


def test_streaming_gives_the_samples_rewards_and_update_of_the_sequential_step(tmp_path, local_ray):
    sequential, weights_a = run(tmp_path / "sequential", "trainer.pipeline.streaming=false")
    streamed, weights_b = run(tmp_path / "streaming", "trainer.pipeline.streaming=true")
    assert [r["step"] for r in streamed] == [1, 2]
    for a, b in zip(sequential, streamed, strict=True):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert a["ratio/max"] == 1.0 and a["ratio/min"] == 1.0  # recomputed before the update
    assert all(bool((weights_a[k] == weights_b[k]).all()) for k in weights_a)
    assert streamed[0]["reward/ocr/mean"] == pytest.approx(sequential[0]["reward/ocr/mean"])
