"""LoRA with peft on the tiny policy: in-process (adapters, the reference with adapters off, merged weights
against peft's own merge, exact resume with dropout) and on a real local Ray (two gloo ranks against one, the
merged weights the rollout actors receive, the adapters-only checkpoint, and its export)."""

import copy
import dataclasses

import pytest
import ray
import torch
from train_helpers import tiny_spec

from core.config import to_container
from rl.distributed.actors import LearnerGroup, RolloutGroup, WeightSync
from rl.distributed.learner import Learner, TrainBatch
from rl.export import export
from rl.model import lora
from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy
from rl.model.weights import StateDictWeights, fill
from rl.seeding import sample_seed
from rl.state.checkpoint import save_checkpoint
from rl.state.learner_checkpoint import trained_shapes

SETTINGS = lora.LoraSettings(r=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
PROMPTS = ["A neon shop sign reading \"OPEN\".", "A jar labeled \"JAM\"."]


def adapted(policy: XOmniPolicy, seed: int = 0) -> XOmniPolicy:
    """`policy` with adapters, built the way the learner builds it (meta skeleton, filled, adapters drawn)."""
    with torch.device("meta"):
        skeleton = XOmniPolicy(policy.config)
    lora.add_adapters(skeleton, SETTINGS)
    out = skeleton.to_empty(device="cpu")
    fill(out, StateDictWeights(policy.config, policy.state_dict()), lora.base_name)
    lora.init_adapters(out, seed)
    return out


def test_adapters_start_at_the_base_and_switch_off_to_it():
    base = tiny_policy(seed=0).eval()
    model = adapted(base).eval()
    ids = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids), base(ids))  # B = 0: the adapted policy starts as the base
        for _, layer in lora.lora_layers(model):
            layer.lora_B[lora.ADAPTER].weight.normal_()
        assert not torch.equal(model(ids), base(ids))
        with lora.adapters_disabled(model):
            assert torch.equal(model(ids), base(ids))  # the reference: no second model
    assert all(p.requires_grad for n, p in model.named_parameters() if lora.base_name(n) is None)
    names = [name for name, _ in lora.lora_layers(model)]
    assert len(names) == 3 * 6 and "model.layers.0.self_attn.q_proj.weight" in names
    assert lora.base_name("model.layers.0.self_attn.q_proj.base_layer.bias") == "model.layers.0.self_attn.q_proj.bias"


def test_merged_rows_equal_peft_merge_and_init_depends_on_the_seed_only():
    model = adapted(tiny_policy(seed=0))
    with torch.no_grad():
        for _, layer in lora.lora_layers(model):
            layer.lora_B[lora.ADAPTER].weight.normal_()
    merged = {name: lora.merged_rows(layer) for name, layer in lora.lora_layers(model)}
    reference = copy.deepcopy(model)
    for _, layer in lora.lora_layers(reference):
        layer.merge()  # peft's own W + scaling * B @ A
    for name, layer in lora.lora_layers(reference):
        torch.testing.assert_close(merged[name], layer.base_layer.weight, atol=1e-6, rtol=0)
    again, other = adapted(tiny_policy(seed=0), seed=0), adapted(tiny_policy(seed=0), seed=1)
    a_of = {n: p for n, p in again.named_parameters() if n.endswith(lora.LORA_A)}
    assert all(torch.equal(p, a_of[n]) for n, p in model.named_parameters() if n.endswith(lora.LORA_A))
    assert not all(torch.equal(p, a_of[n]) for n, p in other.named_parameters() if n.endswith(lora.LORA_A))


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return tiny_spec(tmp_path_factory.mktemp("run"), overrides=(
        "trainer.lora.r=4", "trainer.lora.alpha=8", "trainer.lora.dropout=0.1", "trainer.optimizer.lr=3e-2",
        "trainer.lora.target_modules=[q_proj,v_proj,down_proj]", "trainer.batching.mini_batches=1"))


def batch_for(spec, policy, step: int) -> TrainBatch:
    from rl.model.sampler import sample_image_tokens
    from rl.model.tiny import tiny_tokenizer
    from rl.model.tokenizer import PromptFormat

    prompts = [p for p in PROMPTS for _ in range(4)]
    seeds = [sample_seed(0, step, i, g, "policy") for i in range(len(PROMPTS)) for g in range(4)]
    samples = sample_image_tokens(policy, PromptFormat(tiny_tokenizer(), policy.config.vocab_size).encode(
        prompts, tuple(spec.rollout.grid)), spec.rollout.sampling, seeds)
    return TrainBatch(prompts, samples.tokens, samples.logprobs, torch.linspace(-1.5, 1.5, len(prompts)))


