"""The Ray actors of a training run, on a real local Ray with the tiny models: rollout sharding, weight sync
(object store and a gloo collective group: the code path NCCL takes on GPUs), the FSDP learner (two ranks, gloo
on CPU) against a single learner, its sharded checkpoints across world sizes, and its gradient reduction."""

import dataclasses

import pytest
import ray
import torch
from train_helpers import tiny_spec, trainer_with

from core.config import to_container
from rl.distributed.actors import LearnerGroup, RolloutGroup, WeightSync
from rl.distributed.learner import TrainBatch
from rl.export import export
from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy
from rl.seeding import sample_seed
from rl.state.checkpoint import save_checkpoint
from rl.state.learner_checkpoint import LEARNER_DIR, trained_shapes

PROMPTS = ["A neon shop sign reading \"OPEN\".", "A jar labeled \"JAM\".", "A sign that says \"EXIT\"."]


@pytest.fixture(scope="module")
def spec(tmp_path_factory, local_ray):
    return tiny_spec(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The starting policy as an X-Omni folder in shards, so learners and rollout actors stream it."""
    folder = tmp_path_factory.mktemp("base")
    tiny_policy(seed=0, image_vocab_size=40, mm_vocab_size=128).save_pretrained(folder, max_shard_size="500KB")
    return folder


@pytest.fixture(scope="module")
def model(spec, base):
    model = to_container(spec.cfg.model)
    model["policy"] = {"_component_": "rl.model.policy.XOmniPolicy.from_pretrained", "path": str(base)}
    return model


@pytest.fixture(scope="module")
def rollout(spec, model):
    group = RolloutGroup(model, spec.rollout, 600)
    group.ready()
    yield group
    group.shutdown()


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


@pytest.mark.parametrize(("mode", "world_size", "dtype"), [("object_store", 1, "float32"),
                                                          ("collective", 2, "bfloat16")])
def test_weight_sync_sends_the_trained_weights_only_and_they_arrive_equal(spec, model, mode, world_size, dtype):
    """Frozen weights (text head, text embedding) never travel; the rest arrive cast to the rollout dtype."""
    learner = started(LearnerGroup(model, spec.trainer, dataclasses.replace(spec.learner, world_size=world_size),
                                   spec.rollout.grid, 1.0, 600))
    rollout = started(RolloutGroup(model, dataclasses.replace(spec.rollout, num_actors=2, dtype=dtype), 600))
    try:
        sync = WeightSync(learner, rollout, mode, use_gpu=False, dtype=dtype, timeout_s=300)
        initial = rollout_weights(rollout)[0]
        sent_names = [name for bucket in sync.spec.buckets for name, _ in bucket]
        assert sorted(sent_names) == sorted(set(initial) - {"lm_head.weight", "model.lm_embed_tokens.weight"})
        learner.update(train_batch(rollout, 8))
        trained = learner.run("trained_weights")
        assert sorted(trained) == sorted(sent_names)
        assert any(not torch.equal(trained[k].to(initial[k].dtype), initial[k]) for k in trained)
        sent = sync()
        assert sent == sync.spec.nbytes == sum(t.numel() for t in trained.values()) * initial["mm_head.weight"].itemsize
        for weights in rollout_weights(rollout):
            assert {v.dtype for v in weights.values()} == {getattr(torch, dtype)}
            for name, value in weights.items():
                assert torch.equal(value, trained[name].to(value.dtype) if name in trained else initial[name]), name
    finally:
        learner.shutdown()
        rollout.shutdown()


def test_fsdp_learner_matches_one_rank_and_its_checkpoints_reshard(spec, model, base, rollout, tmp_path):
    """Two gloo ranks against one; then each one's checkpoint resumed with the other world size (parameters and
    AdamW state reshard), and the two-rank checkpoint exported into a folder XOmniPolicy loads."""
    single = started(LearnerGroup(model, spec.trainer, spec.learner, spec.rollout.grid, 1.0, 600))
    sharded = started(LearnerGroup(model, spec.trainer, dataclasses.replace(spec.learner, world_size=2),
                                   spec.rollout.grid, 1.0, 600))
    groups = [single, sharded]
    try:
        for step in (1, 2):  # two steps: the second uses the AdamW state the first built
            batch = train_batch(rollout, 8, step)
            stats_1, stats_2 = single.update(batch), sharded.update(batch)
            for key in ("loss/total", "kl/k3_mean", "entropy/mean", "actor/grad_norm"):
                assert stats_2[key] == pytest.approx(stats_1[key], rel=1e-4, abs=1e-6), key
        weights = {1: single.run("trained_weights"), 2: sharded.run("trained_weights")}
        # AdamW moves each weight by up to lr = 1e-2 per step; where a gradient is at rounding level the two
        # reduction orders can disagree on it, which Adam's 1/sqrt(v) turns into ~1e-5 differences.
        assert all(torch.allclose(weights[1][k], weights[2][k], atol=1e-4, rtol=0) for k in weights[1])

        saved = {n: save_checkpoint(tmp_path / str(n), 2, lambda d, g=g: g.run("save", str(d)), keep=1)
                 for n, g in ((1, single), (2, sharded))}
        shards = sorted(p.name for p in (saved[2] / LEARNER_DIR).iterdir())
        assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shards
        assert not any(k.startswith(("lm_head", "model.lm_embed_tokens")) for k in trained_shapes(saved[2]))
        assert {p.stat().st_mode & 0o777 for p in (saved[2] / LEARNER_DIR).iterdir()} == {0o644}

        batch = train_batch(rollout, 8, 3)
        for saved_by, resumed_with, original in ((2, 1, sharded), (1, 2, single)):
            resumed = started(LearnerGroup(model, spec.trainer,
                                           dataclasses.replace(spec.learner, world_size=resumed_with),
                                           spec.rollout.grid, 1.0, 600))
            groups.append(resumed)
            resumed.run("load", str(saved[saved_by]))
            restored = resumed.run("trained_weights")
            assert all(torch.equal(weights[saved_by][k], restored[k]) for k in weights[saved_by])
            a, b = original.update(batch), resumed.update(batch)  # the restored AdamW state takes this step
            for key in ("loss/total", "actor/grad_norm", "actor/lr"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
            after_a, after_b = original.run("trained_weights"), resumed.run("trained_weights")
            assert all(torch.allclose(after_a[k], after_b[k], atol=1e-4, rtol=0) for k in after_a)
            resumed.shutdown()

        exported = XOmniPolicy.from_pretrained(export(saved[2], base, tmp_path / "export")).state_dict()
        initial = XOmniPolicy.from_pretrained(base).state_dict()
        for name, value in exported.items():
            assert torch.equal(value, weights[2][name] if name in weights[2] else initial[name]), name
    finally:
        for group in groups:
            group.shutdown()


def test_gradients_are_reduce_scattered_once_per_optimizer_step(spec, model, rollout):
    """Two micro-batches per rank: with grad_sync last_micro_batch no sharded gradient exists before the last
    backward (FSDP2 kept them unsharded, no reduce-scatter); every_micro_batch reduces after the first too."""
    def record_sharded_grads(learner) -> None:  # runs in the actor; nested, so Ray ships it by value
        original = learner._token_logprobs
        learner.grads_seen = []

        def spied(model, sequences, with_entropy):
            if torch.is_grad_enabled():  # does a trained (sharded) parameter hold a reduced gradient yet?
                learner.grads_seen.append(any(p.grad is not None for _, p in learner.trained))
            return original(model, sequences, with_entropy)

        learner._token_logprobs = spied

    batch = train_batch(rollout, 8, 1)
    stats, seen = {}, {}
    for mode in ("last_micro_batch", "every_micro_batch"):
        group = started(LearnerGroup(model, trainer_with(spec.trainer, micro_batch_size=2, mini_batches=1),
                                     dataclasses.replace(spec.learner, world_size=2, grad_sync=mode),
                                     spec.rollout.grid, 1.0, 600))
        try:
            ray.get([rank.__ray_call__.remote(record_sharded_grads) for rank in group.ranks])
            stats[mode] = group.update(batch)
            seen[mode] = ray.get([rank.__ray_call__.remote(lambda self: self.grads_seen) for rank in group.ranks])
        finally:
            group.shutdown()
    assert seen == {"last_micro_batch": [[False, False]] * 2, "every_micro_batch": [[False, True]] * 2}
    for key in ("loss/total", "actor/grad_norm"):
        assert stats["last_micro_batch"][key] == pytest.approx(stats["every_micro_batch"][key], rel=1e-5), key
