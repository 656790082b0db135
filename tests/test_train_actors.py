"""The Ray actors of a training run, on a real local Ray with the tiny models: rollout sharding, weight sync
(object store and a gloo collective group: the code path NCCL takes on GPUs) and the FSDP learner (two
ranks, gloo on CPU) against a single learner."""

import dataclasses

import pytest
import ray
import torch
from train_helpers import local_ray, tiny_spec  # noqa: F401  (module-scoped Ray fixture)

from rl.config import to_container
from rl.distributed.actors import LearnerGroup, RolloutGroup, WeightSync
from rl.distributed.learner import TrainBatch
from rl.seeding import sample_seed

PROMPTS = ["A neon shop sign reading \"OPEN\".", "A jar labeled \"JAM\".", "A sign that says \"EXIT\"."]


@pytest.fixture(scope="module")
def spec(tmp_path_factory, local_ray):  # noqa: F811
    return tiny_spec(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def model(spec):
    return to_container(spec.cfg.model)


def rows(count: int, step: int = 1):
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(count)]
    seeds = [sample_seed(0, step, i, 0, "policy") for i in range(count)]
    return prompts, seeds, [sample_seed(0, step, i, 0, "decoder") for i in range(count)]


def started(group):
    group.ready()
    return group


def rollout_weights(group: RolloutGroup) -> list[dict[str, torch.Tensor]]:
    return ray.get([a.__ray_call__.remote(lambda self: {k: v.clone() for k, v in self.policy.state_dict().items()})
                    for a in group.actors])


def train_batch(group: RolloutGroup, count: int, step: int = 1) -> TrainBatch:
    prompts, seeds, decoder_seeds = rows(count, step)
    result, _, _ = group.generate(prompts, seeds, decoder_seeds)
    advantages = torch.linspace(-1, 1, count)
    return TrainBatch(prompts, result.tokens, result.logprobs, advantages)


def test_two_rollout_actors_draw_exactly_what_one_draws(spec, model):
    one = started(RolloutGroup(model, dataclasses.replace(spec.rollout, num_actors=1), 600))
    two = started(RolloutGroup(model, dataclasses.replace(spec.rollout, num_actors=2), 600))
    try:
        prompts, seeds, decoder_seeds = rows(7)
        a, images_a, where_a = one.generate(prompts, seeds, decoder_seeds)
        b, images_b, where_b = two.generate(prompts, seeds, decoder_seeds)
        assert {c for c, _ in where_b} == {0, 1}  # the rows really were split between the two actors
        assert torch.equal(a.tokens, b.tokens)
        # Log-probs agree to rounding: a batch of 7 and batches of 4 + 3 take different matmul blockings.
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        assert torch.equal(a.valid, b.valid)
        chunks_a, chunks_b = ray.get(images_a), ray.get(images_b)
        for (ca, ia), (cb, ib) in zip(where_a, where_b, strict=True):
            assert (chunks_a[ca][ia] == chunks_b[cb][ib]).all()
    finally:
        one.shutdown()
        two.shutdown()


@pytest.mark.parametrize("mode", ["object_store", "collective"])
def test_weight_sync_puts_the_learners_weights_in_every_rollout_actor(spec, model, mode):
    learner = started(LearnerGroup(model, spec.trainer, spec.learner, spec.rollout.grid, 1.0, 600))
    rollout = started(RolloutGroup(model, dataclasses.replace(spec.rollout, num_actors=2), 600))
    try:
        sync = WeightSync(learner, rollout, mode, use_gpu=False)
        initial = rollout_weights(rollout)[0]
        learner.update(train_batch(rollout, 8))
        trained = learner.run("full_state_dict")
        assert any(not torch.equal(trained[k], initial[k]) for k in trained)
        sync()
        for weights in rollout_weights(rollout):
            assert all(torch.equal(weights[k], trained[k]) for k in trained)
    finally:
        learner.shutdown()
        rollout.shutdown()


def test_fsdp_learner_on_two_ranks_matches_one_rank(spec, model, tmp_path):
    rollout = started(RolloutGroup(model, spec.rollout, 600))
    single = started(LearnerGroup(model, spec.trainer, spec.learner, spec.rollout.grid, 1.0, 600))
    sharded = started(LearnerGroup(model, spec.trainer, dataclasses.replace(spec.learner, world_size=2),
                                   spec.rollout.grid, 1.0, 600))
    try:
        for step in (1, 2):  # two steps: the second uses the AdamW state the first built
            batch = train_batch(rollout, 8, step)
            stats_1, stats_2 = single.update(batch), sharded.update(batch)
            for key in ("loss/total", "kl/k3_mean", "entropy/mean", "actor/grad_norm"):
                assert stats_2[key] == pytest.approx(stats_1[key], rel=1e-4, abs=1e-6), key
        weights_1, weights_2 = single.run("full_state_dict"), sharded.run("full_state_dict")
        # AdamW moves each weight by up to lr = 1e-2 per step; where a gradient is at rounding level the two
        # reduction orders can disagree on it, which Adam's 1/sqrt(v) turns into ~1e-5 differences.
        assert all(torch.allclose(weights_1[k], weights_2[k], atol=1e-4, rtol=0) for k in weights_1)

        sharded.run("save", str(tmp_path))  # full (unsharded) files, reloaded into the shards
        fresh = started(LearnerGroup(model, spec.trainer, dataclasses.replace(spec.learner, world_size=2),
                                     spec.rollout.grid, 1.0, 600))
        try:
            fresh.run("load", str(tmp_path))
            reloaded = fresh.run("full_state_dict")
            assert all(torch.equal(weights_2[k], reloaded[k]) for k in weights_2)
        finally:
            fresh.shutdown()
    finally:
        for group in (rollout, single, sharded):
            group.shutdown()