def test_lora_learner_resumes_exactly_with_dropout(spec, tmp_path):
    """Dropout masks are drawn from (run seed, update count, rank): a learner restored from a checkpoint takes
    exactly the step the original takes. The checkpoint holds adapters (and their AdamW state) only."""
    model = to_container(spec.cfg.model)

    def learner():
        made = Learner(model, spec.trainer, spec.learner, tuple(spec.rollout.grid), 1.0, seed=5)
        made.setup()
        return made

    original = learner()
    assert original.reference is None  # the base with adapters off is the reference
    first = original.update(batch_for(spec, tiny_policy(seed=0, image_vocab_size=40, mm_vocab_size=128), 1))
    assert first["kl/k3_mean"] == 0.0  # B starts at zero: policy and reference agree exactly
    save_checkpoint(tmp_path, 1, lambda d: original.save(str(d)), keep=1)
    checkpoint = tmp_path / "checkpoints" / "step_00000001"
    assert trained_shapes(checkpoint) and all(lora.base_name(k) is None for k in trained_shapes(checkpoint))
    restored = learner()
    restored.load(str(checkpoint))
    batch = batch_for(spec, tiny_policy(seed=0, image_vocab_size=40, mm_vocab_size=128), 2)
    assert original.update(batch) == restored.update(batch)
    a, b = original.trained_weights(), restored.trained_weights()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_rank_lora_matches_one_rank_and_syncs_and_exports_merged_weights(spec, local_ray,
                                                                             tmp_path):
    base = tmp_path / "base"
    tiny_policy(seed=0, image_vocab_size=40, mm_vocab_size=128).save_pretrained(base)
    model = to_container(spec.cfg.model)
    model["policy"] = {"_component_": "rl.model.policy.XOmniPolicy.from_pretrained", "path": str(base)}
    trainer = dataclasses.replace(spec.trainer, lora=dataclasses.replace(spec.trainer.lora, dropout=0.0))
    rollout = RolloutGroup(model, spec.rollout, 600)
    groups = [rollout] + [LearnerGroup(model, trainer, dataclasses.replace(spec.learner, world_size=n),
                                       spec.rollout.grid, 1.0, 600) for n in (1, 2)]
    try:
        for group in groups:
            group.ready()
        _, single, sharded = groups
        sync = WeightSync(sharded, rollout, "collective", use_gpu=False, dtype="float32", timeout_s=300)
        adapted_names = {name for bucket in sync.spec.buckets for name, _ in bucket}
        assert len(adapted_names) == 3 * 6 and all(n.endswith(("q_proj.weight", "v_proj.weight", "down_proj.weight"))
                                                   for n in adapted_names)
        for step in (1, 2):
            result, _, _ = rollout.generate(*rows(step))
            batch = TrainBatch(rows(step)[0], result.tokens, result.logprobs, torch.linspace(-1, 1, 8))
            stats_1, stats_2 = single.update(batch), sharded.update(batch)
            for key in ("loss/total", "kl/k3_mean", "actor/grad_norm"):
                assert stats_2[key] == pytest.approx(stats_1[key], rel=1e-4, abs=1e-7), key
            assert sync() == sync.spec.nbytes

        adapters = sharded.run("trained_weights")
        initial = XOmniPolicy.from_pretrained(base).state_dict()
        received = ray.get(rollout.actors[0].__ray_call__.remote(lambda self: self.policy.state_dict()))
        for name, value in received.items():
            layer = name.removesuffix(".weight")
            if name in adapted_names:
                delta = lora.lora_delta(adapters[layer + lora.LORA_A], adapters[layer + lora.LORA_B], 2.0)
                torch.testing.assert_close(value, initial[name] + delta, atol=1e-6, rtol=0)
            else:
                assert torch.equal(value, initial[name]), name

        checkpoint = save_checkpoint(tmp_path / "run", 2, lambda d: sharded.run("save", str(d)), keep=1)
        exported = XOmniPolicy.from_pretrained(export(checkpoint, base, tmp_path / "out")).state_dict()
        for name, value in exported.items():
            torch.testing.assert_close(value, received[name], atol=1e-6, rtol=0)
    finally:
        for group in groups:
            group.shutdown()


def rows(step: int):
    prompts = [p for p in PROMPTS for _ in range(4)]
    seeds = [sample_seed(0, step, i, 0, "policy") for i in range(8)]
    return prompts, seeds, [sample_seed(0, step, i, 0, "decoder") for i in range(8)]
